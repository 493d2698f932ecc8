import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RequireUser } from "../../auth";
import { ClusterPage } from "./ClusterPage";

type Handler = (request: Request) => unknown;

const user = (admin: boolean) => ({ id: 1, username: "ada", admin, active: true, created_at: "2026-01-01T00:00:00Z" });
const agent = {
  id: "gpu-node-3",
  resource_pool: "default",
  version: "0.1.0",
  enabled: true,
  draining: false,
  connected: true,
  registered_at: "2026-01-01T00:00:00Z",
  last_seen_at: "2026-01-01T00:00:05Z",
};
const slot = (index: number, trialId: number | null) => ({
  agent_id: "gpu-node-3",
  index,
  type: "cpu",
  uuid: `cpu-${index}`,
  name: "",
  memory_mb: 0,
  allocation_id: trialId == null ? null : `alloc-${trialId}`,
  trial_id: trialId,
});
const pool = { name: "default", agents: 1, slots_total: 2, slots_used: 1, slots_free: 1, preemption: true };

/** Answers each "METHOD /path" from `routes`; anything else fails the test loudly. */
function serve(routes: Record<string, Handler>) {
  const calls: Request[] = [];
  const fetchMock = vi.fn(async (request: Request) => {
    calls.push(request.clone());
    const handler = routes[`${request.method} ${new URL(request.url).pathname}`];
    if (!handler) return new Response(JSON.stringify({ title: "Not Found", status: 404 }), { status: 404 });
    return new Response(JSON.stringify(await handler(request)), { headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}

function baseRoutes(admin: boolean, overrides: Record<string, Handler> = {}): Record<string, Handler> {
  return {
    "GET /api/v1/me": () => user(admin),
    "GET /api/v1/agents": () => [agent],
    "GET /api/v1/slots": () => [slot(0, 12), slot(1, null)],
    "GET /api/v1/resource-pools": () => [pool],
    "GET /api/v1/job-queues": () => [],
    ...overrides,
  };
}

function renderCluster() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(
    <QueryClientProvider client={client}>
      <MemoryRouter initialEntries={["/cluster"]}>
        <RequireUser>
          <Routes>
            <Route path="/cluster" element={<ClusterPage />} />
          </Routes>
        </RequireUser>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

describe("ClusterPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows each agent's slots and which trial holds the busy one", async () => {
    serve(baseRoutes(false));
    renderCluster();
    const row = await screen.findByTestId("agent-gpu-node-3");
    const busy = await within(row).findByRole("link", { name: "slot 0 (cpu): trial 12" });
    expect(busy).toHaveAttribute("href", "/trials/12");
    expect(within(row).getByRole("img", { name: "slot 1 (cpu): free" })).toBeInTheDocument();
    expect(await screen.findByRole("meter", { name: "Slots used in default" })).toHaveAttribute("aria-valuenow", "1");
  });

  it("gives non-admins no agent controls", async () => {
    serve(baseRoutes(false));
    renderCluster();
    const row = await screen.findByTestId("agent-gpu-node-3");
    await within(row).findByRole("link", { name: "slot 0 (cpu): trial 12" });
    for (const name of ["Enable", "Disable", "Drain"]) {
      expect(screen.queryByRole("button", { name })).toBeNull();
    }
  });

  it("lets a cluster admin drain an agent with disable {drain: true}", async () => {
    const bodies: unknown[] = [];
    serve(
      baseRoutes(true, {
        "POST /api/v1/agents/gpu-node-3/disable": async (request) => {
          bodies.push(await request.json());
          return { ...agent, enabled: false, draining: true };
        },
      }),
    );
    renderCluster();
    const row = await screen.findByTestId("agent-gpu-node-3");
    expect(within(row).getByRole("button", { name: "Enable" })).toBeDisabled();
    await userEvent.click(within(row).getByRole("button", { name: "Drain" }));
    await vi.waitFor(() => expect(bodies).toEqual([{ drain: true }]));
  });

  it("shows queue entries the user cannot see as hidden, without links", async () => {
    const entry = {
      allocation_id: "a1",
      trial_id: 12,
      experiment_id: 4,
      experiment_name: "<img src=x onerror=alert(1)>",
      owner: "ada",
      state: "RUNNING",
      priority: 42,
      resource_pool: "default",
      slots: 1,
      queued_at: "2026-01-01T00:00:00Z",
      started_at: "2026-01-01T00:01:30Z",
    };
    const hidden = { ...entry, allocation_id: "a2", trial_id: null, experiment_id: null, experiment_name: null, owner: null, state: "QUEUED", started_at: null };
    serve(baseRoutes(false, { "GET /api/v1/job-queues": () => [{ ...entry, position: 1 }, { ...hidden, position: 2 }] }));
    renderCluster();
    const queue = await screen.findByTestId("queue");
    const first = await within(queue).findByTestId("queue-a1");
    const experiment = within(first).getByRole("link", { name: entry.experiment_name });
    expect(experiment).toHaveAttribute("href", "/experiments/4");
    expect(first.querySelector("img")).toBeNull();
    expect(within(first).getByRole("link", { name: "Trial 12" })).toHaveAttribute("href", "/trials/12");
    expect(within(first).getByText("1m 30s")).toBeInTheDocument();
    const second = within(queue).getByTestId("queue-a2");
    expect(within(second).getAllByText("hidden")).toHaveLength(3);
    expect(within(second).queryByRole("link")).toBeNull();
  });

  it("tells how to start an agent when none has registered, and says the queue is empty", async () => {
    serve(baseRoutes(false, { "GET /api/v1/agents": () => [], "GET /api/v1/slots": () => [], "GET /api/v1/resource-pools": () => [] }));
    renderCluster();
    expect(await screen.findByText(/No agents have registered/)).toHaveTextContent("stalwart-agent --master");
    expect(await within(screen.getByTestId("queue")).findByText(/The queue is empty/)).toBeInTheDocument();
  });
});
