"""Shipping a trial's stdout and stderr files to the master in ordered batches, exactly once.

The runner writes to ``stdout.log`` and ``stderr.log`` in its allocation directory; one tail
thread per allocation reads new complete lines from both, stamps them, and sends them in batches
of at most ``max_lines`` lines, every ``interval`` seconds while the trial runs. How far it got
is kept in ``logs.json`` beside the files::

    {"stdout": <byte offset>, "stderr": <byte offset>,
     "pending": {"batch_id": "<uuid>", "stdout": [start, end], "stderr": [start, end]} | null}

``pending`` is written before a batch is sent and replaced once it is acknowledged. An agent that
restarts re-sends a pending batch with the same byte ranges and the same batch id, which the master
stores once, then carries on from the offsets: no line is lost or shipped twice. The files live on
disk, so a master that is away for a long time costs disk space, not lines.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 500
TAIL_INTERVAL = 0.25
# A line longer than this is split; the master stores lines, not megabytes of binary noise.
MAX_LINE_BYTES = 64 * 1024
# How much of one file is read per batch at most.
_READ_BYTES = 1024 * 1024
STREAMS = ("stdout", "stderr")
OFFSETS_FILE = "logs.json"

LogLine = dict[str, Any]
# Sends one batch; True once it is settled (stored, or refused for good and skipped), False when
# it was not sent and the agent is giving up: then the batch stays pending for the next agent.
Deliver = Callable[[list[LogLine], str], bool]


def rfc3339_now() -> str:
    """The current UTC time as RFC 3339 with microseconds (``2024-05-01T12:00:00.123456Z``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def decode_line(raw: bytes) -> str:
    # PostgreSQL text cannot hold NUL; one stray byte must not make every batch fail.
    return raw.decode("utf-8", errors="replace").rstrip("\r\n").replace("\x00", "\ufffd")


def split_lines(data: bytes, *, final: bool) -> list[tuple[int, bytes]]:
    """Complete lines of ``data`` as (bytes consumed, line) pairs; a line over ``MAX_LINE_BYTES``
    comes in pieces. With ``final`` an unterminated last line is included too.

    Depends on the bytes alone, so re-reading the same range gives the same lines.
    """
    lines: list[tuple[int, bytes]] = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start, start + MAX_LINE_BYTES)
        if newline >= 0:
            end = newline + 1
        elif len(data) - start >= MAX_LINE_BYTES:
            end = start + MAX_LINE_BYTES
        elif final:
            end = len(data)
        else:
            break
        lines.append((end - start, data[start:end]))
        start = end
    return lines


def _read(path: Path, offset: int, size: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(size)
    except FileNotFoundError:
        return b""


class LogTail:
    """Follows one allocation's output files and hands batches to ``deliver`` on its own thread.

    Ordering within a stream is the file's; lines of the two streams read in the same pass are
    stamped together, stdout first. ``finish()`` once the runner and its session are gone: the
    tail then ships everything left, a last unterminated line included, and stops.
    """

    def __init__(
        self,
        allocation_id: str,
        directory: Path,
        deliver: Deliver,
        *,
        max_lines: int = MAX_BATCH_LINES,
        interval: float = TAIL_INTERVAL,
    ) -> None:
        self.allocation_id = allocation_id
        self.directory = directory
        self._deliver = deliver
        self._max_lines = max_lines
        self._interval = interval
        self._finished = threading.Event()
        self.abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"logs-{allocation_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._finished.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every line is shipped (after ``finish()``); False if still busy."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- state -----------------------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.directory / OFFSETS_FILE

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text())
            if isinstance(state, dict) and all(isinstance(state.get(s), int) for s in STREAMS):
                return state
        except (OSError, ValueError):
            pass
        return {"stdout": 0, "stderr": 0, "pending": None}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_name(f".{OFFSETS_FILE}.tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_path)

    # -- reading ---------------------------------------------------------------------------------

    def _lines(
        self, stream: str, start: int, end: int | None, budget: int, final: bool
    ) -> tuple[list[bytes], int]:
        """Up to ``budget`` lines of ``stream`` from byte ``start`` (to ``end`` when given)."""
        size = _READ_BYTES if end is None else end - start
        data = _read(self.directory / f"{stream}.log", start, size)
        lines: list[bytes] = []
        offset = start
        for consumed, raw in split_lines(data, final=final or end is not None)[:budget]:
            lines.append(raw)
            offset += consumed
        return lines, offset

    def _batch(
        self, state: dict[str, Any], ranges: dict[str, list[int]] | None, final: bool
    ) -> tuple[list[LogLine], dict[str, list[int]]]:
        stamp = rfc3339_now()
        batch: list[LogLine] = []
        taken: dict[str, list[int]] = {}
        for stream in STREAMS:
            if ranges is not None:
                start, end = ranges[stream]
                raw_lines, stop = self._lines(stream, start, end, _READ_BYTES, True)
            else:
                start = state[stream]
                raw_lines, stop = self._lines(stream, start, None, self._max_lines - len(batch), final)
            taken[stream] = [start, stop]
            batch += [
                {"ts": stamp, "rank": 0, "stream": stream, "message": decode_line(raw)} for raw in raw_lines
            ]
        return batch, taken

    # -- the loop --------------------------------------------------------------------------------

    def _send(
        self, state: dict[str, Any], batch: list[LogLine], ranges: dict[str, list[int]], batch_id: str
    ) -> bool:
        state["pending"] = {"batch_id": batch_id, **ranges}
        self._save(state)
        if not self._deliver(batch, batch_id):
            self.abandoned = True
            return False
        for stream in STREAMS:
            state[stream] = ranges[stream][1]
        state["pending"] = None
        return True

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            log.exception("allocation %s: shipping logs failed", self.allocation_id)

    def _follow(self) -> None:
        state = self._load()
        pending = state.get("pending")
        if isinstance(pending, dict):
            # Sent by an earlier agent, maybe stored: the same bytes under the same id.
            ranges = {stream: [int(x) for x in pending[stream]] for stream in STREAMS}
            batch, ranges = self._batch(state, ranges, True)
            log.info(
                "allocation %s: re-sending %d log lines of an earlier agent", self.allocation_id, len(batch)
            )
            if not self._send(state, batch, ranges, str(pending["batch_id"])):
                return
        while True:
            final = self._finished.is_set()  # read before the files: nothing written before it is missed
            batch, ranges = self._batch(state, None, final)
            if batch:
                if not self._send(state, batch, ranges, str(uuid.uuid4())):
                    return
                if len(batch) >= self._max_lines:
                    continue  # more is waiting
            elif final:
                self._save(state)
                return
            self._finished.wait(self._interval)
