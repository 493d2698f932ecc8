/** What each run of a trial cost: the steps between where the run before it got to and the
 * checkpoint it restored. This is "nothing is lost" made measurable. */
import type { Run } from "./trialData";

export type RunLoss =
  | { kind: "first" }
  | { kind: "unknown" }
  | { kind: "rollback"; fromStep: number; toStep: number; checkpoint: string | null; lost: number };

/** The furthest step each run reported, as the master counts it (RunOut.last_step). */
export function lastStepOfRuns(runs: readonly Run[]): Map<number, number> {
  return new Map(runs.flatMap((run) => (run.last_step == null ? [] : [[run.run_id, run.last_step] as const])));
}

/** For every run after the first: how far the previous run got (its last report, else the step it
 * restored, else 0) against the step of the checkpoint this run restored (0 when none). */
export function runLosses(
  runs: readonly Run[],
  lastSteps: ReadonlyMap<number, number>,
  checkpointSteps: ReadonlyMap<string, number>,
): RunLoss[] {
  const restoredStep = (run: Run): number | undefined =>
    run.restored_checkpoint ? checkpointSteps.get(run.restored_checkpoint) : 0;
  return runs.map((run, index) => {
    if (index === 0) return { kind: "first" };
    // A run that is starting has not said yet which checkpoint it restored: no verdict before it does.
    if (!run.restored_checkpoint && run.ended_at == null && !lastSteps.has(run.run_id)) return { kind: "unknown" };
    const previous = runs[index - 1];
    const fromStep = lastSteps.get(previous.run_id) ?? restoredStep(previous);
    const toStep = restoredStep(run);
    if (fromStep === undefined || toStep === undefined) return { kind: "unknown" };
    return {
      kind: "rollback",
      fromStep,
      toStep,
      checkpoint: run.restored_checkpoint,
      lost: Math.max(0, fromStep - toStep),
    };
  });
}

export function describeLoss(loss: RunLoss): string | null {
  if (loss.kind === "first") return null;
  if (loss.kind === "unknown") return "restoring… (the steps rolled back show once the run reports what it restored)";
  if (loss.lost === 0) {
    return loss.checkpoint
      ? `nothing lost (resumed at step ${loss.toStep}, where the previous run stopped)`
      : "nothing lost";
  }
  const unit = loss.lost === 1 ? "step" : "steps";
  const target = loss.checkpoint ? `checkpoint at step ${loss.toStep}` : "step 0: no checkpoint to restore";
  return `rolled back ${loss.lost} ${unit} (from step ${loss.fromStep} to ${target})`;
}

const SIGNALS: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  15: "SIGTERM",
};

/** "exited (code 137: killed by signal 9, SIGKILL)": a shell's 128+N and a negative code both name
 * the signal that ended the process, which is what a reader wants to know. */
export function describeExit(code: number | null, reason: string): string {
  const what = reason || (code == null ? "—" : "exited");
  if (code == null) return what;
  const signal = code < 0 ? -code : code > 128 && code < 160 ? code - 128 : null;
  if (signal == null) return `${what} (code ${code})`;
  const name = SIGNALS[signal] ? `, ${SIGNALS[signal]}` : "";
  return `${what} (code ${code}: killed by signal ${signal}${name})`;
}

export interface Span {
  /** Fraction of the shared axis where the bar starts, and its width (0..1). */
  left: number;
  width: number;
}

/** Bars of all runs on one time axis, from the first start to the last end (or now). */
export function runSpans(runs: readonly Run[], now: number): (Span | null)[] {
  const times = runs.map((run) => ({
    start: run.started_at ? Date.parse(run.started_at) : NaN,
    end: run.ended_at ? Date.parse(run.ended_at) : now,
  }));
  const starts = times.map((t) => t.start).filter((t) => !Number.isNaN(t));
  if (!starts.length) return runs.map(() => null);
  const origin = Math.min(...starts);
  const finish = Math.max(...times.filter((t) => !Number.isNaN(t.start)).map((t) => t.end), origin + 1);
  const span = finish - origin;
  return times.map(({ start, end }) =>
    Number.isNaN(start) ? null : { left: (start - origin) / span, width: Math.max(end - start, 0) / span },
  );
}
