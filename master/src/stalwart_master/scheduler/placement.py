"""Placement: one pass over a snapshot of the queue and the free slots, no I/O.

The caller reads pending allocations, agents with their free slots and the slots each experiment
already holds, calls ``plan`` and writes the assignments in one transaction; the database's unique
index on held slots is what finally rules out double-booking if two planners ever race.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DEFAULT_PRIORITY = 42  # Determined's default; 1 is the most urgent, 99 the least


@dataclass(frozen=True)
class SlotRef:
    """One free device on an agent: its database id, its index on the agent and its device uuid."""

    slot_id: int
    index: int
    uuid: str


@dataclass(frozen=True)
class Request:
    """A pending allocation: one run of one trial that needs ``slots_needed`` slots on one agent.

    ``submitted_at`` values must be all timezone-aware or all naive, as Python cannot order a mix.
    """

    allocation_id: uuid.UUID
    trial_id: int
    experiment_id: int
    resource_pool: str
    slots_needed: int
    priority: int | None
    submitted_at: datetime
    max_slots: int | None = None

    @property
    def effective_priority(self) -> int:
        return DEFAULT_PRIORITY if self.priority is None else self.priority


@dataclass(frozen=True)
class AgentCapacity:
    """An agent as the scheduler sees it; leave out agents that are not connected."""

    agent_id: str
    resource_pool: str
    enabled: bool
    draining: bool
    free_slots: Sequence[SlotRef]

    @property
    def schedulable(self) -> bool:
        return self.enabled and not self.draining


@dataclass(frozen=True)
class Running:
    """Slots an experiment holds now (one entry per allocation or per experiment: they are summed)."""

    experiment_id: int
    slots: int


@dataclass(frozen=True)
class Holder:
    """A live allocation holding slots on an agent, as priority preemption sees it.

    ``since`` is when it started (or was assigned); ``preempting`` means it was already asked to
    stop, so its slots are about to be free and it is never asked twice.
    """

    allocation_id: uuid.UUID
    agent_id: str
    slots: int
    priority: int | None
    since: datetime
    preempting: bool = False

    @property
    def effective_priority(self) -> int:
        return DEFAULT_PRIORITY if self.priority is None else self.priority


@dataclass(frozen=True)
class Preemption:
    """Ask ``allocation_id`` on ``agent_id`` to checkpoint and exit, making room for another."""

    allocation_id: uuid.UUID
    for_allocation_id: uuid.UUID
    agent_id: str


@dataclass(frozen=True)
class PreemptionPolicy:
    """The cluster's preemption settings: priority preemption per pool and the preemption timeout."""

    timeout: timedelta = timedelta(seconds=300)
    default: bool = False
    pools: Mapping[str, bool] = field(default_factory=dict)

    def preemptive(self, pool: str) -> bool:
        return self.pools.get(pool, self.default)


@dataclass(frozen=True)
class Assignment:
    """Start ``allocation_id`` on ``agent_id`` with exactly these slots (none for a CPU-only trial)."""

    allocation_id: uuid.UUID
    trial_id: int
    experiment_id: int
    agent_id: str
    slots: tuple[SlotRef, ...]


def queue_order(request: Request) -> tuple[str, int, datetime, uuid.UUID]:
    """Sort key of the queue: pool, then priority (lower first), then age, then id as a tie-break."""
    return (request.resource_pool, request.effective_priority, request.submitted_at, request.allocation_id)


def _free_slots(agents: list[AgentCapacity]) -> dict[str, list[SlotRef]]:
    # A slot listed twice (under one agent or two) is offered once, so no input can double-book it.
    seen: set[int] = set()
    free: dict[str, list[SlotRef]] = {}
    for agent in agents:
        slots = free.setdefault(agent.agent_id, [])
        for slot in sorted(agent.free_slots, key=lambda s: (s.index, s.slot_id)):
            if slot.slot_id not in seen:
                seen.add(slot.slot_id)
                slots.append(slot)
    return free


@dataclass(frozen=True)
class Plan:
    """The result of one pass: runs to start now, and runs to preempt for waiting ones."""

    assignments: list[Assignment]
    preemptions: list[Preemption] = field(default_factory=list)


def plan(pending: list[Request], agents: list[AgentCapacity], running: list[Running]) -> list[Assignment]:
    """Which pending requests start now, where, and on which slots; the rest keep waiting.

    Rules (docs/scheduler.md explains why):
    - Each resource pool is its own queue, ordered by ``queue_order``.
    - A request gets all its slots on one schedulable agent or nothing: never a partial gang.
    - Among agents that fit, the one with the fewest free slots wins (best fit), then the lowest id.
    - An experiment never holds more than ``max_slots``, counting running and newly planned slots.
    - A request that cannot start is skipped and later ones still may (plain backfill).
    - A zero-slot request starts on any schedulable agent of its pool and takes no slot.
    The result does not depend on the order of the inputs. ``schedule`` adds priority preemption.
    """
    return schedule(pending, agents, running).assignments


def _victim_order(holder: Holder) -> tuple[int, datetime, uuid.UUID]:
    return holder.effective_priority, holder.since, holder.allocation_id


def _make_room(
    request: Request,
    candidates: list[str],
    free: dict[str, list[SlotRef]],
    freeing: Counter[str],
    victims: dict[str, list[Holder]],
) -> tuple[str, list[Holder]] | None:
    """The agent where ``request`` fits once slots being freed and the fewest victims' slots are free."""
    best: tuple[tuple[int, int, str], str, list[Holder]] | None = None
    for agent_id in candidates:
        have = len(free[agent_id]) + freeing[agent_id]
        chosen: list[Holder] = []
        for holder in victims[agent_id]:  # least important first, then youngest first
            if have >= request.slots_needed or holder.effective_priority <= request.effective_priority:
                break
            chosen.append(holder)
            have += holder.slots
        if have < request.slots_needed:
            continue
        key = (sum(h.slots for h in chosen), len(chosen), agent_id)
        if best is None or key < best[0]:
            best = (key, agent_id, chosen)
    return None if best is None else (best[1], best[2])


def _reserve(
    request: Request,
    agent_id: str,
    chosen: list[Holder],
    free: dict[str, list[SlotRef]],
    freeing: Counter[str],
    victims: dict[str, list[Holder]],
) -> list[Preemption]:
    """Hold the agent's free and soon-free slots for ``request``; a victim's surplus is free soon."""
    rest = request.slots_needed - len(free[agent_id][: request.slots_needed])
    del free[agent_id][: request.slots_needed]
    # Slots being freed cover ``rest`` first, the victims the remainder; what they free beyond it
    # stays available to later requests of this pass.
    freeing[agent_id] += sum(h.slots for h in chosen) - rest
    for holder in chosen:
        victims[agent_id].remove(holder)
    return [Preemption(h.allocation_id, request.allocation_id, agent_id) for h in chosen]


def schedule(
    pending: list[Request],
    agents: list[AgentCapacity],
    running: list[Running],
    holders: Sequence[Holder] = (),
    preemptive_pools: Collection[str] = frozenset(),
) -> Plan:
    """``plan``, plus priority preemption in ``preemptive_pools``.

    There, a request that fits nowhere claims an agent where it would fit once enough lower-priority
    holders (a greater priority number) stop: slots already being freed first, then victims least
    important first and youngest first, on the agent needing the fewest preempted slots. The free
    slots of that agent are reserved for it (no later request may backfill them), so the freed
    slots go to the request that caused the preemption, and a holder already asked to stop is
    never asked again. The claim is recomputed each pass from the snapshot alone.
    """
    for request in pending:
        if request.slots_needed < 0:
            raise ValueError(f"allocation {request.allocation_id} needs {request.slots_needed} slots")

    ordered_agents = sorted(agents, key=lambda a: a.agent_id)
    free = _free_slots(ordered_agents)
    by_pool: dict[str, list[str]] = defaultdict(list)
    for agent in ordered_agents:
        if agent.schedulable and agent.agent_id not in by_pool[agent.resource_pool]:
            by_pool[agent.resource_pool].append(agent.agent_id)

    held: Counter[int] = Counter()
    for entry in running:
        held[entry.experiment_id] += entry.slots
    freeing: Counter[str] = Counter()
    victims: dict[str, list[Holder]] = defaultdict(list)
    for holder in sorted(set(holders), key=_victim_order, reverse=True):
        if holder.slots > 0:
            if holder.preempting:
                freeing[holder.agent_id] += holder.slots
            else:
                victims[holder.agent_id].append(holder)
    zero_slot_starts: Counter[str] = Counter()
    planned: set[uuid.UUID] = set()
    assignments: list[Assignment] = []
    preemptions: list[Preemption] = []

    for request in sorted(pending, key=queue_order):
        if request.allocation_id in planned:
            continue
        candidates = by_pool.get(request.resource_pool, [])
        needed = request.slots_needed
        if needed == 0:
            if not candidates:
                continue
            # Spread CPU-only trials; they cost no slot but still use the machine's CPUs.
            agent_id = min(candidates, key=lambda a: (zero_slot_starts[a], -len(free[a]), a))
            zero_slot_starts[agent_id] += 1
            chosen: tuple[SlotRef, ...] = ()
        else:
            cap = request.max_slots
            if cap is not None and held[request.experiment_id] + needed > cap:
                continue
            fitting = [a for a in candidates if len(free[a]) >= needed]
            if not fitting:
                room = None
                if request.resource_pool in preemptive_pools:
                    room = _make_room(request, candidates, free, freeing, victims)
                if room is not None:
                    preemptions += _reserve(request, *room, free, freeing, victims)
                    held[request.experiment_id] += needed
                    planned.add(request.allocation_id)
                continue
            agent_id = min(fitting, key=lambda a: (len(free[a]), a))
            chosen = tuple(free[agent_id][:needed])
            del free[agent_id][:needed]
            held[request.experiment_id] += needed
        planned.add(request.allocation_id)
        assignments.append(
            Assignment(
                allocation_id=request.allocation_id,
                trial_id=request.trial_id,
                experiment_id=request.experiment_id,
                agent_id=agent_id,
                slots=chosen,
            )
        )
    return Plan(assignments, preemptions)
