"""The audit log's one writer: routes call ``record`` in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.api.deps import AdminUser, Caller, SessionDep
from stalwart_master.db.orm import AuditEvent
from stalwart_master.schemas.common import Page, Text, problem_responses


def record(
    session: Session,
    caller: Caller | None,
    action: str,
    target_type: str = "",
    target_id: object = "",
    details: dict[str, Any] | None = None,
    *,
    outcome: str = "ok",
    username: str = "",
    address: str = "",
) -> None:
    """Who did what; committed with the change itself, so the log never claims what did not happen."""
    session.add(
        AuditEvent(
            user_id=caller.user.id if caller else None,
            username=caller.user.username if caller else username[:128],
            credential=str(caller.kind) if caller else "",
            address=(caller.address if caller else address)[:64],
            action=action,
            target_type=target_type,
            target_id=str(target_id)[:128],
            outcome=outcome,
            details=details or {},
        )
    )


def record_apart(sessions: sessionmaker[Session], **event: Any) -> None:
    """For refusals: the request's own transaction is rolled back, so this one commits alone."""
    with sessions.begin() as session:
        record(session, **event)


# --- reading it (cluster admins) ---------------------------------------------------------------

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=problem_responses(401, 403))


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    username: str
    credential: str
    address: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    details: dict[str, Any]


@router.get("/audit", response_model=Page[AuditEventOut], responses=problem_responses(422))
def list_audit_events(
    _: AdminUser,
    session: SessionDep,
    username: Annotated[Text | None, Query(max_length=128)] = None,
    action: Annotated[
        Text | None, Query(max_length=64, description="Exact, or a prefix ending in '.'")
    ] = None,
    since: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[AuditEventOut]:
    """Newest first."""
    query = select(AuditEvent)
    if username:
        query = query.where(AuditEvent.username == username)
    if action:
        prefix = action.endswith(".")
        query = query.where(
            AuditEvent.action.startswith(action, autoescape=True) if prefix else AuditEvent.action == action
        )
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
    return Page[AuditEventOut](
        items=[AuditEventOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )
