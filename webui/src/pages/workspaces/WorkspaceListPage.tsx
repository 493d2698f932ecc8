/** The workspaces the user has a role in, and a form to make a new one (any signed-in user may:
 * api/workspaces.create_workspace makes them its admin). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { formatDate } from "../../components/format";

export function WorkspaceListPage() {
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
  });
  return (
    <>
      <div className="page-header">
        <h1>Workspaces</h1>
      </div>
      <QueryView query={workspaces} what="workspaces">
        {(items) =>
          items.length === 0 ? (
            <Empty>You have no role in any workspace yet.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Your role</th>
                    <th scope="col">Archived</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {items.map((ws) => (
                    <tr key={ws.id}>
                      <td className="wrap">
                        <Link to={`/workspaces/${ws.id}`}>{ws.name}</Link>
                      </td>
                      <td>{ws.role ?? "—"}</td>
                      <td>{ws.archived ? "archived" : "no"}</td>
                      <td>{formatDate(ws.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </QueryView>
      <NewWorkspaceForm />
    </>
  );
}

function NewWorkspaceForm() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [name, setName] = useState("");
  const create = useMutation({
    mutationFn: (body: { name: string }) => unwrap(api.POST("/api/v1/workspaces", { body })),
    onSuccess: async (workspace) => {
      setName("");
      await client.invalidateQueries({ queryKey: keys.workspaces.all });
      navigate(`/workspaces/${workspace.id}`);
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (name.trim()) create.mutate({ name: name.trim() });
  };
  return (
    <section aria-labelledby="new-workspace">
      <h2 id="new-workspace">New workspace</h2>
      <form className="toolbar" aria-label="New workspace" onSubmit={submit}>
        <label>
          Workspace name
          <input value={name} onChange={(e) => setName(e.target.value)} maxLength={128} required />
        </label>
        <button type="submit" className="primary" disabled={create.isPending || !name.trim()}>
          Create workspace
        </button>
      </form>
      {create.error && <ErrorState error={create.error} />}
    </section>
  );
}
