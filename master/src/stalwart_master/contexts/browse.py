"""Reading a stored context archive for the code viewer: its file list and one file's text.

The archive is read as a stream in memory, member by member: nothing is extracted to disk and
links are never followed (only regular files are listed or read). Stored archives passed
``archive.inspect_context`` on upload, so their sizes and paths are already within the caps.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass

MAX_TEXT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int


@dataclass(frozen=True)
class FileText:
    """``text`` is None for a binary file (not UTF-8, or containing NUL)."""

    path: str
    size: int
    binary: bool
    truncated: bool
    text: str | None


def normal_path(name: str) -> str | None:
    """A member name or requested path as the viewer shows it (``./a//b`` is ``a/b``); None for
    one that is absolute, climbs out (``..``) or holds NUL or a backslash, which no stored file has."""
    if "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _members(content: bytes) -> tarfile.TarFile:
    # "r|*": a forward-only stream, gzip or plain, as the archive was stored.
    return tarfile.open(fileobj=io.BytesIO(content), mode="r|*")


def list_files(content: bytes) -> list[FileEntry]:
    """Regular files, sorted by path; directories, links and anything else are left out."""
    files: list[FileEntry] = []
    with _members(content) as archive:
        for member in archive:
            path = normal_path(member.name)
            if member.isreg() and path is not None:
                files.append(FileEntry(path, member.size))
    return sorted(files, key=lambda f: f.path)


def read_file(content: bytes, wanted: str, limit: int = MAX_TEXT_BYTES) -> FileText | None:
    """The first ``limit`` bytes of the regular file at ``wanted`` as text; None when there is no
    regular file there (a link, a directory or nothing)."""
    path = normal_path(wanted)
    if path is None:
        return None
    with _members(content) as archive:
        for member in archive:
            if member.isreg() and normal_path(member.name) == path:
                handle = archive.extractfile(member)
                data = handle.read(limit) if handle is not None else b""
                return _as_text(path, member.size, data, truncated=member.size > limit)
    return None


def _as_text(path: str, size: int, data: bytes, *, truncated: bool) -> FileText:
    if b"\x00" in data:
        return FileText(path, size, binary=True, truncated=truncated, text=None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut at the limit may split the last character; anything else is not UTF-8.
        if not (truncated and exc.reason == "unexpected end of data"):
            return FileText(path, size, binary=True, truncated=truncated, text=None)
        text = data[: exc.start].decode("utf-8")
    return FileText(path, size, binary=False, truncated=truncated, text=text)
