/** Bulk actions over the selected experiments: each button only when the user may change all of them. */
import { useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { canChange, useMe, useWorkspaceRoles } from "../../auth";
import { forEach, moveExperiment, runVerb, VERB_LABELS, type Verb } from "./actions";
import type { Experiment } from "./data";

const BULK_VERBS: Verb[] = ["pause", "activate", "cancel", "kill", "archive"];

export function BulkBar({ experiments }: { experiments: Experiment[] }) {
  const me = useMe();
  const roles = useWorkspaceRoles();
  const client = useQueryClient();
  const [busy, setBusy] = useState(false);
  const [moving, setMoving] = useState(false);
  const [outcome, setOutcome] = useState<{ done: string; failures: string[] } | null>(null);
  if (!experiments.length) return null;

  const allowed = experiments.every((e) =>
    canChange(me, e.workspace_id == null ? undefined : roles.get(e.workspace_id), e.owner),
  );
  const ids = experiments.map((e) => e.id);

  async function apply(what: string, call: (id: number) => Promise<unknown>) {
    setBusy(true);
    setOutcome(null);
    const failures = await forEach(ids, call);
    setBusy(false);
    setOutcome({ done: `${what}: ${ids.length - failures.length} of ${ids.length} done.`, failures });
    await client.invalidateQueries({ queryKey: keys.experiments.all });
  }

  function onVerb(verb: Verb) {
    if (verb === "kill" && !window.confirm(`Kill ${ids.length} experiment(s)? Running trials stop at once.`)) return;
    void apply(VERB_LABELS[verb], (id) => runVerb(verb, id));
  }

  return (
    <section className="card bulkbar" aria-label="Bulk actions">
      <div className="actions">
        <span>{experiments.length} selected</span>
        {BULK_VERBS.map((verb) => (
          <button
            key={verb}
            type="button"
            className={verb === "kill" ? "danger" : undefined}
            disabled={!allowed || busy}
            onClick={() => onVerb(verb)}
          >
            {VERB_LABELS[verb]}
          </button>
        ))}
        <button type="button" disabled={!allowed || busy} aria-expanded={moving} onClick={() => setMoving(!moving)}>
          Move
        </button>
      </div>
      {moving && allowed ? (
        <MoveForm
          busy={busy}
          onClose={() => setMoving(false)}
          onMove={(projectId) => {
            setMoving(false);
            void apply("Move", (id) => moveExperiment(id, projectId));
          }}
        />
      ) : null}
      {!allowed ? <p className="hint">You may not change every selected experiment.</p> : null}
      {outcome ? (
        <div>
          <p role="status">{outcome.done}</p>
          {outcome.failures.length ? (
            <ul role="alert" className="state-error">
              {outcome.failures.map((failure) => (
                <li key={failure}>{failure}</li>
              ))}
            </ul>
          ) : null}
        </div>
      ) : null}
    </section>
  );
}

/** Target projects: those in workspaces where the user may add experiments. */
function MoveForm({ busy, onMove, onClose }: { busy: boolean; onMove: (projectId: number) => void; onClose: () => void }) {
  const me = useMe();
  const [target, setTarget] = useState("");
  const workspaces = useQuery({
    queryKey: keys.workspaces.all,
    queryFn: () => unwrap(api.GET("/api/v1/workspaces")),
    staleTime: 30_000,
  });
  const editable = (workspaces.data ?? []).filter((ws) => me.admin || ws.role === "editor" || ws.role === "admin");
  const projects = useQueries({
    queries: editable.map((ws) => ({
      queryKey: keys.workspaces.projects(ws.id),
      queryFn: () => unwrap(api.GET("/api/v1/workspaces/{workspace_id}/projects", { params: { path: { workspace_id: ws.id } } })),
    })),
  });
  const loading = workspaces.isPending || projects.some((p) => p.isPending);
  return (
    <form
      className="toolbar"
      onSubmit={(event) => {
        event.preventDefault();
        if (target) onMove(Number(target));
      }}
    >
      <label>
        Target project
        <select value={target} onChange={(event) => setTarget(event.target.value)} required>
          <option value="">{loading ? "Loading…" : "Choose a project"}</option>
          {editable.map((ws, i) => (
            <optgroup key={ws.id} label={ws.name}>
              {(projects[i]?.data ?? [])
                .filter((p) => !p.archived)
                .map((p) => (
                  <option key={p.id} value={p.id}>
                    {p.name}
                  </option>
                ))}
            </optgroup>
          ))}
        </select>
      </label>
      <button type="submit" className="primary" disabled={!target || busy}>
        Move here
      </button>
      <button type="button" onClick={onClose}>
        Close
      </button>
    </form>
  );
}
