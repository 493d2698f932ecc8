"""Agents and their slots: registration, heartbeats, enable/disable/drain, loss detection."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Agent, Allocation, AllocationSlot, Slot, Token, User, utcnow
from stalwart_master.errors import ErrorList, NotFound
from stalwart_master.services import users as users_service

log = logging.getLogger(__name__)

AGENT_TOKEN_TTL_HOURS = 24 * 365
SLOT_TYPES = ("cuda", "cpu", "artificial")


@dataclass(frozen=True)
class SlotReport:
    index: int
    type: str
    uuid: str
    name: str = ""
    memory_mb: int = 0


def create_agent_token(session: Session, admin: User, agent_id: str) -> tuple[str, int]:
    """A credential good for exactly one agent id: it cannot register or act as any other.

    Returns the secret (shown once) and the token's id (to revoke it by)."""
    secret, token = users_service.mint_token(
        session, admin, AGENT_TOKEN_TTL_HOURS, "agent", agent_id=agent_id
    )
    return secret, token.id


def list_agent_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).where(Token.kind == "agent").order_by(Token.id)))


def revoke_agent_token(session: Session, token_id: int) -> str | None:
    token = session.get(Token, token_id)
    if token is None or token.kind != "agent":
        raise NotFound(f"agent token {token_id} not found")
    users_service.revoke_token(session, token_id)
    return token.agent_id


def register_agent(
    session: Session,
    agent_id: str,
    resource_pool: str,
    version: str,
    slots: list[SlotReport],
    *,
    draining: bool = False,
) -> Agent:
    """Upsert the agent; devices it no longer reports stay on record but are never scheduled again.

    ``draining``: the agent is still draining (it re-registers after the master came back). An
    enabled agent registering without it has come back after its own drain and is offered work
    again; an agent an admin disabled stays disabled.
    """
    errors = ErrorList()
    if len({s.index for s in slots}) != len(slots):
        errors.add("slots", "slot indexes must be unique")
    for i, slot in enumerate(slots):
        if slot.type not in SLOT_TYPES:
            errors.add(f"slots.{i}.type", f"must be one of {', '.join(SLOT_TYPES)}")
    errors.raise_if_any(title="Invalid agent registration")

    agent = session.get(Agent, agent_id, with_for_update=True)
    now = utcnow()
    if agent is None:
        agent = Agent(id=agent_id, resource_pool=resource_pool, version=version)
        session.add(agent)
    agent.resource_pool, agent.version, agent.connected, agent.last_seen_at = (
        resource_pool,
        version,
        True,
        now,
    )
    if draining:
        agent.draining = True
    elif agent.enabled:
        agent.draining = False
    session.flush()
    known = {s.index: s for s in session.scalars(select(Slot).where(Slot.agent_id == agent_id))}
    for report in slots:
        existing = known.pop(report.index, None)
        if existing is not None and existing.uuid == report.uuid:
            existing.present, existing.name, existing.memory_mb, existing.type = (
                True,
                report.name,
                report.memory_mb,
                report.type,
            )
            continue
        if existing is not None:  # a different device now sits at this index
            existing.present = False
            existing.index = -existing.id  # free the (agent, index) pair, keep the history row
            session.flush()
        session.add(
            Slot(
                agent_id=agent_id,
                index=report.index,
                type=report.type,
                uuid=report.uuid,
                name=report.name,
                memory_mb=report.memory_mb,
            )
        )
    for gone in known.values():
        gone.present = False
    session.flush()
    log.info("agent %s registered in pool %s with %d slots", agent_id, resource_pool, len(slots))
    return agent


def touch(session: Session, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} is not registered")
    agent.last_seen_at = utcnow()
    agent.connected = True
    return agent


def get_agent(session: Session, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    return agent


def list_agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).order_by(Agent.id)))


def list_slots(session: Session) -> list[tuple[Slot, Allocation | None]]:
    """Present slots with the allocation holding each, if any."""
    held = (
        select(AllocationSlot.slot_id, Allocation)
        .join(Allocation, Allocation.id == AllocationSlot.allocation_id)
        .where(AllocationSlot.released.is_(False))
    )
    holders = {slot_id: allocation for slot_id, allocation in session.execute(held)}
    slots = session.scalars(select(Slot).where(Slot.present.is_(True)).order_by(Slot.agent_id, Slot.index))
    return [(slot, holders.get(slot.id)) for slot in slots]


def set_enabled(session: Session, agent_id: str, *, enabled: bool, drain: bool = False) -> Agent:
    agent = get_agent(session, agent_id)
    agent.enabled = enabled
    agent.draining = (not enabled) and drain
    return agent


def mark_draining(session: Session, agent_id: str) -> Agent:
    """The agent asked to be drained: nothing new is scheduled there until it registers again.

    It stays enabled, so the same agent coming back (a spot node returning) gets work again; an
    admin's ``disable`` is what keeps an agent out for good.
    """
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        raise NotFound(f"agent {agent_id} is not registered")
    agent.draining = True
    agent.last_seen_at, agent.connected = utcnow(), True
    log.info("agent %s is draining", agent_id)
    return agent


def mark_lost(session: Session, reconnect_wait: dt.timedelta) -> list[str]:
    """Agents silent for longer than the reconnect window are disconnected; returns their ids."""
    cutoff = utcnow() - reconnect_wait
    result = session.execute(
        update(Agent)
        .where(Agent.connected.is_(True), Agent.last_seen_at < cutoff)
        .values(connected=False)
        .returning(Agent.id)
    )
    lost = [row[0] for row in result]
    for agent_id in lost:
        log.warning("agent %s lost: no poll for %s", agent_id, reconnect_wait)
    return lost
