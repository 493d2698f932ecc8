"""Taking a consistent copy of a training state: the only part of a save that blocks training.

The state is pickled once. Tensors and numpy arrays are not pickled: the pickler's
``persistent_id`` hook copies their bytes into host buffers and leaves a reference (their path)
in the pickle, the *skeleton*. Everything else (ints, optimizer hyperparameters, user objects)
is pickled as usual.

Copying into memory the process has touched before costs a fraction of copying into fresh pages
(each fresh page is a fault and a zeroing by the kernel), so buffers are pooled by size and
reused by the next save. New large buffers are anonymous mappings advised for transparent huge
pages, which makes even the first save's faults cheap; ``prepare`` pre-faults them ahead of time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import mmap
import pickle
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stalwart.checkpoint._manifest import SKELETON
from stalwart.core._errors import CheckpointError

if TYPE_CHECKING:
    import torch

#: Standalone buffers at least this large get their own hugepage-advised mapping.
_MMAP_THRESHOLD = 1 << 20
_HUGE_PAGE = 2 << 20
#: Pool buffers are carved out of mappings this large (bigger ones get their own).
_SLAB = 64 << 20


def map_huge(nbytes: int) -> memoryview:
    """``nbytes`` of fresh anonymous memory, starting on a 2 MiB boundary and advised for
    transparent huge pages: faulting it in costs a fraction of 4 KiB pages."""
    mapping = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        # Kernels without THP refuse: plain pages still work, only slower to fault.
        with contextlib.suppress(OSError):
            mapping.madvise(mmap.MADV_HUGEPAGE)
    address = ctypes.addressof(ctypes.c_ubyte.from_buffer(mapping))
    offset = -address % _HUGE_PAGE  # the unused head and tail are never touched, so never backed
    return memoryview(mapping)[offset : offset + nbytes]


def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_libc_madvise = _madvise()
_MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault pages in, writable, without changing their contents


def populate(view: memoryview) -> bool:
    """Fault in a fresh buffer's pages ahead of the copy into it; False where the kernel cannot.

    Runs on a helper thread (ctypes releases the GIL) while the training thread copies into the
    buffers before it, so the kernel's page zeroing overlaps the copying. It leaves the bytes as
    they are, so it is harmless even if the copy into the same pages has already started.
    """
    global _libc_madvise
    if _libc_madvise is None:
        return False
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    length = -(-len(view) // mmap.PAGESIZE) * mmap.PAGESIZE
    if address % mmap.PAGESIZE or _libc_madvise(address, length, _MADV_POPULATE_WRITE) != 0:
        if ctypes.get_errno() == errno.EINVAL:
            _libc_madvise = None  # an older kernel: first saves fault as they copy
        return False
    return True


class HostBuffer:
    """``nbytes`` of host memory the writer thread reads a snapshot from; pinned for CUDA copies."""

    def __init__(self, nbytes: int, *, pinned: bool = False, view: memoryview | None = None) -> None:
        self.nbytes = nbytes
        self.pinned = pinned
        #: Never written yet: its pages still have to be faulted in.
        self.fresh = not pinned
        self._tensor: torch.Tensor | None = None
        if pinned:
            import torch

            self._tensor = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            array = (ctypes.c_ubyte * nbytes).from_address(self._tensor.data_ptr())
            self.view = memoryview(array).cast("B")
        elif view is not None:
            self.view = view
        elif nbytes >= _MMAP_THRESHOLD:
            self.view = map_huge(nbytes)
        else:
            self.view = memoryview(bytearray(nbytes))

    def as_torch(self) -> torch.Tensor:
        """The buffer as a flat uint8 tensor (no copy)."""
        if self._tensor is None:
            import torch

            self._tensor = torch.frombuffer(self.view, dtype=torch.uint8)
        return self._tensor

    def prefault(self) -> None:
        """Touch every page now, so the first save into this buffer copies at full speed."""
        if self.nbytes and not (self.fresh and populate(self.view)):
            ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(self.view)), 0, self.nbytes)
        self.fresh = False


class BufferPool:
    """Host buffers kept between saves, keyed by size (and pinned or not)."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, bool], list[HostBuffer]] = {}
        self._lock = threading.Lock()
        #: One side stream per CUDA device, reused by every save (device -> torch.cuda.Stream).
        self.streams: dict[Any, Any] = {}
        self._slab: memoryview | None = None
        self._slab_used = 0

    def take(self, nbytes: int, *, pinned: bool = False) -> HostBuffer:
        with self._lock:
            free = self._free.get((nbytes, pinned))
            if free:
                return free.pop()
            if pinned:
                return HostBuffer(nbytes, pinned=True)
            return HostBuffer(nbytes, view=self._carve(nbytes))

    def _carve(self, nbytes: int) -> memoryview:
        # Many tensors share one hugepage mapping: one mmap per small tensor would cost a syscall
        # each and keep most of its huge page unused.
        if nbytes >= _SLAB // 4:
            return map_huge(nbytes)
        align = 4096 if nbytes >= 4096 else 64
        offset = -(-self._slab_used // align) * align
        if self._slab is None or offset + nbytes > len(self._slab):
            self._slab, offset = map_huge(_SLAB), 0
        self._slab_used = offset + nbytes
        return self._slab[offset : offset + nbytes]

    def give_back(self, buffers: list[HostBuffer]) -> None:
        with self._lock:
            for buffer in buffers:
                buffer.fresh = False
                self._free.setdefault((buffer.nbytes, buffer.pinned), []).append(buffer)

    def keep_only(self, used: list[HostBuffer]) -> None:
        """Forget free buffers of sizes the latest save did not use (the state changed shape)."""
        sizes = {(buffer.nbytes, buffer.pinned) for buffer in used}
        with self._lock:
            self._free = {key: free for key, free in self._free.items() if key in sizes}

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._slab = None

    @property
    def free_bytes(self) -> int:
        with self._lock:
            return sum(key[0] * len(free) for key, free in self._free.items())


@dataclass
class ArrayEntry:
    """One tensor or array of a snapshot: its manifest fields and where its bytes are."""

    path: str
    type: str  # "tensor" | "ndarray"
    dtype: str
    shape: list[int]
    nbytes: int
    buffer: HostBuffer | None
    extra: dict[str, Any] = field(default_factory=dict)

    def data(self) -> memoryview:
        return self.buffer.view[: self.nbytes] if self.buffer is not None else memoryview(b"")


@dataclass
class Snapshot:
    skeleton: bytes
    arrays: list[ArrayEntry]
    buffers: list[HostBuffer]


def escape_key(key: object) -> str:
    """A dict key as one path component: '/' and '%' escaped, so a path maps back to one key."""
    text = key if isinstance(key, str) else repr(key) if not isinstance(key, int) else str(key)
    text = text.replace("%", "%25").replace("/", "%2F")
    if text in ("", ".", ".."):
        text = "%" + text.replace(".", "%2E")
    return text


def _unique(path: str, used: set[str]) -> str:
    unique, n = path, 1
    while unique in used:
        n += 1
        unique = f"{path}~{n}"
    used.add(unique)
    return unique


def _assign_paths(
    root: object, prefix: str, torch_mod: Any, numpy_mod: Any
) -> tuple[dict[int, str], set[str], list[Any]]:
    """Readable paths (``state/model/fc.weight``) for the tensors reachable through dicts, lists and
    tuples; tensors hidden inside other objects get a numbered path while pickling."""
    paths: dict[int, str] = {}
    found: list[Any] = []  # in the order pickling will meet them
    used = {f"{prefix}/{SKELETON}"}
    seen: set[int] = set()
    stack: list[tuple[object, str]] = [
        (root, f"{prefix}/__root__" if _is_array(root, torch_mod, numpy_mod) else prefix)
    ]
    while stack:
        obj, path = stack.pop()
        if _is_array(obj, torch_mod, numpy_mod):
            if id(obj) not in paths:
                paths[id(obj)] = _unique(path, used)
                found.append(obj)
        elif isinstance(obj, dict | list | tuple) and id(obj) not in seen:
            seen.add(id(obj))
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            children = [(value, f"{path}/{escape_key(key)}") for key, value in items]
            stack.extend(reversed(children))
    return paths, used, found


def _is_array(obj: object, torch_mod: Any, numpy_mod: Any) -> bool:
    if torch_mod is not None and isinstance(obj, torch_mod.Tensor):
        return True
    return (
        numpy_mod is not None
        and isinstance(obj, numpy_mod.ndarray)
        and not obj.dtype.hasobject
        and obj.dtype.fields is None
    )


class _Capture(pickle.Pickler):
    """Pickles the state, copying each tensor/array into a pool buffer and pickling its path instead."""

    def __init__(
        self, out: io.BytesIO, snapshotter: Snapshotter, paths: dict[int, str], used: set[str], prefix: str
    ) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self._snap = snapshotter
        self._paths = paths
        self._used = used
        self._prefix = prefix
        self._done: dict[int, str] = {}
        self._hidden = 0
        self._kept: list[object] = []  # keeps ids stable while pickling

    def persistent_id(self, obj: Any) -> Any:
        snap = self._snap
        if not _is_array(obj, snap.torch, snap.numpy):
            return None
        key = id(obj)
        path = self._done.get(key)
        if path is None:
            path = self._paths.get(key)
            if path is None:
                self._hidden += 1
                path = _unique(f"{self._prefix}/__objects__/{self._hidden}", self._used)
            self._done[key] = path
            self._kept.append(obj)
            snap.copy(obj, path)
        return ("stalwart-array", path)


class Snapshotter:
    """Copies one state's arrays into pooled host buffers; used on the training thread only."""

    def __init__(self, pool: BufferPool) -> None:
        self.pool = pool
        self.torch: Any = sys.modules.get("torch")
        self.numpy: Any = sys.modules.get("numpy")
        self.arrays: list[ArrayEntry] = []
        self.buffers: list[HostBuffer] = []
        self._streams = pool.streams
        self._used_streams: list[Any] = []
        self._reserved: dict[int, HostBuffer] = {}

    def take(self, state: object, prefix: str) -> Snapshot:
        paths, used, found = _assign_paths(state, prefix, self.torch, self.numpy)
        prefaulting = self._reserve(found)
        out = io.BytesIO()
        try:
            _Capture(out, self, paths, used, prefix).dump(state)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            self.pool.give_back(self.buffers)
            raise CheckpointError(f"the state cannot be saved: {exc}") from exc
        except BaseException:
            self.pool.give_back(self.buffers)
            raise
        finally:
            self._synchronize()
            if prefaulting is not None:
                prefaulting.join()
            self.pool.give_back(list(self._reserved.values()))
        return Snapshot(out.getvalue(), self.arrays, self.buffers)

    def _size(self, obj: Any) -> tuple[int, bool] | None:
        """Bytes and pinned-ness of the buffer an array will need, if it can be known up front."""
        torch = self.torch
        if torch is not None and isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.is_quantized or obj.device.type == "meta":
                return None
            return obj.numel() * obj.element_size(), obj.device.type == "cuda"
        return int(obj.nbytes), False

    def _reserve(self, found: list[Any]) -> threading.Thread | None:
        """Take every buffer the copies will need now, and fault in the fresh ones on a helper
        thread, ahead of the copies (see :func:`populate`)."""
        fresh: list[HostBuffer] = []
        for obj in found:
            size = self._size(obj)
            if size is None or size[0] == 0:
                continue
            buffer = self.pool.take(size[0], pinned=size[1])
            self._reserved[id(obj)] = buffer
            if buffer.fresh and buffer.nbytes >= _MMAP_THRESHOLD:
                fresh.append(buffer)
        if not fresh or _libc_madvise is None:
            return None

        def prefault() -> None:
            for buffer in fresh:
                if not populate(buffer.view):
                    return

        thread = threading.Thread(target=prefault, name="stalwart-prefault", daemon=True)
        thread.start()
        return thread

    def _buffer(self, nbytes: int, pinned: bool, obj: Any) -> HostBuffer | None:
        if nbytes == 0:
            return None
        buffer = self._reserved.pop(id(obj), None)
        if buffer is None or buffer.nbytes != nbytes or buffer.pinned != pinned:
            if buffer is not None:
                self.pool.give_back([buffer])
            buffer = self.pool.take(nbytes, pinned=pinned)
        self.buffers.append(buffer)
        return buffer

    def copy(self, obj: Any, path: str) -> None:
        if self.torch is not None and isinstance(obj, self.torch.Tensor):
            self.arrays.append(self._copy_tensor(obj, path))
        else:
            self.arrays.append(self._copy_ndarray(obj, path))

    def _copy_tensor(self, tensor: Any, path: str) -> ArrayEntry:
        torch = self.torch
        if tensor.layout != torch.strided or tensor.is_quantized or getattr(tensor, "is_nested", False):
            raise CheckpointError(
                f"{path}: {tensor.layout} / quantized / nested tensors cannot be checkpointed; "
                "save a dense copy (tensor.to_dense() or tensor.dequantize())"
            )
        if tensor.device.type == "meta":
            raise CheckpointError(f"{path}: a meta tensor has no data to checkpoint")
        nbytes = tensor.numel() * tensor.element_size()
        extra: dict[str, Any] = {"device": str(tensor.device)}
        if isinstance(tensor, torch.nn.Parameter):
            extra["parameter"] = True
        if tensor.requires_grad:
            extra["requires_grad"] = True
        entry = ArrayEntry(
            path=path,
            type="tensor",
            dtype=str(tensor.dtype).removeprefix("torch."),
            shape=list(tensor.shape),
            nbytes=nbytes,
            buffer=None,
            extra=extra,
        )
        source = tensor.detach()
        on_cuda = source.device.type == "cuda"
        entry.buffer = self._buffer(nbytes, on_cuda, tensor)
        if entry.buffer is None:
            return entry
        # copy_ gathers any layout (non-contiguous, conjugate or negative views) into the plain
        # row-major bytes the manifest describes; the uint8 buffer is viewed as the tensor's dtype.
        target = entry.buffer.as_torch()[:nbytes].view(source.dtype).view(source.shape)
        if on_cuda:
            stream = self._streams.get(source.device)
            if stream is None:
                stream = self._streams[source.device] = torch.cuda.Stream(source.device)
            if stream not in self._used_streams:
                self._used_streams.append(stream)
            # The copy must see every kernel queued so far that writes this tensor.
            stream.wait_stream(torch.cuda.current_stream(source.device))
            with torch.cuda.stream(stream):
                target.copy_(source, non_blocking=True)
        elif source.device.type == "cpu":
            target.copy_(source)
        else:
            target.copy_(source.to("cpu"))
        return entry

    def _copy_ndarray(self, array: Any, path: str) -> ArrayEntry:
        numpy = self.numpy
        entry = ArrayEntry(
            path=path,
            type="ndarray",
            dtype=array.dtype.str,
            shape=list(array.shape),
            nbytes=array.nbytes,
            buffer=self._buffer(array.nbytes, False, array),
        )
        if entry.buffer is not None:
            target = numpy.frombuffer(entry.buffer.view, dtype=array.dtype, count=array.size)
            numpy.copyto(target.reshape(array.shape), array, casting="no")
        return entry

    def _synchronize(self) -> None:
        # Training may overwrite the tensors as soon as save_state returns: the copies must be done.
        for stream in self._used_streams:
            stream.synchronize()
        self._used_streams.clear()


def take_snapshot(pool: BufferPool, state: object, prefix: str) -> Snapshot:
    """Copy ``state``'s arrays into ``pool`` buffers and pickle the rest; see the module docstring."""
    return Snapshotter(pool).take(state, prefix)


def skeleton_path(prefix: str) -> str:
    return f"{prefix}/{SKELETON}"
