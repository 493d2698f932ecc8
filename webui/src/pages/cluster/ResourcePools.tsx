/** Resource pools as cards: how many agents and slots each has and how many are in use. */
import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { Empty, QueryView } from "../../components/states";

export function ResourcePools() {
  const pools = useQuery({
    queryKey: keys.cluster.pools,
    queryFn: () => unwrap(api.GET("/api/v1/resource-pools")),
    refetchInterval: LIVE_MS,
  });
  return (
    <section aria-labelledby="pools-heading">
      <h2 id="pools-heading">Resource pools</h2>
      <QueryView query={pools} what="resource pools">
        {(items) =>
          items.length === 0 ? (
            <Empty>No resource pools: a pool appears when its first agent registers.</Empty>
          ) : (
            <ul className="pool-cards">
              {items.map((pool) => {
                const used = pool.slots_total ? pool.slots_used / pool.slots_total : 0;
                return (
                  <li key={pool.name} className="card" data-testid={`pool-${pool.name}`}>
                    <h3>{pool.name}</h3>
                    <p className="meta">
                      <span>
                        {pool.agents} agent{pool.agents === 1 ? "" : "s"}
                      </span>
                      <span>
                        {pool.slots_used} of {pool.slots_total} slots used, {pool.slots_free} free
                      </span>
                      <span>preemption {pool.preemption ? "on" : "off"}</span>
                    </p>
                    <div
                      className="usage"
                      role="meter"
                      aria-label={`Slots used in ${pool.name}`}
                      aria-valuemin={0}
                      aria-valuemax={pool.slots_total}
                      aria-valuenow={pool.slots_used}
                      aria-valuetext={`${pool.slots_used} of ${pool.slots_total} slots used`}
                    >
                      <span style={{ width: `${Math.round(used * 100)}%` }} />
                    </div>
                  </li>
                );
              })}
            </ul>
          )
        }
      </QueryView>
    </section>
  );
}
