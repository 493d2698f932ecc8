/** Agents and their slots: which are free and which trial holds each busy one. Cluster admins
 * enable, disable and drain agents (api/agents.py: POST .../enable, POST .../disable with
 * `{drain}`: a drain lets the agent's trials finish, a plain disable checkpoints and moves them). */
import { useQuery } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys, LIVE_MS } from "../../api/keys";
import { useMe } from "../../auth";
import { formatDate } from "../../components/format";
import { Empty, ErrorState, Loading } from "../../components/states";
import { AgentActions } from "./AgentActions";
import { SlotBoxes } from "./SlotBoxes";

type Slot = Schemas["SlotOut"];

export function AgentsSection() {
  const me = useMe();
  const agents = useQuery({
    queryKey: keys.cluster.agents,
    queryFn: () => unwrap(api.GET("/api/v1/agents")),
    refetchInterval: LIVE_MS,
  });
  const slots = useQuery({
    queryKey: keys.cluster.slots,
    queryFn: () => unwrap(api.GET("/api/v1/slots")),
    refetchInterval: LIVE_MS,
  });
  const byAgent = new Map<string, Slot[]>();
  for (const slot of slots.data ?? []) {
    byAgent.set(slot.agent_id, [...(byAgent.get(slot.agent_id) ?? []), slot]);
  }
  for (const list of byAgent.values()) list.sort((a, b) => a.index - b.index);

  let body;
  if (agents.isPending) body = <Loading what="agents" />;
  else if (agents.error) body = <ErrorState error={agents.error} />;
  else if (agents.data.length === 0) {
    body = (
      <Empty>
        No agents have registered. Start one with{" "}
        <code>stalwart-agent --master &lt;master URL&gt; --agent-id &lt;id&gt; --token &lt;agent token&gt;</code> (a
        cluster admin makes its token with <code>stalwart agent token create &lt;id&gt;</code>).
      </Empty>
    );
  } else {
    body = (
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Pool</th>
              <th scope="col">Version</th>
              <th scope="col">Connected</th>
              <th scope="col">Enabled</th>
              <th scope="col">Draining</th>
              <th scope="col">Last seen</th>
              <th scope="col">Slots</th>
              {me.admin && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {agents.data.map((agent) => (
              <tr key={agent.id} data-testid={`agent-${agent.id}`}>
                <td className="wrap">{agent.id}</td>
                <td>{agent.resource_pool}</td>
                <td>{agent.version || "—"}</td>
                <td>{agent.connected ? "yes" : "no"}</td>
                <td>{agent.enabled ? "yes" : "no"}</td>
                <td>{agent.draining ? "yes" : "no"}</td>
                <td>{formatDate(agent.last_seen_at)}</td>
                <td>
                  {slots.data ? <SlotBoxes agentId={agent.id} slots={byAgent.get(agent.id) ?? []} /> : "—"}
                </td>
                {me.admin && (
                  <td>
                    <AgentActions agent={agent} busySlots={(byAgent.get(agent.id) ?? []).filter((s) => s.allocation_id).length} />
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    );
  }
  return (
    <section aria-labelledby="agents-heading">
      <h2 id="agents-heading">Agents</h2>
      {body}
      {slots.error && agents.data && <ErrorState error={slots.error} />}
    </section>
  );
}
