/** Who is signed in, and whether they may change a thing in a workspace. */
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { createContext, useContext, useEffect, type ReactNode } from "react";
import { useLocation, useNavigate } from "react-router";
import { api, ApiError, onSessionEnded, unwrap, type Schemas } from "./api/client";
import { keys } from "./api/keys";

export type User = Schemas["UserOut"];
export type Role = "viewer" | "editor" | "admin";

const UserContext = createContext<User | null>(null);

export function useMe(): User {
  const user = useContext(UserContext);
  if (!user) throw new Error("useMe outside a signed-in page");
  return user;
}

/** Loads /me once; any 401 (now or later) sends the browser to sign-in, remembering where it was. */
export function RequireUser({ children }: { children: ReactNode }) {
  const navigate = useNavigate();
  const location = useLocation();
  const client = useQueryClient();
  const me = useQuery({
    queryKey: keys.me,
    queryFn: () => unwrap(api.GET("/api/v1/me")),
    retry: false,
    staleTime: 60_000,
  });
  useEffect(
    () =>
      onSessionEnded(() => {
        client.clear();
        navigate(`/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
      }),
    [client, navigate, location],
  );
  useEffect(() => {
    if (me.error instanceof ApiError && me.error.status === 401) {
      navigate(`/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
    }
  }, [me.error, navigate, location]);
  if (me.isPending) return <p className="state-loading" role="status">Loading…</p>;
  if (me.error) {
    return me.error instanceof ApiError && me.error.status === 401 ? null : (
      <p className="state-error" role="alert">
        Cannot reach the master: {me.error.message}
      </p>
    );
  }
  return <UserContext.Provider value={me.data}>{children}</UserContext.Provider>;
}

/** The master's rule (services/authz.require_change): workspace admins change anything inside,
 * editors change what they own, viewers change nothing. Cluster admins are admins everywhere. */
export function canChange(user: User, role: string | null | undefined, owner: string | null | undefined): boolean {
  if (user.admin || role === "admin") return true;
  return role === "editor" && owner === user.username;
}

/** The caller's role in each workspace they can see (from GET /workspaces). */
export function useWorkspaceRoles(): Map<number, Role> {
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
    staleTime: 30_000,
  });
  const roles = new Map<number, Role>();
  for (const ws of workspaces.data ?? []) if (ws.role) roles.set(ws.id, ws.role as Role);
  return roles;
}
