"""Failures the agent reports to whoever started it, as one line and a non-zero exit."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every failure the agent raises on purpose; its message is shown as is."""


class SlotDiscoveryError(AgentError):
    """The slots asked for cannot be found (no GPU for ``--slot-type cuda``, a bad ``--visible-gpus``)."""


class RegistrationRefused(AgentError):
    """The master refused to register this agent (bad token, invalid request); retrying will not help."""
