import { screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { describeExit, describeLoss, lastStepOfRuns, runLosses, runSpans } from "./runsData";
import { RunsTab } from "./RunsTab";
import { renderAt, stubMaster } from "./testing";
import type { Run } from "./trialData";

function run(
  runId: number,
  restored: string | null,
  start: string,
  end: string | null,
  reason: string,
  lastStep: number | null,
): Run {
  return {
    run_id: runId,
    allocation_id: `00000000-0000-0000-0000-00000000000${runId}`,
    agent_id: `agent-${runId}`,
    state: end ? "TERMINATED" : "RUNNING",
    started_at: start,
    ended_at: end,
    exit_code: end ? 137 : null,
    exit_reason: end ? reason : "",
    restored_checkpoint: restored,
    last_step: lastStep,
  };
}

const CKPT_100 = "aaaaaaaa-0000-0000-0000-000000000100";
const CKPT_150 = "bbbbbbbb-0000-0000-0000-000000000150";
// Run 1 reached step 130 (its rows past 100 archived once run 2 restored step 100);
// run 2 reached step 150 and checkpointed there, which run 3 restored.
const RUNS = [
  run(1, null, "2024-01-01T00:00:00Z", "2024-01-01T00:10:00Z", "agent lost", 130),
  run(2, CKPT_100, "2024-01-01T00:11:00Z", "2024-01-01T00:20:00Z", "killed", 150),
  run(3, CKPT_150, "2024-01-01T00:21:00Z", null, "", null),
];

const CHECKPOINTS = [
  { uuid: CKPT_100, trial_id: 5, steps_completed: 100, state: "COMPLETED" },
  { uuid: CKPT_150, trial_id: 5, steps_completed: 150, state: "COMPLETED" },
];

describe("runLosses", () => {
  it("measures each restart against how far the run before it got", () => {
    const steps = new Map(CHECKPOINTS.map((c) => [c.uuid, c.steps_completed]));
    const losses = runLosses(RUNS, lastStepOfRuns(RUNS), steps);
    expect(losses[0]).toEqual({ kind: "first" });
    expect(losses[1]).toMatchObject({ kind: "rollback", fromStep: 130, toStep: 100, lost: 30 });
    expect(losses[2]).toMatchObject({ kind: "rollback", fromStep: 150, toStep: 150, lost: 0 });
    expect(describeLoss(losses[1])).toBe("rolled back 30 steps (from step 130 to checkpoint at step 100)");
    expect(describeLoss(losses[2])).toMatch(/^nothing lost/);
    // A restart without a checkpoint starts over; an unknown checkpoint is said to be unknown.
    const scratch = runLosses([RUNS[0], { ...RUNS[1], restored_checkpoint: null }], lastStepOfRuns(RUNS), steps);
    expect(describeLoss(scratch[1])).toBe("rolled back 130 steps (from step 130 to step 0: no checkpoint to restore)");
    expect(runLosses(RUNS.slice(0, 2), new Map(), new Map())[1]).toEqual({ kind: "unknown" });
  });

  it("names the signal behind an exit code", () => {
    expect(describeExit(-9, "exited")).toBe("exited (code -9: killed by signal 9, SIGKILL)");
    expect(describeExit(1, "exited")).toBe("exited (code 1)");
    expect(describeExit(null, "")).toBe("—");
  });

  it("places runs on one time axis", () => {
    const spans = runSpans(RUNS.slice(0, 2), 0);
    expect(spans[0]).toEqual({ left: 0, width: 0.5 });
    expect(spans[1]?.left).toBeCloseTo(11 / 20);
  });
});

describe("RunsTab", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows each run on the timeline with the steps its restart rolled back", async () => {
    stubMaster({
      "/api/v1/trials/5/runs": RUNS,
      "/api/v1/experiments/3/checkpoints": CHECKPOINTS,
    });
    renderAt("/trials/5/runs", "/trials/:trialId/:tab", <RunsTab trialId={5} experimentId={3} live={false} />);

    const second = await screen.findByTestId("run-2");
    expect(await within(second).findByText("rolled back 30 steps (from step 130 to checkpoint at step 100)")).toBeInTheDocument();
    const timeline = screen.getByTestId("run-timeline");
    expect(timeline.tagName).toBe("OL");
    expect(timeline).toHaveClass("timeline");
    expect(within(timeline).getAllByRole("listitem")).toHaveLength(3);

    const first = screen.getByTestId("run-1");
    expect(first).toHaveTextContent("agent-1");
    expect(first).toHaveTextContent("agent lost (code 137: killed by signal 9, SIGKILL)");
    expect(first).toHaveTextContent("10m 0s");
    expect(within(first).queryByText(/rolled back/)).toBeNull();

    const link = within(second).getByRole("link", { name: "checkpoint aaaaaaaa" });
    expect(link).toHaveAttribute("href", `/trials/5/checkpoints?checkpoint=${CKPT_100}`);
    expect(within(screen.getByTestId("run-3")).getByText(/nothing lost/)).toBeInTheDocument();
    expect(screen.getByTestId("run-3")).toHaveTextContent("still running");
  });
});
