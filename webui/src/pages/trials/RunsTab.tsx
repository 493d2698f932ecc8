/** A trial's runs as a timeline: where each ran, how it ended, which checkpoint the next one
 * restored and how many steps that cost. */
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { formatDate, formatDuration, secondsBetween } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, QueryView } from "../../components/states";
import { useExperimentCheckpoints } from "./checkpointsApi";
import { describeExit, describeLoss, lastStepOfRuns, runLosses, runSpans, type RunLoss, type Span } from "./runsData";
import { shortUuid, type Run } from "./trialData";

// Every row of every run, archived ones included: a run's last report may lie past a later restore.

function Bar({ span }: { span: Span | null }) {
  if (!span) return <div className="run-track" aria-hidden="true" />;
  return (
    <div className="run-track" aria-hidden="true">
      <div
        className="bar"
        style={{
          marginLeft: `${(span.left * 100).toFixed(2)}%`,
          width: `${Math.max(span.width * 100, 0.5).toFixed(2)}%`,
        }}
      />
    </div>
  );
}

function RunItem({ trialId, run, loss, span }: { trialId: number; run: Run; loss: RunLoss; span: Span | null }) {
  const text = describeLoss(loss);
  const lost = loss.kind === "rollback" && loss.lost > 0;
  return (
    <li data-testid={`run-${run.run_id}`} className={lost ? "run run-lost" : "run"}>
      <div className="run-head">
        <strong>Run {run.run_id}</strong> <StateBadge state={run.state} />
        <span className="muted"> on {run.agent_id ? `agent ${run.agent_id}` : "no agent"}</span>
      </div>
      <Bar span={span} />
      <dl className="meta kv">
        <div>
          <dt>Started</dt>
          <dd>{run.started_at ? formatDate(run.started_at) : "never started"}</dd>
        </div>
        <div>
          <dt>Ended</dt>
          <dd>{run.ended_at ? formatDate(run.ended_at) : run.started_at ? "still running" : "—"}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd>{formatDuration(secondsBetween(run.started_at, run.ended_at))}</dd>
        </div>
        <div>
          <dt>Exit</dt>
          <dd>{describeExit(run.exit_code, run.exit_reason)}</dd>
        </div>
        <div>
          <dt>Restored</dt>
          <dd>
            {run.restored_checkpoint ? (
              <Link
                to={`/trials/${trialId}/checkpoints?checkpoint=${encodeURIComponent(run.restored_checkpoint)}`}
                title={run.restored_checkpoint}
              >
                checkpoint {shortUuid(run.restored_checkpoint)}
              </Link>
            ) : (
              "no checkpoint"
            )}
          </dd>
        </div>
      </dl>
      {text ? <p className={lost ? "run-loss loss-some" : "run-loss loss-none"}>{text}</p> : null}
    </li>
  );
}

interface TimelineProps {
  trialId: number;
  runs: Run[];
  experimentId: number;
  live: boolean;
}

function Timeline({ trialId, runs, experimentId, live }: TimelineProps) {
  const restarted = runs.length > 1;
  const checkpoints = useExperimentCheckpoints(experimentId, live && restarted);
  const losses = useMemo(() => {
    const steps = new Map((checkpoints.data ?? []).map((c) => [c.uuid, c.steps_completed]));
    return runLosses(runs, lastStepOfRuns(runs), steps);
  }, [runs, checkpoints.data]);
  const spans = runSpans(runs, Date.now());
  const first = runs.find((run) => run.started_at)?.started_at;
  const lastEnd = runs.every((run) => run.ended_at) ? runs[runs.length - 1].ended_at : null;
  const totalLost = losses.reduce((sum, loss) => sum + (loss.kind === "rollback" ? loss.lost : 0), 0);

  return (
    <>
      <p className="run-summary">
        {runs.length} {runs.length === 1 ? "run" : "runs"}
        {restarted ? `, ${runs.length - 1} ${runs.length === 2 ? "restart" : "restarts"}; ` : ""}
        {restarted ? (totalLost ? `${totalLost} steps redone in all` : "no step was lost") : ""}
      </p>
      <ol className="timeline" data-testid="run-timeline">
        {runs.map((run, i) => (
          <RunItem key={run.run_id} trialId={trialId} run={run} loss={losses[i]} span={spans[i]} />
        ))}
      </ol>
      <p className="timeline-axis muted">
        <span>{formatDate(first)}</span>
        <span>{lastEnd ? formatDate(lastEnd) : "now"}</span>
      </p>
    </>
  );
}

export function RunsTab({ trialId, experimentId, live }: { trialId: number; experimentId: number; live: boolean }) {
  const runs = useQuery({
    queryKey: keys.trials.runs(trialId),
    queryFn: () => unwrap(api.GET("/api/v1/trials/{trial_id}/runs", { params: { path: { trial_id: trialId } } })),
    refetchInterval: live ? LIVE_MS : false,
  });
  return (
    <section aria-label="Runs">
      <QueryView query={runs} what="runs">
        {(items) =>
          items.length ? (
            <Timeline trialId={trialId} runs={items} experimentId={experimentId} live={live} />
          ) : (
            <Empty>No run yet: the trial is waiting for slots.</Empty>
          )
        }
      </QueryView>
    </section>
  );
}
