"""``core_context.checkpoint``: directories of files, committed by a manifest written last.

A checkpoint is ``<storage root>/<uuid>/``. The user writes files into it; on a clean exit the
harness writes ``metadata.json``, fsyncs every file, then writes ``stalwart-manifest.json``
(sizes and SHA-256 of every file) through a temporary file and an atomic rename. The manifest is
the commit: a directory without one is an unfinished save, invisible to restore, and the master
hears of a checkpoint only after its manifest exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid as uuid_lib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stalwart.core._errors import CheckpointCorrupted, CheckpointError, CheckpointNotFound, MasterError
from stalwart.core._http import AllocationSession

MANIFEST = "stalwart-manifest.json"
METADATA = "metadata.json"
_MANIFEST_TMP = MANIFEST + ".tmp"
_CHUNK = 1024 * 1024


def storage_root(storage: Mapping[str, Any]) -> Path:
    """The directory checkpoints live under for an experiment's ``checkpoint_storage``."""
    kind = storage.get("type")
    if kind == "shared_fs":
        root = Path(str(storage["host_path"]))
        sub = storage.get("storage_path")
        return root / str(sub) if sub else root
    if kind == "directory":
        return Path(str(storage["container_path"]))
    raise CheckpointError(
        f"checkpoint storage type {kind!r} is not supported by this harness yet (shared_fs, directory are)"
    )


def _check_uuid(value: str) -> str:
    # A uuid becomes a path component: anything else could point outside the storage root.
    try:
        return str(uuid_lib.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise CheckpointNotFound(f"{value!r} is not a checkpoint uuid") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(path: Path, *, sync: bool) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(handle.fileno())
    return size, sha.hexdigest()


def build_manifest(directory: Path) -> list[dict[str, Any]]:
    """Size and SHA-256 of every file under ``directory``, each fsynced so the manifest never lies."""
    files: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel in (MANIFEST, _MANIFEST_TMP):
            continue
        if path.is_symlink():
            raise CheckpointError(f"checkpoint file {rel!r} is a symbolic link; write real files")
        if path.is_dir():
            _fsync_dir(path)
            continue
        if not path.is_file():
            raise CheckpointError(f"checkpoint entry {rel!r} is not a regular file")
        size, sha = _digest(path, sync=True)
        files.append({"path": rel, "size": size, "sha256": sha})
    return files


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest atomically: temp file, fsync, rename, fsync the directory."""
    _fsync_dir(directory)
    tmp = directory / _MANIFEST_TMP
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / MANIFEST)
    _fsync_dir(directory)


def read_manifest_files(directory: Path, uuid: str) -> list[dict[str, Any]]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointNotFound(
            f"checkpoint {uuid} has no manifest in {directory} (never committed)"
        ) from None
    except ValueError as exc:
        raise CheckpointCorrupted(f"checkpoint {uuid}: {MANIFEST} is not valid JSON ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise CheckpointCorrupted(f"checkpoint {uuid}: {MANIFEST} has no file list")
    return files


def verify(directory: Path, files: list[dict[str, Any]], uuid: str) -> None:
    """Check every file's size and SHA-256 against the manifest; raise naming the first bad file."""
    root = directory.resolve()
    for entry in files:
        rel = str(entry.get("path", ""))
        path = (directory / rel).resolve()
        if not path.is_relative_to(root):
            raise CheckpointCorrupted(
                f"checkpoint {uuid}: manifest path {rel!r} points outside the checkpoint"
            )
        if not path.is_file():
            raise CheckpointCorrupted(f"checkpoint {uuid}: file {rel!r} is missing")
        size, sha = _digest(path, sync=False)
        if size != entry.get("size") or sha != entry.get("sha256"):
            raise CheckpointCorrupted(
                f"checkpoint {uuid}: file {rel!r} does not match its manifest "
                f"(size {size}, expected {entry.get('size')}; sha256 {sha[:12]}…, "
                f"expected {str(entry.get('sha256'))[:12]}…)"
            )


class CheckpointContext:
    """Saves and restores checkpoints in the experiment's checkpoint storage.

    Example::

        with core_context.checkpoint.store_path({"steps_completed": step}) as (path, uuid):
            torch.save(model.state_dict(), path / "model.pt")
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
    ) -> None:
        self._storage = dict(storage) if storage is not None else None
        self._session = session
        self._trial_id = trial_id
        self._allocation_id = allocation_id
        self._parent_uuid = parent_uuid
        self._is_chief = is_chief
        self._log = log
        self._register_retry_for = register_retry_for

    def _root(self, storage: Mapping[str, Any] | None = None) -> Path:
        storage = storage if storage is not None else self._storage
        if storage is None:
            raise CheckpointError(
                "no checkpoint storage: set checkpoint_storage in the experiment config or pass "
                "checkpoint_storage= to stalwart.core.init()"
            )
        return storage_root(storage)

    @contextlib.contextmanager
    def store_path(self, metadata: Mapping[str, Any], *, shard: bool = False) -> Iterator[tuple[Path, str]]:
        """Yield ``(path, uuid)`` of a fresh directory; commit it when the block exits cleanly.

        ``metadata`` must contain ``steps_completed``. An exception inside the block leaves no
        checkpoint behind.

        Example::

            with checkpoint.store_path({"steps_completed": step}) as (path, uuid):
                (path / "state.json").write_text(json.dumps(state))
        """
        if shard:
            raise CheckpointError("shard=True is not supported yet: only the chief writes checkpoints")
        if not self._is_chief:
            raise CheckpointError("only the chief (rank 0) stores checkpoints")
        steps = metadata.get("steps_completed")
        if type(steps) is not int or steps < 0:
            raise CheckpointError(f"metadata must contain steps_completed (an int >= 0), got {steps!r}")
        metadata = dict(metadata)
        json.dumps(metadata)  # refuse unserialisable metadata before the user spends time writing files
        uuid = str(uuid_lib.uuid4())
        path = self._root() / uuid
        path.mkdir(parents=True)
        try:
            yield path, uuid
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self._commit(path, uuid, metadata, steps)

    def _commit(self, path: Path, uuid: str, metadata: dict[str, Any], steps: int) -> None:
        started = time.monotonic()
        try:
            (path / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True), encoding="utf-8")
            files = build_manifest(path)
            write_manifest(path, {"uuid": uuid, "steps_completed": steps, "files": files})
        except BaseException:
            # Uncommitted (no manifest): nothing can see it, so free the space now.
            shutil.rmtree(path, ignore_errors=True)
            raise
        if self._session is not None:
            self._register(uuid, steps, files, metadata)
        size = sum(entry["size"] for entry in files)
        self._log.info(
            "checkpoint %s committed: %d files, %d bytes, steps_completed=%d (%.2f s)",
            uuid,
            len(files),
            size,
            steps,
            time.monotonic() - started,
        )

    def _register(self, uuid: str, steps: int, files: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
        assert self._session is not None
        body = {
            "uuid": uuid,
            "trial_id": self._trial_id,
            "allocation_id": self._allocation_id,
            "steps_completed": steps,
            "storage": self._storage,
            "manifest": {"files": files},
            "metadata": metadata,
            "parent_uuid": self._parent_uuid,
        }
        deadline = time.monotonic() + self._register_retry_for
        delay = 0.2
        while True:
            try:
                self._session.request("POST", "/checkpoints", body=body)
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

    def _locate(self, uuid: str) -> tuple[Path, list[dict[str, Any]]]:
        uuid = _check_uuid(uuid)
        if self._session is None:
            directory = self._root() / uuid
            return directory, read_manifest_files(directory, uuid)
        record = self._record(uuid)
        storage = record.get("storage") or self._storage
        directory = self._root(storage) / uuid
        manifest = record.get("manifest")
        # The master's copy of the manifest is authoritative: it cannot be edited next to the files.
        if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
            return directory, list(manifest["files"])
        return directory, read_manifest_files(directory, uuid)

    def _record(self, uuid: str) -> dict[str, Any]:
        assert self._session is not None
        try:
            data = self._session.request("GET", f"/checkpoints/{uuid}").json()
        except MasterError as exc:
            if exc.status == 404:
                raise CheckpointNotFound(f"the master knows no checkpoint {uuid}") from exc
            raise CheckpointError(f"cannot look up checkpoint {uuid}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"unexpected answer for checkpoint {uuid}: {data!r}")
        return data

    @contextlib.contextmanager
    def restore_path(self, storage_id: str) -> Iterator[Path]:
        """Yield the checkpoint's directory after verifying every file against its manifest.

        Example::

            with checkpoint.restore_path(info.latest_checkpoint) as path:
                model.load_state_dict(torch.load(path / "model.pt"))
        """
        directory, files = self._locate(storage_id)
        verify(directory, files, storage_id)
        yield directory

    def get_metadata(self, storage_id: str) -> dict[str, Any]:
        """The metadata a checkpoint was stored with (including ``steps_completed``).

        Example::

            steps = checkpoint.get_metadata(uuid)["steps_completed"]
        """
        uuid = _check_uuid(storage_id)
        if self._session is not None:
            metadata = self._record(uuid).get("metadata")
            if isinstance(metadata, dict):
                return metadata
        directory, _ = self._locate(uuid)
        try:
            data = json.loads((directory / METADATA).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointCorrupted(f"checkpoint {uuid}: cannot read {METADATA} ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointCorrupted(f"checkpoint {uuid}: {METADATA} is not an object")
        return data

    def upload(self, ckpt_dir: str | os.PathLike[str], metadata: Mapping[str, Any]) -> str:
        """Copy an existing directory into a new checkpoint; return its uuid.

        Example::

            uuid = checkpoint.upload("out/", {"steps_completed": step})
        """
        with self.store_path(metadata) as (path, uuid):
            shutil.copytree(ckpt_dir, path, dirs_exist_ok=True)
        return uuid

    def download(self, storage_id: str, ckpt_dir: str | os.PathLike[str]) -> None:
        """Copy a verified checkpoint into ``ckpt_dir``.

        Example::

            checkpoint.download(uuid, "restored/")
        """
        with self.restore_path(storage_id) as path:
            shutil.copytree(path, ckpt_dir, dirs_exist_ok=True)
