"""Metric reports leave the training thread through a bounded buffer and one background sender.

The training thread only validates and appends (a few microseconds); the sender groups reports
into batches, gives each batch one idempotency key (``batch_id``) and retries a failed batch with
the same key, so the master stores each report exactly once. A failure that outlasts the retries
is kept and raised on the next report call, or when the context closes.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from stalwart.core._errors import MasterError, MetricsError

Record = dict[str, Any]
# (batch_id, records) -> None; raises MasterError (retryable or not) when the batch was not stored.
BatchSink = Callable[[str, list[Record]], None]
ProgressSink = Callable[[float], None]

logger = logging.getLogger("stalwart.core")


def validate_report(group: str, steps_completed: int, metrics: Mapping[str, Any]) -> Record:
    """Check one report cheaply and copy it, so later changes to the caller's dict cannot leak in."""
    if type(steps_completed) is not int:
        if isinstance(steps_completed, bool) or not hasattr(steps_completed, "__index__"):
            raise TypeError(f"steps_completed must be an int, got {type(steps_completed).__name__}")
        steps_completed = steps_completed.__index__()
    if steps_completed < 0:
        raise ValueError(f"steps_completed must be >= 0, got {steps_completed}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
    values: dict[str, float | int] = {}
    for name, value in metrics.items():
        kind = type(value)
        if kind is float or kind is int:
            values[name] = value
        elif kind is not bool and hasattr(value, "__float__"):
            # numpy scalars and 0-d tensors: converted now, before the caller can change them in place.
            values[name] = float(value)
        else:
            raise TypeError(f"metric {name!r} must be a number, got {kind.__name__}")
        if type(name) is not str:
            raise TypeError(f"metric names must be strings, got {name!r}")
    return {"group": group, "steps_completed": steps_completed, "values": values}


def check_group(group: str) -> None:
    """Groups name a metric family (training, validation, ...); a dot would be ambiguous in paths."""
    if not isinstance(group, str) or not group or "." in group:
        raise ValueError(f"metric group must be a non-empty string without '.', got {group!r}")


def check_progress(progress: float) -> float:
    value = float(progress)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress must be between 0 and 1, got {progress!r}")
    return value


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class MetricsShipper:
    """Buffers metric reports and sends them in batches from one daemon thread.

    The buffer holds at most ``max_pending`` reports. When the master has been unreachable long
    enough to fill it, ``put`` waits for room rather than dropping a report.
    """

    def __init__(
        self,
        sink: BatchSink,
        *,
        progress_sink: ProgressSink | None = None,
        max_pending: int = 10_000,
        batch_size: int = 1_000,
        flush_interval: float = 0.5,
        retry_for: float = 300.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = logger,
    ) -> None:
        self._sink = sink
        self._progress_sink = progress_sink
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_for = retry_for
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._log = log
        # deque.append/popleft are atomic under the GIL: no lock on the training thread's path.
        self._pending: collections.deque[Record | _FlushMarker] = collections.deque()
        self._wake = threading.Event()
        self._room = threading.Event()
        self._closing = False
        self._error: MetricsError | None = None
        self._progress: float | None = None
        self._progress_sent: float | None = None
        self._warned_full = False
        self._thread = threading.Thread(target=self._run, name="stalwart-metrics", daemon=True)
        self._thread.start()

    # --- training thread -----------------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Queue one validated report; raises the last delivery failure, if any, first."""
        if self._error is not None:
            self._raise_error()
        if self._closing:
            raise MetricsError("metrics reported after the Core API context was closed")
        if len(self._pending) >= self._max_pending:
            self._wait_for_room()
        self._pending.append(record)
        # Validations go out at once: they are rare, and the searcher may stop the trial on them.
        due = record["group"] == "validation" or len(self._pending) >= self._batch_size
        if due and not self._wake.is_set():
            self._wake.set()

    def set_progress(self, progress: float) -> None:
        """Remember the latest progress; only the newest value is ever sent."""
        if self._error is not None:
            self._raise_error()
        self._progress = progress

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far was delivered (or given up on), then raise any failure."""
        marker = _FlushMarker()
        self._pending.append(marker)
        self._wake.set()
        if not marker.done.wait(timeout):
            raise MetricsError(f"metrics not delivered within {timeout} s; the master may be unreachable")
        if self._error is not None:
            self._raise_error()

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the sender and raise a delivery failure that nobody has seen yet."""
        if self._closing:
            return
        try:
            self.flush(timeout)
        finally:
            self._closing = True
            self._wake.set()
            self._thread.join(timeout=5.0)

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _wait_for_room(self) -> None:
        if not self._warned_full:
            self._warned_full = True
            self._log.warning(
                "%d metric reports are waiting to be sent; training waits for room rather than drop any",
                len(self._pending),
            )
        while len(self._pending) >= self._max_pending:
            self._room.clear()
            self._wake.set()
            self._room.wait(0.1)
            if self._error is not None:
                self._raise_error()

    # --- sender thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception as exc:  # a bug here must not kill the thread and lose every later report
                self._error = MetricsError(f"metrics sender failed: {exc!r}")
                self._log.exception("metrics sender failed")
            if self._closing and not self._pending:
                return

    def _drain(self) -> None:
        while True:
            batch: list[Record] = []
            marker: _FlushMarker | None = None
            while len(batch) < self._batch_size:
                try:
                    item = self._pending.popleft()
                except IndexError:
                    break
                if isinstance(item, _FlushMarker):
                    marker = item
                    break
                batch.append(item)
            self._room.set()
            if batch:
                self._send(batch)
            if marker is not None or not self._pending:
                self._send_progress()
            if marker is not None:
                marker.done.set()
            if not batch and marker is None:
                return

    def _send(self, batch: list[Record]) -> None:
        batch_id = str(uuid.uuid4())
        delay = self._backoff_initial
        deadline = time.monotonic() + self._retry_for
        attempt = 0
        while True:
            attempt += 1
            try:
                self._sink(batch_id, batch)
                if attempt > 1:
                    self._log.info("metrics batch %s delivered after %d attempts", batch_id, attempt)
                return
            except MasterError as exc:
                if not exc.retryable or time.monotonic() + delay > deadline:
                    self._give_up(batch, exc)
                    return
                if attempt == 1 or attempt % 10 == 0:
                    self._log.warning(
                        "metrics batch %s not delivered (attempt %d), retrying: %s", batch_id, attempt, exc
                    )
            except Exception as exc:
                self._give_up(batch, exc)
                return
            time.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    def _give_up(self, batch: list[Record], exc: BaseException) -> None:
        steps = [record["steps_completed"] for record in batch]
        message = (
            f"{len(batch)} metric reports (steps {min(steps)}..{max(steps)}) could not be delivered: {exc}"
        )
        self._log.error("%s", message)
        self._error = MetricsError(message)

    def _send_progress(self) -> None:
        progress = self._progress
        if self._progress_sink is None or progress is None or progress == self._progress_sent:
            return
        try:
            self._progress_sink(progress)
            self._progress_sent = progress
        except MasterError as exc:
            # Progress only drives the UI's progress bar; the next value replaces this one.
            self._log.warning("progress %.3f not delivered: %s", progress, exc)
