/** One hyperparameter (x) against the searcher metric (y), a dot per trial, in plain SVG. */
import { formatNumber } from "../../components/format";
import { asText } from "./data";
import { position, shorten, ticks, type Axis } from "./hparamAxes";

export interface ScatterPoint {
  id: number;
  x: unknown;
  y: number;
  color: string;
}

const WIDTH = 560;
const HEIGHT = 340;
const LEFT = 70;
const RIGHT = 20;
const TOP = 16;
const BOTTOM = 56;

export function HparamScatter({ xAxis, yAxis, points }: { xAxis: Axis; yAxis: Axis; points: ScatterPoint[] }) {
  const plotWidth = WIDTH - LEFT - RIGHT;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  // Categories sit away from the plot's edges; numbers use the full width.
  const pad = xAxis.kind === "categorical" ? 0.1 : 0.02;
  const xOf = (at: number) => LEFT + (pad + at * (1 - 2 * pad)) * plotWidth;
  const yOf = (at: number) => TOP + (1 - (0.03 + at * 0.94)) * plotHeight;
  const format = (n: number) => formatNumber(n);

  return (
    <div className="chart-scroll">
      <svg
        className="scatter"
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        width={WIDTH}
        height={HEIGHT}
        role="img"
        aria-label={`${yAxis.name} against ${xAxis.name}: ${points.length} trials`}
      >
        <line className="axis" x1={LEFT} x2={LEFT + plotWidth} y1={TOP + plotHeight} y2={TOP + plotHeight} />
        <line className="axis" x1={LEFT} x2={LEFT} y1={TOP} y2={TOP + plotHeight} />
        {ticks(xAxis, format).map((tick) => (
          <g key={`x:${tick.label}`}>
            <title>{tick.label}</title>
            <text x={xOf(tick.at)} y={TOP + plotHeight + 16} textAnchor="middle" className="pc-tick">
              {shorten(tick.label, 12)}
            </text>
          </g>
        ))}
        {ticks(yAxis, format).map((tick) => (
          <text key={`y:${tick.label}`} x={LEFT - 6} y={yOf(tick.at) + 4} textAnchor="end" className="pc-tick">
            {tick.label}
          </text>
        ))}
        <text x={LEFT + plotWidth / 2} y={HEIGHT - 10} textAnchor="middle" className="pc-name">
          {shorten(xAxis.name, 40)}
          {xAxis.log ? " (log scale)" : ""}
        </text>
        <text x={14} y={TOP + plotHeight / 2} textAnchor="middle" className="pc-name" transform={`rotate(-90 14 ${TOP + plotHeight / 2})`}>
          {shorten(yAxis.name, 30)}
        </text>
        {points.map((point) => {
          const x = position(xAxis, point.x);
          const y = position(yAxis, point.y);
          if (x == null || y == null) return null;
          return (
            <circle key={point.id} data-testid="scatter-dot" cx={xOf(x)} cy={yOf(y)} r={5} fill={point.color}>
              <title>{`trial ${point.id}: ${xAxis.name}=${typeof point.x === "number" ? format(point.x) : asText(point.x)}, ${yAxis.name}=${format(point.y)}`}</title>
            </circle>
          );
        })}
      </svg>
    </div>
  );
}
