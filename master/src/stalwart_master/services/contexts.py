"""Contexts (model code tarballs), stored once per SHA-256 of their bytes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, undefer

from stalwart_master.contexts.archive import ContextArchive
from stalwart_master.db.orm import Allocation, Context, Experiment, Project, Token, Trial
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


def require_readable(session: Session, token: Token, sha256: str) -> None:
    """A run reads its own experiment's code; a person code of an experiment they can see.

    Code is found by its digest, so knowing a digest must not be enough to read someone's code.
    Anything else answers 404, like a digest that was never uploaded.
    """
    from stalwart_master.services import authz

    if token.kind == "allocation":
        experiment_sha = session.scalar(
            select(Experiment.context_sha256)
            .join(Trial, Trial.experiment_id == Experiment.id)
            .join(Allocation, Allocation.trial_id == Trial.id)
            .where(Allocation.id == token.allocation_id)
        )
        if experiment_sha == sha256:
            return
        raise NotFound(f"no context with sha256 {sha256}")
    if token.user.admin:
        return
    visible = authz.readable_workspace_ids(session, token.user) or set()
    used = session.scalar(
        select(Experiment.id)
        .join(Project, Project.id == Experiment.project_id)
        .where(Experiment.context_sha256 == sha256, Project.workspace_id.in_(visible))
        .limit(1)
    )
    if used is None:
        raise NotFound(f"no context with sha256 {sha256}")
