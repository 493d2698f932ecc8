/** A trial's header: state, its experiment, hyperparameters, progress and the kill action. */
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys } from "../../api/keys";
import { formatDate, formatNumber, formatPercent } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { ErrorState } from "../../components/states";
import { isTerminal, type Trial } from "./trialData";

/** Hyperparameter values as text: nested ones as compact JSON. */
export function hparamText(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number") return formatNumber(value, 6);
  return JSON.stringify(value) ?? String(value);
}

export function TrialHeader({
  trial,
  experimentName,
  mayChange,
}: {
  trial: Trial;
  experimentName: string | undefined;
  mayChange: boolean;
}) {
  const client = useQueryClient();
  const kill = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/trials/{trial_id}/kill", { params: { path: { trial_id: trial.id } } })),
    onSuccess: (updated) => client.setQueryData(keys.trials.detail(trial.id), updated),
    onSettled: () => {
      void client.invalidateQueries({ queryKey: keys.trials.detail(trial.id) });
      void client.invalidateQueries({ queryKey: keys.trials.runs(trial.id) });
      void client.invalidateQueries({ queryKey: keys.experiments.detail(trial.experiment_id) });
      void client.invalidateQueries({ queryKey: keys.experiments.trials(trial.experiment_id) });
    },
  });
  const hparams = Object.entries(trial.hparams);

  return (
    <>
      <div className="page-header">
        <h1>
          Trial {trial.id} <StateBadge state={trial.state} />
        </h1>
        {mayChange && !isTerminal(trial.state) ? (
          <div className="actions">
            <button
              type="button"
              className="danger"
              disabled={kill.isPending}
              onClick={() => {
                const question = `Kill trial ${trial.id}? Its run stops at once, without a checkpoint.`;
                if (window.confirm(question)) kill.mutate();
              }}
            >
              Kill
            </button>
          </div>
        ) : null}
      </div>
      {kill.error ? <ErrorState error={kill.error} /> : null}
      <dl className="meta kv">
        <div>
          <dt>Experiment</dt>
          <dd>
            <Link to={`/experiments/${trial.experiment_id}`}>
              {trial.experiment_id}
              {experimentName ? ` · ${experimentName}` : ""}
            </Link>
          </dd>
        </div>
        <div>
          <dt>Steps</dt>
          <dd>{trial.steps_completed}</dd>
        </div>
        <div>
          <dt>Progress</dt>
          <dd>
            <span
              className="progress"
              role="progressbar"
              aria-label="Progress"
              aria-valuemin={0}
              aria-valuemax={100}
              aria-valuenow={Math.round(trial.progress * 100)}
            >
              <span style={{ width: `${Math.min(100, Math.max(0, trial.progress * 100))}%` }} />
            </span>{" "}
            {formatPercent(trial.progress)}
          </dd>
        </div>
        <div>
          <dt>Restarts</dt>
          <dd>{trial.restarts}</dd>
        </div>
        <div>
          <dt>Best validation</dt>
          <dd>{formatNumber(trial.best_validation)}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>{formatDate(trial.created_at)}</dd>
        </div>
        {trial.ended_at ? (
          <div>
            <dt>Ended</dt>
            <dd>
              {formatDate(trial.ended_at)}
              {trial.end_reason ? ` (${trial.end_reason})` : ""}
            </dd>
          </div>
        ) : null}
      </dl>
      {hparams.length ? (
        <dl className="meta kv hparams" aria-label="Hyperparameters">
          {hparams.map(([name, value]) => (
            <div key={name}>
              <dt>{name}</dt>
              <dd className="mono">{hparamText(value)}</dd>
            </div>
          ))}
        </dl>
      ) : null}
    </>
  );
}
