"""The master's side of the agent protocol: what an agent is told to start and kill, and what its
registration, drain and silence mean for the runs it holds.

Outcomes go through ``allocations.finish_allocation`` and preemption through
``allocations.request_preemption``, so every way a run can end is decided in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Allocation, AllocationSlot, Experiment, Slot, Trial, User
from stalwart_master.services import outcomes
from stalwart_master.services import users as users_service
from stalwart_master.services.allocations import (
    ALLOCATION_TOKEN_TTL_HOURS,
    KILL_GRACE_SECONDS,
    allocation_slots,
    finish_allocation,
    handed_over,
    request_preemption,
)

log = logging.getLogger(__name__)


def agent_actions(session: Session, agent_id: str) -> list[dict[str, Any]]:
    """Undelivered starts and kills for one agent; a start carries a freshly minted allocation token."""
    actions: list[dict[str, Any]] = []
    rows = session.execute(
        select(Allocation, Trial, Experiment)
        .join(Trial, Trial.id == Allocation.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(Allocation.agent_id == agent_id, Allocation.state.in_(("ASSIGNED", "RUNNING")))
        .with_for_update(of=Allocation)
    ).all()
    for allocation, trial, experiment in rows:
        if allocation.state == "ASSIGNED" and not allocation.delivered:
            owner = session.get(User, experiment.owner_id)
            assert owner is not None
            secret = users_service.issue_token(
                session, owner, ALLOCATION_TOKEN_TTL_HOURS, kind="allocation", allocation_id=allocation.id
            )
            slots = allocation_slots(session, allocation.id)
            actions.append(
                {
                    "type": "start",
                    "allocation_id": str(allocation.id),
                    "allocation_token": secret,
                    "trial_id": trial.id,
                    "experiment_id": experiment.id,
                    "slot_uuids": [s.uuid for s in slots],
                    "slot_indexes": [s.index for s in slots],
                    "slot_types": [s.type for s in slots],
                }
            )
            allocation.delivered = True
        if allocation.kill_requested and not allocation.kill_delivered:
            actions.append(
                {"type": "kill", "allocation_id": str(allocation.id), "grace_seconds": KILL_GRACE_SECONDS}
            )
            allocation.kill_delivered = True
    session.flush()
    return actions


def _kill_action(allocation_id: str) -> dict[str, Any]:
    return {"type": "kill", "allocation_id": allocation_id, "grace_seconds": KILL_GRACE_SECONDS}


def _unassign(session: Session, allocation: Allocation) -> None:
    """An assignment never handed to its agent goes back to the queue, its slots free again (the
    rows go: nothing ran on them, and a later assignment may pick the same slot)."""
    session.execute(delete(AllocationSlot).where(AllocationSlot.allocation_id == allocation.id))
    allocation.state, allocation.agent_id, allocation.assigned_at = "PENDING", None, None


def reconcile_agent(session: Session, agent_id: str, running: list[str]) -> list[dict[str, Any]]:
    """On (re-)registration: match the master's runs on this agent with those the agent reports.

    A reported run carries on (same allocation, same run, no restart). A run handed to the agent
    that it does not report, or one holding a slot the agent no longer has, is over: "agent lost",
    resumed elsewhere from its checkpoint. Returns kill actions for the reported runs the master
    has already ended (or never placed there) and for kept runs whose kill may not have been
    carried out by the agent's previous life.
    """
    reported = set(running)
    on_vanished_slots = set(
        session.scalars(
            select(AllocationSlot.allocation_id)
            .join(Slot, Slot.id == AllocationSlot.slot_id)
            .where(Slot.agent_id == agent_id, Slot.present.is_(False), AllocationSlot.released.is_(False))
        )
    )
    kept: set[str] = set()
    actions: list[dict[str, Any]] = []
    live = _placed_on(session, agent_id)
    for allocation in live:
        allocation_id = str(allocation.id)
        if allocation.id in on_vanished_slots:
            log.warning("allocation %s: agent %s no longer has its slots", allocation_id, agent_id)
            if allocation.delivered:
                finish_allocation(session, allocation, None, outcomes.AGENT_LOST)
            else:
                _unassign(session, allocation)
        elif allocation_id in reported:
            kept.add(allocation_id)
            allocation.delivered = True
            if allocation.kill_requested:
                actions.append(_kill_action(allocation_id))
                allocation.kill_delivered = True
        elif allocation.delivered:
            finish_allocation(session, allocation, None, outcomes.AGENT_LOST)
    for allocation_id in sorted(reported - kept):
        log.info(
            "allocation %s: agent %s still runs it but it has ended; killing it", allocation_id, agent_id
        )
        actions.append(_kill_action(allocation_id))
    session.flush()
    return actions


def _placed_on(session: Session, agent_id: str) -> list[Allocation]:
    """The agent's assigned and running allocations, locked: what reconcile and drain act on."""
    return list(
        session.scalars(
            select(Allocation)
            .where(Allocation.agent_id == agent_id, Allocation.state.in_(("ASSIGNED", "RUNNING")))
            .with_for_update()
        )
    )


def drain_allocations(session: Session, agent_id: str) -> int:
    """The agent is going away (SIGTERM, a spot node reclaimed): its runs are asked to checkpoint
    and exit, and resume elsewhere ("drained", never counted as a restart); an assignment not yet
    handed over goes back to the queue. Returns how many runs were asked to leave."""
    asked = 0
    live = _placed_on(session, agent_id)
    for allocation in live:
        if not handed_over(allocation):
            _unassign(session, allocation)
        else:
            request_preemption(allocation)
            asked += 1
    session.flush()
    return asked


def fail_lost_agents(session: Session, agent_ids: list[str]) -> None:
    for allocation in session.scalars(
        select(Allocation).where(
            Allocation.agent_id.in_(agent_ids), Allocation.state.in_(("ASSIGNED", "RUNNING"))
        )
    ):
        finish_allocation(session, allocation, None, outcomes.AGENT_LOST)


def preempt_on_agent(session: Session, agent_id: str) -> None:
    """Disabling an agent without drain asks its runs to checkpoint and leave; they resume elsewhere."""
    for allocation in session.scalars(
        select(Allocation).where(
            Allocation.agent_id == agent_id, Allocation.state.in_(("ASSIGNED", "RUNNING"))
        )
    ):
        request_preemption(allocation)
