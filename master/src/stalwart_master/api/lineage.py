"""Where a checkpoint came from: its parent chain across trials and experiments."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from stalwart_master.api.deps import CurrentUser, SessionDep
from stalwart_master.db.orm import Checkpoint
from stalwart_master.schemas.allocations import CheckpointOut, checkpoint_out
from stalwart_master.schemas.common import problem_responses
from stalwart_master.schemas.lineage import LineageExperiment, LineageOut, LineageTrial
from stalwart_master.services import checkpoints as checkpoints_service
from stalwart_master.services import lineage as lineage_service

router = APIRouter(
    prefix="/api/v1",
    tags=["checkpoints"],
    responses=problem_responses(401, 404),
)


@router.get("/checkpoints/{checkpoint_uuid}/lineage", response_model=LineageOut)
def checkpoint_lineage(checkpoint_uuid: uuid.UUID, user: CurrentUser, session: SessionDep) -> LineageOut:
    """``chain`` lists the parent first, then its parent, up to the first checkpoint (cycle-safe);
    ``missing_parent`` names a parent that was recorded but is not known to this master.

    The chain stops before the first ancestor in a workspace the caller cannot see."""
    lineage = lineage_service.lineage_for(session, user, checkpoint_uuid)
    details = checkpoints_service.details(session, [lineage.checkpoint, *lineage.chain])

    def out(checkpoint: Checkpoint) -> CheckpointOut:
        detail = details[checkpoint.uuid]
        return checkpoint_out(
            checkpoint,
            detail.experiment_id,
            model_versions=detail.model_versions,
            searcher_metric=detail.searcher_metric,
        )

    return LineageOut(
        checkpoint=out(lineage.checkpoint),
        chain=[out(c) for c in lineage.chain],
        missing_parent=lineage.missing_parent,
        experiments=[
            LineageExperiment(
                id=e.id,
                name=e.name,
                config=e.config,  # LineageExperiment masks its secrets
                context_sha256=e.context_sha256,
            )
            for e in lineage.experiments
        ],
        trials=[
            LineageTrial(
                id=t.id,
                experiment_id=t.experiment_id,
                request_id=t.request_id,
                hparams=t.hparams,
                warm_start_checkpoint=t.warm_start_checkpoint,
            )
            for t in lineage.trials
        ],
    )
