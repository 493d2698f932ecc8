/** What the trial pages read from the master beyond the typed client: metric rows (whose JSON may
 * carry NaN and Infinity tokens) and log lines (newline-delimited JSON). */
import type { Schemas } from "../../api/client";

export type Trial = Schemas["TrialOut"];
export type Run = Schemas["RunOut"];
export type Checkpoint = Schemas["CheckpointOut"];

/** A trial ends in one of these; nothing about it changes afterwards, so polling stops. */
export const TERMINAL_STATES = new Set(["COMPLETED", "CANCELED", "ERROR"]);

export function isTerminal(state: string | undefined): boolean {
  return state != null && TERMINAL_STATES.has(state);
}

export interface MetricRow {
  group: string;
  steps_completed: number;
  run_id: number;
  values: Record<string, unknown>;
  reported_at: string;
  archived: boolean;
}

export interface MetricsAnswer {
  items: MetricRow[];
  /** Set by the master when it thinned the series to `max_points`. */
  downsampled?: boolean;
  /** How many rows the series held before downsampling. */
  total?: number;
}

export interface LogLine {
  id: number;
  ts: string;
  rank: number | null;
  stream: string;
  message: string;
}

export { parseLooseJson } from "../../api/looseJson";

/** One log line per ndjson line; a torn or blank line is skipped rather than failing the view. */
export function parseLogLines(chunk: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const raw of chunk.split("\n")) {
    if (!raw.trim()) continue;
    try {
      lines.push(JSON.parse(raw) as LogLine);
    } catch {
      // A partial line never reaches here (the reader keeps it for the next chunk).
    }
  }
  return lines;
}

export function shortUuid(uuid: string): string {
  return uuid.slice(0, 8);
}

/** A finite number from a metric value, or null (NaN, Infinity, strings, missing). */
export function finite(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}
