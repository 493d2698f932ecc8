/** One project: what it is, where it lives, and its experiments. Editors and admins edit it (the
 * master lets an editor change only projects they made; its refusal is shown as it comes). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { useMe } from "../../auth";
import { formatDate } from "../../components/format";
import { ErrorState, QueryView } from "../../components/states";
import { ProjectExperiments } from "./ProjectExperiments";
import { hasRole } from "./roles";

export function ProjectPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isInteger(projectId) && projectId > 0;
  const project = useQuery({
    queryKey: keys.workspaces.project(projectId),
    queryFn: () => unwrap(api.GET("/api/v1/projects/{project_id}", { params: { path: { project_id: projectId } } })),
    enabled: valid,
  });
  if (!valid) return <ErrorState error="No such project." />;
  return (
    <QueryView query={project} what="project">
      {(p) => (
        <>
          <ProjectHeader project={p} />
          <ProjectExperiments projectId={p.id} />
        </>
      )}
    </QueryView>
  );
}

function ProjectHeader({ project }: { project: Schemas["ProjectOut"] }) {
  const me = useMe();
  const client = useQueryClient();
  const workspace = useQuery({
    queryKey: keys.workspaces.detail(project.workspace_id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/workspaces/{workspace_id}", { params: { path: { workspace_id: project.workspace_id } } })),
  });
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(project.name);
  const [description, setDescription] = useState(project.description);
  const patch = useMutation({
    mutationFn: (body: Schemas["ProjectPatch"]) =>
      unwrap(api.PATCH("/api/v1/projects/{project_id}", { params: { path: { project_id: project.id } }, body })),
    onSuccess: async () => {
      setEditing(false);
      await client.invalidateQueries({ queryKey: keys.workspaces.project(project.id) });
      await client.invalidateQueries({ queryKey: keys.workspaces.projects(project.workspace_id) });
    },
  });
  const mayEdit = hasRole(me, workspace.data?.role, "editor");
  const save = (event: FormEvent) => {
    event.preventDefault();
    if (name.trim()) patch.mutate({ name: name.trim(), description });
  };
  return (
    <>
      <div className="page-header">
        <h1>{project.name}</h1>
        {mayEdit && (
          <div className="actions">
            <button
              type="button"
              aria-expanded={editing}
              onClick={() => {
                setName(project.name);
                setDescription(project.description);
                setEditing(!editing);
              }}
            >
              Edit
            </button>
            <button type="button" onClick={() => patch.mutate({ archived: !project.archived })} disabled={patch.isPending}>
              {project.archived ? "Unarchive" : "Archive"}
            </button>
          </div>
        )}
      </div>
      <p className="meta">
        <span>
          Workspace:{" "}
          <Link to={`/workspaces/${project.workspace_id}`}>{workspace.data?.name ?? `#${project.workspace_id}`}</Link>
        </span>
        <span>Created {formatDate(project.created_at)}</span>
        {project.archived && <span className="badge badge-neutral">archived</span>}
      </p>
      {project.description && <p className="project-description">{project.description}</p>}
      {editing && (
        <form className="card project-edit" aria-label="Edit project" onSubmit={save}>
          <label>
            Project name
            <input value={name} onChange={(e) => setName(e.target.value)} maxLength={128} required />
          </label>
          <label>
            Description
            <textarea value={description} onChange={(e) => setDescription(e.target.value)} maxLength={10000} rows={3} />
          </label>
          <div className="actions">
            <button type="submit" className="primary" disabled={patch.isPending || !name.trim()}>
              Save
            </button>
            <button type="button" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      {patch.error && <ErrorState error={patch.error} />}
    </>
  );
}
