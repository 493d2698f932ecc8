"""Background jobs on Celery + Redis (checkpoint GC and retention will live here too)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def enqueue_experiment_deletion(experiment_id: int) -> None:
    """Best effort: if the broker is down the periodic sweep finds the DELETING row later."""
    from stalwart_master.jobs.tasks import delete_experiment

    try:
        delete_experiment.apply_async((experiment_id,), retry=True)
    except Exception:  # broker unreachable; the experiment stays DELETING and is swept
        log.warning("experiment %s: could not enqueue deletion now; the sweep will retry", experiment_id)
