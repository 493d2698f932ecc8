"""An experiment's code, read-only: the file tree of its context and one file at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from stalwart_master.api.deps import CurrentUser, SessionDep
from stalwart_master.contexts.browse import MAX_TEXT_BYTES
from stalwart_master.schemas.common import problem_responses
from stalwart_master.services import authz
from stalwart_master.services import context_files as context_files_service

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"], responses=problem_responses(401, 404))
ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ContextFileEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    size: int


class ContextFiles(BaseModel):
    files: list[ContextFileEntry] = Field(description="Regular files, sorted by path; links are left out.")


class ContextFileOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    size: int = Field(description="The whole file's size in bytes.")
    binary: bool = Field(description="Not UTF-8 text, or containing NUL: no text is sent.")
    truncated: bool = Field(description=f"Only the first {MAX_TEXT_BYTES} bytes are sent.")
    text: str | None


@router.get("/{experiment_id}/context", response_model=ContextFiles)
def list_context_files(experiment_id: ExperimentId, user: CurrentUser, session: SessionDep) -> ContextFiles:
    experiment = authz.experiment_for(session, user, experiment_id)
    files = context_files_service.context_files(session, experiment)
    return ContextFiles(files=[ContextFileEntry.model_validate(f) for f in files])


@router.get("/{experiment_id}/context/file", response_model=ContextFileOut, responses=problem_responses(422))
def read_context_file(
    experiment_id: ExperimentId,
    user: CurrentUser,
    session: SessionDep,
    path: Annotated[str, Query(min_length=1, max_length=4096, description="As listed, e.g. `model/net.py`.")],
) -> ContextFileOut:
    """One regular file of the context as text, read in memory (never extracted); 404 for a path
    that is not a regular file of it."""
    experiment = authz.experiment_for(session, user, experiment_id)
    return ContextFileOut.model_validate(context_files_service.context_file(session, experiment, path))
