"""Background jobs. Each task may run twice (late acks), so each one is idempotent."""

from __future__ import annotations

import logging

from stalwart_master.db.session import session_factory, unit_of_work
from stalwart_master.jobs.app import celery_app
from stalwart_master.jobs.gc import purge_checkpoints
from stalwart_master.services import experiments as experiments_service
from stalwart_master.settings import get_settings

log = logging.getLogger(__name__)


@celery_app.task(name="stalwart.delete_experiment", bind=True, max_retries=5, default_retry_delay=5)
def delete_experiment(self, experiment_id: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        # Storage first, as Determined does: deleting the rows first would orphan the files.
        purge_checkpoints(
            session_factory(), experiment_id, grace_seconds=get_settings().gc.chunk_grace_seconds
        )
        with unit_of_work() as session:
            return experiments_service.delete_experiment_now(session, experiment_id)
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            log.exception("experiment %s: deletion failed for good", experiment_id)
            with unit_of_work() as session:
                experiments_service.mark_delete_failed(session, experiment_id)
            return False
        raise self.retry(exc=exc) from exc


@celery_app.task(name="stalwart.sweep_deletions")
def sweep_deletions() -> int:
    """Re-enqueue deletions whose first message never reached the broker (e.g. Redis was down)."""
    with unit_of_work() as session:
        ids = experiments_service.deleting_experiment_ids(session)
    for experiment_id in ids:
        delete_experiment.delay(experiment_id)
    return len(ids)
