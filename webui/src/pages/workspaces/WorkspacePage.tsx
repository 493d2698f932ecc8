/** One workspace: who you are in it, its projects and its members; admins rename and archive it. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useParams } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { useMe } from "../../auth";
import { formatDate } from "../../components/format";
import { ErrorState, QueryView } from "../../components/states";
import { MembersSection } from "./MembersSection";
import { ProjectsSection } from "./ProjectsSection";
import { hasRole } from "./roles";

export function WorkspacePage() {
  const workspaceId = Number(useParams().workspaceId);
  const workspace = useQuery({
    queryKey: keys.workspaces.detail(workspaceId),
    queryFn: () => unwrap(api.GET("/api/v1/workspaces/{workspace_id}", { params: { path: { workspace_id: workspaceId } } })),
    enabled: Number.isInteger(workspaceId) && workspaceId > 0,
  });
  if (!Number.isInteger(workspaceId) || workspaceId <= 0) return <ErrorState error="No such workspace." />;
  return (
    <QueryView query={workspace} what="workspace">
      {(ws) => (
        <>
          <WorkspaceHeader workspace={ws} />
          <ProjectsSection workspace={ws} />
          <MembersSection workspace={ws} />
        </>
      )}
    </QueryView>
  );
}

function WorkspaceHeader({ workspace }: { workspace: Schemas["WorkspaceOut"] }) {
  const me = useMe();
  const client = useQueryClient();
  const isAdmin = hasRole(me, workspace.role, "admin");
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(workspace.name);
  const patch = useMutation({
    mutationFn: (body: Schemas["WorkspacePatch"]) =>
      unwrap(api.PATCH("/api/v1/workspaces/{workspace_id}", { params: { path: { workspace_id: workspace.id } }, body })),
    onSuccess: async () => {
      setRenaming(false);
      // The list, this page and useWorkspaceRoles all hang under ["workspaces"].
      await client.invalidateQueries({ queryKey: keys.workspaces.all });
    },
  });
  const rename = (event: FormEvent) => {
    event.preventDefault();
    if (name.trim()) patch.mutate({ name: name.trim() });
  };
  return (
    <>
      <div className="page-header">
        <h1>{workspace.name}</h1>
        {isAdmin && (
          <div className="actions">
            <button
              type="button"
              onClick={() => {
                setName(workspace.name);
                setRenaming(!renaming);
              }}
              aria-expanded={renaming}
            >
              Rename
            </button>
            <button type="button" onClick={() => patch.mutate({ archived: !workspace.archived })} disabled={patch.isPending}>
              {workspace.archived ? "Unarchive" : "Archive"}
            </button>
          </div>
        )}
      </div>
      <p className="meta">
        <span>
          Your role: <strong>{workspace.role ?? "none"}</strong>
        </span>
        <span>Created {formatDate(workspace.created_at)}</span>
        {workspace.archived && <span className="badge badge-neutral">archived</span>}
      </p>
      {renaming && (
        <form className="toolbar" aria-label="Rename workspace" onSubmit={rename}>
          <label>
            Workspace name
            <input value={name} onChange={(e) => setName(e.target.value)} maxLength={128} required />
          </label>
          <button type="submit" className="primary" disabled={patch.isPending || !name.trim()}>
            Save
          </button>
          <button type="button" onClick={() => setRenaming(false)}>
            Cancel
          </button>
        </form>
      )}
      {patch.error && <ErrorState error={patch.error} />}
    </>
  );
}
