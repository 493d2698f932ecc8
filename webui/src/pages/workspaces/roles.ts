/** Workspace roles in the master's order (services/authz.Role): each can do what the ones below can. */
import type { User } from "../../auth";

export const ROLES = ["viewer", "editor", "admin"] as const;

/** Whether `role` (the caller's, as GET /workspaces reports it) is at least `need`; cluster admins
 * are admins everywhere. */
export function hasRole(user: User, role: string | null | undefined, need: (typeof ROLES)[number]): boolean {
  if (user.admin) return true;
  const have = ROLES.indexOf((role ?? "") as (typeof ROLES)[number]);
  return have >= 0 && have >= ROLES.indexOf(need);
}

/** User names the master accepts in a member path (api/workspaces.Username). */
export const USERNAME = /^[A-Za-z0-9._-]{1,128}$/;
