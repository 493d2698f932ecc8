"""Unpacking a context tarball without letting it write outside the trial's work directory."""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path


class UnsafeContext(Exception):
    """The context archive has an entry that could escape or abuse the work directory."""


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeContext(f"context entry {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeContext(f"context entry {name!r} contains '..'")
    if member.isdev() or member.isfifo():
        raise UnsafeContext(f"context entry {name!r} is a device or FIFO")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/") or ".." in target.replace("\\", "/").split("/"):
            raise UnsafeContext(f"context link {name!r} points outside the context ({target!r})")


def extract_context(data: bytes, destination: Path) -> list[str]:
    """Extract a ``.tar.gz`` context into ``destination``; return the names of regular files.

    Every member is checked first, so a bad archive writes nothing; ``filter="data"`` then adds
    the standard library's own checks (permissions, links) as a second line of defence.
    """
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        members = archive.getmembers()
        for member in members:
            _check_member(member)
        archive.extractall(destination, members=members, filter="data")
    return [member.name for member in members if member.isfile()]
