/** Checkpoints: every checkpoint of the experiment, with registration and deletion for its editors. */
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Fragment, useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { formatBytes, formatDate, formatNumber } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, ErrorState, QueryView } from "../../components/states";
import { isLive, type Checkpoint, type ExperimentDetail, type Searcher } from "./data";
import { RegisterForm } from "../../components/RegisterForm";

/** The searcher metric at the checkpoint's step: the master's join, else one the trial saved. */
function metricAt(checkpoint: Checkpoint, metric: string): number | null {
  if (checkpoint.searcher_metric != null) return checkpoint.searcher_metric;
  const saved = checkpoint.metadata?.[metric];
  return typeof saved === "number" ? saved : null;
}

/** "name:version" of a model version; the name may itself hold a colon. */
function splitVersion(text: string): [string, string] {
  const at = text.lastIndexOf(":");
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
}

export function CheckpointsTab({
  experiment,
  searcher,
  editable,
}: {
  experiment: ExperimentDetail;
  searcher: Searcher;
  editable: boolean;
}) {
  const client = useQueryClient();
  const [registering, setRegistering] = useState<string | null>(null);
  const checkpoints = useQuery({
    queryKey: keys.experiments.checkpoints(experiment.id),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/experiments/{experiment_id}/checkpoints", {
          params: { path: { experiment_id: experiment.id } },
        }),
      ),
    refetchInterval: isLive(experiment.state) ? LIVE_MS : false,
  });
  const remove = useMutation({
    mutationFn: (uuid: string) =>
      unwrap(api.DELETE("/api/v1/checkpoints/{checkpoint_uuid}", { params: { path: { checkpoint_uuid: uuid } } })),
    onSettled: () => client.invalidateQueries({ queryKey: keys.experiments.checkpoints(experiment.id) }),
  });
  const onDelete = (uuid: string) => {
    if (window.confirm(`Delete checkpoint ${uuid}? Its files are removed from storage.`)) remove.mutate(uuid);
  };
  const columns = editable ? 9 : 8;

  return (
    <QueryView query={checkpoints} what="checkpoints">
      {(items) =>
        !items.length ? (
          <Empty>No checkpoints yet.</Empty>
        ) : (
          <>
            {remove.error ? <ErrorState error={remove.error} /> : null}
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">UUID</th>
                    <th scope="col">Trial</th>
                    <th scope="col">State</th>
                    <th scope="col" className="num">Steps</th>
                    <th scope="col" className="num">Size</th>
                    <th scope="col" className="num">{searcher.metric || "Searcher metric"}</th>
                    <th scope="col">Created</th>
                    <th scope="col">Registered</th>
                    {editable ? <th scope="col">Actions</th> : null}
                  </tr>
                </thead>
                <tbody>
                  {items.map((c) => (
                    <Fragment key={c.uuid}>
                      <tr data-testid={`checkpoint-row-${c.uuid}`}>
                        <td className="mono" title={c.uuid}>
                          {c.uuid.slice(0, 8)}
                        </td>
                        <td>
                          <Link to={`/trials/${c.trial_id}/checkpoints`}>trial {c.trial_id}</Link>
                        </td>
                        <td>
                          <StateBadge state={c.state} />
                        </td>
                        <td className="num">{c.steps_completed}</td>
                        <td className="num">{formatBytes(c.size)}</td>
                        <td className="num">{formatNumber(metricAt(c, searcher.metric))}</td>
                        <td>{formatDate(c.created_at)}</td>
                        <td className="wrap">
                          {(c.model_versions ?? []).map((text) => {
                            const [name, version] = splitVersion(text);
                            return (
                              <Link key={text} className="chip" to={`/models/${encodeURIComponent(name)}/${encodeURIComponent(version)}`}>
                                {text}
                              </Link>
                            );
                          })}
                        </td>
                        {editable ? (
                          <td>
                            <div className="actions">
                              {c.state === "COMPLETED" ? (
                                <button
                                  type="button"
                                  aria-expanded={registering === c.uuid}
                                  onClick={() => setRegistering(registering === c.uuid ? null : c.uuid)}
                                >
                                  Register
                                </button>
                              ) : null}
                              {c.state !== "DELETED" ? (
                                <button
                                  type="button"
                                  className="danger"
                                  disabled={remove.isPending}
                                  onClick={() => onDelete(c.uuid)}
                                >
                                  Delete
                                </button>
                              ) : null}
                            </div>
                          </td>
                        ) : null}
                      </tr>
                      {registering === c.uuid ? (
                        <tr>
                          <td colSpan={columns}>
                            <RegisterForm
                              checkpointUuid={c.uuid}
                              projectId={experiment.project_id}
                              onClose={() => setRegistering(null)}
                            />
                          </td>
                        </tr>
                      ) : null}
                    </Fragment>
                  ))}
                </tbody>
              </table>
            </div>
          </>
        )
      }
    </QueryView>
  );
}
