"""The agent's side of the agent ↔ master protocol (docs/protocols.md): requests, actions, backoff.

Requests go through the harness's one HTTP wrapper with its own retries off: the agent decides
itself when to retry, because it must keep its trials running while the master is away.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from stalwart.client._http import HTTPSession
from stalwart_agent import __version__
from stalwart_agent.slots import Slot

# Long enough for any single report; the long poll gets its own, longer limit.
REPORT_TIMEOUT_SECONDS = 10.0
# The master refuses longer reasons; a truncated reason beats a TERMINATED report that never lands.
MAX_REASON_CHARS = 1000
# How much longer than the poll's own timeout we wait before calling the master unreachable.
POLL_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class Registration:
    """The master's answer to a registration."""

    agent_id: str
    poll_timeout_seconds: float
    reconnect_wait_seconds: float
    # Kills for allocations the agent reported running that the master has already ended.
    actions: tuple[Any, ...] = ()


@dataclass(frozen=True)
class StartAction:
    """Run the trial runner for one allocation on the given slots."""

    allocation_id: str
    allocation_token: str
    trial_id: int | None
    experiment_id: int | None
    slot_uuids: tuple[str, ...]
    slot_indexes: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class KillAction:
    """Stop one allocation: SIGTERM its process group, SIGKILL after ``grace_seconds``."""

    allocation_id: str
    grace_seconds: float


Action = StartAction | KillAction


class UnknownAction(ValueError):
    """An action this agent does not understand (a newer master); logged and skipped."""


def parse_action(raw: Any) -> Action:
    """Turn one JSON action into a typed one, or raise ``UnknownAction``."""
    if not isinstance(raw, dict):
        raise UnknownAction(f"action is not an object: {raw!r}")
    kind = raw.get("type")
    try:
        if kind == "start":
            return StartAction(
                allocation_id=str(raw["allocation_id"]),
                allocation_token=str(raw["allocation_token"]),
                trial_id=_optional_int(raw.get("trial_id")),
                experiment_id=_optional_int(raw.get("experiment_id")),
                slot_uuids=tuple(str(u) for u in raw.get("slot_uuids") or ()),
                slot_indexes=tuple(int(i) for i in raw.get("slot_indexes") or ()),
            )
        if kind == "kill":
            grace = raw.get("grace_seconds")
            return KillAction(
                allocation_id=str(raw["allocation_id"]),
                grace_seconds=float(grace) if grace is not None else 10.0,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnknownAction(f"malformed {kind} action ({exc!r}): {raw!r}") from exc
    raise UnknownAction(f"unknown action type {kind!r}")


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class MasterClient:
    """The requests an agent makes, authenticated with the agent token."""

    def __init__(
        self,
        master_url: str,
        token: str,
        agent_id: str,
        *,
        poll_timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.poll_timeout = poll_timeout
        self._url = master_url
        self._token = token
        self._transport = transport
        # Two pools: a long poll in flight must never delay a trial's exit report behind it.
        self._reports = HTTPSession(
            master_url, token=token, timeout=REPORT_TIMEOUT_SECONDS, retries=0, transport=transport
        )
        self._poll = self._poll_session(poll_timeout)

    def _poll_session(self, poll_timeout: float) -> HTTPSession:
        return HTTPSession(
            self._url,
            token=self._token,
            timeout=poll_timeout + POLL_MARGIN_SECONDS,
            retries=0,
            transport=self._transport,
        )

    def register(
        self, resource_pool: str, slots: Sequence[Slot], running: Sequence[str], *, draining: bool = False
    ) -> Registration:
        """Announce the agent, its slots and the allocations it still runs (after a reconnect)."""
        body: dict[str, Any] = {
            "agent_id": self.agent_id,
            "resource_pool": resource_pool,
            "version": __version__,
            "slots": [slot.to_json() for slot in slots],
            "running": list(running),
        }
        if draining:
            body["draining"] = True
        answer = self._reports.request("POST", "/api/v1/agents/register", json=body).json()
        actions = answer.get("actions")
        registration = Registration(
            agent_id=str(answer.get("agent_id") or self.agent_id),
            poll_timeout_seconds=float(answer.get("poll_timeout_seconds") or self.poll_timeout),
            reconnect_wait_seconds=float(answer.get("reconnect_wait_seconds") or 25.0),
            actions=tuple(actions) if isinstance(actions, list) else (),
        )
        if registration.poll_timeout_seconds != self.poll_timeout:
            self._poll.close()
            self.poll_timeout = registration.poll_timeout_seconds
            self._poll = self._poll_session(self.poll_timeout)
        return registration

    def poll(self, timeout: float | None = None) -> list[Any]:
        """Wait for work (at most ``timeout`` seconds, default the master's); also the agent's
        heartbeat. Returns the raw actions."""
        response = self._poll.request(
            "GET",
            f"/api/v1/agents/{self.agent_id}/work",
            params={"timeout_seconds": _seconds(self.poll_timeout if timeout is None else timeout)},
        )
        actions = response.json().get("actions") or []
        return list(actions) if isinstance(actions, list) else []

    def reset_poll(self) -> None:
        """A fresh connection pool for the long poll, after a signal cut a request short."""
        self._poll.close()
        self._poll = self._poll_session(self.poll_timeout)

    def drain(self) -> None:
        """Ask the master to move this agent's trials elsewhere and schedule nothing new here."""
        self._reports.request("POST", f"/api/v1/agents/{self.agent_id}/drain")

    def report_state(
        self, allocation_id: str, state: str, *, exit_code: int | None = None, reason: str = ""
    ) -> None:
        """Tell the master an allocation is RUNNING or TERMINATED."""
        body = {"state": state, "exit_code": exit_code, "reason": reason[:MAX_REASON_CHARS]}
        self._reports.request("POST", f"/api/v1/allocations/{allocation_id}/state", json=body)

    def ship_logs(self, allocation_id: str, lines: Sequence[dict[str, Any]], batch_id: str) -> None:
        """Send one batch of a trial's output lines, in order; a retry reuses ``batch_id``."""
        self._reports.request(
            "POST",
            f"/api/v1/allocations/{allocation_id}/logs",
            json={"batch_id": batch_id, "lines": list(lines)},
        )

    def close(self) -> None:
        self._poll.close()
        self._reports.close()


def _seconds(value: float) -> str:
    # "20", not "20.0": the master's query parameter may be an integer.
    return str(int(value)) if float(value).is_integer() else str(value)


class Backoff:
    """Capped exponential backoff with jitter, so a fleet of agents does not reconnect in lockstep.

    The n-th consecutive failure waits between half and all of ``min(cap, base * 2**n)``.
    """

    def __init__(
        self, base: float = 0.5, cap: float = 10.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.failures = 0
