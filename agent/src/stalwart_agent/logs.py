"""Shipping a trial's stdout and stderr to the master in ordered batches.

One reader thread per stream stamps each line as it arrives and appends it to one shared buffer,
so the master sees lines in the order the agent read them; one shipper thread sends them in
batches of at most ``max_lines`` lines or ``max_delay`` seconds, whichever comes first. Readers
never block on the network: if the master is away the buffer keeps the newest lines and counts
what it had to drop, because a trial stalled on a full pipe is worse than a gap in its log.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 500
MAX_BATCH_DELAY = 0.5
MAX_BUFFERED_LINES = 100_000
# A line longer than this is split; the master stores lines, not megabytes of binary noise.
MAX_LINE_BYTES = 64 * 1024

LogLine = dict[str, Any]


def rfc3339_now() -> str:
    """The current UTC time as RFC 3339 with microseconds (``2024-05-01T12:00:00.123456Z``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class LogBuffer:
    """The lines read but not yet shipped, in arrival order, bounded."""

    def __init__(self, limit: int = MAX_BUFFERED_LINES) -> None:
        self._lines: collections.deque[LogLine] = collections.deque()
        self._limit = limit
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def append(self, stream: str, message: str) -> None:
        line = {"ts": rfc3339_now(), "rank": 0, "stream": stream, "message": message}
        with self._cond:
            if len(self._lines) >= self._limit:
                self._lines.popleft()
                self.dropped += 1
            self._lines.append(line)
            self._cond.notify_all()

    def close(self) -> None:
        """No more lines will come; the shipper sends what is left and stops."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, max_lines: int, max_delay: float) -> list[LogLine] | None:
        """The next batch: as soon as ``max_lines`` are there or ``max_delay`` after the first
        line arrived; ``None`` once closed and empty."""
        with self._cond:
            while not self._lines and not self._closed:
                self._cond.wait()
            if not self._lines:
                return None
            deadline = time.monotonic() + max_delay
            while len(self._lines) < max_lines and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(max_lines, len(self._lines))
            return [self._lines.popleft() for _ in range(count)]


def pump(stream: IO[bytes], name: str, buffer: LogBuffer) -> None:
    """Copy ``stream`` into ``buffer`` line by line until EOF (the process and its group are gone)."""
    try:
        while True:
            raw = stream.readline(MAX_LINE_BYTES)
            if not raw:
                break
            # PostgreSQL text cannot hold NUL; one stray byte must not make every batch fail.
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n").replace("\x00", "\ufffd")
            buffer.append(name, text)
    except (OSError, ValueError):
        pass  # the pipe was closed under us at shutdown
    finally:
        stream.close()


class LogShipper:
    """Drains a ``LogBuffer`` into ``deliver`` one batch at a time, in order, on its own thread.

    ``deliver`` blocks until the batch is sent or given up on; ordering relies on there being
    exactly one shipper per allocation.
    """

    def __init__(
        self,
        allocation_id: str,
        buffer: LogBuffer,
        deliver: Callable[[list[LogLine]], None],
        *,
        max_lines: int = MAX_BATCH_LINES,
        max_delay: float = MAX_BATCH_DELAY,
    ) -> None:
        self.allocation_id = allocation_id
        self._buffer = buffer
        self._deliver = deliver
        self._max_lines = max_lines
        self._max_delay = max_delay
        self._reported_drops = 0
        self._thread = threading.Thread(target=self._run, name=f"logs-{allocation_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every line is shipped (after ``buffer.close()``); False if still busy."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch = self._buffer.take(self._max_lines, self._max_delay)
            if batch is None:
                return
            dropped = self._buffer.dropped
            if dropped > self._reported_drops:
                log.warning(
                    "allocation %s: dropped %d log lines while the master was unreachable",
                    self.allocation_id,
                    dropped - self._reported_drops,
                )
                self._reported_drops = dropped
            try:
                self._deliver(batch)
            except Exception:
                log.exception("allocation %s: could not ship %d log lines", self.allocation_id, len(batch))
