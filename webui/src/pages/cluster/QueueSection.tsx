/** The queue in scheduling order (positions count within each resource pool; priority 1 is the
 * most urgent): what runs and what waits. Entries in
 * workspaces the user cannot see come without names and links ("hidden"). */
import { useQuery } from "@tanstack/react-query";
import { Link } from "react-router";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { formatDuration, secondsBetween } from "../../components/format";
import { StateBadge } from "../../components/StateBadge";
import { Empty, QueryView } from "../../components/states";

export function QueueSection() {
  const queue = useQuery({
    queryKey: keys.cluster.queue,
    queryFn: () => unwrap(api.GET("/api/v1/job-queues")),
    refetchInterval: LIVE_MS,
  });
  return (
    <section aria-labelledby="queue-heading" data-testid="queue">
      <h2 id="queue-heading">Queue</h2>
      <QueryView query={queue} what="the queue">
        {(items) =>
          items.length === 0 ? (
            <Empty>The queue is empty: no trial is waiting for or holding slots.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col" className="num">
                      Position
                    </th>
                    <th scope="col" className="num">
                      Priority
                    </th>
                    <th scope="col">State</th>
                    <th scope="col">Pool</th>
                    <th scope="col" className="num">
                      Slots
                    </th>
                    <th scope="col">Experiment</th>
                    <th scope="col">Trial</th>
                    <th scope="col">Owner</th>
                    <th scope="col">Queued for</th>
                  </tr>
                </thead>
                <tbody>
                  {items.map((entry) => {
                    const hidden = entry.experiment_name == null;
                    return (
                      <tr key={entry.allocation_id} data-testid={`queue-${entry.allocation_id}`}>
                        <td className="num">{entry.position}</td>
                        <td className="num">{entry.priority}</td>
                        <td>
                          <StateBadge state={entry.state} />
                        </td>
                        <td>{entry.resource_pool}</td>
                        <td className="num">{entry.slots}</td>
                        <td className="wrap">
                          {hidden || entry.experiment_id == null ? (
                            <span className="hidden-entry">hidden</span>
                          ) : (
                            <Link to={`/experiments/${entry.experiment_id}`}>{entry.experiment_name}</Link>
                          )}
                        </td>
                        <td>
                          {hidden || entry.trial_id == null ? (
                            <span className="hidden-entry">hidden</span>
                          ) : (
                            <Link to={`/trials/${entry.trial_id}`}>Trial {entry.trial_id}</Link>
                          )}
                        </td>
                        <td>{entry.owner ?? <span className="hidden-entry">hidden</span>}</td>
                        <td>{formatDuration(secondsBetween(entry.queued_at, entry.started_at))}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )
        }
      </QueryView>
    </section>
  );
}
