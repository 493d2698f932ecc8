/** A workspace's projects; editors and admins create new ones (api/workspaces.create_project needs
 * the editor role, and the master refuses new projects in an archived workspace). */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { useMe } from "../../auth";
import { formatDate } from "../../components/format";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { hasRole } from "./roles";

export function ProjectsSection({ workspace }: { workspace: Schemas["WorkspaceOut"] }) {
  const me = useMe();
  const projects = useQuery({
    queryKey: keys.workspaces.projects(workspace.id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/workspaces/{workspace_id}/projects", { params: { path: { workspace_id: workspace.id } } })),
  });
  const mayCreate = hasRole(me, workspace.role, "editor") && !workspace.archived;
  return (
    <section aria-labelledby="projects-heading">
      <h2 id="projects-heading">Projects</h2>
      <QueryView query={projects} what="projects">
        {(items) =>
          items.length === 0 ? (
            <Empty>No projects in this workspace yet.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Description</th>
                    <th scope="col">Archived</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {items.map((project) => (
                    <tr key={project.id}>
                      <td className="wrap">
                        <Link to={`/projects/${project.id}`}>{project.name}</Link>
                      </td>
                      <td className="wrap">{project.description || "—"}</td>
                      <td>{project.archived ? "archived" : "no"}</td>
                      <td>{formatDate(project.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </QueryView>
      {mayCreate && <NewProjectForm workspaceId={workspace.id} />}
    </section>
  );
}

function NewProjectForm({ workspaceId }: { workspaceId: number }) {
  const client = useQueryClient();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const create = useMutation({
    mutationFn: (body: Schemas["ProjectCreate"]) =>
      unwrap(
        api.POST("/api/v1/workspaces/{workspace_id}/projects", { params: { path: { workspace_id: workspaceId } }, body }),
      ),
    onSuccess: async () => {
      setName("");
      setDescription("");
      await client.invalidateQueries({ queryKey: keys.workspaces.projects(workspaceId) });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (name.trim()) create.mutate({ name: name.trim(), description });
  };
  return (
    <>
      <h3 id="new-project">New project</h3>
      <form className="toolbar" aria-labelledby="new-project" onSubmit={submit}>
        <label>
          Project name
          <input value={name} onChange={(e) => setName(e.target.value)} maxLength={128} required />
        </label>
        <label>
          Description
          <input value={description} onChange={(e) => setDescription(e.target.value)} maxLength={10000} />
        </label>
        <button type="submit" className="primary" disabled={create.isPending || !name.trim()}>
          Create project
        </button>
      </form>
      {create.error && <ErrorState error={create.error} />}
    </>
  );
}
