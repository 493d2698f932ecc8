"""Receiving and vetting uploaded contexts (the model code tarball an experiment runs).

The master never extracts a context itself: trial runners do, on every agent. So every member is
checked here, once, before the bytes are stored, and an archive with a single bad member is
refused whole. The operator's caps (unpacked bytes, members, path depth) are checked while the
archive is decompressed, header by header: a member whose header says it would pass a cap is
refused before a byte of its data is inflated, and nothing is decompressed past the cap, so a
gzip bomb costs the master microseconds. Nothing in this module touches the database or FastAPI.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from stalwart_master.errors import BadRequest, DomainError, PayloadTooLarge

DEFAULT_MAX_UNPACKED_BYTES = 1024**3
DEFAULT_MAX_MEMBERS = 10_000
DEFAULT_MAX_DEPTH = 32
# What a client may declare the body to be; a missing Content-Type is read as octet-stream (RFC 9110).
ACCEPTED_CONTENT_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")
# The setting that raises each cap, named in every refusal.
_SETTINGS = {
    "max_context_bytes": "STALWART_MAX_CONTEXT_BYTES",
    "context_max_unpacked_bytes": "STALWART_CONTEXT_MAX_UNPACKED_BYTES",
    "context_max_members": "STALWART_CONTEXT_MAX_MEMBERS",
    "context_max_depth": "STALWART_CONTEXT_MAX_DEPTH",
}
_IGNORE_HINT = "list data, checkpoints and virtual environments in .stalwartignore"

# Headers are read whole into memory by tarfile; a legitimate one (a long path) is a few KiB.
_MAX_HEADER_READ = 1024 * 1024
# tarfile only seeks back to re-read the block it took for the end-of-archive marker.
_LOOKBACK = 4 * tarfile.BLOCKSIZE
_SKIP_CHUNK = 1024 * 1024
_COMPRESSED_CHUNK = 64 * 1024
# Symlinks may chain; past this many hops the chain is treated as a loop (Linux uses 40 too).
_MAX_LINK_HOPS = 40
# Resolving links costs a step per path component; an honest archive needs a few per link.
_LINK_STEPS_PER_LINK = 200
_SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_NOT_NUL = re.compile(rb"[^\x00]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_REGULAR_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})


@dataclass
class ContextArchive:
    """An archive that passed inspection; ``sha256`` is of the compressed bytes, as uploaded."""

    sha256: str
    size: int
    files: int


def _shown(member: str) -> str:
    return member if len(member) <= 200 else member[:200] + "..."


class ArchiveTooLarge(PayloadTooLarge):
    """The upload is bigger than the master accepts; the fix is on the client (.stalwartignore)."""

    def __init__(self, *, max_bytes: int, size: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = size
        seen = f"is {size} bytes" if size is not None else "is larger"
        super().__init__(
            f"context {seen}, over the limit {_SETTINGS['max_context_bytes']}={max_bytes} bytes; "
            f"{_IGNORE_HINT}",
            extra={
                "max_bytes": max_bytes,
                "limit": "max_context_bytes",
                "max": max_bytes,
                "setting": _SETTINGS["max_context_bytes"],
            },
        )


class ArchiveOverLimit(PayloadTooLarge):
    """The archive unpacks past one of the operator's caps; the detail names the cap and its setting.

    ``limit`` is the settings field (``context_max_members``); ``member`` the member being read.
    """

    title = "Context archive too large"

    def __init__(self, limit: str, maximum: int, what: str, member: str | None = None) -> None:
        self.limit = limit
        self.maximum = maximum
        self.member = member
        setting = _SETTINGS[limit]
        at = f" (at member {_shown(member)!r})" if member is not None else ""
        extra: dict[str, Any] = {"limit": limit, "max": maximum, "setting": setting}
        if member is not None:
            extra["member"] = _shown(member)
        super().__init__(f"context {what}{at}; the limit is {setting}={maximum}; {_IGNORE_HINT}", extra=extra)


class UnsafeArchive(BadRequest):
    """One member could escape or abuse the directory a trial runner extracts into."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        # repr() quotes the name and escapes control characters, so the detail is safe to echo.
        shown = _shown(member)
        super().__init__(
            f"context member {shown!r} rejected: {reason}",
            title="Unsafe context archive",
            extra={"member": shown, "reason": reason},
        )


class UnsupportedContentType(DomainError):
    """The body is declared as something other than a (gzip'd) tar."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


def check_content_type(header_value: str | None) -> None:
    """Refuse a body declared as anything but gzip or raw bytes, before reading it."""
    if header_value is None:
        return
    media_type = header_value.split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedContentType(
            f"Content-Type {header_value[:100]!r} is not accepted; send the tar.gz as "
            + ", ".join(ACCEPTED_CONTENT_TYPES),
            extra={"accepted": list(ACCEPTED_CONTENT_TYPES)},
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
    content_type: str | None = None,
    spool_dir: str | None = None,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[ContextArchive, bytes]:
    """Read an upload without ever holding more than ``max_bytes`` of it, then inspect it.

    ``content_type`` is the request's header, checked before anything is read. With ``spool_dir``
    the body is spooled to a temporary file there once it outgrows a few MiB, so many concurrent
    uploads do not all sit in memory while they arrive.
    """
    check_content_type(content_type)
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
        _count_files,
        data,
        max_members=max_members,
        max_unpacked_bytes=max_unpacked_bytes,
        max_depth=max_depth,
    )
    return ContextArchive(sha256=digest.hexdigest(), size=total, files=files), data


def inspect_context(
    data: bytes,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> ContextArchive:
    """Check every member of a tar or tar.gz and describe the archive, or refuse it whole."""
    files = _count_files(
        data, max_members=max_members, max_unpacked_bytes=max_unpacked_bytes, max_depth=max_depth
    )
    return ContextArchive(sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=files)


@dataclass(frozen=True)
class _Caps:
    unpacked_bytes: int
    members: int
    depth: int


def _count_files(data: bytes, *, max_members: int, max_unpacked_bytes: int, max_depth: int) -> int:
    if not data:
        raise BadRequest("context is empty; expected a tar or tar.gz archive")
    caps = _Caps(max_unpacked_bytes, max_members, max_depth)
    source = _Gunzip(data).read if data.startswith(_GZIP_MAGIC) else _Plain(data).read
    stream = _TarStream(source, caps.unpacked_bytes)
    with _open_tar(stream) as archive:
        try:
            files, links = _check_members(archive, caps)
            _check_end_of_archive(archive, stream)
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
            raise _corrupt(exc) from None
    _check_links(links, caps)
    return files


def _open_tar(stream: _TarStream) -> tarfile.TarFile:
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


class _Plain:
    """An uncompressed tar, read a piece at a time like the compressed kind."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def read(self, size: int) -> bytes:
        piece = bytes(self._data[self._offset : self._offset + size])
        self._offset += len(piece)
        return piece


class _Gunzip:
    """A gzip file's decompressed bytes, produced only as they are asked for.

    Like ``gzip`` it reads concatenated members and zero padding between them, and zlib checks each
    member's CRC and length; unlike ``GzipFile`` it never rewinds and never inflates more than asked.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0
        self._inflater: Any = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._finished = False

    def read(self, size: int) -> bytes:
        while not self._finished:
            if self._inflater.eof:
                self._next_member()
                continue
            compressed = self._inflater.unconsumed_tail
            if not compressed:
                compressed = self._data[self._offset : self._offset + _COMPRESSED_CHUNK]
                self._offset += len(compressed)
                if not compressed:
                    raise EOFError("compressed data ended before the end-of-stream marker")
            out: bytes = self._inflater.decompress(compressed, size)
            if out:
                return out
        return b""

    def _next_member(self) -> None:
        end = self._offset - len(self._inflater.unused_data)
        found = _NOT_NUL.search(self._data, end)
        if found is None:
            self._finished = True
            return
        self._offset = found.start()
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


class _TarStream(io.RawIOBase):
    """The uncompressed tar stream as tarfile reads it, refused the moment it passes ``limit`` bytes.

    Member sizes are checked from their headers before tarfile skips their data, but header
    extensions (pax, GNU long names, sparse maps) are not file data, so this is what finally stops
    a small upload from making the master decompress or buffer gigabytes.
    """

    def __init__(self, source: Callable[[int], bytes], limit: int) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self._position = 0  # where tarfile is
        self._end = 0  # how much the source has given
        self._recent = b""  # its last bytes, for the one short seek back tarfile makes

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
        again = b""
        if self._position < self._end:
            start = len(self._recent) - (self._end - self._position)
            again = self._recent[start : start + size]
            self._position += len(again)
        fresh = self._take(size - len(again)) if size > len(again) else b""
        self._position += len(fresh)
        return again + fresh

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset + (self._position if whence == 1 else 0)
        if whence not in (0, 1) or target < self._end - len(self._recent):
            raise OSError("the context stream only seeks forward")
        self._position = min(target, self._end)
        while self._position < target and (skipped := self._take(min(target - self._position, _SKIP_CHUNK))):
            self._position += len(skipped)
        return self._position

    def _take(self, size: int) -> bytes:
        """Up to ``size`` new bytes (fewer only at the end); never more than one past the cap."""
        pieces: list[bytes] = []
        got = 0
        wanted = min(size, self._limit + 1 - self._end)
        while got < wanted and (piece := self._source(wanted - got)):
            pieces.append(piece)
            got += len(piece)
        self._end += got
        if self._end > self._limit:
            raise ArchiveOverLimit(
                "context_max_unpacked_bytes", self._limit, f"unpacks to more than {self._limit} bytes"
            )
        data = b"".join(pieces)
        self._recent = (self._recent + data[-_LOOKBACK:])[-_LOOKBACK:]
        return data


def _check_members(archive: tarfile.TarFile, caps: _Caps) -> tuple[int, list[tarfile.TarInfo]]:
    """Returns the number of regular files and the link members, whose targets need the whole tree.

    Each cap is checked on the member's header, before tarfile reads or skips the member's data.
    """
    files = 0
    seen: dict[str, tarfile.TarInfo] = {}
    links: list[tarfile.TarInfo] = []
    for count, member in enumerate(archive, start=1):
        name = member.name
        if count > caps.members:
            raise ArchiveOverLimit(
                "context_max_members", caps.members, f"has more than {caps.members} members", name
            )
        path = _member_path(name)
        if path is not None and len(path) > caps.depth:
            raise ArchiveOverLimit(
                "context_max_depth", caps.depth, f"has a path more than {caps.depth} levels deep", name
            )
        if member.isreg():
            if member.type not in _REGULAR_TYPES or member.sparse is not None:
                raise UnsafeArchive(name, "sparse files are not supported")
            if member.size < 0:
                raise UnsafeArchive(name, "negative size")
            # Where this member's data ends in the tar stream: known before it is inflated.
            if member.offset_data + member.size > caps.unpacked_bytes:
                raise ArchiveOverLimit(
                    "context_max_unpacked_bytes",
                    caps.unpacked_bytes,
                    f"unpacks to more than {caps.unpacked_bytes} bytes",
                    name,
                )
            files += 1
        elif member.issym() or member.islnk():
            # A target may climb out of the deepest directory and down again, but no further.
            if len(member.linkname.split("/")) > 2 * caps.depth:
                raise ArchiveOverLimit(
                    "context_max_depth",
                    caps.depth,
                    f"has a link target of more than {2 * caps.depth} components (twice the depth)",
                    name,
                )
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


def _check_end_of_archive(archive: tarfile.TarFile, stream: _TarStream) -> None:
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


def _check_links(links: list[tarfile.TarInfo], caps: _Caps) -> None:
    """Resolve every link against the links in the archive, as the extracted tree would.

    A lexical check is not enough: with ``a -> .`` in the tree, ``b -> a/..`` looks like it stays
    inside but resolves to the parent of the context directory. The walk is bounded in all, so
    thousands of links chaining through each other cost a bounded amount of CPU.
    """
    symlinks = {"/".join(_member_path(m.name) or []): m.linkname for m in links if m.issym()}
    walk = _LinkWalk(symlinks, steps=_LINK_STEPS_PER_LINK * len(links), max_depth=2 * caps.depth)
    for member in links:
        path = _member_path(member.name) or []
        try:
            if member.issym():
                if not member.linkname:
                    raise _LinkRefused("symlink has an empty target")
                target = _split(member.linkname, member.name, "symlink target") or []
                walk.resolve(target, start=walk.resolve(path[:-1], start=[]))
            else:
                walk.resolve(_link_path(member) or [], start=[])
        except _LinkRefused as exc:
            raise UnsafeArchive(member.name, str(exc)) from None


class _LinkRefused(Exception):
    pass


class _LinkWalk:
    def __init__(self, symlinks: dict[str, str], *, steps: int, max_depth: int) -> None:
        self._symlinks = symlinks
        self._steps = steps
        self._max_depth = max_depth

    def resolve(self, parts: list[str], *, start: list[str]) -> list[str]:
        """Walk ``parts`` from directory ``start`` following the archive's symlinks; never above root."""
        resolved = list(start)
        pending = list(reversed(parts))
        hops = 0
        while pending:
            self._steps -= 1
            if self._steps < 0:
                raise _LinkRefused("the archive's symlinks take too many steps to resolve")
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise _LinkRefused("link target resolves outside the context directory")
                resolved.pop()
                continue
            target = self._symlinks.get("/".join([*resolved, part]))
            if target is None:
                resolved.append(part)
                if len(resolved) > self._max_depth:
                    raise _LinkRefused(f"link target resolves more than {self._max_depth} levels deep")
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise _LinkRefused("symlink chain is circular or too deep")
            if target.startswith("/") or _DRIVE.match(target) or "\\" in target or "\x00" in target:
                raise _LinkRefused("link target resolves through an absolute or malformed symlink")
            pending.extend(reversed(target.split("/")))
        return resolved
