"""The asynchronous checkpoint writer: snapshot on the caller's thread, persist in the background.

A save goes through these steps, and only the first blocks training:

1. snapshot: tensors and arrays are copied into pooled host buffers, the rest pickled (_snapshot);
2. chunk, hash, dedup, compress and put every chunk on a small thread pool; a chunk the storage
   already holds is only touched, so a concurrent GC sweep sees it as young and keeps it;
3. ``storage.sync()``: everything written is durable;
4. commit: ``manifests/<uuid>.json`` is created with ``put_new``. In a multi-process save each
   non-chief rank instead creates ``shards/<uuid>/rank-<n>.json`` and the chief, after every rank's
   record has arrived, merges them into the one manifest;
5. ``on_commit(manifest)`` (the Core API registers the checkpoint with the master there).

Any failure stops the save before step 4: nothing is committed or registered, and chunks already
written are left for GC. The error is kept and raised by the next ``save_state``, ``wait`` or
``close``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid as uuid_lib
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from stalwart.checkpoint._manifest import (
    DEFAULT_CHUNK_SIZE,
    DIGEST,
    FORMAT,
    Codec,
    chunk_key,
    digest_of,
    manifest_key,
    shard_key,
)
from stalwart.checkpoint._shards import abort, await_commit, gather_shards
from stalwart.checkpoint._snapshot import BufferPool, HostBuffer, take_snapshot
from stalwart.checkpoint.storage import StorageBackend, StorageError
from stalwart.core._errors import CheckpointError

logger = logging.getLogger("stalwart.checkpoint")

#: uuid5 namespace of multi-process saves: every rank derives the same uuid without talking.
_RUN_NAMESPACE = uuid_lib.UUID("6d1f3f0e-7a53-4c4e-9a0f-3c1d2b7a9e51")
_METADATA_FILE = "metadata.json"
_KNOWN_DIGESTS_LIMIT = 1_000_000

OnCommit = Callable[[dict[str, Any]], None]


def _default_threads() -> int:
    """Writer threads: ``STALWART_CHECKPOINT_THREADS``, else 1.

    Every writer thread competes with the training thread for the GIL each time it returns from
    hashing or I/O. Measured on an H200 machine (docs/benchmarks.md): one thread persists at the
    disk's speed and slows a launch-bound GPU step by 1 %; two or eight persist faster than the
    disk can absorb but slow the step by 16-17 %.
    """
    value = os.environ.get("STALWART_CHECKPOINT_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _lower_priority() -> None:
    """Run checkpoint threads at nice 10, so persisting never competes with the training loop."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), 10))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Source:
    """The bytes of one manifest file entry: part of a snapshot, or a file on disk."""

    path: str
    type: str
    size: int
    data: memoryview | None = None
    file: Path | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    chunks: list[dict[str, Any] | None] = field(default_factory=list)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.file is not None
        with open(self.file, "rb", buffering=0) as handle:
            data = os.pread(handle.fileno(), length, offset)
        if len(data) != length:
            raise CheckpointError(f"checkpoint file {self.path!r} changed size while it was being saved")
        return data

    def entry(self, rank: int) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "rank": rank,
            "type": self.type,
            **self.fields,
            "chunks": self.chunks,
        }


@dataclass
class _Job:
    uuid: str
    kind: str
    steps_completed: int
    metadata: dict[str, Any]
    parent_uuid: str | None
    explicit_parent: bool
    sharded: bool
    sources: list[_Source]
    buffers: list[HostBuffer]
    created_at: str
    future: Future[dict[str, Any] | None] = field(default_factory=Future)
    lock: threading.Lock = field(default_factory=threading.Lock)
    claims: dict[str, threading.Event] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    new_bytes: int = 0
    failed: bool = False


def _check_metadata(steps_completed: int, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if type(steps_completed) is not int or steps_completed < 0:
        raise CheckpointError(f"steps_completed must be an int >= 0, got {steps_completed!r}")
    merged = dict(metadata or {})
    merged["steps_completed"] = steps_completed
    try:
        json.dumps(merged, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    return merged


class CheckpointWriter:
    """Saves checkpoints into one storage's chunk store, persisting them in the background.

    ``max_in_flight`` saves may be persisting at once; another ``save_state`` first waits for the
    oldest. In a multi-process trial every rank makes the same sequence of ``save_state`` calls
    and gets the same uuids (derived from ``run_key``); only rank 0 commits and calls ``on_commit``,
    the other ranks' saves finish when they see its manifest.

    The host buffers a snapshot is copied into stay allocated between saves (about the size of
    the saved tensors) so later saves copy into warm memory; ``close`` frees them.

    Example::

        writer = CheckpointWriter(open_storage({"type": "directory", "container_path": "/ckpt"}))
        uuid = writer.save_state({"model": model.state_dict(), "step": 100}, steps_completed=100)
        ...  # training goes on while the checkpoint is written
        writer.close()  # waits, and raises if a save failed
    """

    def __init__(
        self,
        storage: StorageBackend,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compression: str | None = None,
        compression_level: int = 1,
        threads: int | None = None,
        max_in_flight: int = 1,
        rank: int = 0,
        world_size: int = 1,
        run_key: str | None = None,
        parent_uuid: str | None = None,
        on_commit: OnCommit | None = None,
        shard_timeout: float = 1800.0,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        if type(chunk_size) is not int or chunk_size < 4096:
            raise CheckpointError(f"checkpoint chunk_size must be an int >= 4096, got {chunk_size!r}")
        if max_in_flight < 1:
            raise CheckpointError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        if not 0 <= rank < world_size:
            raise CheckpointError(f"rank {rank} is not in [0, {world_size})")
        self.storage = storage
        self.chunk_size = chunk_size
        self.codec = Codec(compression, compression_level)
        self.max_in_flight = max_in_flight
        self.rank = rank
        self.world_size = world_size
        self.run_key = run_key
        #: The lineage parent of every save: the checkpoint this run restored or warm-started from.
        self.parent_uuid = parent_uuid
        #: The newest checkpoint this writer committed.
        self.latest_uuid: str | None = None
        self.on_commit = on_commit
        self.shard_timeout = shard_timeout
        self._log = log or logger
        self._threads = threads or _default_threads()
        self._pool = BufferPool()
        self._known: dict[str, int] = {}  # digest -> stored size, for chunks this writer has seen
        self._sequence = itertools.count()
        self._in_flight: deque[_Job] = deque()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # --- the caller's side ------------------------------------------------------------------

    def prepare(self, state: object) -> int:
        """Allocate and pre-fault the host buffers a save of ``state`` will need; returns their size.

        Call it once before the first ``save_state`` to make that save as quick as later ones.

        Example::

            writer.prepare({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        """
        snapshot = take_snapshot(self._pool, state, "state")
        for buffer in snapshot.buffers:
            buffer.prefault()
        self._pool.give_back(snapshot.buffers)
        return sum(buffer.nbytes for buffer in snapshot.buffers)

    def save_state(
        self,
        state: object,
        *,
        steps_completed: int,
        metadata: Mapping[str, Any] | None = None,
        parent_uuid: str | None = None,
    ) -> str:
        """Snapshot ``state`` and return its uuid; the checkpoint is persisted in the background.

        ``state`` is any picklable structure; torch tensors (any device, dtype or layout) and
        numpy arrays in it are stored as raw chunks that dedup across checkpoints. ``parent_uuid``
        (the lineage parent) defaults to the writer's: the checkpoint this run restored from.

        Example::

            uuid = writer.save_state({"model": model.state_dict(), "epoch": 3}, steps_completed=300)
        """
        self._check_open()
        merged = _check_metadata(steps_completed, metadata)
        self._raise_failed()
        self._make_room()
        sharded = self.world_size > 1
        uuid = self.next_uuid(sharded)
        prefix = f"state/rank-{self.rank}" if sharded else "state"
        snapshot = take_snapshot(self._pool, state, prefix)
        self._pool.keep_only(snapshot.buffers)
        sources = [
            _Source(
                path=f"{prefix}/__skeleton__.pkl",
                type="skeleton",
                size=len(snapshot.skeleton),
                data=memoryview(snapshot.skeleton),
            )
        ]
        for array in snapshot.arrays:
            fields: dict[str, Any] = {"dtype": array.dtype, "shape": array.shape, **array.extra}
            sources.append(
                _Source(path=array.path, type=array.type, size=array.nbytes, data=array.data(), fields=fields)
            )
        job = _Job(
            uuid=uuid,
            kind="state",
            steps_completed=steps_completed,
            metadata=merged,
            parent_uuid=parent_uuid,
            explicit_parent=parent_uuid is not None,
            sharded=sharded,
            sources=sources,
            buffers=snapshot.buffers,
            created_at=_now(),
        )
        self._submit(job)
        return uuid

    def save_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        steps_completed: int,
        metadata: Mapping[str, Any] | None = None,
        parent_uuid: str | None = None,
        sharded: bool = False,
        uuid: str | None = None,
    ) -> dict[str, Any] | None:
        """Store every file under ``directory`` as one checkpoint and wait until it is committed.

        Returns the committed manifest (on every rank of a sharded save: the others wait for rank
        0's commit). A ``metadata.json`` with the metadata is added, as Determined does.

        Example::

            manifest = writer.save_directory("out/", steps_completed=100)
        """
        self._check_open()
        merged = _check_metadata(steps_completed, metadata)
        self._raise_failed()
        self._make_room()
        sharded = sharded and self.world_size > 1
        uuid = uuid or self.next_uuid(sharded)
        root = Path(directory)
        sources: list[_Source] = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise CheckpointError(f"checkpoint file {rel!r} is a symbolic link; write real files")
            if path.is_dir():
                continue
            if not path.is_file():
                raise CheckpointError(f"checkpoint entry {rel!r} is not a regular file")
            if rel == _METADATA_FILE:
                continue  # replaced by the harness's own copy below
            sources.append(_Source(path=rel, type="file", size=path.stat().st_size, file=path))
        if not sharded or self.rank == 0:
            blob = json.dumps(merged, indent=1, sort_keys=True).encode()
            sources.append(_Source(path=_METADATA_FILE, type="file", size=len(blob), data=memoryview(blob)))
        job = _Job(
            uuid=uuid,
            kind="directory",
            steps_completed=steps_completed,
            metadata=merged,
            parent_uuid=parent_uuid,
            explicit_parent=parent_uuid is not None,
            sharded=sharded,
            sources=sources,
            buffers=[],
            created_at=_now(),
        )
        self._submit(job)
        try:
            return job.future.result()
        except BaseException as exc:
            self._raise(job, exc)
        finally:
            if job in self._in_flight:
                self._in_flight.remove(job)

    def wait(self) -> None:
        """Block until every save so far is committed; raise the first failure not raised yet.

        Example::

            writer.wait()  # e.g. before telling a scheduler the checkpoint exists
        """
        for job in list(self._in_flight):
            with contextlib.suppress(BaseException):
                job.future.result()
        self._raise_failed()

    def close(self) -> None:
        """Wait for every save, stop the background threads and free the host buffers."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._pool.clear()

    @property
    def in_flight(self) -> int:
        """How many saves are snapshotted but not yet committed (or failed)."""
        return sum(1 for job in self._in_flight if not job.future.done())

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError("the checkpoint writer is closed")

    def next_uuid(self, sharded: bool = False) -> str:
        """A new checkpoint uuid; with ``sharded`` the next one of the sequence every rank derives."""
        if not sharded:
            return str(uuid_lib.uuid4())
        if not self.run_key:
            raise CheckpointError(
                "a multi-process checkpoint needs a run key every rank shares (the allocation id on a "
                "cluster; off-cluster set STALWART_RUN_KEY to a fresh value per run)"
            )
        return str(uuid_lib.uuid5(_RUN_NAMESPACE, f"{self.run_key}/{next(self._sequence)}"))

    @staticmethod
    def _raise(job: _Job, exc: BaseException) -> NoReturn:
        """Raise a save's failure as a CheckpointError naming the save, the cause chained."""
        if isinstance(exc, CheckpointError) and job.uuid in str(exc):
            raise exc
        raise CheckpointError(f"checkpoint {job.uuid} was not saved: {exc}") from exc

    def _raise_failed(self) -> None:
        for job in list(self._in_flight):
            if not job.future.done():
                continue
            self._in_flight.remove(job)
            exc = job.future.exception()
            if exc is not None:
                self._raise(job, exc)

    def _make_room(self) -> None:
        while len(self._in_flight) >= self.max_in_flight:
            oldest = self._in_flight[0]
            try:
                oldest.future.result()
            except BaseException as exc:
                self._in_flight.popleft()
                self._raise(oldest, exc)
            self._in_flight.popleft()

    def _submit(self, job: _Job) -> None:
        if self._thread is None:
            self._executor = ThreadPoolExecutor(
                self._threads, thread_name_prefix="stalwart-chunk", initializer=_lower_priority
            )
            self._thread = threading.Thread(target=self._run, name="stalwart-checkpoint-writer", daemon=True)
            self._thread.start()
        self._in_flight.append(job)
        self._queue.put(job)

    # --- the background side ----------------------------------------------------------------

    def _run(self) -> None:
        _lower_priority()
        while (job := self._queue.get()) is not None:
            started = time.monotonic()
            try:
                manifest = self._persist(job)
            except BaseException as exc:
                self._log.error("checkpoint %s failed: %s", job.uuid, exc)
                if job.sharded and self.rank == 0:
                    abort(self.storage, job.uuid, str(exc), self._log)
                job.future.set_exception(exc)
            else:
                if manifest is not None:
                    self._log.info(
                        "checkpoint %s committed: %d files, %d bytes, %d new, steps_completed=%d (%.2f s)",
                        job.uuid,
                        len(manifest["files"]),
                        manifest["size"],
                        manifest["new_bytes"],
                        job.steps_completed,
                        time.monotonic() - started,
                    )
                job.future.set_result(manifest)
            finally:
                self._pool.give_back(job.buffers)
                job.buffers = []

    def _persist(self, job: _Job) -> dict[str, Any] | None:
        self._write_chunks(job)
        try:
            self.storage.sync()
        except StorageError as exc:
            raise CheckpointError(f"checkpoint {job.uuid}: {exc}") from exc
        files = [source.entry(self.rank) for source in job.sources]
        if job.sharded and self.rank != 0:
            part = {"rank": self.rank, "files": files, "new_bytes": job.new_bytes, "stored": job.stored}
            if not self.storage.put_new(shard_key(job.uuid, self.rank), json.dumps(part).encode()):
                raise CheckpointError(
                    f"checkpoint {job.uuid}: rank {self.rank}'s part already exists (two runs share "
                    "one run key?)"
                )
            committed = await_commit(self.storage, job.uuid, self.shard_timeout)
            self.latest_uuid = job.uuid
            return committed
        stored = dict(job.stored)
        new_bytes = job.new_bytes
        if job.sharded:
            for record in gather_shards(self.storage, job.uuid, self.world_size, self.shard_timeout):
                files.extend(record["files"])
                stored.update(record["stored"])
                new_bytes += int(record["new_bytes"])
            paths = [entry["path"] for entry in files]
            if len(paths) != len(set(paths)):
                duplicate = next(p for p in paths if paths.count(p) > 1)
                raise CheckpointError(f"checkpoint {job.uuid}: two ranks saved the same file {duplicate!r}")
        parent = job.parent_uuid if job.explicit_parent else self.parent_uuid
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "uuid": job.uuid,
            "steps_completed": job.steps_completed,
            "metadata": job.metadata,
            "parent_uuid": parent,
            "digest": DIGEST,
            "compression": self.codec.compression,
            "chunk_size": self.chunk_size,
            "created_at": job.created_at,
            "kind": job.kind,
            "world_size": self.world_size if job.sharded else 1,
            "files": files,
            "size": sum(entry["size"] for entry in files),
            "stored_size": sum(stored.values()),
            "new_bytes": new_bytes,
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        if not self.storage.put_new(manifest_key(job.uuid), data):
            raise CheckpointError(f"checkpoint {job.uuid} already exists in {self.storage.description}")
        if job.sharded:
            for rank in range(1, self.world_size):
                try:
                    self.storage.delete(shard_key(job.uuid, rank))
                except StorageError as exc:  # committed already; GC removes stale shard records
                    self._log.warning("checkpoint %s: %s", job.uuid, exc)
        self.latest_uuid = job.uuid
        if self.on_commit is not None:
            self.on_commit(manifest)
        return manifest

    def _write_chunks(self, job: _Job) -> None:
        assert self._executor is not None
        slots = threading.BoundedSemaphore(self._threads * 2)  # bounds memory held by queued chunks
        tasks: list[Future[None]] = []
        for source in job.sources:
            count = -(-source.size // self.chunk_size)
            source.chunks = [None] * count
            for index in range(count):
                slots.acquire()
                if job.failed:
                    slots.release()
                    break
                task = self._executor.submit(self._write_chunk, job, source, index)
                task.add_done_callback(lambda _: slots.release())
                tasks.append(task)
        errors = [exc for task in tasks if (exc := task.exception()) is not None]
        if errors:
            # A chunk waiting on a failed duplicate fails too; report the failure that caused it.
            raise next((e for e in errors if "could not be stored" not in str(e)), errors[0])

    def _write_chunk(self, job: _Job, source: _Source, index: int) -> None:
        try:
            offset = index * self.chunk_size
            length = min(self.chunk_size, source.size - offset)
            raw = source.read(offset, length)
            digest = digest_of(raw)
            stored = self._store_chunk(job, digest, raw)
            source.chunks[index] = {"digest": digest, "size": length, "stored": stored}
        except BaseException:
            job.failed = True
            raise

    def _store_chunk(self, job: _Job, digest: str, raw: bytes | memoryview) -> int:
        with job.lock:
            claim = job.claims.get(digest)
            owner = claim is None
            if claim is None:
                claim = job.claims[digest] = threading.Event()
        if not owner:
            claim.wait()  # the same bytes earlier in this save: written (or failed) once
            if digest not in job.stored:
                raise CheckpointError(f"chunk {digest} could not be stored")
            return job.stored[digest]
        key = chunk_key(digest)
        try:
            if self.storage.touch(key):
                stored = self._known.get(digest)
                if stored is None:
                    stored = self._stored_size(key, len(raw))
                written = 0
            else:
                blob = self.codec.compress(memoryview(raw))
                self.storage.put(key, blob)
                stored = written = len(blob)
            if len(self._known) >= _KNOWN_DIGESTS_LIMIT:
                self._known.clear()
            self._known[digest] = stored
            with job.lock:
                job.stored[digest] = stored
                job.new_bytes += written
        except StorageError as exc:
            raise CheckpointError(f"checkpoint {job.uuid}: {exc}") from exc
        finally:
            claim.set()
        return stored

    def _stored_size(self, key: str, size: int) -> int:
        # Another writer stored this chunk, maybe compressed: its stored size is informational only.
        for obj in self.storage.list(key):
            if obj.key == key:
                return obj.size
        return size
