"""The scheduling loop: a thread in the master, woken by events and by a periodic tick.

Each pass runs in one transaction under a PostgreSQL advisory lock, so two masters never schedule
at once, and all its state is in the database, so a restarted master simply carries on: nothing is
requeued at start, agents get a full reconnect window before any is declared lost, and preemption
timeouts count from the start at the earliest (nobody could hear a request while the master was down).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import utcnow
from stalwart_master.scheduler.placement import PreemptionPolicy
from stalwart_master.services import agent_runs as agent_runs_service
from stalwart_master.services import agents as agents_service
from stalwart_master.services import allocations as allocations_service

log = logging.getLogger(__name__)
_LOCK_ID = 0x5354574D


def schedule_once(
    session: Session,
    reconnect_wait: dt.timedelta,
    preemption: PreemptionPolicy | None = None,
    master_started_at: dt.datetime | None = None,
) -> bool:
    """One pass; False when another pass holds the lock. ``master_started_at``: no agent is declared
    lost before a full reconnect window has passed since then, as if each had just polled."""
    if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _LOCK_ID}):
        return False
    policy = preemption or PreemptionPolicy()
    if master_started_at is None or utcnow() - master_started_at >= reconnect_wait:
        lost = agents_service.mark_lost(session, reconnect_wait)
        if lost:
            agent_runs_service.fail_lost_agents(session, lost)
    allocations_service.kill_overdue_preemptions(session, policy.timeout, master_started_at)
    allocations_service.settle_stopping(session)
    allocations_service.apply_searcher_stops(session)
    allocations_service.request_allocations(session)
    allocations_service.assign_pending(session, policy)
    return True


class SchedulerThread:
    """``chores`` are (interval seconds, function) pairs run between passes, e.g. republishing the GC
    requests a dead broker never got; each is cheap when there is nothing to do."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        tick_seconds: float,
        reconnect_wait: dt.timedelta,
        chores: list[tuple[float, Callable[[], object]]] | None = None,
        preemption: PreemptionPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._tick = tick_seconds
        self._reconnect_wait = reconnect_wait
        self._preemption = preemption or PreemptionPolicy()
        self._started_at = utcnow()
        self._chores = [(interval, chore, [0.0]) for interval, chore in chores or []]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self._started_at = utcnow()
        self._thread.start()

    def wake(self) -> None:
        """Something changed (a new experiment, a finished run, a new agent): schedule now."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                with self._sessions.begin() as session:
                    schedule_once(session, self._reconnect_wait, self._preemption, self._started_at)
            except Exception:  # the loop must outlive a bad pass (e.g. the database restarting)
                log.exception("scheduling pass failed; retrying on the next tick")
                # Agents' polls could not be recorded meanwhile either: once passes work again,
                # give every agent a full reconnect window, as after a master restart.
                self._started_at = utcnow()
            self._run_chores()

    def _run_chores(self) -> None:
        now = time.monotonic()
        for interval, chore, next_run in self._chores:
            if now < next_run[0]:
                continue
            next_run[0] = now + interval
            try:
                chore()
            except Exception:
                log.exception("scheduler chore %s failed; retrying in %.0fs", chore, interval)
