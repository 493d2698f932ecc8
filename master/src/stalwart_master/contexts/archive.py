"""Receiving and vetting uploaded contexts (the model code tarball an experiment runs).

The master never extracts a context itself: trial runners do, on every agent. So every member is
checked here, once, before the bytes are stored, and an archive with a single bad member is
refused whole. Nothing in this module touches the database or FastAPI.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import re
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from stalwart_master.errors import BadRequest, PayloadTooLarge

DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_UNPACKED_BYTES = 4 * 1024**3

# Headers are read whole into memory by tarfile; a legitimate one (a long path) is a few KiB.
_MAX_HEADER_READ = 1024 * 1024
# Room for headers and padding on top of the file data before decompression is cut off.
_HEADER_BUDGET_PER_MEMBER = 4 * tarfile.BLOCKSIZE
_HEADER_BUDGET = 1024 * 1024
# Symlinks may chain; past this many hops the chain is treated as a loop (Linux uses 40 too).
_MAX_LINK_HOPS = 40
_SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_DRIVE = re.compile(r"^[A-Za-z]:")
_REGULAR_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})


@dataclass
class ContextArchive:
    """An archive that passed inspection; ``sha256`` is of the compressed bytes, as uploaded."""

    sha256: str
    size: int
    files: int


class ArchiveTooLarge(PayloadTooLarge):
    """The upload is bigger than the master accepts; the fix is on the client (.stalwartignore)."""

    def __init__(self, *, max_bytes: int, size: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = size
        seen = f"{size} bytes" if size is not None else "larger than that"
        super().__init__(
            f"context exceeds the limit of {max_bytes} bytes ({seen}); "
            "list data, checkpoints and virtual environments in .stalwartignore",
            extra={"max_bytes": max_bytes},
        )


class UnsafeArchive(BadRequest):
    """One member could escape or abuse the directory a trial runner extracts into."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        # repr() quotes the name and escapes control characters, so the detail is safe to echo.
        shown = member if len(member) <= 200 else member[:200] + "..."
        super().__init__(
            f"context member {shown!r} rejected: {reason}",
            title="Unsafe context archive",
            extra={"member": shown, "reason": reason},
        )


def check_content_length(header_value: str | None, max_bytes: int) -> None:
    """Refuse an oversized upload before reading its body; a missing header defers to the stream."""
    if header_value is None:
        return
    value = header_value.strip()
    if not re.fullmatch(r"[0-9]+", value):
        raise BadRequest(f"Content-Length {header_value!r} is not a byte count")
    size = int(value)
    if size > max_bytes:
        raise ArchiveTooLarge(max_bytes=max_bytes, size=size)


async def receive_context(
    chunks: AsyncIterator[bytes],
    *,
    max_bytes: int,
    spool_dir: str | None = None,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> tuple[ContextArchive, bytes]:
    """Read an upload without ever holding more than ``max_bytes`` of it, then inspect it.

    With ``spool_dir`` the body is spooled to a temporary file there once it outgrows a few MiB,
    so many concurrent uploads do not all sit in memory while they arrive.
    """
    digest = hashlib.sha256()
    total = 0
    with tempfile.SpooledTemporaryFile(
        max_size=_SPOOL_IN_MEMORY_BYTES if spool_dir is not None else 0, dir=spool_dir
    ) as spool:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise ArchiveTooLarge(max_bytes=max_bytes)
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        data = spool.read()
    # Decompressing up to max_unpacked_bytes is CPU work; keep it off the event loop.
    files = await asyncio.to_thread(
        _count_files, data, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes
    )
    return ContextArchive(sha256=digest.hexdigest(), size=total, files=files), data


def inspect_context(
    data: bytes,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> ContextArchive:
    """Check every member of a tar or tar.gz and describe the archive, or refuse it whole."""
    files = _count_files(data, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes)
    return ContextArchive(sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=files)


def _count_files(data: bytes, *, max_members: int, max_unpacked_bytes: int) -> int:
    if not data:
        raise BadRequest("context is empty; expected a tar or tar.gz archive")
    raw: io.BufferedIOBase = io.BytesIO(data)
    if data.startswith(_GZIP_MAGIC):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    budget = max_members * _HEADER_BUDGET_PER_MEMBER + _HEADER_BUDGET + max_unpacked_bytes
    stream = _BoundedStream(raw, budget)
    with _open_tar(stream) as archive:
        try:
            files, links = _check_members(archive, max_members, max_unpacked_bytes)
            _check_end_of_archive(archive, stream)
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
            raise _corrupt(exc) from None
    _check_links(links)
    return files


def _open_tar(stream: _BoundedStream) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r:")
    except tarfile.ReadError as exc:
        if str(exc).startswith("zlib error"):  # tarfile's wording for a corrupt deflate stream
            raise _corrupt(exc) from None
        raise BadRequest("context is not a tar or tar.gz archive") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(exc) from None


def _corrupt(exc: BaseException) -> BadRequest:
    return BadRequest(f"context archive is truncated or corrupt ({type(exc).__name__}: {exc})")


class _BoundedStream(io.RawIOBase):
    """The decompressed tar stream, cut off where no honest archive of the allowed size reaches.

    Member sizes are checked from their headers before tarfile seeks past the data, but header
    extensions (pax, GNU long names, sparse maps) are read whole and are not counted as data, so
    this is what stops a small upload from making the master decompress or buffer gigabytes.
    """

    def __init__(self, inner: io.BufferedIOBase, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = _MAX_HEADER_READ
        if size > _MAX_HEADER_READ:
            raise BadRequest(f"context archive has a header larger than {_MAX_HEADER_READ} bytes")
        self._guard(self._position + size)
        data = self._inner.read(size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute and relative seeks")
        self._guard(offset)
        self._position = self._inner.seek(offset)
        return self._position

    def _guard(self, end: int) -> None:
        if end > self._limit:
            raise BadRequest(f"context archive unpacks to more than {self._limit} bytes")


def _check_members(
    archive: tarfile.TarFile, max_members: int, max_unpacked_bytes: int
) -> tuple[int, list[tarfile.TarInfo]]:
    """Returns the number of regular files and the link members, whose targets need the whole tree."""
    files = 0
    unpacked = 0
    seen: dict[str, tarfile.TarInfo] = {}
    links: list[tarfile.TarInfo] = []
    for count, member in enumerate(archive, start=1):
        name = member.name
        if count > max_members:
            raise UnsafeArchive(name, f"the archive has more than {max_members} members")
        path = _member_path(name)
        if member.isreg():
            if member.type not in _REGULAR_TYPES or member.sparse is not None:
                raise UnsafeArchive(name, "sparse files are not supported")
            if member.size < 0:
                raise UnsafeArchive(name, "negative size")
            unpacked += member.size
            if unpacked > max_unpacked_bytes:
                raise UnsafeArchive(name, f"the archive unpacks to more than {max_unpacked_bytes} bytes")
            files += 1
        elif member.issym() or member.islnk():
            links.append(member)
        elif member.ischr():
            raise UnsafeArchive(name, "character device nodes are not allowed")
        elif member.isblk():
            raise UnsafeArchive(name, "block device nodes are not allowed")
        elif member.isfifo():
            raise UnsafeArchive(name, "FIFOs are not allowed")
        elif not member.isdir():
            raise UnsafeArchive(name, f"unsupported member type {member.type!r}")
        if path is None:
            if not member.isdir():
                raise UnsafeArchive(name, "only a directory may name the context root")
            continue
        key = "/".join(path)
        # Unique names keep "what is at this path" independent of extraction order.
        if key in seen and not (member.isdir() and seen[key].isdir()):
            raise UnsafeArchive(name, "the path appears more than once")
        seen[key] = member
        if member.islnk():
            target = seen.get("/".join(_link_path(member) or []))
            if target is None or not target.isreg():
                raise UnsafeArchive(name, "hardlink target is not an earlier regular file in the archive")
    return files, links


def _check_end_of_archive(archive: tarfile.TarFile, stream: _BoundedStream) -> None:
    """Insist on the end-of-archive marker and read to the end, which also verifies the gzip CRC.

    Without this an archive cut off exactly between two members would pass as a shorter one.
    """
    stream.seek(archive.offset)
    if stream.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise BadRequest("context archive is truncated or corrupt (no end-of-archive marker)")
    # Anything but padding after the marker is hidden from us yet visible to `tar --ignore-zeros`.
    while chunk := stream.read(64 * 1024):
        if chunk.strip(tarfile.NUL):
            raise BadRequest("context archive has data after its end-of-archive marker")


def _split(path: str, member: str, what: str) -> list[str] | None:
    """Path components of a member name or link target; None for the root itself."""
    if "\x00" in path:
        raise UnsafeArchive(member, f"{what} contains a NUL byte")
    # Backslashes are refused rather than interpreted: a name that is one component here could be
    # several (and contain '..') wherever the tree is extracted or copied next.
    if "\\" in path:
        raise UnsafeArchive(member, f"{what} contains a backslash")
    if path.startswith("/") or _DRIVE.match(path):
        raise UnsafeArchive(member, f"{what} is absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return parts or None


def _member_path(name: str) -> list[str] | None:
    parts = _split(name, name, "path")
    if parts is not None and ".." in parts:
        raise UnsafeArchive(name, "path leaves the context directory")
    return parts


def _link_path(member: tarfile.TarInfo) -> list[str] | None:
    """A hardlink target, which tar stores relative to the archive root."""
    parts = _split(member.linkname, member.name, "hardlink target")
    if parts is not None and ".." in parts:
        raise UnsafeArchive(member.name, "hardlink target leaves the context directory")
    return parts


def _check_links(links: list[tarfile.TarInfo]) -> None:
    """Resolve every link against the links in the archive, as the extracted tree would.

    A lexical check is not enough: with ``a -> .`` in the tree, ``b -> a/..`` looks like it stays
    inside but resolves to the parent of the context directory.
    """
    symlinks = {"/".join(_member_path(m.name) or []): m.linkname for m in links if m.issym()}
    for member in links:
        path = _member_path(member.name) or []
        try:
            if member.issym():
                if not member.linkname:
                    raise _Escape("symlink has an empty target")
                target = _split(member.linkname, member.name, "symlink target") or []
                _resolve(target, symlinks, start=_resolve(path[:-1], symlinks, start=[]))
            else:
                _resolve(_link_path(member) or [], symlinks, start=[])
        except _Escape as exc:
            raise UnsafeArchive(member.name, str(exc)) from None


class _Escape(Exception):
    pass


def _resolve(parts: list[str], symlinks: dict[str, str], *, start: list[str]) -> list[str]:
    """Walk ``parts`` from directory ``start`` following the archive's symlinks; never above root."""
    resolved = list(start)
    pending = list(reversed(parts))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _Escape("link target resolves outside the context directory")
            resolved.pop()
            continue
        target = symlinks.get("/".join([*resolved, part]))
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise _Escape("symlink chain is circular or too deep")
        if target.startswith("/") or _DRIVE.match(target) or "\\" in target or "\x00" in target:
            raise _Escape("link target resolves through an absolute or malformed symlink")
        pending.extend(reversed(target.split("/")))
    return resolved
