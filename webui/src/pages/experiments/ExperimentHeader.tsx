/** An experiment's name, state and facts, with its lifecycle actions and an inline editor. */
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { formatDate } from "../../components/format";
import { Labels } from "../../components/Labels";
import { ErrorState } from "../../components/states";
import { StateBadge } from "../../components/StateBadge";
import { runVerb, VERB_LABELS, type Verb } from "./actions";
import { verbAllowed, type ExperimentDetail } from "./data";

export function ExperimentHeader({
  experiment,
  projectName,
  editable,
}: {
  experiment: ExperimentDetail;
  projectName: string | undefined;
  editable: boolean;
}) {
  const client = useQueryClient();
  const [editing, setEditing] = useState(false);
  const action = useMutation({
    mutationFn: (verb: Verb) => runVerb(verb, experiment.id),
    onSettled: () => client.invalidateQueries({ queryKey: keys.experiments.all }),
  });

  const verbs: Verb[] = ["pause", "activate", "cancel", "kill", experiment.archived ? "unarchive" : "archive"];
  const onVerb = (verb: Verb) => {
    if (verb === "kill" && !window.confirm(`Kill experiment ${experiment.id}? Its running trials stop at once.`)) return;
    action.mutate(verb);
  };

  return (
    <header className="exp-header">
      <div className="page-header">
        <div className="title">
          <h1>{experiment.name}</h1>
          <span data-testid="experiment-state">
            <StateBadge state={experiment.state} />
          </span>
          {experiment.archived ? <span className="chip">archived</span> : null}
        </div>
        {editable ? (
          <div className="actions">
            {verbs.map((verb) => (
              <button
                key={verb}
                type="button"
                className={verb === "kill" ? "danger" : undefined}
                disabled={!verbAllowed(verb, experiment.state) || action.isPending}
                onClick={() => onVerb(verb)}
              >
                {VERB_LABELS[verb]}
              </button>
            ))}
            <button type="button" aria-expanded={editing} onClick={() => setEditing(!editing)}>
              Edit
            </button>
          </div>
        ) : null}
      </div>
      <dl className="meta">
        <div>
          <dt>ID</dt>
          <dd>{experiment.id}</dd>
        </div>
        <div>
          <dt>Owner</dt>
          <dd>{experiment.owner}</dd>
        </div>
        <div>
          <dt>Project</dt>
          <dd>
            <Link to={`/projects/${experiment.project_id}`}>{projectName ?? `project ${experiment.project_id}`}</Link>
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatDate(experiment.created_at)}</dd>
        </div>
        {experiment.ended_at ? (
          <div>
            <dt>Ended</dt>
            <dd>{formatDate(experiment.ended_at)}</dd>
          </div>
        ) : null}
        {experiment.parent_id ? (
          <div>
            <dt>Forked from</dt>
            <dd>
              <Link to={`/experiments/${experiment.parent_id}`}>experiment {experiment.parent_id}</Link>
            </dd>
          </div>
        ) : null}
      </dl>
      {experiment.description ? <p className="description">{experiment.description}</p> : null}
      <Labels labels={experiment.labels} />
      {action.error ? <ErrorState error={action.error} /> : null}
      {editing && editable ? <EditForm experiment={experiment} onDone={() => setEditing(false)} /> : null}
    </header>
  );
}

function EditForm({ experiment, onDone }: { experiment: ExperimentDetail; onDone: () => void }) {
  const client = useQueryClient();
  const [name, setName] = useState(experiment.name);
  const [description, setDescription] = useState(experiment.description);
  const [labels, setLabels] = useState(experiment.labels.join(", "));
  const save = useMutation({
    mutationFn: () =>
      unwrap(
        api.PATCH("/api/v1/experiments/{experiment_id}", {
          params: { path: { experiment_id: experiment.id } },
          body: {
            name: name.trim(),
            description,
            labels: Array.from(new Set(labels.split(",").map((l) => l.trim()).filter(Boolean))),
          },
        }),
      ),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.experiments.all });
      onDone();
    },
  });
  return (
    <form
      className="card edit-form"
      aria-label="Edit experiment"
      onSubmit={(event) => {
        event.preventDefault();
        save.mutate();
      }}
    >
      <label>
        Name
        <input value={name} onChange={(event) => setName(event.target.value)} required maxLength={256} />
      </label>
      <label>
        Description
        <textarea value={description} onChange={(event) => setDescription(event.target.value)} rows={3} />
      </label>
      <label>
        Labels (comma-separated)
        <input value={labels} onChange={(event) => setLabels(event.target.value)} />
      </label>
      {save.error ? <ErrorState error={save.error} /> : null}
      <div className="actions">
        <button type="submit" className="primary" disabled={save.isPending || !name.trim()}>
          Save
        </button>
        <button type="button" onClick={onDone}>
          Discard
        </button>
      </div>
    </form>
  );
}
