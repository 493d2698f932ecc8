"""``core_context.preempt``: the master's request to checkpoint and exit, picked up in the background.

A daemon thread long-polls the master and sets a flag, so ``should_preempt()`` costs one
attribute read and can be called every batch.
"""

from __future__ import annotations

import enum
import logging
import threading

from stalwart.core._errors import MasterError
from stalwart.core._http import AllocationSession


class PreemptMode(enum.Enum):
    """Which ranks ask the master about preemption (Determined's names).

    Without a collective layer, ``WorkersAskChief`` behaves as ``WorkersAskMaster``: every rank
    polls, and since the signal never goes back to False, all ranks see the same answer within a
    poll. ``ChiefOnly``: only rank 0 polls; other ranks always get False.
    """

    WorkersAskChief = "WORKERS_ASK_CHIEF"
    WorkersAskMaster = "WORKERS_ASK_MASTER"
    ChiefOnly = "CHIEF_ONLY"


class PreemptContext:
    """Tells the training loop when to checkpoint and exit.

    Example::

        if core_context.preempt.should_preempt():
            save_checkpoint()
            return  # exit 0: the trial is paused, not finished
    """

    def __init__(
        self,
        *,
        session: AllocationSession | None,
        allocation_id: str | None,
        is_chief: bool,
        mode: PreemptMode = PreemptMode.WorkersAskChief,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        poll_timeout: int = 60,
    ) -> None:
        self._session = session
        self._allocation_id = allocation_id
        self._is_chief = is_chief
        self._log = log
        self._poll_timeout = poll_timeout
        self._flag = threading.Event()
        self._stop = threading.Event()
        self._acked = False
        self._thread: threading.Thread | None = None
        polls = session is not None and (is_chief or mode is not PreemptMode.ChiefOnly)
        if polls:
            self._thread = threading.Thread(target=self._poll, name="stalwart-preempt", daemon=True)
            self._thread.start()

    def should_preempt(self, auto_ack: bool = True) -> bool:
        """True once the master asked this trial to stop; the first True is acknowledged.

        Example::

            if core_context.preempt.should_preempt():
                checkpoint_and_exit()
        """
        if not self._flag.is_set():
            return False
        if auto_ack and not self._acked:
            self.acknowledge_preemption_signal()
        return True

    def acknowledge_preemption_signal(self) -> None:
        """Tell the master that exit code 0 now means "paused", not "finished" (chief only).

        Example::

            if core_context.preempt.should_preempt(auto_ack=False):
                core_context.preempt.acknowledge_preemption_signal()
        """
        self._acked = True
        if not self._is_chief or self._session is None:
            return
        self._session.request_until(
            "POST", f"/allocations/{self._allocation_id}/signals/ack_preemption", within=60.0, max_delay=5.0
        )
        self._log.info("preemption acknowledged: checkpoint and exit 0 to be resumed later")

    def _poll(self) -> None:
        assert self._session is not None
        delay = 1.0
        while not self._stop.is_set():
            try:
                response = self._session.request(
                    "GET",
                    f"/allocations/{self._allocation_id}/signals/preemption",
                    params={"timeout_seconds": self._poll_timeout},
                    timeout=self._poll_timeout + 15.0,
                )
                delay = 1.0
                if response.json().get("preempt") is True:
                    self._log.info("the master asked this trial to stop (preemption)")
                    self._flag.set()
                    return
            except (MasterError, ValueError, AttributeError) as exc:
                if self._stop.is_set():
                    return  # the context closed the session under the in-flight poll
                if isinstance(exc, MasterError) and exc.status in (401, 403, 404):
                    # The allocation ended or its token was revoked: nobody is left to ask.
                    self._log.warning("stopped polling for preemption: %s", exc)
                    return
                self._log.warning("polling for preemption failed, retrying in %.0f s: %s", delay, exc)
                self._stop.wait(delay)
                # Capped low: once a restarted master asks this run to stop, the run has only its
                # preemption_timeout to notice, and one request per 5 s costs a down master nothing.
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        """Stop polling; a long-poll in flight ends on its own (the thread is a daemon)."""
        self._stop.set()
