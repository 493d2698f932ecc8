"""The Celery application: Redis is the broker; tasks are idempotent and acknowledged late."""

from __future__ import annotations

from celery import Celery

from stalwart_master.settings import get_settings

SWEEP_SECONDS = 30.0


def _transport_options(visibility_timeout: float) -> dict[str, float]:
    """A short visibility timeout also needs frequent restore scans, or a dead worker's task waits
    for kombu's default scan period (about 100 s) rather than for the timeout."""
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": int(max(1, min(10, visibility_timeout // 4))),
        "unacked_restore_throttle": 1 if visibility_timeout < 1000 else 10,
    }


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery(
        "stalwart",
        broker=settings.redis.url,
        include=["stalwart_master.jobs.tasks", "stalwart_master.jobs.gc"],
    )
    app.conf.update(
        task_ignore_result=True,
        # A worker killed mid-task must not lose the task: ack only after it ran, redeliver on loss.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.redis.visibility_timeout_seconds),
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-deletions": {"task": "stalwart.sweep_deletions", "schedule": SWEEP_SECONDS},
            "prune-gc-requests": {"task": "stalwart.prune_gc_requests", "schedule": 3600.0},
        },
    )
    return app


celery_app = make_celery()
