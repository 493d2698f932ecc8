/** Metric rows to chart series: which metrics a group reports and their points on the chosen x axis. */
import type { Series } from "../../components/MetricChart";
import { finite, type MetricRow } from "./trialData";

export type XAxis = "steps" | "epochs" | "time";

const EPOCH_KEYS = ["epoch", "epochs"] as const;

/** The values key holding the epoch, when the trial reports one. */
export function epochKey(rows: readonly MetricRow[]): string | null {
  for (const key of EPOCH_KEYS) {
    if (rows.some((row) => typeof row.values[key] === "number")) return key;
  }
  return null;
}

/** Numeric metrics in first-seen order (NaN counts: a diverged loss is still a metric); the epoch
 * is an axis, not a metric. */
export function metricNames(rows: readonly MetricRow[]): string[] {
  const names = new Set<string>();
  for (const row of rows) {
    for (const [key, value] of Object.entries(row.values)) {
      if (typeof value === "number" && !(EPOCH_KEYS as readonly string[]).includes(key)) names.add(key);
    }
  }
  return [...names];
}

function xOf(row: MetricRow, axis: XAxis, epoch: string | null): number | null {
  if (axis === "steps") return row.steps_completed;
  if (axis === "time") {
    const ms = Date.parse(row.reported_at);
    return Number.isNaN(ms) ? null : ms / 1000;
  }
  return epoch ? finite(row.values[epoch]) : null;
}

/** One series for `metric`: rows without an x (no epoch reported) or without the metric are skipped;
 * NaN and Infinity become gaps. */
export function seriesFor(rows: readonly MetricRow[], metric: string, axis: XAxis, epoch: string | null): Series {
  const x: number[] = [];
  const y: (number | null)[] = [];
  for (const row of rows) {
    if (!(metric in row.values)) continue;
    const at = xOf(row, axis, epoch);
    if (at == null) continue;
    x.push(at);
    y.push(finite(row.values[metric]));
  }
  return { label: metric, x, y };
}

export const AXIS_LABEL: Record<XAxis, string> = { steps: "Steps", epochs: "Epochs", time: "Wall time" };
