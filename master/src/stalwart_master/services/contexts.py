"""Contexts (model code tarballs), stored once per SHA-256 of their bytes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, undefer

from stalwart_master.contexts.archive import ContextArchive
from stalwart_master.db.orm import Context, Experiment
from stalwart_master.errors import NotFound


def store_context(session: Session, archive: ContextArchive, content: bytes) -> tuple[Context, bool]:
    """Returns the row and whether it is new; concurrent uploads of the same bytes both succeed."""
    result = session.execute(
        insert(Context)
        .values(sha256=archive.sha256, size=archive.size, files=archive.files, content=content)
        .on_conflict_do_nothing(index_elements=[Context.sha256])
        .returning(Context.sha256)
    )
    created = result.scalar() is not None
    return get_context(session, archive.sha256), created


def get_context(session: Session, sha256: str, *, with_content: bool = False) -> Context:
    query = select(Context).where(Context.sha256 == sha256)
    if with_content:
        query = query.options(undefer(Context.content))
    context = session.scalar(query)
    if context is None:
        raise NotFound(f"no context with sha256 {sha256}")
    return context


def delete_if_unreferenced(session: Session, sha256: str) -> bool:
    referenced = session.scalar(select(Experiment.id).where(Experiment.context_sha256 == sha256).limit(1))
    if referenced is not None:
        return False
    context = session.get(Context, sha256)
    if context is None:
        return False
    session.delete(context)
    return True
