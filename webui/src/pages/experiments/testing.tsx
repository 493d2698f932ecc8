/** Test helpers for the experiment pages: a stand-in master answering by method and path, and a
 * signed-in render at a URL. Only test files import this. */
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactNode } from "react";
import { MemoryRouter, useLocation } from "react-router";
import { vi } from "vitest";
import { RequireUser } from "../../auth";

export type Handler = (request: Request, url: URL) => unknown | Response | Promise<unknown | Response>;

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": status >= 400 ? "application/problem+json" : "application/json" },
  });
}

export const ME = { id: 1, username: "ada", admin: false, active: true, created_at: "2026-01-01T00:00:00Z" };

export function workspace(role: "viewer" | "editor" | "admin") {
  return [{ id: 7, name: "research", archived: false, created_at: "2026-01-01T00:00:00Z", role }];
}

/** Stubs fetch; `routes` maps "GET /api/v1/..." to an answer (a body, or a Response). Unknown
 * routes answer 404 so a test notices a request it did not expect. */
export function stubApi(routes: Record<string, Handler>) {
  const calls: { method: string; url: URL; body: unknown }[] = [];
  const fetchMock = vi.fn(async (request: Request) => {
    const url = new URL(request.url);
    const text = request.method === "GET" ? "" : await request.clone().text();
    calls.push({ method: request.method, url, body: text ? JSON.parse(text) : null });
    const handler = routes[`${request.method} ${url.pathname}`];
    if (!handler) return json({ title: "Not Found", status: 404, detail: `no stub for ${url.pathname}` }, 404);
    const answer = await handler(request, url);
    return answer instanceof Response ? answer : json(answer);
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}

function LocationProbe() {
  const location = useLocation();
  return <div data-testid="location">{location.pathname + location.search}</div>;
}

export function renderSignedIn(path: string, routes: ReactNode) {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  return render(
    <QueryClientProvider client={client}>
      <MemoryRouter initialEntries={[path]}>
        <RequireUser>
          {routes}
          <LocationProbe />
        </RequireUser>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}
