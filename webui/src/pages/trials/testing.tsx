/** Test helpers for the trial and model pages: a fake master answering by path, and a render
 * wrapped in a fresh query client, a router and (optionally) a signed-in user. */
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactNode } from "react";
import { MemoryRouter, Route, Routes } from "react-router";
import { vi } from "vitest";
import { RequireUser } from "../../auth";

export type Answer = unknown | ((url: URL, request: Request) => unknown);

/** A Response for JSON values; strings pass through as the body (ndjson, NaN tokens). */
function respond(value: unknown): Response {
  if (value instanceof Response) return value;
  if (typeof value === "string") return new Response(value, { status: 200 });
  return new Response(JSON.stringify(value), { status: 200, headers: { "Content-Type": "application/json" } });
}

export function problem(status: number, detail: string): Response {
  return new Response(JSON.stringify({ title: "Problem", status, detail }), {
    status,
    headers: { "Content-Type": "application/problem+json" },
  });
}

/** Stubs fetch: `routes` maps "METHOD /path" (or "/path" for GET) to an answer; anything else is 404. */
export function stubMaster(routes: Record<string, Answer>) {
  const calls: Request[] = [];
  const fetchMock = vi.fn(async (request: Request) => {
    calls.push(request);
    const url = new URL(request.url);
    const plain = request.method === "GET" ? routes[url.pathname] : undefined;
    const answer = routes[`${request.method} ${url.pathname}`] ?? plain;
    if (answer === undefined) return problem(404, `no stub for ${request.method} ${url.pathname}`);
    return respond(typeof answer === "function" ? (answer as (u: URL, r: Request) => unknown)(url, request) : answer);
  });
  vi.stubGlobal("fetch", fetchMock);
  return { fetchMock, calls };
}

export const ME = { id: 1, username: "ada", admin: false, active: true, created_at: "2024-01-01T00:00:00Z" };

/** Renders `element` at `path`, matched by `pattern`; with `signedIn` the page gets a user from /api/v1/me. */
export function renderAt(path: string, pattern: string, element: ReactNode, { signedIn = false } = {}) {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  const page = signedIn ? <RequireUser>{element}</RequireUser> : element;
  return render(
    <QueryClientProvider client={client}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>
          <Route path={pattern} element={page} />
          <Route path="*" element={<p>elsewhere</p>} />
        </Routes>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}
