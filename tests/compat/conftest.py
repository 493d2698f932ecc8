"""The compatibility suite runs on the e2e suite's cluster: the same master, agents and cleanup."""

from e2e.conftest import admin_api, agent_token, no_leftover_work, start_agent

__all__ = ["admin_api", "agent_token", "no_leftover_work", "start_agent"]
