"""The model registry: models by name and their numbered versions, each a registered checkpoint."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from stalwart_master.api import audit
from stalwart_master.api.deps import CurrentUser, SessionDep, SettingsDep, UserCaller
from stalwart_master.db.orm import Model, ModelVersion
from stalwart_master.schemas.common import Page, Text, problem_responses
from stalwart_master.schemas.models import (
    ModelCreate,
    ModelOut,
    ModelPatch,
    ModelVersionCreate,
    ModelVersionOut,
    model_out,
    version_out,
)
from stalwart_master.services import authz
from stalwart_master.services import models as models_service
from stalwart_master.services.models import MAX_NAME, ModelFilter, ModelOrderBy

router = APIRouter(
    prefix="/api/v1/models",
    tags=["models"],
    responses=problem_responses(401, 404),
)
ModelName = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="The model's name")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]


def _out(session: SessionDep, model: Model) -> ModelOut:
    counts = models_service.version_counts(session, [model.id])
    return model_out(model, counts.get(model.id, (0, None)))


def _version_out(session: SessionDep, version: ModelVersion) -> ModelVersionOut:
    sources = models_service.checkpoint_sources(session, [version.checkpoint_uuid])
    return version_out(version, sources.get(version.checkpoint_uuid))


@router.post(
    "", response_model=ModelOut, status_code=status.HTTP_201_CREATED, responses=problem_responses(409, 422)
)
def create_model(body: ModelCreate, caller: UserCaller, session: SessionDep) -> ModelOut:
    model = models_service.create_model(
        session,
        caller.user,
        body.name,
        description=body.description,
        labels=body.labels,
        metadata=body.metadata,
        project_id=body.project_id,
    )
    audit.record(session, caller, "model.create", "model", model.name)
    session.commit()
    return model_out(model)


@router.get("", response_model=Page[ModelOut], responses=problem_responses(422))
def list_models(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[Text | None, Query(max_length=MAX_NAME, description="Substring, any case")] = None,
    label: Annotated[list[Text], Query(max_length=100)] = [],  # noqa: B006 (FastAPI copies defaults)
    owner: Annotated[Text | None, Query(max_length=128)] = None,
    workspace_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    project_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    order_by: ModelOrderBy = "name",
    order: Literal["asc", "desc"] = "asc",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ModelOut]:
    flt = ModelFilter(
        name=name,
        labels=label,
        owner=owner,
        workspace_ids=authz.readable_workspace_ids(session, user),
        workspace_id=workspace_id,
        project_id=project_id,
        order_by=order_by,
        descending=order == "desc",
        limit=min(limit, settings.limits.max_page_limit),
        offset=offset,
    )
    items, total = models_service.list_models(session, flt)
    counts = models_service.version_counts(session, [m.id for m in items])
    return Page[ModelOut](
        items=[model_out(m, counts.get(m.id, (0, None))) for m in items],
        total=total,
        limit=flt.limit,
        offset=offset,
    )


@router.get("/{name}", response_model=ModelOut)
def get_model(name: ModelName, user: CurrentUser, session: SessionDep) -> ModelOut:
    return _out(session, models_service.get_model(session, name, reader=user))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403))
def delete_model(name: ModelName, caller: UserCaller, session: SessionDep) -> None:
    """The model and every version of it; the checkpoints stay, no longer protected by it."""
    models_service.delete_model(session, caller.user, name)
    audit.record(session, caller, "model.delete", "model", name)
    session.commit()


@router.patch("/{name}", response_model=ModelOut, responses=problem_responses(403, 422))
def patch_model(name: ModelName, body: ModelPatch, user: CurrentUser, session: SessionDep) -> ModelOut:
    model = models_service.update_model(
        session, user, name, description=body.description, labels=body.labels, metadata=body.metadata
    )
    session.commit()
    return _out(session, model)


@router.post(
    "/{name}/versions",
    response_model=ModelVersionOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409, 422),
)
def register_version(
    name: ModelName, body: ModelVersionCreate, caller: UserCaller, session: SessionDep
) -> ModelVersionOut:
    """The next version number of the model; the checkpoint must be COMPLETED (409 otherwise)."""
    version = models_service.register_version(
        session,
        caller.user,
        name,
        body.checkpoint_uuid,
        comment=body.comment,
        labels=body.labels,
        metadata=body.metadata,
    )
    audit.record(
        session,
        caller,
        "model.version.create",
        "model",
        name,
        {"version": version.version, "checkpoint_uuid": str(body.checkpoint_uuid)},
    )
    session.commit()
    return _version_out(session, version)


@router.get("/{name}/versions", response_model=Page[ModelVersionOut], responses=problem_responses(422))
def list_versions(
    name: ModelName,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ModelVersionOut]:
    limit = min(limit, settings.limits.max_page_limit)
    items, total = models_service.list_versions(session, name, limit=limit, offset=offset, reader=user)
    sources = models_service.checkpoint_sources(session, [v.checkpoint_uuid for v in items])
    return Page[ModelVersionOut](
        items=[version_out(v, sources.get(v.checkpoint_uuid)) for v in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut)
def get_version(
    name: ModelName, version: VersionNumber, user: CurrentUser, session: SessionDep
) -> ModelVersionOut:
    return _version_out(session, models_service.get_version(session, name, version, reader=user))


@router.delete(
    "/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403)
)
def delete_version(name: ModelName, version: VersionNumber, caller: UserCaller, session: SessionDep) -> None:
    """Its checkpoint is no longer protected by this version (other versions may still hold it)."""
    models_service.delete_version(session, caller.user, name, version)
    audit.record(session, caller, "model.version.delete", "model", name, {"version": version})
    session.commit()
