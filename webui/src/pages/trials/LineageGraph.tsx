/**
 * Where a checkpoint came from and where it went: back through its parent checkpoints to the
 * trials and experiments that wrote them, forward to the model versions registered from it.
 * The lineage is a chain (each checkpoint has at most one parent) that fans out into model
 * versions at the end, so it is drawn as rows: one per trial, oldest first.
 */
import { Link } from "react-router";
import type { Schemas } from "../../api/client";
import { formatDate } from "../../components/format";
import { QueryView } from "../../components/states";
import { useLineage } from "./checkpointsApi";
import { shortUuid, type Checkpoint } from "./trialData";

type Lineage = Schemas["LineageOut"];

interface Segment {
  trialId: number;
  experimentId: number | null;
  checkpoints: Checkpoint[];
}

/** Consecutive checkpoints of one trial share a row, oldest first. */
export function lineageSegments(lineage: Lineage): Segment[] {
  const trials = new Map(lineage.trials.map((t) => [t.id, t]));
  const ordered = [...lineage.chain].reverse().concat(lineage.checkpoint);
  const segments: Segment[] = [];
  for (const checkpoint of ordered) {
    const last = segments[segments.length - 1];
    if (last && last.trialId === checkpoint.trial_id) {
      last.checkpoints.push(checkpoint);
      continue;
    }
    const experimentId = trials.get(checkpoint.trial_id)?.experiment_id ?? checkpoint.experiment_id ?? null;
    segments.push({ trialId: checkpoint.trial_id, experimentId, checkpoints: [checkpoint] });
  }
  return segments;
}

/** "name:version" as the master lists a checkpoint's model versions (a name may hold ':'). */
export function parseModelVersion(text: string): { name: string; version: number } | null {
  const cut = text.lastIndexOf(":");
  const version = Number(text.slice(cut + 1));
  if (cut <= 0 || !Number.isInteger(version) || version < 1) return null;
  return { name: text.slice(0, cut), version };
}

export function modelVersionPath(name: string, version: number): string {
  return `/models/${encodeURIComponent(name)}/${version}`;
}

function Arrow({ label }: { label?: string }) {
  return (
    <span className="lineage-arrow" aria-hidden="true">
      {label ? <small>{label}</small> : null}→
    </span>
  );
}

function CheckpointNode({ checkpoint, current }: { checkpoint: Checkpoint; current: boolean }) {
  const to = `/trials/${checkpoint.trial_id}/checkpoints?checkpoint=${encodeURIComponent(checkpoint.uuid)}`;
  return (
    <span className={current ? "node node-checkpoint current" : "node node-checkpoint"}>
      <span className="kind">{current ? "This checkpoint" : "Checkpoint"}</span>
      <Link to={to} title={checkpoint.uuid}>
        {shortUuid(checkpoint.uuid)}
      </Link>
      <span className="muted">
        step {checkpoint.steps_completed} · {checkpoint.state}
      </span>
      <span className="muted small">{formatDate(checkpoint.created_at)}</span>
    </span>
  );
}

export function LineageView({ lineage }: { lineage: Lineage }) {
  const experiments = new Map(lineage.experiments.map((e) => [e.id, e]));
  const segments = lineageSegments(lineage);
  const versions = (lineage.checkpoint.model_versions ?? []).map(parseModelVersion).filter((v) => v != null);
  const current = lineage.checkpoint.uuid;
  return (
    <div
      className="lineage"
      data-testid="lineage-graph"
      role="group"
      aria-label={`Lineage of checkpoint ${shortUuid(current)}`}
    >
      <ol className="lineage-rows">
        {lineage.missing_parent ? (
          <li className="lineage-row">
            <span className="node node-missing">
              <span className="kind">Parent checkpoint</span>
              <span title={lineage.missing_parent}>{shortUuid(lineage.missing_parent)} (not known to this master)</span>
            </span>
          </li>
        ) : null}
        {segments.map((segment, index) => {
          const experiment = segment.experimentId != null ? experiments.get(segment.experimentId) : undefined;
          return (
            <li key={`${segment.trialId}-${index}`} className="lineage-row">
              {index > 0 || lineage.missing_parent ? <Arrow label="parent of" /> : null}
              <span className="node node-experiment">
                <span className="kind">Experiment</span>
                {segment.experimentId != null ? (
                  <Link to={`/experiments/${segment.experimentId}`}>
                    {segment.experimentId}
                    {experiment ? ` · ${experiment.name}` : ""}
                  </Link>
                ) : (
                  "not visible to you"
                )}
              </span>
              <Arrow />
              <span className="node node-trial">
                <span className="kind">Trial</span>
                <Link to={`/trials/${segment.trialId}`}>{segment.trialId}</Link>
              </span>
              {segment.checkpoints.map((checkpoint) => (
                <span key={checkpoint.uuid} className="lineage-step">
                  <Arrow />
                  <CheckpointNode checkpoint={checkpoint} current={checkpoint.uuid === current} />
                </span>
              ))}
            </li>
          );
        })}
        <li className="lineage-row">
          <Arrow label="registered as" />
          {versions.length ? (
            <ul className="lineage-models" aria-label="Model versions">
              {versions.map((v) => (
                <li key={`${v.name}:${v.version}`} className="node node-model">
                  <span className="kind">Model version</span>
                  <Link to={modelVersionPath(v.name, v.version)}>
                    {v.name} v{v.version}
                  </Link>
                </li>
              ))}
            </ul>
          ) : (
            <span className="node node-none">no model version yet</span>
          )}
        </li>
      </ol>
    </div>
  );
}

/** The lineage of one checkpoint, loaded here: the piece other pages (models) reuse. */
export function LineageGraph({ uuid }: { uuid: string }) {
  const lineage = useLineage(uuid);
  return (
    <QueryView query={lineage} what="lineage">
      {(data) => <LineageView lineage={data} />}
    </QueryView>
  );
}
