/** Enable, disable and drain one agent (cluster admins; the master checks too). */
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "../../api/client";
import { keys } from "../../api/keys";
import { ErrorState } from "../../components/states";

type Action = "enable" | "disable" | "drain";

export function AgentActions({ agent, busySlots }: { agent: Schemas["AgentOut"]; busySlots: number }) {
  const client = useQueryClient();
  const path = { agent_id: agent.id };
  const act = useMutation({
    mutationFn: (action: Action) =>
      action === "enable"
        ? unwrap(api.POST("/api/v1/agents/{agent_id}/enable", { params: { path } }))
        : unwrap(api.POST("/api/v1/agents/{agent_id}/disable", { params: { path }, body: { drain: action === "drain" } })),
    // Agents, slots, pools and the queue all move when an agent does.
    onSettled: () => client.invalidateQueries({ queryKey: keys.cluster.all }),
  });
  const disable = () => {
    // A plain disable stops the agent's trials (they checkpoint and resume elsewhere).
    const ask = `Disable ${agent.id}? Its ${busySlots} busy slot(s) will checkpoint and move to other agents.`;
    if (busySlots === 0 || window.confirm(ask)) act.mutate("disable");
  };
  return (
    <div className="actions">
      <button
        type="button"
        onClick={() => act.mutate("enable")}
        disabled={act.isPending || (agent.enabled && !agent.draining)}
      >
        Enable
      </button>
      <button
        type="button"
        className="danger"
        onClick={disable}
        disabled={act.isPending || (!agent.enabled && !agent.draining)}
      >
        Disable
      </button>
      <button type="button" onClick={() => act.mutate("drain")} disabled={act.isPending || agent.draining}>
        Drain
      </button>
      {act.error && <ErrorState error={act.error} />}
    </div>
  );
}
