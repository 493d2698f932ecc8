/** A trial's checkpoints; the selected one (in the URL, so runs can link to it; else the trial's
 * latest) shows its lineage and, for those who may change the experiment, a form to register it
 * as a model version. */
import { useSearchParams } from "react-router";
import { formatBytes, formatDate, formatNumber } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, QueryView } from "../../components/states";
import { useExperimentCheckpoints } from "./checkpointsApi";
import { LineageGraph } from "./LineageGraph";
import { RegisterForm } from "../../components/RegisterForm";
import { shortUuid, type Checkpoint } from "./trialData";

interface Props {
  trialId: number;
  experimentId: number;
  projectId: number | null;
  latestCheckpoint: string | null;
  mayChange: boolean;
  live: boolean;
}

interface TableProps {
  checkpoints: Checkpoint[];
  selected: string | null;
  onSelect: (uuid: string) => void;
}

function Table({ checkpoints, selected, onSelect }: TableProps) {
  return (
    <div className="table-wrap">
      <table>
        <caption className="visually-hidden">Checkpoints of this trial</caption>
        <thead>
          <tr>
            <th scope="col">Checkpoint</th>
            <th scope="col">State</th>
            <th scope="col" className="num">Steps</th>
            <th scope="col" className="num">Size</th>
            <th scope="col" className="num">Searcher metric</th>
            <th scope="col">Model versions</th>
            <th scope="col">Created</th>
            <th scope="col">
              <span className="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {checkpoints.map((c) => (
            <tr key={c.uuid} className={c.uuid === selected ? "selected" : undefined}>
              <td className="mono" title={c.uuid}>
                {shortUuid(c.uuid)}
              </td>
              <td>
                <StateBadge state={c.state} />
              </td>
              <td className="num">{c.steps_completed}</td>
              <td className="num">{formatBytes(c.size)}</td>
              <td className="num">{formatNumber(c.searcher_metric)}</td>
              <td className="wrap">{(c.model_versions ?? []).join(", ") || "—"}</td>
              <td>{formatDate(c.created_at)}</td>
              <td>
                <button type="button" onClick={() => onSelect(c.uuid)} aria-pressed={c.uuid === selected}>
                  Lineage of {shortUuid(c.uuid)}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function CheckpointsTab({ trialId, experimentId, projectId, latestCheckpoint, mayChange, live }: Props) {
  const checkpoints = useExperimentCheckpoints(experimentId, live);
  const [params, setParams] = useSearchParams();
  const chosenInUrl = params.get("checkpoint");
  const select = (uuid: string) =>
    setParams(
      (current) => {
        const next = new URLSearchParams(current);
        next.set("checkpoint", uuid);
        return next;
      },
      { replace: true },
    );

  return (
    <section aria-label="Checkpoints">
      <QueryView query={checkpoints} what="checkpoints">
        {(all) => {
          const mine = all.filter((c) => c.trial_id === trialId).sort((a, b) => a.steps_completed - b.steps_completed);
          const latest = mine.find((c) => c.uuid === latestCheckpoint) ?? mine[mine.length - 1];
          const selected = chosenInUrl ?? latest?.uuid ?? null;
          const chosen = selected ? all.find((c) => c.uuid === selected) : undefined;
          return (
            <>
              {mine.length ? (
                <Table checkpoints={mine} selected={selected} onSelect={select} />
              ) : (
                <Empty>No checkpoint yet.</Empty>
              )}
              {selected ? (
                <div className="card checkpoint-detail">
                  <h2>
                    Checkpoint <span className="mono">{shortUuid(selected)}</span>
                  </h2>
                  {chosen && chosen.trial_id !== trialId ? (
                    <p className="muted">This checkpoint belongs to trial {chosen.trial_id}; this trial restored it.</p>
                  ) : null}
                  <LineageGraph uuid={selected} />
                  {mayChange && projectId != null && chosen?.state === "COMPLETED" ? (
                    <RegisterForm checkpointUuid={selected} projectId={projectId} />
                  ) : null}
                </div>
              ) : null}
            </>
          );
        }}
      </QueryView>
    </section>
  );
}
