/** The frame around every signed-in page: skip link, navigation, the user's menu. */
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { NavLink, Outlet, useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { useMe } from "../auth";

const SECTIONS = [
  { to: "/experiments", label: "Experiments" },
  { to: "/models", label: "Models" },
  { to: "/workspaces", label: "Workspaces" },
  { to: "/cluster", label: "Cluster" },
];

export function Layout() {
  const me = useMe();
  const client = useQueryClient();
  const navigate = useNavigate();
  const signOut = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/auth/logout")),
    onSettled: () => {
      client.clear();
      navigate("/sign-in", { replace: true });
    },
  });
  return (
    <div className="app">
      <a
        className="skip-link"
        href="#main"
        onClick={(event) => {
          // Focus, not only scroll: the next Tab then starts inside the page.
          event.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header className="topbar">
        <NavLink to="/experiments" className="brand" aria-label="Stalwart home">
          Stalwart
        </NavLink>
        <nav aria-label="Main" className="mainnav">
          {SECTIONS.map((section) => (
            <NavLink key={section.to} to={section.to}>
              {section.label}
            </NavLink>
          ))}
        </nav>
        <div className="usermenu">
          <span className="username" title={me.admin ? "cluster admin" : undefined}>
            {me.username}
            {me.admin ? " (admin)" : ""}
          </span>
          <button type="button" onClick={() => signOut.mutate()} disabled={signOut.isPending}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
