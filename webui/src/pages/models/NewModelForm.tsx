/** Create a model in a project the user may create in (editor or admin of its workspace). */
import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { useId, useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { useMe } from "../../auth";
import { ErrorState } from "../../components/states";

/** Projects the user may create models in, as "workspace / project" choices. */
function useWritableProjects() {
  const me = useMe();
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
    staleTime: 30_000,
  });
  const writable = (workspaces.data ?? []).filter(
    (ws) => !ws.archived && (me.admin || ws.role === "editor" || ws.role === "admin"),
  );
  const projects = useQueries({
    queries: writable.map((ws) => ({
      queryKey: keys.workspaces.projects(ws.id),
      queryFn: () =>
        unwrap(api.GET("/api/v1/workspaces/{workspace_id}/projects", { params: { path: { workspace_id: ws.id } } })),
      staleTime: 30_000,
    })),
  });
  return writable.flatMap((ws, i) =>
    (projects[i]?.data ?? [])
      .filter((p) => !p.archived)
      .map((p) => ({ id: p.id, label: `${ws.name} / ${p.name}` })),
  );
}

/** True when the user may create a model somewhere (so the "New model" button is worth showing). */
export function useMayCreateModels(): boolean {
  const me = useMe();
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
    staleTime: 30_000,
  });
  return me.admin || (workspaces.data ?? []).some((ws) => ws.role === "editor" || ws.role === "admin");
}

export function NewModelForm({ onClose }: { onClose: () => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [projectId, setProjectId] = useState<number | null>(null);
  const projects = useWritableProjects();
  const chosen = projectId ?? projects[0]?.id ?? null;
  const client = useQueryClient();
  const navigate = useNavigate();
  const ids = useId();
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/v1/models", { body: { name: name.trim(), description, project_id: chosen ?? 1 } })),
    onSuccess: (model) => {
      void client.invalidateQueries({ queryKey: keys.models.all });
      navigate(`/models/${encodeURIComponent(model.name)}`);
    },
  });

  function submit(event: FormEvent) {
    event.preventDefault();
    if (name.trim()) create.mutate();
  }

  return (
    <form className="card new-model" onSubmit={submit} aria-label="New model">
      <div className="toolbar">
        <label htmlFor={`${ids}-name`}>
          Name
          <input id={`${ids}-name`} value={name} onChange={(e) => setName(e.target.value)} maxLength={255} required />
        </label>
        <label htmlFor={`${ids}-project`}>
          Project
          <select id={`${ids}-project`} value={chosen ?? ""} onChange={(e) => setProjectId(Number(e.target.value))}>
            {projects.length === 0 && <option value="">Uncategorized</option>}
            {projects.map((p) => (
              <option key={p.id} value={p.id}>
                {p.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <label htmlFor={`${ids}-description`}>
        Description
        <textarea
          id={`${ids}-description`}
          value={description}
          onChange={(e) => setDescription(e.target.value)}
          rows={3}
          maxLength={10_000}
        />
      </label>
      {create.error ? <ErrorState error={create.error} /> : null}
      <div className="actions">
        <button type="submit" className="primary" disabled={create.isPending || !name.trim()}>
          Create model
        </button>
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}
