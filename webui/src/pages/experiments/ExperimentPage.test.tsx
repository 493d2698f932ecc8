import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Route, Routes } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ExperimentPage } from "./ExperimentPage";
import { ME, renderSignedIn, stubApi, workspace, type Handler } from "./testing";

// uPlot needs a real canvas; a stand-in shows what the page handed the chart.
vi.mock("../../components/MetricChart", () => ({
  MetricChart: ({ title, series }: { title: string; series: { x: number[] }[] }) => (
    <figure>
      <figcaption>{title}</figcaption>
      <div data-testid="metric-chart" data-points={series.reduce((sum, s) => sum + s.x.length, 0)} />
    </figure>
  ),
}));

const DETAIL = {
  id: 5,
  name: "<img src=x onerror=alert(1)>",
  description: "a <b>bold</b> claim",
  labels: ["<script>x</script>", "nlp"],
  state: "ACTIVE",
  archived: false,
  owner: "ada",
  project_id: 3,
  parent_id: null,
  context_sha256: "ab".repeat(32),
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  ended_at: null,
  config: { searcher: { name: "random", metric: "val_loss", smaller_is_better: true } },
  original_config: "name: x\nsearcher:\n  metric: val_loss\n",
};

function trial(id: number, hparams: Record<string, unknown>, metric: number | null) {
  return {
    id,
    experiment_id: 5,
    request_id: `r${id}`,
    hparams,
    seed: 1,
    state: "COMPLETED",
    restarts: 0,
    run_id: 1,
    steps_completed: 100,
    progress: 1,
    latest_checkpoint: null,
    warm_start_checkpoint: null,
    best_validation: metric,
    searcher_metric_value: metric,
    latest_validation: metric == null ? null : { val_loss: metric },
    latest_training: { loss: 1 },
    end_reason: "",
    created_at: "2026-01-01T00:00:00Z",
    ended_at: null,
  };
}

function renderPage(path: string, role: "viewer" | "editor", routes: Record<string, Handler> = {}) {
  const calls = stubApi({
    "GET /api/v1/me": () => ME,
    "GET /api/v1/workspaces": () => workspace(role),
    "GET /api/v1/experiments/5": () => DETAIL,
    "GET /api/v1/projects/3": () => ({ id: 3, workspace_id: 7, name: "vision", description: "", archived: false, created_at: "2026-01-01T00:00:00Z" }),
    "GET /api/v1/experiments/5/trials": () => [trial(11, { lr: 0.1 }, 0.5), trial(12, { lr: 0.01 }, 0.25)],
    "GET /api/v1/trials/11/metrics": () => ({ items: [], downsampled: false, total: 0 }),
    "GET /api/v1/trials/12/metrics": () => ({ items: [], downsampled: false, total: 0 }),
    ...routes,
  });
  renderSignedIn(path, (
    <Routes>
      <Route path="/experiments/:experimentId/:tab?" element={<ExperimentPage />} />
    </Routes>
  ));
  return calls;
}

const ACTIONS = ["Pause", "Activate", "Cancel", "Kill", "Archive", "Edit"];

describe("ExperimentPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("renders a hostile name, description and label as text", async () => {
    renderPage("/experiments/5", "viewer");
    expect(await screen.findByRole("heading", { level: 1 })).toHaveTextContent("<img src=x onerror=alert(1)>");
    expect(screen.getByText("<script>x</script>")).toBeInTheDocument();
    expect(screen.getByText("a <b>bold</b> claim")).toBeInTheDocument();
    expect(document.body.querySelector("img, script, b")).toBeNull();
  });

  it("shows no actions to a viewer", async () => {
    const calls = renderPage("/experiments/5", "viewer");
    await screen.findByRole("heading", { level: 1 });
    await screen.findByRole("link", { name: "vision" });
    await waitFor(() => expect(calls.some((c) => c.url.pathname === "/api/v1/workspaces")).toBe(true));
    for (const name of ACTIONS) expect(screen.queryByRole("button", { name })).toBeNull();
  });

  it("shows the actions to the owner, an editor, enabled by state", async () => {
    renderPage("/experiments/5", "editor");
    await waitFor(() => expect(screen.getByRole("button", { name: "Pause" })).toBeInTheDocument());
    for (const name of ACTIONS) expect(screen.getByRole("button", { name })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Pause" })).toBeEnabled();
    expect(screen.getByRole("button", { name: "Activate" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Archive" })).toBeDisabled();
  });

  it("asks before killing and then posts the kill", async () => {
    const calls = renderPage("/experiments/5", "editor", {
      "POST /api/v1/experiments/5/kill": () => ({ ...DETAIL, state: "STOPPING_KILLED" }),
    });
    const confirm = vi.fn(() => false);
    vi.stubGlobal("confirm", confirm);
    await userEvent.click(await screen.findByRole("button", { name: "Kill" }));
    expect(confirm).toHaveBeenCalledOnce();
    expect(calls.some((c) => c.method === "POST")).toBe(false);
    confirm.mockReturnValue(true);
    await userEvent.click(screen.getByRole("button", { name: "Kill" }));
    await waitFor(() => expect(calls.some((c) => c.method === "POST" && c.url.pathname.endsWith("/kill"))).toBe(true));
  });

  it("edits name, description and labels with one PATCH", async () => {
    const calls = renderPage("/experiments/5", "editor", {
      "PATCH /api/v1/experiments/5": () => DETAIL,
    });
    await userEvent.click(await screen.findByRole("button", { name: "Edit" }));
    const form = screen.getByRole("form", { name: "Edit experiment" });
    const name = within(form).getByLabelText("Name");
    await userEvent.clear(name);
    await userEvent.type(name, "better name");
    const labels = within(form).getByLabelText("Labels (comma-separated)");
    await userEvent.clear(labels);
    await userEvent.type(labels, "a, b ,, a");
    await userEvent.click(within(form).getByRole("button", { name: "Save" }));
    await waitFor(() => expect(calls.find((c) => c.method === "PATCH")?.body).toEqual({
      name: "better name",
      description: "a <b>bold</b> claim",
      labels: ["a", "b"],
    }));
  });

  it("shows a context file's text and marks binary files", async () => {
    renderPage("/experiments/5/code", "viewer", {
      "GET /api/v1/experiments/5/context": () => ({
        files: [
          { path: "model_def.py", size: 30 },
          { path: "data/weights.bin", size: 2048 },
        ],
      }),
      "GET /api/v1/experiments/5/context/file": (_request, url) =>
        url.searchParams.get("path") === "model_def.py"
          ? { path: "model_def.py", size: 30, binary: false, truncated: false, text: "print('<b>hi</b>')\n" }
          : { path: "data/weights.bin", size: 2048, binary: true, truncated: false, text: null },
    });
    const tree = await screen.findByRole("navigation", { name: "Files" });
    expect(within(tree).getByText("data/")).toBeInTheDocument();
    await userEvent.click(within(tree).getByRole("button", { name: "model_def.py" }));
    expect(await screen.findByTestId("code-viewer")).toHaveTextContent("print('<b>hi</b>')");
    expect(document.body.querySelector("pre b")).toBeNull();
    await userEvent.click(within(tree).getByRole("button", { name: "weights.bin" }));
    expect(await screen.findByText("Binary file (2048 bytes), not shown")).toBeInTheDocument();
    expect(screen.queryByTestId("code-viewer")).toBeNull();
  });

  it("says so when the experiment has no code", async () => {
    renderPage("/experiments/5/code", "viewer", {
      "GET /api/v1/experiments/5": () => ({ ...DETAIL, context_sha256: null }),
    });
    expect(await screen.findByText("This experiment was submitted without code.")).toBeInTheDocument();
  });

  it("lists trials with hyperparameter columns and compares the ticked ones", async () => {
    const calls = renderPage("/experiments/5/trials", "viewer");
    const row = await screen.findByTestId("trial-row-12");
    expect(within(row).getByRole("link", { name: "12" })).toHaveAttribute("href", "/trials/12");
    expect(screen.getByRole("columnheader", { name: "lr" })).toBeInTheDocument();
    await userEvent.click(screen.getByLabelText("Compare trial 11"));
    await userEvent.click(screen.getByLabelText("Compare trial 12"));
    expect(screen.getByRole("heading", { name: "Compare" })).toBeInTheDocument();
    await userEvent.selectOptions(screen.getByLabelText("Metric"), "training/loss");
    await waitFor(() => {
      const sent = calls.filter((c) => c.url.pathname === "/api/v1/trials/12/metrics").at(-1)!.url.searchParams;
      expect(sent.get("group")).toBe("training");
      expect(sent.getAll("metric")).toEqual(["loss"]);
    });
  });

  it("charts the best trials and the best value so far", async () => {
    const series: Record<string, [number, number][]> = {
      "11": [[10, 0.9], [20, 0.5]],
      "12": [[10, 0.6], [30, 0.25]],
    };
    const metrics: Handler = (_request, url) => {
      const trialId = url.pathname.split("/")[4];
      const group = url.searchParams.get("group");
      const metric = url.searchParams.get("metric")!;
      const rows = group === "validation" ? series[trialId] : [[5, 2]];
      const items = rows.map(([step, value]) => ({ group, steps_completed: step, run_id: 1, values: { [metric]: value }, reported_at: "", archived: false }));
      // The master writes NaN as a bare token.
      return new Response(JSON.stringify({ items, downsampled: false, total: items.length }).replace('"archived":false}]', '"archived":false,"x":NaN}]'), {
        headers: { "Content-Type": "application/json" },
      });
    };
    const calls = renderPage("/experiments/5", "viewer", {
      "GET /api/v1/trials/11/metrics": metrics,
      "GET /api/v1/trials/12/metrics": metrics,
    });
    expect(await screen.findByText(/Best val_loss so far:/)).toHaveTextContent(
      "Best val_loss so far: 0.25 (trial 12, step 30; smaller is better)",
    );
    expect(screen.getByRole("link", { name: "trial 12" })).toHaveAttribute("href", "/trials/12");
    const charts = screen.getAllByTestId("metric-chart").map((chart) => chart.getAttribute("data-points"));
    expect(charts).toEqual(["4", "2", "3"]);
    const sent = calls.find((c) => c.url.pathname === "/api/v1/trials/12/metrics")!.url.searchParams;
    expect(sent.get("max_points")).toBe("1000");
    expect(sent.getAll("metric")).toEqual(["val_loss"]);
  });

  it("shows the config as submitted and with defaults, as text", async () => {
    renderPage("/experiments/5/config", "viewer");
    expect(await screen.findByTestId("config-submitted")).toHaveTextContent("metric: val_loss");
    expect(screen.getByTestId("config-defaults")).toHaveTextContent('"smaller_is_better": true');
  });

  it("registers a checkpoint as a new model's version and deletes one after asking", async () => {
    const uuid = "0d3c1a52-0000-4000-8000-000000000001";
    const calls = renderPage("/experiments/5/checkpoints", "editor", {
      "GET /api/v1/experiments/5/checkpoints": () => [
        {
          uuid,
          trial_id: 12,
          allocation_id: null,
          steps_completed: 30,
          state: "COMPLETED",
          storage: {},
          manifest: {},
          metadata: {},
          size: 2048,
          stored_size: 1024,
          parent_uuid: null,
          created_at: "2026-01-01T00:00:00Z",
          searcher_metric: 0.25,
          model_versions: [],
        },
      ],
      "GET /api/v1/models": () => ({ items: [], total: 0, limit: 1000, offset: 0 }),
      "POST /api/v1/models": () => ({ id: 1, name: "best" }),
      "POST /api/v1/models/best/versions": () => ({ model: "best", version: 1, checkpoint_uuid: uuid }),
      [`DELETE /api/v1/checkpoints/${uuid}`]: () => ({}),
    });
    const row = await screen.findByTestId(`checkpoint-row-${uuid}`);
    expect(within(row).getByText("0d3c1a52")).toHaveAttribute("title", uuid);
    expect(within(row).getByRole("link", { name: "trial 12" })).toHaveAttribute("href", "/trials/12/checkpoints");
    expect(within(row).getByText("0.25")).toBeInTheDocument();
    await userEvent.click(within(row).getByRole("button", { name: "Register" }));
    await userEvent.type(await screen.findByLabelText("New model name"), "best");
    await userEvent.click(screen.getByRole("button", { name: "Register version" }));
    expect(await screen.findByRole("link", { name: "best version 1" })).toHaveAttribute("href", "/models/best/1");
    const posts = calls.filter((c) => c.method === "POST");
    expect(posts.map((c) => [c.url.pathname, c.body])).toEqual([
      ["/api/v1/models", { name: "best", description: "", project_id: 3 }],
      ["/api/v1/models/best/versions", { checkpoint_uuid: uuid, comment: "" }],
    ]);
    vi.stubGlobal("confirm", vi.fn(() => true));
    await userEvent.click(within(row).getByRole("button", { name: "Delete" }));
    await waitFor(() => expect(calls.some((c) => c.method === "DELETE")).toBe(true));
  });
});
