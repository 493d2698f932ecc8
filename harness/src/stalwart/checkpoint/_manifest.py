"""The checkpoint format: storage keys, chunk digests and compression, and reading a manifest.

A chunk is stored under the blake3 digest of its *raw* bytes, compressed or not. Whether stored
bytes are compressed is told by their length alone: the writer keeps a chunk raw whenever
compressing would not make it smaller, so a stored chunk is raw exactly when its length equals
the raw size. That keeps chunks interchangeable between checkpoints saved with and without
compression, which dedup needs.
"""

from __future__ import annotations

import json
import re
import threading
import uuid as uuid_lib
from typing import Any

import blake3

from stalwart.checkpoint.storage import (
    CHUNKS,
    MANIFESTS,
    SHARDS,
    StorageBackend,
    StorageError,
    StorageNotFound,
)
from stalwart.core._errors import CheckpointCorrupted, CheckpointError, CheckpointNotFound

FORMAT = "stalwart-checkpoint/1"
DIGEST = "blake3"
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
COMPRESSIONS = (None, "zstd")
SKELETON = "__skeleton__.pkl"

_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def chunk_key(digest: str) -> str:
    return f"{CHUNKS}{digest[:2]}/{digest}"


def manifest_key(uuid: str) -> str:
    return f"{MANIFESTS}{uuid}.json"


def shard_key(uuid: str, rank: int) -> str:
    return f"{SHARDS}{uuid}/rank-{rank}.json"


def abort_key(uuid: str) -> str:
    """Written by the chief when a multi-process save fails, so the other ranks stop waiting."""
    return f"{SHARDS}{uuid}/aborted.json"


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _HEX_DIGEST.match(value) is not None


def check_uuid(value: object) -> str:
    """The canonical form of a checkpoint uuid; anything else is refused before it becomes a key."""
    try:
        return str(uuid_lib.UUID(str(value)))
    except (ValueError, AttributeError, TypeError):
        raise CheckpointNotFound(f"{value!r} is not a checkpoint uuid") from None


def digest_of(data: bytes | memoryview) -> str:
    # blake3 releases the GIL while it hashes, so chunk threads hash in parallel.
    return blake3.blake3(data).hexdigest()


class Codec:
    """Compresses chunks for writing and undoes it for reading; one per writer or reader."""

    def __init__(self, compression: str | None, level: int = 1) -> None:
        if compression not in COMPRESSIONS:
            raise CheckpointError(f"checkpoint compression {compression!r} is not supported (zstd or none)")
        self.compression = compression
        self.level = level
        # zstandard's (de)compressor objects must not be shared between threads.
        self._local = threading.local()

    def compress(self, raw: memoryview) -> bytes | memoryview:
        """The bytes to store: compressed when that is smaller, else ``raw`` itself."""
        if self.compression is None:
            return raw
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            import zstandard

            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        packed: bytes = compressor.compress(raw)
        return packed if len(packed) < len(raw) else raw

    def decompress(self, stored: bytes, size: int) -> bytes:
        """The raw bytes of a stored chunk of ``size`` raw bytes (see the module docstring)."""
        if len(stored) == size:
            return stored
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            import zstandard

            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        raw: bytes = decompressor.decompress(stored, max_output_size=size)
        return raw


def decode_chunk(codec: Codec, stored: bytes, size: int) -> bytes:
    """Decompress a stored chunk; raises ValueError (for the caller to name the chunk) if it cannot."""
    try:
        raw = codec.decompress(stored, size)
    except Exception as exc:  # zstandard raises its own ZstdError for any bad frame
        raise ValueError(f"cannot be decompressed ({exc})") from None
    if len(raw) != size:
        raise ValueError(f"has {len(raw)} bytes, expected {size}")
    return raw


def validate_manifest(manifest: object, uuid: str) -> dict[str, Any]:
    """Check the shape the reader relies on; a manifest that fails this is corrupted, not missing."""
    if not isinstance(manifest, dict):
        raise CheckpointCorrupted(f"checkpoint {uuid}: manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise CheckpointCorrupted(
            f"checkpoint {uuid}: manifest format {manifest.get('format')!r} is not {FORMAT!r} "
            "(saved by an older harness?)"
        )
    if manifest.get("digest") != DIGEST or manifest.get("compression") not in COMPRESSIONS:
        raise CheckpointCorrupted(f"checkpoint {uuid}: manifest names an unknown digest or compression")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise CheckpointCorrupted(f"checkpoint {uuid}: manifest has no file list")
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        chunks = entry.get("chunks") if isinstance(entry, dict) else None
        if (
            not isinstance(path, str)
            or not isinstance(chunks, list)
            or not isinstance(entry.get("size"), int)
        ):
            raise CheckpointCorrupted(f"checkpoint {uuid}: manifest entry {entry!r:.80} is malformed")
        total = 0
        for index, chunk in enumerate(chunks):
            if not (
                isinstance(chunk, dict)
                and is_digest(chunk.get("digest"))
                and isinstance(chunk.get("size"), int)
            ):
                raise CheckpointCorrupted(f"checkpoint {uuid}: file {path!r} chunk {index} is malformed")
            total += chunk["size"]
        if total != entry["size"]:
            raise CheckpointCorrupted(
                f"checkpoint {uuid}: file {path!r} chunks add up to {total} bytes, not {entry['size']}"
            )
    return manifest


def read_manifest(storage: StorageBackend, uuid: str) -> dict[str, Any]:
    """The committed manifest of checkpoint ``uuid`` in ``storage``.

    Raises :class:`CheckpointNotFound` when there is none (never saved, or its save never
    committed) and :class:`CheckpointCorrupted` when it is unreadable.

    Example::

        manifest = read_manifest(open_storage(config), uuid)
        print(manifest["steps_completed"], len(manifest["files"]))
    """
    uuid = check_uuid(uuid)
    try:
        raw = storage.get(manifest_key(uuid))
    except StorageNotFound:
        raise CheckpointNotFound(
            f"checkpoint {uuid} has no manifest in {storage.description} (never committed, or deleted)"
        ) from None
    except StorageError as exc:
        raise CheckpointError(f"cannot read checkpoint {uuid}'s manifest: {exc}") from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CheckpointCorrupted(f"checkpoint {uuid}: manifest is not valid JSON ({exc})") from None
    return validate_manifest(manifest, uuid)
