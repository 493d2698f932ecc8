"""``Client`` methods: agents, their credentials and slots."""

from __future__ import annotations

from stalwart.client._base import ClientBase
from stalwart.client.models import (
    Agent,
    AgentToken,
    IssuedAgentToken,
    Slot,
)


class Cluster(ClientBase):
    """Agents, their credentials and slots."""

    # --- agents and slots ---------------------------------------------------------------------

    def create_agent_token(self, agent_id: str) -> str:
        """The secret for ``stalwart-agent --token`` (admins only), good for this one agent id.

        It may only register as, poll for and report for ``agent_id``: a leaked token cannot
        impersonate another agent. ``issue_agent_token`` also gives its id, to revoke it by.

        Example::

            token = Client().create_agent_token("gpu-node-3")
        """
        return self.issue_agent_token(agent_id).token

    def issue_agent_token(self, agent_id: str) -> IssuedAgentToken:
        """Like ``create_agent_token``, with the new token's id; the secret is shown only this once.

        Example::

            issued = Client().issue_agent_token("gpu-node-3")
            Client().revoke_agent_token(issued.id)
        """
        body = {"agent_id": agent_id}
        return IssuedAgentToken.from_json(self._json("POST", "/api/v1/agents/tokens", json=body))

    def list_agent_tokens(self) -> list[AgentToken]:
        """Every agent token, revoked and expired ones too, without their secrets (admins only).

        Example::

            mine = [t.id for t in Client().list_agent_tokens() if t.agent_id == "gpu-node-3"]
        """
        return [AgentToken.from_json(item) for item in self._json("GET", "/api/v1/agents/tokens")]

    def revoke_agent_token(self, token_id: int) -> None:
        """Refuse the token from its next request on (admins only); the agent's running trials
        carry on until it is declared lost.

        Example::

            Client().revoke_agent_token(12)
        """
        self._session.request("DELETE", f"/api/v1/agents/tokens/{int(token_id)}")

    def list_agents(self) -> list[Agent]:
        """Every agent that ever registered, connected or not.

        Example::

            connected = [a.id for a in Client().list_agents() if a.connected]
        """
        return [Agent.from_json(item) for item in self._json("GET", "/api/v1/agents")]

    def list_slots(self) -> list[Slot]:
        """Every slot of every agent, with the trial holding it if any.

        Example::

            busy = [s for s in Client().list_slots() if s.trial_id is not None]
        """
        return [Slot.from_json(item) for item in self._json("GET", "/api/v1/slots")]

    def enable_agent(self, agent_id: str) -> Agent:
        """Let the scheduler place trials on the agent again (admins only).

        Example::

            Client().enable_agent("gpu-node-3")
        """
        return Agent.from_json(self._json("POST", f"/api/v1/agents/{agent_id}/enable"))

    def disable_agent(self, agent_id: str, *, drain: bool = False) -> Agent:
        """Schedule nothing new on the agent (admins only).

        With ``drain`` its running trials finish there; without, they checkpoint and move.

        Example::

            Client().disable_agent("gpu-node-3", drain=True).draining  # True
        """
        body = {"drain": drain}
        return Agent.from_json(self._json("POST", f"/api/v1/agents/{agent_id}/disable", json=body))
