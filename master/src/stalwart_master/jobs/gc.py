"""Checkpoint GC on Celery: the task that deletes, and the publisher of the ``gc_requests`` outbox.

A run holds a PostgreSQL advisory lock on its experiment for its whole length, so a second delivery
of the same request (late acks redeliver, Celery #7918 duplicates) never acts beside it: it finds
the lock taken and retries later, by which time the request is done and it does nothing.

Order inside a run, each step safe to repeat after a crash:
1. lock the rows to delete; 2. delete their manifests (already gone counts as done);
3. mark them DELETED and commit; 4. sweep chunks no manifest references; 5. mark the requests done.
A checkpoint is never DELETED while its manifest may still exist, and a crash after 3 leaves at
worst chunks that the redelivered run (which sweeps the experiment's storage) removes.

A run touches one storage: the experiment's, as ``services/storage.py`` resolves it from the
experiment's config (or the operator's named storage), never what a checkpoint row says, and only
once ``check_reachable`` allows it. A refused storage ends the run with nothing deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import event, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from stalwart.checkpoint import StorageBackend, StorageError, delete_manifests, open_storage, sweep_chunks
from stalwart_master.db.orm import Checkpoint, Experiment, GCRequest, utcnow
from stalwart_master.db.session import session_factory, unit_of_work
from stalwart_master.jobs.app import celery_app
from stalwart_master.services import gc as gc_service
from stalwart_master.services import storage as storage_service
from stalwart_master.settings import Settings, get_settings

log = logging.getLogger(__name__)

# After a failed publish, requests are left to the republisher this long: an API call that
# triggers GC must not wait on a dead broker again and again.
BROKER_BACKOFF_SECONDS = 5.0
# Requests younger than this are left to the transaction that made them to publish.
REPUBLISH_MIN_AGE_SECONDS = 5.0
REPUBLISH_BATCH = 100
_broker_down_until = 0.0
_broker_lock = threading.Lock()


# The reason of a request that only sweeps again chunks an earlier sweep found too young to delete.
SWEEP_AGAIN = "sweep chunks that were younger than the grace period"


class GCBusy(Exception):
    """Another GC run of the same experiment holds its lock."""


@dataclass
class GCOutcome:
    experiment_id: int
    request_ids: list[int]
    deleted: list[uuid.UUID] = field(default_factory=list)
    chunks_deleted: int = 0
    bytes_freed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "request_ids": self.request_ids,
            "deleted": [str(u) for u in self.deleted],
            "chunks_deleted": self.chunks_deleted,
            "bytes_freed": self.bytes_freed,
        }


# --- the task -------------------------------------------------------------------------------------


@celery_app.task(name="stalwart.gc_checkpoints", bind=True, max_retries=None)
def gc_checkpoints(self, request_id: int) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    try:
        outcome = collect(
            session_factory(),
            request_id,
            grace_seconds=settings.gc.chunk_grace_seconds,
            pause_seconds=settings.gc.test_pause_seconds,
        )
    except GCBusy as exc:
        log.info("GC request %s: %s; retrying in %.0fs", request_id, exc, settings.gc.busy_retry_seconds)
        raise self.retry(exc=exc, countdown=settings.gc.busy_retry_seconds, max_retries=1000) from exc
    except storage_service.StorageRefused:
        return None  # recorded on the requests; retrying cannot make the storage allowed
    except StorageError as exc:
        # Left undone: after the last retry the master's republisher tries again much later.
        countdown = min(300, 10 * 2**self.request.retries)
        log.warning("GC request %s: storage failed (%s); retrying in %ss", request_id, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown, max_retries=8) from exc
    return outcome.as_dict() if outcome else None


@celery_app.task(name="stalwart.prune_gc_requests")
def prune_gc_requests() -> int:
    settings = get_settings()
    with unit_of_work() as session:
        return gc_service.prune_requests(session, older_than=dt.timedelta(days=settings.gc.keep_done_days))


def collect(
    sessions: sessionmaker[Session], request_id: int, *, grace_seconds: float, pause_seconds: float = 0.0
) -> GCOutcome | None:
    """Carry out a request (with every other pending one of its experiment); None if nothing to do.

    Raises GCBusy when another run of the experiment is in progress, and ``StorageRefused`` (the
    requests then done, with the reason) when the experiment's storage is one the master may not touch.
    """
    with sessions() as session:
        request = gc_service.get_request(session, request_id)
        if request is None or request.done_at is not None:
            return None
        experiment_id = request.experiment_id
    lock = sessions()
    try:
        # Transaction-scoped: a worker killed mid-run loses its connection and with it the lock.
        acquired = lock.scalar(
            text("SELECT pg_try_advisory_xact_lock(CAST(:cls AS integer), CAST(:obj AS integer))"),
            {"cls": gc_service.GC_LOCK_CLASS, "obj": experiment_id},
        )
        if not acquired:
            raise GCBusy(f"experiment {experiment_id} is being collected by another run")
        return _collect_locked(sessions, request_id, experiment_id, grace_seconds, pause_seconds)
    finally:
        lock.rollback()
        lock.close()


def purge_checkpoints(sessions: sessionmaker[Session], experiment_id: int, *, grace_seconds: float) -> None:
    """Delete every checkpoint of an experiment being deleted from storage, before its rows go."""
    with sessions.begin() as session:
        request = gc_service.request_purge(session, experiment_id)
        request_id = request.id if request is not None else None
    if request_id is not None:
        collect(sessions, request_id, grace_seconds=grace_seconds)


def _collect_locked(
    sessions: sessionmaker[Session],
    request_id: int,
    experiment_id: int,
    grace_seconds: float,
    pause_seconds: float,
) -> GCOutcome | None:
    with sessions.begin() as session:
        requests = gc_service.start_requests(session, experiment_id)
        pending = [(r.id, r.checkpoint_uuids, r.attempts) for r in requests]
        sweep_again = any(r.reason == SWEEP_AGAIN for r in requests)
    ids = [request_id_ for request_id_, _, _ in pending]
    if request_id not in ids:
        return None  # done by the run that held the lock before us
    outcome = GCOutcome(experiment_id, ids)
    by_policy = any(uuids is None for _, uuids, _ in pending)
    explicit = {u for _, uuids, _ in pending for u in uuids or ()}
    failures: list[str] = []
    refused: storage_service.StorageRefused | None = None
    with sessions.begin() as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            return None  # deleted meanwhile; its requests went with it
        try:
            storage = storage_service.experiment_storage(experiment.config)
            storage_service.check_reachable(storage)
        except (storage_service.StorageRefused, storage_service.UnknownStorage) as exc:
            log.error("experiment %s: GC refused, nothing deleted: %s", experiment_id, exc)
            gc_service.finish_requests(session, ids, error=f"refused: {exc}", give_up=True)
            refused = storage_service.StorageRefused(str(exc))
    if refused is not None:
        raise refused
    with sessions.begin() as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            return None
        doomed = gc_service.lock_doomed(session, experiment, by_policy=by_policy, explicit=explicit)
        for checkpoint in doomed:
            if not storage_service.same_location(checkpoint.storage, storage):
                # Only the experiment's own storage is touched: the manifest is deleted there (gone
                # counts as deleted), wherever the row claims the checkpoint went.
                log.warning(
                    "experiment %s: checkpoint %s claims storage %s; deleting it from the experiment's %s",
                    experiment_id,
                    checkpoint.uuid,
                    storage_service.location(checkpoint.storage),
                    storage_service.location(storage),
                )
        confirmed: list[Checkpoint] = []
        if doomed:
            try:
                with _opened(storage) as backend:
                    delete_manifests(backend, [str(c.uuid) for c in doomed])
                confirmed = doomed
            except StorageError as exc:
                failures.append(str(exc))
        if confirmed and pause_seconds:
            log.warning(
                "experiment %s: GC pausing %.1fs before marking (test hook)", experiment_id, pause_seconds
            )
            time.sleep(pause_seconds)
        gc_service.mark_deleted(session, confirmed)
        outcome.deleted = [c.uuid for c in confirmed]
        # A retried run sweeps too: the crashed one may have died before its sweep.
        retried = any(attempts > 1 for _, _, attempts in pending)
        sweep = bool(confirmed) or retried or sweep_again
    young = 0
    if sweep:
        try:
            with _opened(storage) as backend:
                report = sweep_chunks(backend, grace_seconds=grace_seconds)
            young += report.young
            outcome.chunks_deleted += report.deleted
            outcome.bytes_freed += report.bytes_freed
        except StorageError as exc:
            failures.append(str(exc))
    with sessions.begin() as session:
        gc_service.finish_requests(session, ids, error="; ".join(failures) if failures else None)
    if young:
        _sweep_later(sessions, experiment_id, grace_seconds)
    log.info(
        "experiment %s: GC of requests %s deleted %d checkpoint(s), %d chunk(s), %d bytes",
        experiment_id,
        ids,
        len(outcome.deleted),
        outcome.chunks_deleted,
        outcome.bytes_freed,
    )
    if failures:
        raise StorageError(failures[0])
    return outcome


def _sweep_later(sessions: sessionmaker[Session], experiment_id: int, grace_seconds: float) -> None:
    """Unreferenced chunks survived only for being young: come back once they are old enough, or
    a checkpoint that became garbage right after its save would leak its chunks for good."""
    with sessions.begin() as session:
        request = gc_service.request_gc(session, experiment_id, SWEEP_AGAIN)
        assert request is not None
        # Marked published so the republisher leaves it alone; it is sent below with a delay. If
        # that send fails, the republisher sends it once it counts as lost.
        request.published_at = utcnow()
        session.info.pop(gc_service.PENDING_KEY, None)
        request_id = request.id
    try:
        gc_checkpoints.apply_async((request_id,), countdown=grace_seconds + 1, retry=False)
    except Exception as exc:  # the broker is down: the republisher picks it up later
        log.warning("experiment %s: follow-up sweep not published (%s)", experiment_id, exc)


@contextmanager
def _opened(config: dict[str, Any]) -> Iterator[StorageBackend]:
    """``open_storage`` for storage the master may touch, refusing a filesystem root this host
    lacks, and closing the backend.

    Deleting from a missing directory "succeeds" (missing counts as deleted), which would mark
    checkpoints DELETED whose files live on a mount this worker does not have.
    """
    storage_service.check_reachable(config)
    storage = open_storage(config)
    try:
        root = getattr(storage, "root", None)
        if root is not None and not root.is_dir():
            raise StorageError(f"{storage.description}: directory not found on this worker")
        yield storage
    finally:
        storage.close()


# --- the outbox -----------------------------------------------------------------------------------


def _broker_backed_off() -> bool:
    with _broker_lock:
        return time.monotonic() < _broker_down_until


def _broker_failed() -> None:
    global _broker_down_until
    with _broker_lock:
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS


def publish(request_ids: Collection[int]) -> list[int]:
    """Send requests to the broker; the ids that reached it. Stops at the first failure."""
    sent: list[int] = []
    for request_id in request_ids:
        try:
            gc_checkpoints.apply_async((request_id,), retry=False)
        except Exception as exc:  # any broker error: the row stays unpublished and is retried later
            _broker_failed()
            log.warning("GC request %s not published (%s); the master will publish it later", request_id, exc)
            break
        sent.append(request_id)
    return sent


def _record_published(bind: Engine | Connection, request_ids: list[int]) -> None:
    if not request_ids:
        return
    statement = update(GCRequest).where(GCRequest.id.in_(request_ids)).values(published_at=utcnow())
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            conn.execute(statement)
    else:
        bind.execute(statement)


def _after_commit(session: Session) -> None:
    request_ids = gc_service.take_pending(session)
    if not request_ids or _broker_backed_off():
        return
    try:
        _record_published(session.get_bind(), publish(request_ids))
    except Exception:  # the commit already happened; never let publishing fail the caller
        log.exception(
            "GC requests %s: recording publication failed; they will be published again", request_ids
        )


def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(gc_service.PENDING_KEY, None)


def install_outbox() -> None:
    """Publish the GC requests a session's transaction recorded as soon as it commits."""
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)


def broker_answers(settings: Settings) -> bool:
    """A one-second ping, so a dead broker costs the republisher almost nothing."""
    try:
        client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def republish_pending(sessions: sessionmaker[Session], settings: Settings) -> int:
    """Publish requests the broker never got (it was down) or lost; at most a batch per call."""
    with sessions() as session:
        request_ids = gc_service.unpublished_requests(
            session,
            min_age=REPUBLISH_MIN_AGE_SECONDS,
            stale_after=settings.gc.republish_after_seconds,
            limit=REPUBLISH_BATCH,
        )
    if not request_ids or not broker_answers(settings):
        return 0
    sent = publish(request_ids)
    if sent:
        with sessions.begin() as session:
            gc_service.mark_published(session, sent)
        log.info("published %d pending GC request(s): %s", len(sent), sent)
    return len(sent)
