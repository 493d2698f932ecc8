"""The cluster as the dashboard shows it: the job queue in scheduling order and resource pools."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Agent, Allocation, AllocationSlot, Experiment, Project, Slot, Trial, User
from stalwart_master.scheduler.placement import PreemptionPolicy, Request, queue_order
from stalwart_master.services.states import LIVE_ALLOCATION


@dataclass(frozen=True)
class QueueEntry:
    """A run queued or going. The trial, experiment and owner are None when the caller may not
    see the experiment: they learn that something holds a place, not what."""

    position: int
    allocation_id: uuid.UUID
    trial_id: int | None
    experiment_id: int | None
    experiment_name: str | None
    owner: str | None
    state: str
    priority: int
    resource_pool: str
    slots: int
    queued_at: dt.datetime
    started_at: dt.datetime | None


def job_queue(session: Session, visible_workspaces: set[int] | None) -> list[QueueEntry]:
    """Live allocations in the scheduler's own order (``placement.queue_order``: pool, priority,
    age, id); ``position`` counts from 1 within each pool, each pool being its own queue.
    ``visible_workspaces`` None means all (a cluster admin)."""
    rows = session.execute(
        select(Allocation, Trial.experiment_id, Experiment.name, User.username, Project.workspace_id)
        .join(Trial, Trial.id == Allocation.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .join(User, User.id == Experiment.owner_id)
        .join(Project, Project.id == Experiment.project_id)
        .where(Allocation.state.in_(LIVE_ALLOCATION))
    ).all()
    keyed = [
        (
            queue_order(
                Request(
                    allocation_id=allocation.id,
                    trial_id=allocation.trial_id,
                    experiment_id=experiment_id,
                    resource_pool=allocation.resource_pool,
                    slots_needed=allocation.slots_needed,
                    priority=allocation.priority,
                    submitted_at=allocation.created_at,
                )
            ),
            (allocation, experiment_id, name, owner, workspace_id),
        )
        for allocation, experiment_id, name, owner, workspace_id in rows
    ]
    keyed.sort(key=lambda pair: pair[0])
    positions: Counter[str] = Counter()
    entries = []
    for _, (allocation, experiment_id, name, owner, workspace_id) in keyed:
        positions[allocation.resource_pool] += 1
        shown = visible_workspaces is None or workspace_id in visible_workspaces
        entries.append(
            QueueEntry(
                position=positions[allocation.resource_pool],
                allocation_id=allocation.id,
                trial_id=allocation.trial_id if shown else None,
                experiment_id=experiment_id if shown else None,
                experiment_name=name if shown else None,
                owner=owner if shown else None,
                state=allocation.state,
                priority=allocation.priority,
                resource_pool=allocation.resource_pool,
                slots=allocation.slots_needed,
                queued_at=allocation.created_at,
                started_at=allocation.started_at,
            )
        )
    return entries


@dataclass(frozen=True)
class PoolSummary:
    """A resource pool: the connected agents serving it and their present slots.

    ``slots_free`` are the slots the scheduler could hand out now: not held, on an enabled agent
    that is not draining; so it can be less than ``slots_total - slots_used``.
    """

    name: str
    agents: int
    slots_total: int
    slots_used: int
    slots_free: int
    preemption: bool


def resource_pools(session: Session, policy: PreemptionPolicy) -> list[PoolSummary]:
    """Every pool an agent has registered in or a live run waits for, by name."""
    agents = list(session.scalars(select(Agent)))
    held = set(session.scalars(select(AllocationSlot.slot_id).where(AllocationSlot.released.is_(False))))
    connected = {a.id: a for a in agents if a.connected}
    total: Counter[str] = Counter()
    used: Counter[str] = Counter()
    free: Counter[str] = Counter()
    for slot in session.scalars(select(Slot).where(Slot.present.is_(True), Slot.agent_id.in_(connected))):
        agent = connected[slot.agent_id]
        total[agent.resource_pool] += 1
        if slot.id in held:
            used[agent.resource_pool] += 1
        elif agent.enabled and not agent.draining:
            free[agent.resource_pool] += 1
    waiting = session.scalars(
        select(Allocation.resource_pool).where(Allocation.state.in_(LIVE_ALLOCATION)).distinct()
    )
    names = {a.resource_pool for a in agents} | set(waiting)
    serving = Counter(a.resource_pool for a in connected.values())
    return [
        PoolSummary(
            name=name,
            agents=serving[name],
            slots_total=total[name],
            slots_used=used[name],
            slots_free=free[name],
            preemption=policy.preemptive(name),
        )
        for name in sorted(names)
    ]
