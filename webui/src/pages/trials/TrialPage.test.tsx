import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ME, renderAt, stubMaster } from "./testing";
import { TrialPage } from "./TrialPage";

vi.mock("uplot", () => ({
  default: class {
    constructor() {
      throw new Error("no canvas");
    }
  },
}));

const CKPT = "cccccccc-0000-0000-0000-000000000001";
const TRIAL = {
  id: 5,
  experiment_id: 3,
  request_id: "r5",
  hparams: { lr: 0.01, layers: [64, 32], name: "<img src=x onerror=alert(1)>" },
  seed: 1,
  state: "ACTIVE",
  restarts: 1,
  run_id: 2,
  steps_completed: 150,
  progress: 0.5,
  latest_checkpoint: CKPT,
  warm_start_checkpoint: null,
  best_validation: 0.1,
  end_reason: "",
  created_at: "2024-01-01T00:00:00Z",
  ended_at: null,
};
const EXPERIMENT = { id: 3, name: "mnist", project_id: 7, owner: "ada", state: "ACTIVE" };
const CHECKPOINTS = [
  { uuid: CKPT, trial_id: 5, steps_completed: 150, state: "COMPLETED", size: 2048, created_at: "2024-01-01T00:00:00Z", model_versions: [] },
  { uuid: "dddddddd-0000-0000-0000-000000000002", trial_id: 6, steps_completed: 10, state: "COMPLETED", size: 1, created_at: "2024-01-01T00:00:00Z" },
];
const LINEAGE = {
  checkpoint: { ...CHECKPOINTS[0], model_versions: [] },
  chain: [],
  missing_parent: null,
  experiments: [{ id: 3, name: "mnist", config: {}, context_sha256: null }],
  trials: [{ id: 5, experiment_id: 3, request_id: "r5", hparams: {}, warm_start_checkpoint: null }],
};

function master(role: string) {
  return stubMaster({
    "/api/v1/me": ME,
    "/api/v1/trials/5": TRIAL,
    "/api/v1/experiments/3": EXPERIMENT,
    "/api/v1/projects/7": { id: 7, name: "vision", workspace_id: 2, archived: false, description: "", created_at: "" },
    "/api/v1/workspaces": [{ id: 2, name: "research", archived: false, created_at: "", role }],
    "/api/v1/trials/5/metrics": { items: [] },
    "/api/v1/experiments/3/checkpoints": CHECKPOINTS,
    [`/api/v1/checkpoints/${CKPT}/lineage`]: LINEAGE,
    "/api/v1/models": { items: [], total: 0, limit: 1000, offset: 0 },
    "POST /api/v1/trials/5/kill": { ...TRIAL, state: "CANCELED" },
    "POST /api/v1/models": { id: 1, name: "digits" },
    "POST /api/v1/models/digits/versions": { model: "digits", version: 1, checkpoint_uuid: CKPT },
  });
}

describe("TrialPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows the trial, its experiment and hyperparameters as text, and kills after confirming", async () => {
    const { calls } = master("editor");
    const { container } = renderAt("/trials/5", "/trials/:trialId/:tab?", <TrialPage />, { signedIn: true });
    expect(await screen.findByRole("heading", { level: 1, name: /Trial 5/ })).toHaveTextContent("ACTIVE");
    expect(await screen.findByRole("link", { name: "3 · mnist" })).toHaveAttribute("href", "/experiments/3");
    const hparams = screen.getByLabelText("Hyperparameters");
    expect(within(hparams).getByText("[64,32]")).toBeInTheDocument();
    expect(within(hparams).getByText("0.01")).toBeInTheDocument();
    expect(screen.getByText("<img src=x onerror=alert(1)>")).toBeInTheDocument();
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByTestId("trial-metrics")).toBeInTheDocument();

    const kill = await screen.findByRole("button", { name: "Kill" });
    vi.spyOn(window, "confirm").mockReturnValueOnce(false).mockReturnValueOnce(true);
    await userEvent.click(kill);
    expect(calls.some((r) => r.method === "POST")).toBe(false);
    await userEvent.click(kill);
    await waitFor(() => expect(calls.some((r) => r.method === "POST" && r.url.endsWith("/trials/5/kill"))).toBe(true));
  });

  it("gives a viewer no kill button and no register form", async () => {
    const { calls } = master("viewer");
    renderAt(`/trials/5/checkpoints?checkpoint=${CKPT}`, "/trials/:trialId/:tab?", <TrialPage />, { signedIn: true });
    await screen.findByTestId("lineage-graph");
    await waitFor(() => expect(screen.getAllByRole("link", { name: "3 · mnist" })).toHaveLength(2));
    await waitFor(() => expect(calls.some((r) => r.url.endsWith("/projects/7"))).toBe(true));
    expect(screen.queryByRole("button", { name: "Kill" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Register version" })).toBeNull();
  });

  it("lists only this trial's checkpoints and registers one as a new model's version", async () => {
    const { calls } = master("editor");
    renderAt("/trials/5/checkpoints", "/trials/:trialId/:tab?", <TrialPage />, { signedIn: true });
    const rows = await screen.findAllByRole("row");
    expect(rows).toHaveLength(2); // header + this trial's one checkpoint
    // The trial's latest checkpoint is shown before any is chosen.
    expect(await screen.findByTestId("lineage-graph")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Lineage of cccccccc" }));
    const graph = await screen.findByTestId("lineage-graph");
    expect(within(graph).getByText("no model version yet")).toBeInTheDocument();

    await userEvent.selectOptions(await screen.findByRole("combobox", { name: /^Model/ }), "New model…");
    await userEvent.type(screen.getByLabelText("New model name"), "digits");
    await userEvent.click(screen.getByRole("button", { name: "Register version" }));
    expect(await screen.findByRole("link", { name: "digits version 1" })).toHaveAttribute("href", "/models/digits/1");
    const created = calls.find((r) => r.method === "POST" && new URL(r.url).pathname === "/api/v1/models");
    expect(await created!.clone().json()).toMatchObject({ name: "digits", project_id: 7 });
    const version = calls.find((r) => r.method === "POST" && r.url.endsWith("/models/digits/versions"));
    expect(await version!.clone().json()).toMatchObject({ checkpoint_uuid: CKPT });
  });
});
