/**
 * Shapes and requests the experiment pages share: which states still change, what the searcher
 * optimises, a trial's metric series, and the fields the master's list and trial answers carry.
 */
import { api, unwrap, type Schemas } from "../../api/client";
import { parseLooseJson } from "../../api/looseJson";
import type { Verb } from "./actions";

/** A list row: the experiment with its summary columns (progress, best metric, project, ...). */
export type Experiment = Schemas["ExperimentListItem"];
/** The detail; `workspace_id` and `project_name` are used when the master sends them, otherwise
 * the page reads them from the experiment's project. */
export type ExperimentDetail = Schemas["ExperimentDetail"] & { workspace_id?: number; project_name?: string };
export type Trial = Schemas["TrialOut"];
export type Checkpoint = Schemas["CheckpointOut"];

/** Experiment states that may still change on their own; the rest are final, so polling stops. */
export function isLive(state: string): boolean {
  return state === "ACTIVE" || state === "PAUSED" || state.startsWith("STOPPING_");
}

const ENDED = new Set(["COMPLETED", "CANCELED", "ERROR"]);

/** Mirrors the master's transition table (services/states.py) so buttons that would only earn
 * a refusal (or change nothing) are disabled; the master stays the judge. */
export function verbAllowed(verb: Verb, state: string): boolean {
  switch (verb) {
    case "pause":
      return state === "ACTIVE";
    case "activate":
      return state === "PAUSED";
    case "cancel":
      return state === "ACTIVE" || state === "PAUSED" || state === "STOPPING_CANCELED";
    case "kill":
      return state === "ACTIVE" || state === "PAUSED" || (state.startsWith("STOPPING_") && state !== "STOPPING_ERROR");
    case "archive":
    case "unarchive":
      return ENDED.has(state);
  }
}

export interface Searcher {
  metric: string;
  smallerIsBetter: boolean;
}

/** The searcher's metric and direction from an experiment config (the master's default: smaller). */
export function searcherOf(config: Record<string, unknown> | undefined): Searcher {
  const searcher = (config?.searcher ?? {}) as Record<string, unknown>;
  return {
    metric: typeof searcher.metric === "string" ? searcher.metric : "",
    smallerIsBetter: searcher.smaller_is_better !== false,
  };
}

/** A trial's searcher metric: the master's summary, else its best validation. */
export function trialMetric(trial: Trial): number | null {
  const value = trial.searcher_metric_value ?? trial.best_validation;
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** Up to `count` trials with a searcher metric, best first. */
export function bestTrials(trials: Trial[], searcher: Searcher, count: number): Trial[] {
  const sign = searcher.smallerIsBetter ? 1 : -1;
  return trials
    .filter((t) => trialMetric(t) != null)
    .sort((a, b) => sign * (trialMetric(a)! - trialMetric(b)!))
    .slice(0, count);
}

/** Nested hyperparameters as dotted names ("optimizer.lr"), so each gets its own column/axis. */
export function flattenHparams(hparams: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const flat: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(hparams)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      Object.assign(flat, flattenHparams(value as Record<string, unknown>, name));
    } else {
      flat[name] = value;
    }
  }
  return flat;
}

/** Any value as short display text (React renders it as text, never markup). */
export function asText(value: unknown): string {
  if (value == null) return "—";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

export interface MetricRow {
  group: string;
  steps_completed: number;
  run_id: number;
  values: Record<string, number | null>;
  reported_at: string;
  archived: boolean;
}
export interface MetricAnswer {
  items: MetricRow[];
  downsampled: boolean;
  total: number;
}

export interface MetricQuery {
  group: string;
  metrics: string[];
  maxPoints: number;
}

/** One trial's series of the named metrics in one group, downsampled by the master. */
export async function fetchTrialMetrics(trialId: number, query: MetricQuery): Promise<MetricAnswer> {
  const text = await unwrap(
    api.GET("/api/v1/trials/{trial_id}/metrics", {
      params: {
        path: { trial_id: trialId },
        query: { group: query.group, metric: query.metrics, max_points: query.maxPoints },
      },
      parseAs: "text",
    }),
  );
  return parseLooseJson(text) as MetricAnswer;
}

/** [steps, values] of one metric from a metric answer, skipping rows without it. */
export function seriesOf(answer: MetricAnswer | undefined, metric: string): { x: number[]; y: (number | null)[] } {
  const x: number[] = [];
  const y: (number | null)[] = [];
  for (const row of answer?.items ?? []) {
    if (!(metric in row.values)) continue;
    x.push(row.steps_completed);
    const value = row.values[metric];
    y.push(typeof value === "number" && Number.isFinite(value) ? value : null);
  }
  return { x, y };
}

export interface MetricPoint {
  trialId: number;
  step: number;
  value: number;
}

/** The best value reached by any trial at or before each step (one point per step), and the
 * point that holds the overall best. */
export function runningBest(
  points: MetricPoint[],
  smallerIsBetter: boolean,
): { x: number[]; y: number[]; best: MetricPoint | null } {
  const better = (a: number, b: number) => (smallerIsBetter ? a < b : a > b);
  const sorted = points.filter((p) => Number.isFinite(p.value)).sort((a, b) => a.step - b.step);
  const x: number[] = [];
  const y: number[] = [];
  let best: MetricPoint | null = null;
  for (const point of sorted) {
    if (!best || better(point.value, best.value)) best = point;
    if (x.length && x[x.length - 1] === point.step) y[y.length - 1] = best.value;
    else {
      x.push(point.step);
      y.push(best.value);
    }
  }
  return { x, y, best };
}
