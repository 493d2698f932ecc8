import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ME, renderAt, stubMaster } from "../trials/testing";
import { ModelListPage } from "./ModelListPage";
import { ModelPage } from "./ModelPage";
import { validationAt } from "./VersionDetail";

const CKPT = "eeeeeeee-0000-0000-0000-000000000001";
const MODEL = {
  id: 1,
  name: "digits <v2>",
  description: "<script>alert(1)</script> classifier",
  labels: ["prod"],
  metadata: {},
  owner: "ada",
  project_id: 7,
  num_versions: 1,
  latest_version: 1,
  created_at: "2024-01-01T00:00:00Z",
  updated_at: "2024-01-02T00:00:00Z",
};
const VERSION = {
  id: 10,
  model: MODEL.name,
  model_id: 1,
  version: 1,
  checkpoint_uuid: CKPT,
  experiment_id: 3,
  trial_id: 5,
  comment: "",
  labels: [],
  metadata: { framework: "torch" },
  owner: "ada",
  created_at: "2024-01-03T00:00:00Z",
};
const PATH = `/api/v1/models/${encodeURIComponent(MODEL.name)}`;

function master(role: string, owner = "ada") {
  return stubMaster({
    "/api/v1/me": ME,
    "/api/v1/models": { items: [{ ...MODEL, owner }], total: 1, limit: 50, offset: 0 },
    [PATH]: { ...MODEL, owner },
    [`${PATH}/versions`]: { items: [VERSION], total: 1, limit: 1000, offset: 0 },
    [`${PATH}/versions/1`]: VERSION,
    "/api/v1/projects/7": { id: 7, name: "vision", workspace_id: 2, archived: false, description: "", created_at: "" },
    "/api/v1/workspaces": [{ id: 2, name: "research", archived: false, created_at: "", role }],
    [`/api/v1/checkpoints/${CKPT}`]: {
      uuid: CKPT, trial_id: 5, steps_completed: 100, state: "COMPLETED", size: 4096, stored_size: 1024,
      metadata: { note: "<b>best</b>" }, created_at: "2024-01-01T00:00:00Z", searcher_metric: 0.02,
    },
    "/api/v1/trials/5/metrics": {
      items: [
        { group: "validation", steps_completed: 50, run_id: 1, values: { loss: 0.5 }, reported_at: "", archived: false },
        { group: "validation", steps_completed: 100, run_id: 1, values: { loss: 0.02, accuracy: 0.99 }, reported_at: "", archived: false },
      ],
    },
    [`/api/v1/checkpoints/${CKPT}/lineage`]: {
      checkpoint: { uuid: CKPT, trial_id: 5, steps_completed: 100, state: "COMPLETED", created_at: "", model_versions: [`${MODEL.name}:1`] },
      chain: [], missing_parent: null, experiments: [], trials: [],
    },
    [`DELETE ${PATH}/versions/1`]: new Response(null, { status: 204 }),
  });
}

describe("validationAt", () => {
  it("takes the row at the step, else the last before it", () => {
    const rows = [10, 20, 40].map((s) => ({ group: "validation", steps_completed: s, run_id: 1, values: {}, reported_at: "", archived: false }));
    expect(validationAt(rows, 20)?.steps_completed).toBe(20);
    expect(validationAt(rows, 30)?.steps_completed).toBe(20);
    expect(validationAt(rows, 5)).toBeNull();
  });
});

describe("ModelListPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("lists models with links and searches by name on the master", async () => {
    const { calls } = master("viewer");
    const { container } = renderAt("/models", "/models", <ModelListPage />, { signedIn: true });
    const link = await screen.findByRole("link", { name: "digits <v2>" });
    expect(link).toHaveAttribute("href", `/models/${encodeURIComponent("digits <v2>")}`);
    expect(screen.getByText("<script>alert(1)</script> classifier")).toBeInTheDocument();
    expect(container.querySelector("script")).toBeNull();
    expect(screen.queryByRole("button", { name: "New model" })).toBeNull();
    await userEvent.type(screen.getByLabelText("Search"), "dig");
    await waitFor(() => expect(calls.some((r) => new URL(r.url).searchParams.get("name") === "dig")).toBe(true));
  });
});

describe("ModelPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows a version's checkpoint, metrics at its step and lineage, and deletes it for its owner", async () => {
    const { calls } = master("editor");
    const { container } = renderAt(`/models/${encodeURIComponent(MODEL.name)}/1`, "/models/:name/:version?", <ModelPage />, {
      signedIn: true,
    });
    expect(await screen.findByRole("heading", { level: 1, name: "digits <v2>" })).toBeInTheDocument();
    expect(await screen.findByText("framework=torch")).toBeInTheDocument();
    const detail = screen.getByRole("region", { name: "Version 1" });
    expect(await within(detail).findByText(/Validation at step 100/)).toBeInTheDocument();
    expect(within(detail).getByText("0.99")).toBeInTheDocument();
    expect(within(detail).getByText("4.0 KiB (1.0 KiB stored)")).toBeInTheDocument();
    const graph = await within(detail).findByTestId("lineage-graph");
    expect(within(graph).getByRole("link", { name: "digits <v2> v1" })).toBeInTheDocument();
    expect(container.querySelector("b")).toBeNull();
    expect(await screen.findByRole("link", { name: "research" })).toHaveAttribute("href", "/workspaces/2");

    expect(await screen.findByRole("button", { name: "Delete model" })).toBeInTheDocument();
    vi.spyOn(window, "confirm").mockReturnValue(true);
    await userEvent.click(within(detail).getByRole("button", { name: "Delete version" }));
    await waitFor(() => expect(calls.some((r) => r.method === "DELETE")).toBe(true));
  });

  it("gives an editor who does not own the model no delete buttons", async () => {
    master("editor", "grace");
    renderAt(`/models/${encodeURIComponent(MODEL.name)}/1`, "/models/:name/:version?", <ModelPage />, { signedIn: true });
    await screen.findByRole("heading", { level: 1, name: "digits <v2>" });
    await screen.findByRole("link", { name: "research" }); // the role is known by now
    await screen.findByTestId("lineage-graph");
    expect(screen.queryByRole("button", { name: "Delete model" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Delete version" })).toBeNull();
  });
});
