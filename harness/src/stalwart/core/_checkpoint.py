"""``core_context.checkpoint``: checkpoints in the experiment's chunk store (``stalwart.checkpoint``).

Two ways to save, one storage format:

- ``save_state(state)`` snapshots tensors into host memory and returns at once; the checkpoint is
  chunked, deduplicated and committed in the background (errors surface on the next call);
- ``store_path()`` / ``upload()`` store a directory of files, synchronously, as Determined does.

A checkpoint exists once its manifest is committed; only then does the chief register it with the
master, whose copy of the manifest is what restores verify against on a cluster.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stalwart.core._errors import CheckpointCorrupted, CheckpointError, CheckpointNotFound, MasterError
from stalwart.core._http import AllocationSession

# The engine is imported where it is used: it imports stalwart.core._errors itself, and a script
# that never checkpoints does not pay for blake3 and friends.
if TYPE_CHECKING:
    from stalwart.checkpoint import CheckpointWriter, StorageBackend

_DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

#: Chooses files by their path relative to the checkpoint root ("model.pt", "opt/state.bin").
Selector = Callable[[str], bool]


class DownloadMode(enum.Enum):
    """How ranks share a download (Determined's names).

    Accepted for compatibility: each rank reads the checkpoint itself in both modes, since
    multi-node trials are not supported yet and chunks are read from storage in parallel anyway.
    """

    LocalWorkersShareDownload = "LocalWorkersShareDownload"
    NoSharedDownload = "NoSharedDownload"


def _selected(manifest: dict[str, Any], selector: Selector | None) -> dict[str, Any]:
    if selector is None:
        return manifest
    return {**manifest, "files": [entry for entry in manifest["files"] if selector(entry["path"])]}


def _chunk_size(storage: Mapping[str, Any]) -> int:
    value = storage.get("chunk_size", _DEFAULT_CHUNK_SIZE)
    if type(value) is not int or value < 4096:
        raise CheckpointError(f"checkpoint_storage.chunk_size must be an int >= 4096, got {value!r}")
    return value


def _compression(storage: Mapping[str, Any]) -> str | None:
    value = storage.get("compression")
    return None if value in (None, "none") else str(value)


class CheckpointContext:
    """Saves and restores checkpoints in the experiment's checkpoint storage.

    Example::

        uuid = core_context.checkpoint.save_state({"model": model.state_dict()}, steps_completed=step)
        ...
        found = core_context.checkpoint.load_latest_state()
        if found is not None:
            uuid, state = found
            model.load_state_dict(state["model"])
    """

    def __init__(
        self,
        *,
        storage: Mapping[str, Any] | None,
        session: AllocationSession | None,
        trial_id: int | None,
        allocation_id: str | None,
        parent_uuid: str | None,
        is_chief: bool,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        register_retry_for: float = 300.0,
        rank: int = 0,
        world_size: int = 1,
        run_key: str | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self._storage_config = dict(storage) if storage is not None else None
        self._session = session
        self._trial_id = trial_id
        self._allocation_id = allocation_id
        self._parent_uuid = parent_uuid
        self._is_chief = is_chief
        self._log = log
        self._register_retry_for = register_retry_for
        self._rank = rank
        self._world_size = world_size
        self._run_key = run_key or allocation_id
        self._max_in_flight = max_in_flight
        self._writer: CheckpointWriter | None = None
        self._backends: dict[str, StorageBackend] = {}

    # --- storage and the writer -----------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        if self._storage_config is None:
            raise CheckpointError(
                "no checkpoint storage: set checkpoint_storage in the experiment config or pass "
                "checkpoint_storage= to stalwart.core.init()"
            )
        return self._storage_config

    def _backend(self, config: Mapping[str, Any] | None = None) -> StorageBackend:
        config = config if config is not None else self._config()
        key = json.dumps(config, sort_keys=True, default=str)
        backend = self._backends.get(key)
        if backend is None:
            from stalwart.checkpoint import StorageError, open_storage

            try:
                backend = self._backends[key] = open_storage(config)
            except StorageError as exc:
                raise CheckpointError(f"cannot open checkpoint storage: {exc}") from exc
        return backend

    def _get_writer(self) -> CheckpointWriter:
        if self._writer is None:
            from stalwart.checkpoint import CheckpointWriter

            config = self._config()
            self._writer = CheckpointWriter(
                self._backend(config),
                chunk_size=_chunk_size(config),
                compression=_compression(config),
                max_in_flight=self._max_in_flight,
                rank=self._rank,
                world_size=self._world_size,
                run_key=self._run_key,
                parent_uuid=self._parent_uuid,
                on_commit=self._register if (self._session is not None and self._is_chief) else None,
                log=self._log,
            )
        return self._writer

    # --- saving ---------------------------------------------------------------------------

    def save_state(
        self, state: object, *, steps_completed: int, metadata: Mapping[str, Any] | None = None
    ) -> str:
        """Snapshot ``state`` (tensors, arrays, any picklable values) and return the checkpoint's uuid.

        Returns as soon as the tensors are copied to host memory; the checkpoint is persisted and
        registered in the background. At most ``max_in_flight`` (default 1) saves persist at once:
        a further call waits for the oldest. A failed save raises on the next call, ``wait()`` or
        when the context closes. In a multi-process trial every rank calls it with its own state.

        Example::

            uuid = checkpoint.save_state({"model": model.state_dict(), "opt": opt.state_dict()},
                                         steps_completed=step)
        """
        return self._get_writer().save_state(state, steps_completed=steps_completed, metadata=metadata)

    def prepare(self, state: object) -> int:
        """Pre-allocate the host memory a ``save_state(state)`` needs, so the first save stalls
        training no longer than later ones; returns the bytes reserved.

        Example::

            checkpoint.prepare({"model": model.state_dict(), "opt": opt.state_dict()})
        """
        return self._get_writer().prepare(state)

    def wait(self) -> None:
        """Block until every ``save_state`` so far is committed (and registered); raise a failure.

        Example::

            checkpoint.save_state(state, steps_completed=step)
            checkpoint.wait()
        """
        if self._writer is not None:
            self._writer.wait()

    @contextlib.contextmanager
    def store_path(self, metadata: Mapping[str, Any], shard: bool = False) -> Iterator[tuple[Path, str]]:
        """Yield ``(path, uuid)`` of an empty directory; store its files as a checkpoint when the block
        exits cleanly (an exception inside leaves no checkpoint).

        ``metadata`` must contain ``steps_completed``. With ``shard=True`` every rank stores its own
        files (file names must differ between ranks) into the one checkpoint.

        Example::

            with checkpoint.store_path({"steps_completed": step}) as (path, uuid):
                torch.save(model.state_dict(), path / "model.pt")
        """
        if not self._is_chief and not shard:
            raise CheckpointError("only the chief (rank 0) stores checkpoints, unless shard=True")
        steps = self._steps(metadata)
        writer = self._get_writer()
        uuid = writer.next_uuid(shard and self._world_size > 1)
        staging = Path(tempfile.mkdtemp(prefix=f"stalwart-checkpoint-{uuid[:8]}-"))
        try:
            yield staging, uuid
            writer.save_directory(staging, steps_completed=steps, metadata=metadata, sharded=shard, uuid=uuid)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def upload(
        self,
        ckpt_dir: str | os.PathLike[str] | None,
        metadata: Mapping[str, Any],
        *,
        shard: bool = False,
        selector: Selector | None = None,
    ) -> str:
        """Store an existing directory as a new checkpoint; return its uuid.

        ``selector`` picks the files to store by their path relative to ``ckpt_dir``; ``ckpt_dir``
        None stores only the metadata (a sharded save's ranks with nothing of their own).

        Example::

            uuid = checkpoint.upload("out/", {"steps_completed": step})
            uuid = checkpoint.upload("out/", {"steps_completed": step}, selector=lambda p: p.endswith(".pt"))
        """
        if not self._is_chief and not shard:
            raise CheckpointError("only the chief (rank 0) stores checkpoints, unless shard=True")
        steps = self._steps(metadata)
        writer = self._get_writer()
        uuid = writer.next_uuid(shard and self._world_size > 1)
        with _staged(ckpt_dir, selector) as source:
            writer.save_directory(source, steps_completed=steps, metadata=metadata, sharded=shard, uuid=uuid)
        return uuid

    @staticmethod
    def _steps(metadata: Mapping[str, Any]) -> int:
        steps = metadata.get("steps_completed")
        if type(steps) is not int or steps < 0:
            raise CheckpointError(f"metadata must contain steps_completed (an int >= 0), got {steps!r}")
        return steps

    def _register(self, manifest: dict[str, Any]) -> None:
        """Tell the master about a committed checkpoint (runs on the writer thread, retried)."""
        assert self._session is not None
        uuid = manifest["uuid"]
        body = {
            "uuid": uuid,
            "trial_id": self._trial_id,
            "allocation_id": self._allocation_id,
            "steps_completed": manifest["steps_completed"],
            "storage": self._storage_config,
            "manifest": manifest,
            "metadata": manifest["metadata"],
            "parent_uuid": manifest["parent_uuid"],
        }
        deadline = time.monotonic() + self._register_retry_for
        delay = 0.2
        while True:
            try:
                self._session.request("POST", f"/allocations/{self._allocation_id}/checkpoints", body=body)
                return
            except MasterError as exc:
                if exc.status == 409:
                    return  # an earlier attempt got through but its answer was lost
                if not exc.retryable or time.monotonic() + delay > deadline:
                    raise CheckpointError(
                        f"checkpoint {uuid} is written but the master did not register it: {exc}"
                    ) from exc
                self._log.warning("registering checkpoint %s failed, retrying: %s", uuid, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    # --- restoring ------------------------------------------------------------------------

    def _record(self, uuid: str) -> dict[str, Any]:
        assert self._session is not None
        try:
            data = self._session.request("GET", f"/checkpoints/{uuid}").json()
        except MasterError as exc:
            if exc.status == 404:
                raise CheckpointNotFound(f"the master knows no checkpoint {uuid}") from exc
            raise CheckpointError(f"cannot look up checkpoint {uuid}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"unexpected answer for checkpoint {uuid}: {data!r:.200}")
        return data

    def _locate(self, uuid: str) -> tuple[StorageBackend, dict[str, Any]]:
        """The storage and the manifest of a checkpoint; on a cluster the master's copy of the
        manifest is used, which cannot be edited beside the chunks."""
        from stalwart.checkpoint import read_manifest
        from stalwart.checkpoint._manifest import check_uuid, validate_manifest

        uuid = check_uuid(uuid)
        if self._session is None:
            backend = self._backend()
            return backend, read_manifest(backend, uuid)
        record = self._record(uuid)
        if record.get("state") == "DELETED":
            raise CheckpointNotFound(f"checkpoint {uuid} was deleted")
        storage = record.get("storage") or {}
        own = self._storage_config
        if own is not None and all(own.get(k) == v for k, v in storage.items()):
            storage = own  # the same place: this run's copy carries the credentials the row may not
        storage = storage or self._config()
        backend = self._backend(storage)
        manifest = record.get("manifest")
        if isinstance(manifest, dict) and "format" in manifest:
            return backend, validate_manifest(manifest, uuid)
        return backend, read_manifest(backend, uuid)

    def load_state(
        self,
        storage_id: str,
        map_location: Any = None,
        *,
        allowed_globals: Iterable[str] = (),
        trusted: bool = False,
    ) -> Any:
        """The state a ``save_state`` stored, every chunk verified as it is read.

        Raises ``CheckpointCorrupted`` naming the damaged file and chunk. ``map_location`` moves
        tensors to a device (by default: where they were saved, when it exists here).

        Tensors, arrays and plain values load by default; any other pickled object raises
        ``UnsafeCheckpointError`` naming its type, since the checkpoint may be another user's and
        unpickling can run code. For a checkpoint you made yourself, ``allowed_globals`` names
        further classes to load (``"module.qualname"``) and ``trusted=True`` loads everything.

        Example::

            state = checkpoint.load_state(uuid, map_location="cpu")
            mine = checkpoint.load_state(uuid, allowed_globals=["my_project.schedules.Warmup"])
        """
        from stalwart.checkpoint import load_state

        backend, manifest = self._locate(storage_id)
        rank = self._rank if int(manifest.get("world_size") or 1) > 1 else 0
        return load_state(
            backend, manifest, map_location, rank=rank, allowed_globals=allowed_globals, trusted=trusted
        )

    def load_latest_state(
        self,
        map_location: Any = None,
        *,
        allowed_globals: Iterable[str] = (),
        trusted: bool = False,
    ) -> tuple[str, Any] | None:
        """``(uuid, state)`` of the trial's newest loadable checkpoint, or None if there is none.

        A checkpoint that turns out missing or corrupted is reported to the master, which marks it
        CORRUPTED and names the next-newest one to try; off-cluster its parent is tried instead.
        One holding objects restore does not load (see ``load_state``) is not corrupted: its
        ``UnsafeCheckpointError`` is raised, nothing is reported and nothing older is tried.

        Example::

            found = checkpoint.load_latest_state()
            start = 0 if found is None else found[1]["step"]
        """
        if self._writer is not None:
            self._writer.wait()
            candidate = self._writer.latest_uuid or self._writer.parent_uuid
        else:
            candidate = self._parent_uuid
        tried: set[str] = set()
        while candidate and candidate not in tried:
            tried.add(candidate)
            try:
                state = self.load_state(
                    candidate, map_location, allowed_globals=allowed_globals, trusted=trusted
                )
            except (CheckpointCorrupted, CheckpointNotFound) as exc:  # a refused one is not corrupt
                self._log.warning("checkpoint %s cannot be restored: %s", candidate, exc)
                candidate = self._fallback(candidate, str(exc))
                continue
            # Lineage: this run's next checkpoint descends from what it restored, not from a bad one.
            self._parent_uuid = candidate
            if self._writer is not None:
                self._writer.parent_uuid = candidate
            return candidate, state
        return None

    def _fallback(self, uuid: str, reason: str) -> str | None:
        if self._session is not None:
            try:
                answer = self._session.request(
                    "POST",
                    f"/allocations/{self._allocation_id}/checkpoints/{uuid}/corrupt",
                    body={"reason": reason[:2000]},
                ).json()
            except MasterError as exc:
                raise CheckpointError(f"cannot report checkpoint {uuid} as corrupted: {exc}") from exc
            latest = answer.get("latest_checkpoint") if isinstance(answer, dict) else None
            return str(latest) if latest else None
        from stalwart.checkpoint import read_manifest

        try:
            parent = read_manifest(self._backend(), uuid).get("parent_uuid")
        except CheckpointError:
            return None
        return str(parent) if parent else None

    @contextlib.contextmanager
    def restore_path(
        self,
        storage_id: str,
        download_mode: DownloadMode = DownloadMode.LocalWorkersShareDownload,
        selector: Selector | None = None,
    ) -> Iterator[Path]:
        """Yield a temporary directory holding the checkpoint's files, each verified; removed after.

        ``selector`` restores only the files it returns True for (paths relative to the root).

        Example::

            with checkpoint.restore_path(info.latest_checkpoint) as path:
                model.load_state_dict(torch.load(path / "model.pt"))
        """
        from stalwart.checkpoint import restore_directory

        DownloadMode(download_mode)
        backend, manifest = self._locate(storage_id)
        staging = Path(tempfile.mkdtemp(prefix=f"stalwart-restore-{manifest['uuid'][:8]}-"))
        try:
            restore_directory(backend, _selected(manifest, selector), staging)
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def download(
        self,
        storage_id: str,
        ckpt_dir: str | os.PathLike[str],
        download_mode: DownloadMode = DownloadMode.LocalWorkersShareDownload,
        *,
        selector: Selector | None = None,
    ) -> None:
        """Write a verified copy of the checkpoint's files (those ``selector`` picks) into ``ckpt_dir``.

        Example::

            checkpoint.download(uuid, "restored/")
            checkpoint.download(uuid, "weights/", selector=lambda path: path.startswith("model"))
        """
        from stalwart.checkpoint import restore_directory

        DownloadMode(download_mode)
        backend, manifest = self._locate(storage_id)
        restore_directory(backend, _selected(manifest, selector), Path(ckpt_dir))

    def delete(self, storage_id: str) -> None:
        """Delete a checkpoint. Off-cluster its manifest is removed (chunks no other checkpoint
        uses are swept by ``stalwart checkpoint gc``); on a cluster the master is asked, and its
        garbage collection deletes the files.

        Example::

            checkpoint.delete(uuid)
        """
        from stalwart.checkpoint import delete_manifests
        from stalwart.checkpoint._manifest import check_uuid

        uuid = check_uuid(storage_id)
        if self._session is None:
            self._locate(uuid)  # CheckpointNotFound for one that does not exist
            delete_manifests(self._backend(), [uuid])
            return
        try:
            self._session.request("DELETE", f"/checkpoints/{uuid}")
        except MasterError as exc:
            if exc.status == 404:
                raise CheckpointNotFound(f"the master knows no checkpoint {uuid}") from exc
            raise CheckpointError(f"cannot delete checkpoint {uuid}: {exc}") from exc

    def get_metadata(self, storage_id: str) -> dict[str, Any]:
        """The metadata a checkpoint was stored with (including ``steps_completed``).

        Example::

            steps = checkpoint.get_metadata(uuid)["steps_completed"]
        """
        from stalwart.checkpoint._manifest import check_uuid

        uuid = check_uuid(storage_id)
        if self._session is not None:
            metadata = self._record(uuid).get("metadata")
            if isinstance(metadata, dict):
                return metadata
        _, manifest = self._locate(uuid)
        metadata = manifest.get("metadata")
        if not isinstance(metadata, dict):
            raise CheckpointCorrupted(f"checkpoint {uuid}: manifest has no metadata object")
        return metadata

    def close(self) -> None:
        """Wait for saves in flight, raise the first failure, and release buffers and storage."""
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()


@contextlib.contextmanager
def _staged(ckpt_dir: str | os.PathLike[str] | None, selector: Selector | None) -> Iterator[Path]:
    """The directory to store: ``ckpt_dir`` itself, or a temporary one linking the selected files."""
    if ckpt_dir is not None and selector is None:
        yield Path(ckpt_dir)
        return
    staging = Path(tempfile.mkdtemp(prefix="stalwart-upload-"))
    try:
        if ckpt_dir is not None:
            root = Path(ckpt_dir)
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root).as_posix()
                if path.is_dir() or not selector or not selector(rel):
                    continue
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)  # no copy: the writer only reads it
                except OSError:
                    shutil.copy2(path, target)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
