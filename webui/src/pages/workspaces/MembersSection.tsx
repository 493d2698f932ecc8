/** A workspace's members and their roles. Workspace admins and cluster admins change roles, add
 * and remove members (PUT/DELETE /workspaces/{id}/members/{username}); the master refuses to
 * remove the last admin and says so. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, ApiError, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { useMe } from "../../auth";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { hasRole, ROLES, USERNAME } from "./roles";

type Role = (typeof ROLES)[number];

export function MembersSection({ workspace }: { workspace: Schemas["WorkspaceOut"] }) {
  const me = useMe();
  const client = useQueryClient();
  const path = { workspace_id: workspace.id };
  const members = useQuery({
    queryKey: keys.workspaces.members(workspace.id),
    queryFn: () => unwrap(api.GET("/api/v1/workspaces/{workspace_id}/members", { params: { path } })),
  });
  const isAdmin = hasRole(me, workspace.role, "admin");
  const refresh = () => client.invalidateQueries({ queryKey: keys.workspaces.members(workspace.id) });
  const setRole = useMutation({
    mutationFn: ({ username, role }: { username: string; role: Role }) =>
      unwrap(
        api.PUT("/api/v1/workspaces/{workspace_id}/members/{username}", {
          params: { path: { ...path, username } },
          body: { role },
        }),
      ),
    onSettled: refresh,
  });
  const remove = useMutation({
    mutationFn: (username: string) =>
      unwrap(api.DELETE("/api/v1/workspaces/{workspace_id}/members/{username}", { params: { path: { ...path, username } } })),
    onSettled: refresh,
  });

  if (members.error instanceof ApiError && members.error.status === 403) {
    return (
      <p className="state-empty" data-testid="members-hidden">
        Only this workspace&apos;s admins can see its members.
      </p>
    );
  }
  const busy = setRole.isPending || remove.isPending;
  return (
    <section aria-labelledby="members-heading">
      <h2 id="members-heading">Members</h2>
      <QueryView query={members} what="members">
        {(items) =>
          items.length === 0 ? (
            <Empty>No members.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">User</th>
                    <th scope="col">Role</th>
                    {isAdmin && <th scope="col">Actions</th>}
                  </tr>
                </thead>
                <tbody>
                  {items.map((member) => (
                    <tr key={member.username} data-testid={`member-${member.username}`}>
                      <td className="wrap">{member.username}</td>
                      <td>
                        {isAdmin ? (
                          <select
                            aria-label={`Role of ${member.username}`}
                            value={member.role}
                            disabled={busy}
                            onChange={(e) => setRole.mutate({ username: member.username, role: e.target.value as Role })}
                          >
                            {ROLES.map((role) => (
                              <option key={role} value={role}>
                                {role}
                              </option>
                            ))}
                          </select>
                        ) : (
                          member.role
                        )}
                      </td>
                      {isAdmin && (
                        <td>
                          <button
                            type="button"
                            className="danger"
                            disabled={busy}
                            onClick={() => {
                              if (window.confirm(`Remove ${member.username} from ${workspace.name}?`)) {
                                remove.mutate(member.username);
                              }
                            }}
                          >
                            Remove
                          </button>
                        </td>
                      )}
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </QueryView>
      {(setRole.error || remove.error) && <ErrorState error={setRole.error ?? remove.error} />}
      {isAdmin && <AddMemberForm workspaceId={workspace.id} onAdded={refresh} />}
    </section>
  );
}

function AddMemberForm({ workspaceId, onAdded }: { workspaceId: number; onAdded: () => Promise<void> }) {
  const [username, setUsername] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const add = useMutation({
    mutationFn: () =>
      unwrap(
        api.PUT("/api/v1/workspaces/{workspace_id}/members/{username}", {
          params: { path: { workspace_id: workspaceId, username } },
          body: { role },
        }),
      ),
    onSuccess: async () => {
      setUsername("");
      await onAdded();
    },
  });
  const valid = USERNAME.test(username);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (valid) add.mutate();
  };
  return (
    <>
      <h3 id="add-member">Add member</h3>
      <form className="toolbar" aria-labelledby="add-member" onSubmit={submit}>
        <label>
          Username
          <input
            value={username}
            onChange={(e) => setUsername(e.target.value.trim())}
            maxLength={128}
            pattern="[A-Za-z0-9._\-]{1,128}"
            required
            autoComplete="off"
          />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="primary" disabled={add.isPending || !valid}>
          Add member
        </button>
      </form>
      {add.error && <ErrorState error={add.error} />}
    </>
  );
}
