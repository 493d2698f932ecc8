import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { safeNext, SignInPage } from "./SignInPage";

describe("safeNext", () => {
  it("keeps same-site paths and refuses anything that could leave the site", () => {
    expect(safeNext("/experiments/3")).toBe("/experiments/3");
    expect(safeNext("//evil.example")).toBe("/experiments");
    expect(safeNext("https://evil.example")).toBe("/experiments");
    expect(safeNext(null)).toBe("/experiments");
  });
});

describe("SignInPage", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("asks for a cookie session and shows the master's refusal as text", async () => {
    const fetchMock = vi.fn(async (request: Request) => {
      const body = await request.json();
      expect(body).toEqual({ username: "ada", password: "wrong-password", cookie: true });
      return new Response(JSON.stringify({ title: "Unauthorized", status: 401, detail: "<b>bad</b> credentials" }), {
        status: 401,
        headers: { "Content-Type": "application/problem+json" },
      });
    });
    vi.stubGlobal("fetch", fetchMock);
    render(
      <QueryClientProvider client={new QueryClient()}>
        <MemoryRouter initialEntries={["/sign-in"]}>
          <Routes>
            <Route path="/sign-in" element={<SignInPage />} />
          </Routes>
        </MemoryRouter>
      </QueryClientProvider>,
    );
    await userEvent.type(screen.getByLabelText("User name"), "ada");
    await userEvent.type(screen.getByLabelText("Password"), "wrong-password");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toBe("<b>bad</b> credentials");
    expect(alert.querySelector("b")).toBeNull();
  });
});
