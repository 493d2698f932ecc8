"""One small interface every checkpoint storage backend implements.

Keys are ``/``-separated relative names. The chunk store keeps this layout under a backend's root:

- ``chunks/<first two hex digits>/<digest>``: content-addressed chunk bytes (maybe zstd-compressed);
- ``manifests/<uuid>.json``: one per committed checkpoint; its existence *is* the commit;
- ``shards/<uuid>/rank-<n>.json``: a non-chief rank's part of a multi-process save, until the
  chief merges it into the manifest.

Backends do no chunking or hashing: that is the engine's job, so every backend stays a thin
wrapper over a filesystem or an object store.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CHUNKS = "chunks/"
MANIFESTS = "manifests/"
SHARDS = "shards/"


class StorageError(OSError):
    """The backend failed (I/O error, full disk, refused request); the message names the key."""


class StorageNotFound(StorageError):
    """The key does not exist."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    mtime: float  # seconds since the epoch; GC keeps unreferenced chunks younger than its grace period


class StorageBackend(abc.ABC):
    """What the chunk store needs from a place that keeps bytes."""

    #: Shown in log lines and errors, e.g. ``shared_fs:/mnt/ckpt`` or ``s3://bucket/prefix``.
    description: str

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``key`` (replacing any old value). A reader never sees a partial value."""

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Atomically create ``key``; False (and nothing changed) if it already exists. Used to commit."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole value; raises :class:`StorageNotFound` if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def touch(self, key: str) -> bool:
        """Refresh ``key``'s modification time (protects a reused chunk from a concurrent GC sweep).

        Returns False if the key does not exist.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone counts as success."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix``, in no particular order.

        May include leftovers of interrupted writes (a last key part that is not a valid name, e.g.
        a filesystem's ``.tmp-*`` files): garbage collection deletes those once they are old.
        """

    def sync(self) -> None:  # noqa: B027 - optional hook, a no-op where puts are durable already
        """Make every earlier ``put`` durable (filesystems batch their fsyncs here)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or file handles."""


def open_storage(config: Mapping[str, Any]) -> StorageBackend:
    """The backend for an experiment's ``checkpoint_storage`` section (``type`` picks it).

    Cloud SDKs are imported only here, lazily, so a trial that writes to a shared filesystem never
    needs boto3.
    """
    kind = config.get("type")
    if kind in ("shared_fs", "directory"):
        from stalwart.checkpoint.fs import FilesystemStorage

        return FilesystemStorage.from_config(config)
    if kind == "s3":
        from stalwart.checkpoint.s3 import S3Storage

        return S3Storage.from_config(config)
    raise StorageError(f"checkpoint storage type {kind!r} is not supported (shared_fs, directory, s3 are)")
