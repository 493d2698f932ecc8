"""Agents: registration and the work long-poll (agent tokens), plus listing and control (users)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stalwart_master.api import audit
from stalwart_master.api.deps import (
    AdminCaller,
    AdminUser,
    AgentCaller,
    CurrentUser,
    SessionDep,
    SettingsDep,
    require_agent,
)
from stalwart_master.api.deps import wake_scheduler as _wake
from stalwart_master.schemas.common import Text, problem_responses
from stalwart_master.services import agent_runs as agent_runs_service
from stalwart_master.services import agents as agents_service
from stalwart_master.services.agents import SlotReport

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=problem_responses(401, 403))
AgentId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


class SlotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=1024)
    type: str
    uuid: Text = Field(min_length=1, max_length=128)
    name: Text = Field(default="", max_length=256)
    memory_mb: int = Field(default=0, ge=0)


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    resource_pool: Text = Field(default="default", min_length=1, max_length=128)
    version: Text = Field(default="", max_length=64)
    slots: list[SlotIn] = Field(max_length=1024)
    running: list[str] = Field(default_factory=list, max_length=1024)
    # Re-registering while it drains (after the master came back): keep draining.
    draining: bool = False


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    resource_pool: str
    version: str
    enabled: bool
    draining: bool
    connected: bool
    registered_at: dt.datetime
    last_seen_at: dt.datetime


class SlotOut(BaseModel):
    agent_id: str
    index: int
    type: str
    uuid: str
    name: str
    memory_mb: int
    allocation_id: str | None
    trial_id: int | None


class AgentControl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drain: bool = False


class AgentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")


class AgentTokenOut(BaseModel):
    id: int
    agent_id: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


@router.post("/agents/tokens", status_code=201, responses=problem_responses(422))
def create_agent_token(body: AgentTokenCreate, caller: AdminCaller, session: SessionDep) -> dict[str, Any]:
    """A credential for exactly one agent id; the secret is shown once."""
    secret, token_id = agents_service.create_agent_token(session, caller.user, body.agent_id)
    audit.record(session, caller, "agent_token.create", "agent", body.agent_id, {"token_id": token_id})
    session.commit()
    return {"token": secret, "id": token_id, "agent_id": body.agent_id}


@router.get("/agents/tokens", response_model=list[AgentTokenOut])
def list_agent_tokens(_: AdminUser, session: SessionDep) -> list[AgentTokenOut]:
    return [
        AgentTokenOut(
            id=t.id,
            agent_id=t.agent_id,
            created_by=t.user.username,
            created_at=t.created_at,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
        )
        for t in agents_service.list_agent_tokens(session)
    ]


@router.delete("/agents/tokens/{token_id}", status_code=204, responses=problem_responses(404))
def revoke_agent_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], caller: AdminCaller, session: SessionDep
) -> Response:
    """The agent holding it is refused from its next request on; its running trials carry on until
    the agent is declared lost."""
    agent_id = agents_service.revoke_agent_token(session, token_id)
    audit.record(session, caller, "agent_token.revoke", "agent", agent_id or "", {"token_id": token_id})
    session.commit()
    return Response(status_code=204)


@router.post("/agents/register", responses=problem_responses(422))
def register_agent(
    body: RegisterIn, caller: AgentCaller, session: SessionDep, settings: SettingsDep, request: Request
) -> dict[str, Any]:
    """Also after a restart of either side: ``running`` lists the allocations the agent still runs;
    they carry on, the ones it no longer has end ("agent lost"), and ``actions`` holds kills for
    those it runs but the master has already ended. The credential names the one id it may use."""
    require_agent(caller, body.agent_id)
    agents_service.register_agent(
        session,
        body.agent_id,
        body.resource_pool,
        body.version,
        [SlotReport(s.index, s.type, s.uuid, s.name, s.memory_mb) for s in body.slots],
        draining=body.draining,
    )
    actions = agent_runs_service.reconcile_agent(session, body.agent_id, body.running)
    if body.draining:
        agent_runs_service.drain_allocations(session, body.agent_id)
    session.commit()
    _wake(request)
    return {
        "agent_id": body.agent_id,
        "poll_timeout_seconds": 20,
        "reconnect_wait_seconds": settings.agent_reconnect_wait_seconds,
        "actions": actions,
    }


@router.post("/agents/{agent_id}/drain", status_code=204, responses=problem_responses(404))
def drain_agent(agent_id: AgentId, caller: AgentCaller, session: SessionDep, request: Request) -> Response:
    """The agent is going away (SIGTERM): its trials checkpoint and resume on other agents, and
    nothing new is scheduled on it until it registers again without draining."""
    require_agent(caller, agent_id)
    agents_service.mark_draining(session, agent_id)
    agent_runs_service.drain_allocations(session, agent_id)
    session.commit()
    _wake(request)
    return Response(status_code=204)


@router.get("/agents/{agent_id}/work")
async def agent_work(
    agent_id: AgentId,
    caller: AgentCaller,
    session: SessionDep,
    request: Request,
    timeout_seconds: Annotated[float, Query(ge=0, le=60)] = 20,
) -> dict[str, Any]:
    """Long-poll: answers as soon as there is something to do; every poll counts as a heartbeat.

    It stops when the agent hangs up: a dead agent's poll must not keep it alive (its heartbeat) or
    take actions nobody will read.
    """
    require_agent(caller, agent_id)
    deadline = time.monotonic() + timeout_seconds

    def poll() -> list[dict[str, Any]]:
        agents_service.touch(session, agent_id)
        actions = agent_runs_service.agent_actions(session, agent_id)
        session.commit()
        return actions

    while True:
        if await request.is_disconnected():
            return {"actions": []}
        actions = await run_in_threadpool(poll)
        if actions or time.monotonic() >= deadline:
            return {"actions": actions}
        await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


@router.get("/agents", response_model=list[AgentOut])
def list_agents(_: CurrentUser, session: SessionDep) -> list[AgentOut]:
    return [AgentOut.model_validate(a) for a in agents_service.list_agents(session)]


@router.get("/slots", response_model=list[SlotOut])
def list_slots(_: CurrentUser, session: SessionDep) -> list[SlotOut]:
    return [
        SlotOut(
            agent_id=slot.agent_id,
            index=slot.index,
            type=slot.type,
            uuid=slot.uuid,
            name=slot.name,
            memory_mb=slot.memory_mb,
            allocation_id=str(holder.id) if holder else None,
            trial_id=holder.trial_id if holder else None,
        )
        for slot, holder in agents_service.list_slots(session)
    ]


@router.post("/agents/{agent_id}/enable", response_model=AgentOut, responses=problem_responses(404))
def enable_agent(agent_id: AgentId, caller: AdminCaller, session: SessionDep, request: Request) -> AgentOut:
    agent = agents_service.set_enabled(session, agent_id, enabled=True)
    audit.record(session, caller, "agent.enable", "agent", agent_id)
    session.commit()
    _wake(request)
    return AgentOut.model_validate(agent)


@router.post("/agents/{agent_id}/disable", response_model=AgentOut, responses=problem_responses(404))
def disable_agent(
    agent_id: AgentId, body: AgentControl, caller: AdminCaller, session: SessionDep
) -> AgentOut:
    """Nothing new is scheduled there; with drain its trials finish, else they checkpoint and move."""
    agent = agents_service.set_enabled(session, agent_id, enabled=False, drain=body.drain)
    audit.record(session, caller, "agent.disable", "agent", agent_id, {"drain": body.drain})
    if not body.drain:
        agent_runs_service.preempt_on_agent(session, agent_id)
    session.commit()
    return AgentOut.model_validate(agent)
