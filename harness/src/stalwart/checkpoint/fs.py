"""Checkpoint storage on a local or shared filesystem (``shared_fs`` and ``directory`` storage types).

A ``put`` writes a temporary file beside its target and renames it into place, so a reader never
sees half a value, but it does not fsync: fsyncing every 8 MiB chunk one by one would cap a save
at the disk's latency instead of its bandwidth. ``sync`` makes everything written since the last
``sync`` durable in one batch (files in parallel, then their directories), which the writer calls
once before it commits a manifest. Writeback of each file is started as soon as it is written, so
the final batch mostly waits for I/O that is already under way.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stalwart.checkpoint.storage import StorageBackend, StorageError, StorageNotFound, StoredObject

#: Temporary files start with this, so ``list`` can tell GC which leftovers are unfinished writes.
TEMP_PREFIX = ".tmp-"
_SYNC_THREADS = 8


def _start_writeback() -> Any:
    """``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`` on Linux: queue a file's dirty pages for
    writing without waiting, so the disk is busy while the writer produces the next chunks."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_sync_file_range = _start_writeback()
_SYNC_FILE_RANGE_WRITE = 2


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStorage(StorageBackend):
    """Keys are files under ``root``; ``chunks/ab/abcdef...`` is ``root/chunks/ab/abcdef...``.

    Example::

        storage = FilesystemStorage(Path("/mnt/checkpoints"))
        storage.put("chunks/ab/abcd", b"...")
        storage.sync()
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.description = f"filesystem:{self.root}"
        self._unsynced: set[Path] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FilesystemStorage:
        """``shared_fs``: host_path[/storage_path]; ``directory``: container_path."""
        kind = config.get("type")
        if kind == "shared_fs":
            if not config.get("host_path"):
                raise StorageError("shared_fs checkpoint storage needs host_path")
            root = Path(str(config["host_path"]))
            sub = config.get("storage_path")
            return cls(root / str(sub) if sub else root)
        if kind == "directory":
            if not config.get("container_path"):
                raise StorageError("directory checkpoint storage needs container_path")
            return cls(Path(str(config["container_path"])))
        raise StorageError(f"FilesystemStorage cannot open storage type {kind!r}")

    def path_of(self, key: str) -> Path:
        """Where ``key``'s file is (readers use it to read chunks straight into their buffers)."""
        return self._path(key)

    def _path(self, key: str) -> Path:
        # Keys come from manifests, which may come from storage: never let one escape the root.
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"{self.description}: invalid key {key!r}")
        return self.root.joinpath(*parts)

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError) and action == "read":
            return StorageNotFound(f"{self.description}: {key} does not exist")
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device"
        error = StorageError(f"{self.description}: cannot {action} {key}: {reason}")
        error.errno = exc.errno
        return error

    def _write_temp(self, path: Path, data: bytes | memoryview, *, durable: bool) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data).cast("B")
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
                elif _sync_file_range is not None:
                    _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, data, durable=False)
            os.replace(tmp, path)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        with self._lock:
            self._unsynced.add(path)

    def put_new(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, data, durable=True)
            try:
                # link() fails with EEXIST where rename() would silently replace: create-if-absent.
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_path(path.parent)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        return True

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb", buffering=0) as handle:
                return handle.read()
        except OSError as exc:
            raise self._error("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def touch(self, key: str) -> bool:
        try:
            os.utime(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error("touch", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("delete", key, exc) from exc
        parent = path.parent
        # Drop directories a sweep emptied (shards/<uuid>/) but keep the fixed top-level ones.
        if parent != self.root and parent.parent != self.root and parent.parent.name != "chunks":
            with contextlib.suppress(OSError):
                parent.rmdir()

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every file under ``prefix``, including leftovers of interrupted writes (their last key
        part starts with ``.tmp-``) so garbage collection can remove them."""
        head, _, tail = prefix.rpartition("/")
        base = self.root.joinpath(*head.split("/")) if head else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            if rel_dir == (head + "/" if head else ""):
                # Only descend into the directories that can still match the prefix.
                dirnames[:] = [d for d in dirnames if d.startswith(tail)]
            for name in filenames:
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                try:
                    stat = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                yield StoredObject(key=key, size=stat.st_size, mtime=stat.st_mtime)

    def sync(self) -> None:
        with self._lock:
            files, self._unsynced = self._unsynced, set()
        if not files:
            return
        directories = {path.parent for path in files}

        def fsync(path: Path) -> None:
            try:
                _fsync_path(path)
            except FileNotFoundError:
                pass  # replaced or swept since: whoever did that owns its durability
            except OSError as exc:
                raise self._error("sync", path.relative_to(self.root).as_posix(), exc) from exc

        # Parallel fsyncs keep the device queue full; one after another would wait out each flush.
        with ThreadPoolExecutor(min(_SYNC_THREADS, len(files)), thread_name_prefix="stalwart-fsync") as pool:
            list(pool.map(fsync, files))
            list(pool.map(fsync, directories))
