"""The code an experiment runs, file by file, for the dashboard's code viewer."""

from __future__ import annotations

from sqlalchemy.orm import Session

from stalwart_master.contexts.browse import FileEntry, FileText, list_files, read_file
from stalwart_master.db.orm import Experiment
from stalwart_master.errors import NotFound
from stalwart_master.services import contexts as contexts_service


def context_files(session: Session, experiment: Experiment) -> list[FileEntry]:
    """Regular files of the experiment's context; none for an experiment created without one."""
    if experiment.context_sha256 is None:
        return []
    context = contexts_service.get_context(session, experiment.context_sha256, with_content=True)
    return list_files(context.content)


def context_file(session: Session, experiment: Experiment, path: str) -> FileText:
    found = None
    if experiment.context_sha256 is not None:
        context = contexts_service.get_context(session, experiment.context_sha256, with_content=True)
        found = read_file(context.content, path)
    if found is None:
        # repr() quotes and escapes the path, so the detail is safe to echo whatever was asked.
        raise NotFound(f"experiment {experiment.id} has no file {path[:200]!r} in its context")
    return found
