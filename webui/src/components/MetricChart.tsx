/**
 * The one chart component: uPlot, which draws a million points without stalling, fed with series
 * the master already downsampled (`max_points`), so a long run costs a few thousand points here.
 */
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { align, positiveOnly, smooth, type Series } from "./chartData";

export type { Series } from "./chartData";

const PALETTE = ["#2f5bd3", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#1098ad", "#c2255c", "#5c940d"];

export interface MetricChartProps {
  title: string;
  series: Series[];
  xLabel: string;
  /** x values are unix seconds (wall-time axis) */
  time?: boolean;
  logScale?: boolean;
  /** 0 (none) to 0.99 */
  smoothing?: number;
  height?: number;
}

export function MetricChart({
  title,
  series,
  xLabel,
  time = false,
  logScale = false,
  smoothing = 0,
  height = 260,
}: MetricChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const points = series.reduce((sum, s) => sum + s.x.length, 0);

  useEffect(() => {
    const element = container.current;
    if (!element || !series.length) return;
    const [xs, ...columns] = align(series);
    const ys = columns.map((column) => {
      const smoothed = smooth(column, smoothing);
      return logScale ? positiveOnly(smoothed) : smoothed;
    });
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 280),
      height,
      scales: { x: { time }, y: logScale ? { distr: 3 } : {} },
      axes: [
        { label: xLabel, stroke: "currentColor", grid: { stroke: "rgba(128,128,128,0.2)" } },
        { stroke: "currentColor", grid: { stroke: "rgba(128,128,128,0.2)" } },
      ],
      series: [
        { label: xLabel },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: true,
          points: { show: s.x.length < 60 },
        })),
      ],
      legend: { live: true },
    };
    let plot: uPlot | null = null;
    try {
      plot = new uPlot(options, [xs, ...ys] as uPlot.AlignedData, element);
    } catch {
      // No canvas (a test DOM): the figure keeps its title and point count for assistive tech.
      return;
    }
    const resize =
      typeof ResizeObserver === "undefined"
        ? null
        : new ResizeObserver(() => plot?.setSize({ width: Math.max(element.clientWidth, 280), height }));
    resize?.observe(element);
    return () => {
      resize?.disconnect();
      plot?.destroy();
    };
  }, [series, xLabel, time, logScale, smoothing, height]);

  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      {series.length ? (
        <div ref={container} className="chart-canvas" data-testid="metric-chart" data-points={points} />
      ) : (
        <p className="state-empty">No data reported yet.</p>
      )}
    </figure>
  );
}
