import { screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LineageGraph, lineageSegments, parseModelVersion } from "./LineageGraph";
import { renderAt, stubMaster } from "./testing";

const PARENT = "11111111-0000-0000-0000-000000000001";
const MIDDLE = "22222222-0000-0000-0000-000000000002";
const CURRENT = "33333333-0000-0000-0000-000000000003";

function checkpoint(uuid: string, trialId: number, steps: number, parent: string | null, versions: string[] = []) {
  return {
    uuid,
    trial_id: trialId,
    experiment_id: null,
    allocation_id: null,
    steps_completed: steps,
    state: "COMPLETED",
    storage: {},
    manifest: {},
    metadata: {},
    size: 1024,
    stored_size: 512,
    parent_uuid: parent,
    created_at: "2024-01-01T00:00:00Z",
    model_versions: versions,
  };
}

// A trial of experiment 2 warm-started from experiment 1's checkpoint, then checkpointed twice.
const LINEAGE = {
  checkpoint: checkpoint(CURRENT, 9, 200, MIDDLE, ["mnist:2", "a:b:3", "<img src=x onerror=alert(1)>:1"]),
  chain: [checkpoint(MIDDLE, 9, 100, PARENT), checkpoint(PARENT, 4, 500, null)],
  missing_parent: null,
  experiments: [
    { id: 1, name: "pretrain", config: {}, context_sha256: null },
    { id: 2, name: "<b>finetune</b>", config: {}, context_sha256: null },
  ],
  trials: [
    { id: 4, experiment_id: 1, request_id: "r4", hparams: {}, warm_start_checkpoint: null },
    { id: 9, experiment_id: 2, request_id: "r9", hparams: {}, warm_start_checkpoint: PARENT },
  ],
};

describe("lineage helpers", () => {
  it("groups the chain by trial, oldest first, and reads model versions", () => {
    const segments = lineageSegments(LINEAGE);
    expect(segments.map((s) => [s.trialId, s.experimentId, s.checkpoints.map((c) => c.steps_completed)])).toEqual([
      [4, 1, [500]],
      [9, 2, [100, 200]],
    ]);
    expect(parseModelVersion("a:b:3")).toEqual({ name: "a:b", version: 3 });
    expect(parseModelVersion("broken")).toBeNull();
  });
});

describe("LineageGraph", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("links back to experiments, trials and parents, and forward to model versions", async () => {
    stubMaster({ [`/api/v1/checkpoints/${CURRENT}/lineage`]: LINEAGE });
    const { container } = renderAt("/", "/", <LineageGraph uuid={CURRENT} />);
    const graph = await screen.findByTestId("lineage-graph");

    const versions = within(graph).getByRole("list", { name: "Model versions" });
    expect(within(versions).getByRole("link", { name: "mnist v2" })).toHaveAttribute("href", "/models/mnist/2");
    expect(within(versions).getByRole("link", { name: "a:b v3" })).toHaveAttribute("href", "/models/a%3Ab/3");
    const hostile = within(versions).getByRole("link", { name: "<img src=x onerror=alert(1)> v1" });
    expect(hostile.getAttribute("href")).toBe(`/models/${encodeURIComponent("<img src=x onerror=alert(1)>")}/1`);
    expect(container.querySelector("img")).toBeNull();

    expect(within(graph).getByRole("link", { name: "1 · pretrain" })).toHaveAttribute("href", "/experiments/1");
    expect(within(graph).getByRole("link", { name: "2 · <b>finetune</b>" })).toHaveAttribute("href", "/experiments/2");
    expect(container.querySelector("b")).toBeNull();
    expect(within(graph).getByRole("link", { name: "4" })).toHaveAttribute("href", "/trials/4");
    expect(within(graph).getByRole("link", { name: "11111111" })).toHaveAttribute(
      "href",
      `/trials/4/checkpoints?checkpoint=${PARENT}`,
    );
    expect(within(graph).getByText("This checkpoint")).toBeInTheDocument();
  });
});
