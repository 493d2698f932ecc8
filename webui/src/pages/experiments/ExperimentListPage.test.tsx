import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Route, Routes } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ExperimentListPage } from "./ExperimentListPage";
import { json, ME, renderSignedIn, stubApi, workspace } from "./testing";

function experiment(id: number, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: `exp-${id}`,
    description: "",
    labels: [],
    state: "COMPLETED",
    archived: false,
    owner: "ada",
    project_id: 3,
    project_name: "vision",
    workspace_id: 7,
    workspace_name: "research",
    parent_id: null,
    context_sha256: null,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    ended_at: "2026-01-01T01:00:00Z",
    started_at: "2026-01-01T00:00:00Z",
    duration_seconds: 3600,
    config: {},
    progress: 1,
    trial_count: 4,
    best_metric: 0.125,
    searcher_metric: "val_loss",
    ...extra,
  };
}

const ROWS = [
  experiment(1),
  experiment(2, { name: "<img src=x onerror=alert(1)>", labels: ["<script>x</script>"], state: "ACTIVE", progress: 0.5 }),
  experiment(3, { owner: "grace" }),
];

function renderList(path = "/experiments", role: "viewer" | "editor" = "editor", extra = {}) {
  const calls = stubApi({
    "GET /api/v1/me": () => ME,
    "GET /api/v1/workspaces": () => workspace(role),
    "GET /api/v1/experiments": () => ({ items: ROWS, total: 120, limit: 50, offset: 0 }),
    ...extra,
  });
  renderSignedIn(path, (
    <Routes>
      <Route path="/experiments" element={<ExperimentListPage />} />
    </Routes>
  ));
  return calls;
}

const location = () => screen.getByTestId("location").textContent ?? "";

describe("ExperimentListPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("renders a row per experiment with its summary columns", async () => {
    renderList();
    const row = await screen.findByTestId("experiment-row-1");
    expect(within(row).getByRole("link", { name: "exp-1" })).toHaveAttribute("href", "/experiments/1");
    expect(within(row).getByText("vision")).toBeInTheDocument();
    expect(within(row).getByText("0.125")).toHaveAttribute("title", "val_loss");
    expect(within(row).getByText("1h 0m")).toBeInTheDocument();
    expect(screen.getByTestId("experiment-row-3")).toBeInTheDocument();
    expect(screen.getByText("Showing 1–3 of 120")).toBeInTheDocument();
  });

  it("renders a hostile name and label as text, never as elements", async () => {
    renderList();
    const row = await screen.findByTestId("experiment-row-2");
    expect(within(row).getByRole("link", { name: "<img src=x onerror=alert(1)>" })).toBeInTheDocument();
    expect(within(row).getByText("<script>x</script>")).toBeInTheDocument();
    expect(document.body.querySelector("img")).toBeNull();
    expect(document.body.querySelector("script")).toBeNull();
  });

  it("keeps filters, sort and page in the URL and sends them to the master", async () => {
    const calls = renderList();
    await screen.findByTestId("experiment-row-1");
    await userEvent.selectOptions(screen.getByLabelText("State"), "ACTIVE");
    expect(location()).toBe("/experiments?state=ACTIVE");
    await userEvent.type(screen.getByLabelText("Search"), "resnet");
    await waitFor(() => expect(location()).toBe("/experiments?state=ACTIVE&q=resnet"));
    await userEvent.click(screen.getByRole("button", { name: /^Name/ }));
    expect(location()).toBe("/experiments?state=ACTIVE&q=resnet&sort=name&order=asc");
    expect(screen.getByRole("columnheader", { name: /^Name/ })).toHaveAttribute("aria-sort", "ascending");
    await userEvent.click(screen.getByRole("button", { name: "Next page" }));
    expect(location()).toContain("offset=50");
    await waitFor(() => {
      const last = calls.filter((c) => c.url.pathname === "/api/v1/experiments").at(-1)!.url.searchParams;
      expect(Object.fromEntries(last)).toMatchObject({ state: "ACTIVE", q: "resnet", sort: "name", order: "asc", offset: "50", limit: "50" });
    });
  });

  it("reads its filters back from the URL on load", async () => {
    const calls = renderList("/experiments?owner=grace&label=nlp&sort=best_metric&order=asc");
    await screen.findByTestId("experiment-row-1");
    expect(screen.getByLabelText("Owner")).toHaveValue("grace");
    expect(screen.getByLabelText("Label")).toHaveValue("nlp");
    const sent = calls.find((c) => c.url.pathname === "/api/v1/experiments")!.url.searchParams;
    expect(sent.get("owner")).toBe("grace");
    expect(sent.get("label")).toBe("nlp");
    expect(sent.get("sort")).toBe("best_metric");
  });

  it("offers bulk actions only when every selected experiment may be changed", async () => {
    renderList();
    await userEvent.click(await screen.findByLabelText("Select experiment 1"));
    expect(screen.getByRole("button", { name: "Pause" })).toBeEnabled();
    // Experiment 3 belongs to someone else: an editor may not change it.
    await userEvent.click(screen.getByLabelText("Select experiment 3"));
    expect(screen.getByRole("button", { name: "Pause" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Kill" })).toBeDisabled();
  });

  it("disables bulk actions for a viewer", async () => {
    renderList("/experiments", "viewer");
    await userEvent.click(await screen.findByLabelText("Select experiment 1"));
    for (const name of ["Pause", "Activate", "Cancel", "Kill", "Archive", "Move"]) {
      expect(screen.getByRole("button", { name })).toBeDisabled();
    }
  });

  it("runs a bulk action per experiment and reports each refusal", async () => {
    const calls = renderList("/experiments", "editor", {
      "POST /api/v1/experiments/1/pause": () => experiment(1, { state: "PAUSED" }),
      "POST /api/v1/experiments/2/pause": () =>
        json({ title: "Conflict", status: 409, detail: "cannot pause a COMPLETED experiment" }, 409),
    });
    await userEvent.click(await screen.findByLabelText("Select all experiments on this page"));
    await userEvent.click(screen.getByLabelText("Select experiment 3"));
    await userEvent.click(screen.getByRole("button", { name: "Pause" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("experiment 2: cannot pause a COMPLETED experiment");
    expect(screen.getByRole("status")).toHaveTextContent("Pause: 1 of 2 done.");
    expect(calls.filter((c) => c.method === "POST").map((c) => c.url.pathname)).toEqual([
      "/api/v1/experiments/1/pause",
      "/api/v1/experiments/2/pause",
    ]);
  });
});
