"""Reading checkpoints back: verify, load a saved state, restore files, export safetensors.

Every chunk is checked against its blake3 digest as it is read, so nothing built from a
checkpoint ever used bytes other than those the save hashed; a mismatch raises
:class:`CheckpointCorrupted` naming the file and the chunk. Verified bytes are the author's
bytes, not trusted ones: a saved state's skeleton is unpickled on an allowlist (``_unpickle``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stalwart.checkpoint._manifest import (
    SKELETON,
    Codec,
    chunk_key,
    decode_chunk,
    digest_of,
    validate_manifest,
)
from stalwart.checkpoint._unpickle import _TrustedUnpickler, _Unpickler, check_allowed_globals
from stalwart.checkpoint.fs import FilesystemStorage
from stalwart.checkpoint.storage import StorageBackend, StorageError, StorageNotFound
from stalwart.core._errors import CheckpointCorrupted, CheckpointError

logger = logging.getLogger("stalwart.checkpoint")

_THREADS = min(8, max(2, os.cpu_count() or 2))

# safetensors names for torch dtypes; tensors of other dtypes are left out of an export.
_SAFETENSORS_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "complex64": "C64",
}


class _Chunk:
    """One chunk to read: which file of which checkpoint it belongs to, for error messages."""

    __slots__ = ("digest", "entry", "index", "offset", "size", "uuid")

    def __init__(self, uuid: str, entry: dict[str, Any], index: int, offset: int) -> None:
        chunk = entry["chunks"][index]
        self.uuid = uuid
        self.entry = entry
        self.index = index
        self.offset = offset
        self.digest: str = chunk["digest"]
        self.size: int = chunk["size"]

    def where(self) -> str:
        return (
            f"checkpoint {self.uuid}: file {self.entry['path']!r} chunk {self.index} (blake3 {self.digest})"
        )


def _chunks_of(uuid: str, entry: dict[str, Any]) -> Iterator[_Chunk]:
    offset = 0
    for index, chunk in enumerate(entry["chunks"]):
        yield _Chunk(uuid, entry, index, offset)
        offset += chunk["size"]


def read_chunk(storage: StorageBackend, codec: Codec, chunk: _Chunk) -> bytes:
    """The chunk's raw bytes, verified against its digest."""
    try:
        stored = storage.get(chunk_key(chunk.digest))
    except StorageNotFound:
        raise CheckpointCorrupted(f"{chunk.where()} is missing from {storage.description}") from None
    except StorageError as exc:
        raise CheckpointError(f"{chunk.where()} cannot be read: {exc}") from exc
    try:
        raw = decode_chunk(codec, stored, chunk.size)
    except ValueError as exc:
        raise CheckpointCorrupted(f"{chunk.where()} {exc}") from None
    actual = digest_of(raw)
    if actual != chunk.digest:
        raise CheckpointCorrupted(f"{chunk.where()} does not match its digest (read blake3 {actual})")
    return raw


def read_chunk_into(storage: StorageBackend, codec: Codec, chunk: _Chunk, dest: memoryview) -> None:
    """Read a chunk's raw bytes into ``dest`` (exactly its size) and verify them there.

    On a filesystem an uncompressed chunk is read straight into ``dest``: no intermediate copy.
    """
    if isinstance(storage, FilesystemStorage):
        try:
            with open(storage.path_of(chunk_key(chunk.digest)), "rb", buffering=0) as handle:
                if os.fstat(handle.fileno()).st_size == chunk.size:
                    filled = 0
                    while filled < chunk.size and (got := handle.readinto(dest[filled:])):
                        filled += got
                    actual = digest_of(dest)
                    if filled != chunk.size or actual != chunk.digest:
                        raise CheckpointCorrupted(
                            f"{chunk.where()} does not match its digest (read blake3 {actual})"
                        )
                    return
        except FileNotFoundError:
            raise CheckpointCorrupted(f"{chunk.where()} is missing from {storage.description}") from None
        except OSError as exc:
            raise CheckpointError(f"{chunk.where()} cannot be read: {exc}") from exc
    dest[:] = read_chunk(storage, codec, chunk)


def _ordered(
    storage: StorageBackend, codec: Codec, chunks: Iterable[_Chunk], threads: int
) -> Iterator[tuple[_Chunk, bytes]]:
    """Verified chunks in order, read ahead on ``threads`` threads with a bounded window."""
    with ThreadPoolExecutor(threads, thread_name_prefix="stalwart-read") as pool:
        window: deque[tuple[_Chunk, Future[bytes]]] = deque()
        try:
            for chunk in chunks:
                window.append((chunk, pool.submit(read_chunk, storage, codec, chunk)))
                if len(window) >= threads * 2:
                    head, task = window.popleft()
                    yield head, task.result()
            while window:
                head, task = window.popleft()
                yield head, task.result()
        finally:
            for _, task in window:
                task.cancel()


def _codec(manifest: dict[str, Any]) -> Codec:
    return Codec(manifest.get("compression"))


def verify_checkpoint(storage: StorageBackend, manifest: dict[str, Any], *, threads: int = _THREADS) -> None:
    """Re-read and re-hash every chunk of the checkpoint; raise :class:`CheckpointCorrupted` naming the
    first bad file and chunk.

    Example::

        verify_checkpoint(storage, read_manifest(storage, uuid))
    """
    uuid = str(manifest.get("uuid"))
    validate_manifest(manifest, uuid)
    seen: set[str] = set()
    distinct: list[_Chunk] = []
    for entry in manifest["files"]:
        for chunk in _chunks_of(uuid, entry):
            if chunk.digest not in seen:  # a chunk shared by several files is checked once
                seen.add(chunk.digest)
                distinct.append(chunk)
    for _ in _ordered(storage, _codec(manifest), distinct, threads):
        pass


# --- loading a saved state -------------------------------------------------------------------


class _Destination:
    """Flat host memory one tensor or array is read into, chunk by chunk."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        size = entry["size"]
        self.remaining = 0  # chunks not read yet; the last reader moves the bytes to their device
        self.on_device: Any = None
        self.flat: Any
        # Plain allocator memory, as torch.load uses: the allocator's warm, reused pages beat
        # fresh mappings when a process restores repeatedly.
        if entry["type"] == "tensor":
            import torch

            self.flat = torch.empty(size, dtype=torch.uint8)
            address = self.flat.data_ptr()
        else:
            import numpy

            self.flat = numpy.empty(size, dtype=numpy.uint8)
            address = self.flat.ctypes.data
        self.view = memoryview((ctypes.c_ubyte * size).from_address(address)).cast("B") if size else None

    def build(self, map_location: Any) -> Any:
        entry = self.entry
        shape = tuple(entry.get("shape") or ())
        if entry["type"] == "ndarray":
            import numpy

            return self.flat.view(numpy.dtype(entry["dtype"])).reshape(shape)
        import torch

        dtype = getattr(torch, str(entry.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointCorrupted(f"file {entry['path']!r}: unknown torch dtype {entry.get('dtype')!r}")
        device = _device_for(map_location, entry.get("device"))
        flat = self.flat if self.on_device is None else self.on_device
        tensor = flat.view(dtype).view(shape)
        if device is not None and str(device) != "cpu" and self.on_device is None:
            tensor = tensor.to(device)
        if entry.get("parameter"):
            return torch.nn.Parameter(tensor, requires_grad=bool(entry.get("requires_grad")))
        if entry.get("requires_grad"):
            tensor.requires_grad_(True)
        return tensor


def _device_for(map_location: Any, saved: object) -> Any:
    """``map_location`` if given; else where the tensor was saved, when that device exists here."""
    if map_location is not None:
        return map_location
    if not isinstance(saved, str) or not saved.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(saved.partition(":")[2] or 0)
    return saved if index < torch.cuda.device_count() else None


def load_state(
    storage: StorageBackend,
    manifest: dict[str, Any],
    map_location: Any = None,
    *,
    rank: int = 0,
    threads: int = _THREADS,
    allowed_globals: Iterable[str] = (),
    trusted: bool = False,
) -> Any:
    """Rebuild the state a ``save_state`` stored, verifying every chunk as it is read.

    ``map_location`` (a device or its name) moves tensors there; by default each goes back to the
    device it was saved from when this machine has it, else to the CPU. In a multi-process
    checkpoint ``rank`` picks whose state to load.

    Tensors, numpy arrays and plain values (containers, numbers, strings, datetime, Decimal, UUID,
    paths, torch and numpy dtypes) load by default, as with ``torch.load(weights_only=True)``; any
    other pickled object raises :class:`UnsafeCheckpointError` naming its type. A checkpoint may
    be another user's, and unpickling an object can run code. For a checkpoint you made yourself,
    ``allowed_globals`` names further classes and functions to allow (``"module.qualname"``), and
    ``trusted=True`` loads everything.

    Example::

        state = load_state(storage, read_manifest(storage, uuid), map_location="cpu")
        model.load_state_dict(state["model"])
        mine = load_state(storage, manifest, allowed_globals=["my_project.schedules.Warmup"])
    """
    uuid = str(manifest.get("uuid"))
    allowed = check_allowed_globals(allowed_globals)
    validate_manifest(manifest, uuid)
    if manifest.get("kind") != "state":
        raise CheckpointError(f"checkpoint {uuid} holds files, not a saved state: use restore_path")
    world_size = int(manifest.get("world_size") or 1)
    if not 0 <= rank < world_size:
        raise CheckpointError(f"checkpoint {uuid} was saved by {world_size} ranks; there is no rank {rank}")
    prefix = f"state/rank-{rank}/" if world_size > 1 else "state/"
    skeleton_path = prefix + SKELETON
    skeleton_entry = None
    destinations: dict[str, _Destination] = {}
    for entry in manifest["files"]:
        if not entry["path"].startswith(prefix) or int(entry.get("rank") or 0) != rank:
            continue
        if entry.get("type") == "skeleton" and entry["path"] == skeleton_path:
            skeleton_entry = entry
        elif entry.get("type") in ("tensor", "ndarray"):
            destinations[entry["path"]] = _Destination(entry)
    if skeleton_entry is None:
        raise CheckpointCorrupted(f"checkpoint {uuid}: manifest has no {skeleton_path}")
    skeleton = bytearray(skeleton_entry["size"])
    chunks = list(_chunks_of(uuid, skeleton_entry))
    for destination in destinations.values():
        chunks.extend(_chunks_of(uuid, destination.entry))
    codec = _codec(manifest)
    skeleton_view = memoryview(skeleton)
    for chunk in chunks:
        if chunk.entry is not skeleton_entry:
            destinations[chunk.entry["path"]].remaining += 1
    counted = threading.Lock()

    def moved(destination: _Destination) -> None:
        # A tensor whose every chunk is verified goes to its GPU at once, on this reader thread,
        # so host-to-device copies overlap the reading and hashing of the other tensors.
        with counted:
            destination.remaining -= 1
            if destination.remaining:
                return
        if destination.entry["type"] != "tensor":
            return
        device = _device_for(map_location, destination.entry.get("device"))
        if device is not None and str(device) != "cpu":
            destination.on_device = destination.flat.to(device)

    def load(chunk: _Chunk) -> None:
        # Chunks go to disjoint slices, so the threads need no lock.
        view = skeleton_view if chunk.entry is skeleton_entry else destinations[chunk.entry["path"]].view
        assert view is not None
        read_chunk_into(storage, codec, chunk, view[chunk.offset : chunk.offset + chunk.size])
        if chunk.entry is not skeleton_entry:
            moved(destinations[chunk.entry["path"]])

    with ThreadPoolExecutor(threads, thread_name_prefix="stalwart-read") as pool:
        tasks = [pool.submit(load, chunk) for chunk in chunks]
        try:
            for task in tasks:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
    arrays = {path: destination.build(map_location) for path, destination in destinations.items()}
    try:
        if trusted:
            logger.info(
                "checkpoint %s: trusted=True, loading its pickled objects without the allowlist", uuid
            )
            return _TrustedUnpickler(bytes(skeleton), arrays).load()
        return _Unpickler(bytes(skeleton), arrays, uuid=uuid, allowed_globals=allowed).load()
    except CheckpointError:  # UnsafeCheckpointError included: refused, not corrupted
        raise
    except Exception as exc:
        # Verified bytes that do not unpickle: a class the state used is gone or was renamed.
        raise CheckpointError(f"checkpoint {uuid}: the saved state cannot be rebuilt here: {exc}") from exc


# --- files and exports -----------------------------------------------------------------------


def _target(dest: Path, rel: str, uuid: str) -> Path:
    target = (dest / rel).resolve()
    if not target.is_relative_to(dest.resolve()) or rel.startswith("/"):
        raise CheckpointCorrupted(f"checkpoint {uuid}: file path {rel!r} points outside the checkpoint")
    return target


def restore_directory(
    storage: StorageBackend, manifest: dict[str, Any], dest: Path, *, threads: int = _THREADS
) -> None:
    """Write every file of the checkpoint under ``dest``, verified; a saved state's tensors come out
    as their raw bytes (use :func:`load_state` or :func:`export_safetensors` for those).

    Example::

        restore_directory(storage, manifest, Path("restored"))
    """
    uuid = str(manifest.get("uuid"))
    validate_manifest(manifest, uuid)
    dest.mkdir(parents=True, exist_ok=True)
    handles: dict[str, int] = {}
    try:
        chunks: list[_Chunk] = []
        for entry in manifest["files"]:
            target = _target(dest, entry["path"], uuid)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            handles[entry["path"]] = fd
            os.ftruncate(fd, entry["size"])
            chunks.extend(_chunks_of(uuid, entry))
        for chunk, raw in _ordered(storage, _codec(manifest), chunks, threads):
            fd = handles[chunk.entry["path"]]
            view = memoryview(raw)
            offset = chunk.offset
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
    finally:
        for fd in handles.values():
            os.close(fd)


def tensor_name(path: str) -> str:
    """The safetensors name of a saved tensor: its path under ``state/`` with '/' turned into '.'."""
    return path.removeprefix("state/").replace("/", ".")


def export_safetensors(
    storage: StorageBackend, manifest: dict[str, Any], dest_file: Path, *, threads: int = _THREADS
) -> list[str]:
    """Write the checkpoint's torch tensors into one safetensors file; return the names written.

    Streams chunk by chunk (verified), so exporting never holds the whole state in memory. Tensors
    whose dtype safetensors lacks are left out with a warning.

    Example::

        names = export_safetensors(storage, manifest, Path("model.safetensors"))
    """
    uuid = str(manifest.get("uuid"))
    validate_manifest(manifest, uuid)
    header: dict[str, Any] = {
        "__metadata__": {"stalwart_checkpoint": uuid, "steps_completed": str(manifest.get("steps_completed"))}
    }
    entries: list[dict[str, Any]] = []
    offset = 0
    for entry in manifest["files"]:
        if entry.get("type") != "tensor":
            continue
        dtype = _SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
        if dtype is None:
            logger.warning(
                "checkpoint %s: %s (%s) has no safetensors dtype; left out",
                uuid,
                entry["path"],
                entry.get("dtype"),
            )
            continue
        name = tensor_name(entry["path"])
        header[name] = {
            "dtype": dtype,
            "shape": list(entry.get("shape") or []),
            "data_offsets": [offset, offset + entry["size"]],
        }
        offset += entry["size"]
        entries.append(entry)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format wants the data 8-byte aligned
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_file.with_name(f".{dest_file.name}.partial")
    chunks = [chunk for entry in entries for chunk in _chunks_of(uuid, entry)]
    try:
        with tmp.open("wb") as handle:
            handle.write(len(encoded).to_bytes(8, "little"))
            handle.write(encoded)
            for _, raw in _ordered(storage, _codec(manifest), chunks, threads):
                handle.write(raw)
        os.replace(tmp, dest_file)
    finally:
        tmp.unlink(missing_ok=True)
    return [tensor_name(entry["path"]) for entry in entries]
