/** Parallel coordinates in plain SVG: a vertical axis per column, a polyline per trial. Every label
 * is an SVG <text> node holding React text, so hyperparameter values never become markup. */
import { formatNumber } from "../../components/format";
import { position, shorten, ticks, type Axis } from "./hparamAxes";

export interface PcRow {
  id: number;
  label: string;
  /** One value per axis, in axis order. */
  values: unknown[];
  color: string;
}

const TOP = 42;
const BOTTOM = 28;
const SIDE = 70;
const SPACING = 150;
const HEIGHT = 360;

export function ParallelCoordinates({ axes, rows }: { axes: Axis[]; rows: PcRow[] }) {
  const width = SIDE * 2 + SPACING * Math.max(1, axes.length - 1);
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const xOf = (i: number) => SIDE + i * SPACING;
  const yOf = (at: number) => TOP + (1 - at) * plotHeight;

  // A missing value breaks the line: the next present value starts a new segment.
  const pathOf = (row: PcRow) => {
    let d = "";
    let pen = false;
    axes.forEach((axis, i) => {
      const at = position(axis, row.values[i]);
      if (at == null) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${xOf(i)},${yOf(at).toFixed(1)} `;
      pen = true;
    });
    return d.trim();
  };

  return (
    <div className="chart-scroll">
      <svg
        className="pcoords"
        viewBox={`0 0 ${width} ${HEIGHT}`}
        width={width}
        height={HEIGHT}
        role="img"
        aria-label={`Parallel coordinates: ${rows.length} trials over ${axes.length} axes`}
      >
        <g className="pc-lines">
          {rows.map((row) => (
            <path key={row.id} data-testid="pc-line" d={pathOf(row)} stroke={row.color} fill="none">
              <title>{row.label}</title>
            </path>
          ))}
        </g>
        {axes.map((axis, i) => (
          <g key={axis.name} className="pc-axis">
            <line x1={xOf(i)} x2={xOf(i)} y1={TOP} y2={TOP + plotHeight} />
            <g>
              <title>{axis.name}</title>
              <text x={xOf(i)} y={TOP - 22} textAnchor="middle" className="pc-name">
                {shorten(axis.name, 22)}
                {axis.log ? " (log)" : ""}
              </text>
            </g>
            {ticks(axis, (n) => formatNumber(n)).map((tick) => (
              <g key={tick.label}>
                <title>{tick.label}</title>
                <text x={xOf(i) + 5} y={yOf(tick.at) + 4} className="pc-tick">
                  {shorten(tick.label)}
                </text>
              </g>
            ))}
          </g>
        ))}
      </svg>
    </div>
  );
}
