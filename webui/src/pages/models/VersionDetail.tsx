/** One model version: the checkpoint behind it, the validation metrics at its step and its lineage. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate } from "react-router";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { formatBytes, formatDate, formatNumber } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { useCheckpoint } from "../trials/checkpointsApi";
import { LineageGraph } from "../trials/LineageGraph";
import { fetchMetrics } from "../trials/metricsApi";
import { shortUuid, type MetricRow } from "../trials/trialData";

type Version = Schemas["ModelVersionOut"];

/** The validation row at the checkpoint's step, else the last one before it. */
export function validationAt(rows: readonly MetricRow[], step: number): MetricRow | null {
  let best: MetricRow | null = null;
  for (const row of rows) {
    if (row.steps_completed <= step && (!best || row.steps_completed >= best.steps_completed)) best = row;
  }
  return best;
}

function metricText(value: unknown): string {
  return typeof value === "number" ? formatNumber(value, 6) : JSON.stringify(value) ?? String(value);
}

function ValidationMetrics({ trialId, step }: { trialId: number; step: number }) {
  const query = { group: "validation", limit: 100_000 };
  const metrics = useQuery({
    queryKey: keys.trials.metrics(trialId, query),
    queryFn: () => fetchMetrics(trialId, query),
  });
  return (
    <QueryView query={metrics} what="metrics">
      {(answer) => {
        const row = validationAt(answer.items, step);
        if (!row) return <Empty>No validation reported up to step {step}.</Empty>;
        return (
          <>
            <p className="muted">
              Validation at step {row.steps_completed}
              {row.steps_completed === step ? " (the checkpoint's step)" : ` (the last before step ${step})`}
            </p>
            <dl className="meta kv">
              {Object.entries(row.values).map(([name, value]) => (
                <div key={name}>
                  <dt>{name}</dt>
                  <dd>{metricText(value)}</dd>
                </div>
              ))}
            </dl>
          </>
        );
      }}
    </QueryView>
  );
}

function CheckpointFacts({ version }: { version: Version }) {
  const checkpoint = useCheckpoint(version.checkpoint_uuid);
  return (
    <QueryView query={checkpoint} what="checkpoint">
      {(c) => (
        <>
          <dl className="meta kv">
            <div>
              <dt>State</dt>
              <dd>
                <StateBadge state={c.state} />
              </dd>
            </div>
            <div>
              <dt>Steps</dt>
              <dd>{c.steps_completed}</dd>
            </div>
            <div>
              <dt>Size</dt>
              <dd>
                {formatBytes(c.size)}
                {c.stored_size != null ? ` (${formatBytes(c.stored_size)} stored)` : ""}
              </dd>
            </div>
            <div>
              <dt>Searcher metric</dt>
              <dd>{formatNumber(c.searcher_metric)}</dd>
            </div>
            <div>
              <dt>Written</dt>
              <dd>{formatDate(c.created_at)}</dd>
            </div>
          </dl>
          {Object.keys(c.metadata).length ? (
            <>
              <h3>Checkpoint metadata</h3>
              <pre>{JSON.stringify(c.metadata, null, 2)}</pre>
            </>
          ) : null}
          <h3>Metrics</h3>
          <ValidationMetrics trialId={c.trial_id} step={c.steps_completed} />
        </>
      )}
    </QueryView>
  );
}

export function VersionDetail({ name, number, mayChange }: { name: string; number: number; mayChange: boolean }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const version = useQuery({
    queryKey: keys.models.version(name, number),
    queryFn: () =>
      unwrap(api.GET("/api/v1/models/{name}/versions/{version}", { params: { path: { name, version: number } } })),
  });
  const remove = useMutation({
    mutationFn: () =>
      unwrap(api.DELETE("/api/v1/models/{name}/versions/{version}", { params: { path: { name, version: number } } })),
    onSuccess: () => {
      client.removeQueries({ queryKey: keys.models.version(name, number) });
      void client.invalidateQueries({ queryKey: keys.models.all });
      navigate(`/models/${encodeURIComponent(name)}`, { replace: true });
    },
  });

  return (
    <section className="card version-detail" aria-label={`Version ${number}`}>
      <div className="page-header">
        <h2>Version {number}</h2>
        {mayChange ? (
          <button
            type="button"
            className="danger"
            disabled={remove.isPending}
            onClick={() => {
              if (window.confirm(`Delete version ${number} of ${name}? Its checkpoint stays.`)) remove.mutate();
            }}
          >
            Delete version
          </button>
        ) : null}
      </div>
      {remove.error ? <ErrorState error={remove.error} /> : null}
      <QueryView query={version} what="version">
        {(v) => (
          <>
            <p className="meta">
              <span>
                Checkpoint{" "}
                <span className="mono" title={v.checkpoint_uuid}>
                  {shortUuid(v.checkpoint_uuid)}
                </span>
              </span>
              {v.trial_id != null ? <Link to={`/trials/${v.trial_id}`}>Trial {v.trial_id}</Link> : null}
              {v.experiment_id != null ? (
                <Link to={`/experiments/${v.experiment_id}`}>Experiment {v.experiment_id}</Link>
              ) : null}
              <span>
                registered by {v.owner}, {formatDate(v.created_at)}
              </span>
            </p>
            {v.comment ? <p className="wrap-text">{v.comment}</p> : null}
            {Object.keys(v.metadata).length ? (
              <>
                <h3>Version metadata</h3>
                <pre>{JSON.stringify(v.metadata, null, 2)}</pre>
              </>
            ) : null}
            <CheckpointFacts version={v} />
            <h3>Lineage</h3>
            <LineageGraph uuid={v.checkpoint_uuid} />
          </>
        )}
      </QueryView>
    </section>
  );
}
