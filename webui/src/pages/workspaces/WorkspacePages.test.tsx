import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RequireUser } from "../../auth";
import { ProjectPage } from "./ProjectPage";
import { WorkspaceListPage } from "./WorkspaceListPage";
import { WorkspacePage } from "./WorkspacePage";

type Handler = (request: Request) => unknown;
type Answer = { status: number; body: unknown };

const me = (admin = false) => ({ id: 1, username: "ada", admin, active: true, created_at: "2026-01-01T00:00:00Z" });
const workspace = (role: string) => ({ id: 3, name: "vision", archived: false, created_at: "2026-01-01T00:00:00Z", role });
const project = {
  id: 7,
  workspace_id: 3,
  name: "resnets",
  description: "<script>alert(1)</script>",
  archived: false,
  created_at: "2026-01-01T00:00:00Z",
};
const forbidden: Answer = { status: 403, body: { title: "Forbidden", status: 403, detail: "no" } };

/** Answers each "METHOD /path" from `routes` (a handler may return an Answer for a non-200). */
function serve(routes: Record<string, Handler>) {
  const calls: Request[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (request: Request) => {
      calls.push(request.clone());
      const handler = routes[`${request.method} ${new URL(request.url).pathname}`];
      if (!handler) return new Response(JSON.stringify({ title: "Not Found", status: 404 }), { status: 404 });
      const result = await handler(request);
      const answer = (result as Answer)?.status ? (result as Answer) : { status: 200, body: result };
      return new Response(JSON.stringify(answer.body), {
        status: answer.status,
        headers: { "Content-Type": answer.status < 400 ? "application/json" : "application/problem+json" },
      });
    }),
  );
  return calls;
}

function renderAt(url: string) {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(
    <QueryClientProvider client={client}>
      <MemoryRouter initialEntries={[url]}>
        <RequireUser>
          <Routes>
            <Route path="/workspaces" element={<WorkspaceListPage />} />
            <Route path="/workspaces/:workspaceId" element={<WorkspacePage />} />
            <Route path="/projects/:projectId" element={<ProjectPage />} />
          </Routes>
        </RequireUser>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

describe("WorkspaceListPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("lists the user's workspaces with their role and opens a new one once created", async () => {
    const created: unknown[] = [];
    serve({
      "GET /api/v1/me": () => me(),
      "GET /api/v1/workspaces": () => [{ ...workspace("editor"), id: 1, name: "Uncategorized" }],
      "POST /api/v1/workspaces": async (request) => {
        created.push(await request.json());
        return { status: 201, body: workspace("admin") };
      },
      "GET /api/v1/workspaces/3": () => workspace("admin"),
      "GET /api/v1/workspaces/3/projects": () => [],
      "GET /api/v1/workspaces/3/members": () => [{ username: "ada", role: "admin" }],
    });
    renderAt("/workspaces");
    const row = (await screen.findByRole("link", { name: "Uncategorized" })).closest("tr")!;
    expect(within(row).getByText("editor")).toBeInTheDocument();
    const form = screen.getByRole("form", { name: "New workspace" });
    await userEvent.type(within(form).getByLabelText("Workspace name"), "vision");
    await userEvent.click(within(form).getByRole("button", { name: "Create workspace" }));
    expect(await screen.findByRole("heading", { name: "vision" })).toBeInTheDocument();
    expect(created).toEqual([{ name: "vision" }]);
  });
});

describe("WorkspacePage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("hides the members section with a note when the master refuses the list", async () => {
    serve({
      "GET /api/v1/me": () => me(),
      "GET /api/v1/workspaces/3": () => workspace("viewer"),
      "GET /api/v1/workspaces/3/projects": () => [project],
      "GET /api/v1/workspaces/3/members": () => forbidden,
    });
    renderAt("/workspaces/3");
    expect(await screen.findByRole("heading", { name: "vision" })).toBeInTheDocument();
    expect(await screen.findByTestId("members-hidden")).toBeInTheDocument();
    expect(screen.queryByRole("heading", { name: "Members" })).toBeNull();
    expect(await screen.findByRole("link", { name: "resnets" })).toHaveAttribute("href", "/projects/7");
    // Viewers create nothing and manage nobody.
    expect(screen.queryByRole("button", { name: "Create project" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Rename" })).toBeNull();
  });

  it("lets a workspace admin change a member's role and add a member", async () => {
    const puts: { path: string; body: unknown }[] = [];
    const put: Handler = async (request) => {
      const body = await request.json();
      puts.push({ path: new URL(request.url).pathname, body });
      return { username: "bob", ...(body as object) };
    };
    serve({
      "GET /api/v1/me": () => me(),
      "GET /api/v1/workspaces/3": () => workspace("admin"),
      "GET /api/v1/workspaces/3/projects": () => [],
      "GET /api/v1/workspaces/3/members": () => [
        { username: "ada", role: "admin" },
        { username: "bob", role: "viewer" },
      ],
      "PUT /api/v1/workspaces/3/members/bob": put,
      "PUT /api/v1/workspaces/3/members/cy": put,
    });
    renderAt("/workspaces/3");
    await userEvent.selectOptions(await screen.findByRole("combobox", { name: "Role of bob" }), "editor");
    await vi.waitFor(() => expect(puts).toEqual([{ path: "/api/v1/workspaces/3/members/bob", body: { role: "editor" } }]));
    const form = screen.getByRole("form", { name: "Add member" });
    await userEvent.type(within(form).getByLabelText("Username"), "cy");
    await userEvent.selectOptions(within(form).getByLabelText("Role"), "admin");
    await userEvent.click(within(form).getByRole("button", { name: "Add member" }));
    await vi.waitFor(() => expect(puts[1]).toEqual({ path: "/api/v1/workspaces/3/members/cy", body: { role: "admin" } }));
    expect(screen.getByRole("button", { name: "Create project" })).toBeInTheDocument();
  });
});

describe("ProjectPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("lists the project's experiments 50 to a page and pages on", async () => {
    const experiment = (id: number) => ({
      id,
      name: `exp-${id}`,
      state: id === 1 ? "ACTIVE" : "COMPLETED",
      owner: "ada",
      project_id: 7,
      labels: [],
      archived: false,
      description: "",
      config: {},
      context_sha256: null,
      parent_id: null,
      created_at: "2026-01-01T00:00:00Z",
      updated_at: "2026-01-01T00:00:00Z",
      ended_at: null,
    });
    const queries: URLSearchParams[] = [];
    serve({
      "GET /api/v1/me": () => me(),
      "GET /api/v1/projects/7": () => project,
      "GET /api/v1/workspaces/3": () => workspace("viewer"),
      "GET /api/v1/experiments": (request) => {
        const query = new URL(request.url).searchParams;
        queries.push(query);
        const offset = Number(query.get("offset"));
        const ids = Array.from({ length: offset ? 10 : 50 }, (_, i) => offset + i + 1);
        return { items: ids.map(experiment), total: 60, limit: 50, offset };
      },
    });
    renderAt("/projects/7");
    expect(await screen.findByRole("heading", { name: "resnets" })).toBeInTheDocument();
    // The description is user input: text, never markup.
    expect(screen.getByText(project.description)).toBeInTheDocument();
    expect(document.querySelector("script")).toBeNull();
    expect(await screen.findByRole("link", { name: "vision" })).toHaveAttribute("href", "/workspaces/3");
    const table = await screen.findByTestId("project-experiments");
    expect(within(table).getByRole("link", { name: "exp-1" })).toHaveAttribute("href", "/experiments/1");
    expect(within(table).getByText("ACTIVE")).toBeInTheDocument();
    expect(within(table).getAllByRole("row")).toHaveLength(51);
    expect(queries[0].get("project_id")).toBe("7");
    expect(queries[0].get("limit")).toBe("50");
    expect(screen.getByRole("button", { name: "Previous page" })).toBeDisabled();
    expect(screen.queryByRole("button", { name: "Edit" })).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "Next page" }));
    expect(await within(table).findByRole("link", { name: "exp-60" })).toBeInTheDocument();
    expect(queries.at(-1)?.get("offset")).toBe("50");
    expect(screen.getByRole("button", { name: "Next page" })).toBeDisabled();
  });
});
