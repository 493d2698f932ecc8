"""The model registry: named models whose numbered versions point at COMPLETED checkpoints.

A registered checkpoint is protected: GC and manual deletion ask ``versions_protecting`` first, and
the restricting foreign key from ``model_versions`` refuses anything that slips past.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import (
    DEFAULT_PROJECT_ID,
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    Trial,
    User,
)
from stalwart_master.errors import Conflict, ErrorList, NotFound
from stalwart_master.services import authz

log = logging.getLogger(__name__)

ModelOrderBy = Literal["id", "name", "created_at", "updated_at"]
MAX_NAME = 255


@dataclass
class ModelFilter:
    name: str | None = None
    labels: list[str] = field(default_factory=list)
    owner: str | None = None
    # None: every workspace (a cluster admin); otherwise only models inside these.
    workspace_ids: set[int] | None = None
    workspace_id: int | None = None
    project_id: int | None = None
    order_by: ModelOrderBy = "name"
    descending: bool = False
    limit: int = 100
    offset: int = 0


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None; it appears in URLs, so no '/'."""
    if not name or len(name) > MAX_NAME:
        return f"must be 1-{MAX_NAME} characters"
    if not name.strip():
        return "must not be blank"
    if "/" in name:
        return "must not contain '/'"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "must not contain control characters"
    return None


def _check_name(name: str, path: str = "name") -> None:
    errors = ErrorList()
    problem = name_problem(name)
    if problem:
        errors.add(path, problem)
    errors.raise_if_any(title="Invalid model")


def create_model(
    session: Session,
    owner: User,
    name: str,
    *,
    description: str = "",
    labels: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    project_id: int = DEFAULT_PROJECT_ID,
) -> Model:
    _check_name(name)
    authz.project_to_create_in(session, owner, project_id)
    if session.scalar(select(Model.id).where(Model.name == name)) is not None:
        raise Conflict(f"model {name!r} already exists")
    model = Model(
        name=name,
        description=description,
        labels=list(dict.fromkeys(labels or [])),
        model_metadata=dict(metadata or {}),
        user_id=owner.id,
        project_id=project_id,
    )
    session.add(model)
    session.flush()  # a concurrent create of the same name fails here on the unique constraint
    log.info("model %r created by %s", name, owner.username)
    return model


def get_model(session: Session, name: str, *, for_update: bool = False, reader: User | None = None) -> Model:
    """With ``reader``, a model in a workspace they cannot see is not found."""
    query = select(Model).where(Model.name == name)
    if for_update:  # numbers versions safely: concurrent registrations queue on the model row
        query = query.with_for_update(of=Model)
    model = session.scalar(query)
    if model is None:
        raise NotFound(f"model {name!r} not found")
    if reader is not None:
        authz.model_for(session, reader, model)
    return model


def _filtered(query: Select[Any], flt: ModelFilter) -> Select[Any]:
    if flt.name:
        query = query.where(Model.name.icontains(flt.name, autoescape=True))
    if flt.labels:
        query = query.where(Model.labels.contains(flt.labels))
    if flt.owner:
        query = query.join(User, Model.user_id == User.id).where(User.username == flt.owner)
    if flt.project_id is not None:
        query = query.where(Model.project_id == flt.project_id)
    return authz.in_workspaces(query, Model.project_id, flt.workspace_ids, flt.workspace_id)


def list_models(session: Session, flt: ModelFilter) -> tuple[list[Model], int]:
    total = session.scalar(_filtered(select(func.count(Model.id)), flt)) or 0
    column = getattr(Model, flt.order_by)
    order = column.desc() if flt.descending else column.asc()
    tiebreak = Model.id.desc() if flt.descending else Model.id.asc()
    query = _filtered(select(Model), flt).order_by(order, tiebreak).limit(flt.limit).offset(flt.offset)
    return list(session.scalars(query)), total


def version_counts(session: Session, model_ids: Collection[int]) -> dict[int, tuple[int, int | None]]:
    """Per model id: how many versions it has and its highest version number."""
    if not model_ids:
        return {}
    rows = session.execute(
        select(ModelVersion.model_id, func.count(ModelVersion.id), func.max(ModelVersion.version))
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id)
    )
    return {model_id: (int(count), latest) for model_id, count, latest in rows}


def _require_owner(session: Session, actor: User, model: Model) -> None:
    authz.model_to_change(session, actor, model)


def merge_metadata(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Top-level merge as Determined does it; a key set to null is removed."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def update_model(
    session: Session,
    actor: User,
    name: str,
    *,
    description: str | None = None,
    labels: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Model:
    model = get_model(session, name, for_update=True, reader=actor)
    _require_owner(session, actor, model)
    if description is not None:
        model.description = description
    if labels is not None:
        model.labels = list(dict.fromkeys(labels))
    if metadata is not None:
        model.model_metadata = merge_metadata(model.model_metadata, metadata)
    session.flush()
    return model


def register_version(
    session: Session,
    actor: User,
    name: str,
    checkpoint_uuid: uuid.UUID,
    *,
    comment: str = "",
    labels: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelVersion:
    """Add the next version of ``name``; only a COMPLETED checkpoint can be registered.

    Registering protects the checkpoint from deletion, so besides change rights on the model it
    needs change rights on the checkpoint's experiment (its owner or a workspace admin): nobody
    can pin down someone else's checkpoint against its owner's will.
    """
    model = get_model(session, name, for_update=True, reader=actor)
    _require_owner(session, actor, model)
    checkpoint = session.get(Checkpoint, checkpoint_uuid, with_for_update={"read": True})
    if checkpoint is None:
        raise NotFound(f"checkpoint {checkpoint_uuid} not found")
    source = authz.checkpoint_for(session, actor, checkpoint)
    authz.require_change(
        session,
        actor,
        authz.workspace_of_project(session, source.project_id),
        source.owner_id,
        f"checkpoint {checkpoint_uuid}",
    )
    if checkpoint.state != "COMPLETED":
        raise Conflict(
            f"checkpoint {checkpoint_uuid} is {checkpoint.state}; "
            "only a COMPLETED checkpoint can be registered"
        )
    experiment_state = session.scalar(
        select(Experiment.state)
        .join(Trial, Trial.experiment_id == Experiment.id)
        .where(Trial.id == checkpoint.trial_id)
    )
    if experiment_state == "DELETING":
        raise Conflict(f"checkpoint {checkpoint_uuid} belongs to an experiment that is being deleted")
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    version = ModelVersion(
        model_id=model.id,
        version=(latest or 0) + 1,
        checkpoint_uuid=checkpoint_uuid,
        comment=comment,
        labels=list(dict.fromkeys(labels or [])),
        version_metadata=dict(metadata or {}),
        user_id=actor.id,
    )
    session.add(version)
    session.flush()
    log.info(
        "model %r version %d registered checkpoint %s (by %s)",
        name,
        version.version,
        checkpoint_uuid,
        actor.username,
    )
    return version


def delete_model(session: Session, actor: User, name: str) -> Model:
    """The model and all its versions; their checkpoints become deletable again."""
    model = get_model(session, name, for_update=True, reader=actor)
    _require_owner(session, actor, model)
    session.delete(model)
    session.flush()
    log.info("model %r deleted by %s", name, actor.username)
    return model


def delete_version(session: Session, actor: User, name: str, version: int) -> ModelVersion:
    model = get_model(session, name, for_update=True, reader=actor)
    _require_owner(session, actor, model)
    found = get_version(session, name, version)
    session.delete(found)
    session.flush()
    log.info("model %r version %d deleted by %s", name, version, actor.username)
    return found


def list_versions(
    session: Session, name: str, *, limit: int = 100, offset: int = 0, reader: User | None = None
) -> tuple[list[ModelVersion], int]:
    model = get_model(session, name, reader=reader)
    total = session.scalar(select(func.count(ModelVersion.id)).where(ModelVersion.model_id == model.id)) or 0
    query = (
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id)
        .order_by(ModelVersion.version)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query)), total


def get_version(session: Session, name: str, version: int, *, reader: User | None = None) -> ModelVersion:
    model = get_model(session, name, reader=reader)
    found = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    )
    if found is None:
        raise NotFound(f"model {name!r} has no version {version}")
    return found


def checkpoint_sources(session: Session, uuids: Collection[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """Per checkpoint uuid: (experiment id, trial id) of the trial that wrote it."""
    if not uuids:
        return {}
    rows = session.execute(
        select(Checkpoint.uuid, Trial.experiment_id, Trial.id)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .where(Checkpoint.uuid.in_(uuids))
    )
    return {ckpt: (experiment_id, trial_id) for ckpt, experiment_id, trial_id in rows}


def versions_protecting(session: Session, uuids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Per checkpoint uuid: the ``name:version`` entries that register it (absent when none).

    GC and checkpoint deletion skip any uuid found here.
    """
    if not uuids:
        return {}
    rows = session.execute(
        select(ModelVersion.checkpoint_uuid, Model.name, ModelVersion.version)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(ModelVersion.checkpoint_uuid.in_(list(uuids)))
        .order_by(Model.name, ModelVersion.version)
    )
    found: dict[uuid.UUID, list[str]] = {}
    for ckpt, model_name, number in rows:
        found.setdefault(ckpt, []).append(f"{model_name}:{number}")
    return found


def versions_in_experiment(session: Session, experiment_id: int) -> list[str]:
    """``name:version`` of every model version whose checkpoint the experiment wrote."""
    rows = session.execute(
        select(Model.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.model_id == Model.id)
        .join(Checkpoint, Checkpoint.uuid == ModelVersion.checkpoint_uuid)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .where(Trial.experiment_id == experiment_id)
        .order_by(Model.name, ModelVersion.version)
    )
    return [f"{model_name}:{number}" for model_name, number in rows]
