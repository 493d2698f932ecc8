"""Packing a model code directory into the context tarball an experiment is created with.

The archive is byte-for-byte reproducible: the master stores contexts by SHA-256, so submitting
the same code twice must upload, and store, one context.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

import pathspec

DEFAULT_MAX_CONTEXT_BYTES = 96 * 1024 * 1024
IGNORE_FILE = ".stalwartignore"

# Never useful to a trial and often large; not even a negated ignore pattern brings them back.
_ALWAYS_SKIPPED_NAMES = frozenset({".git", "__pycache__"})
_ALWAYS_SKIPPED_SUFFIXES = (".pyc",)


class ContextError(Exception):
    """The directory cannot be packed as a context."""


class ContextTooLarge(ContextError):
    """The packed context is over the upload limit; ``.stalwartignore`` is the usual fix."""

    def __init__(self, size: int, max_bytes: int, *, while_adding: str | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        where = f" while adding {while_adding!r}" if while_adding else ""
        super().__init__(
            f"context reached {_mib(size)} compressed{where}, over the {_mib(max_bytes)} limit; "
            f"list data, checkpoints and virtual environments in {IGNORE_FILE}"
        )


class ContextEntryRefused(ContextError):
    """One entry of the directory cannot go into a context (and the master would refuse it)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot add {path!r} to the context: {reason}; remove it or list it in {IGNORE_FILE}"
        )


def context_digest(data: bytes) -> str:
    """The SHA-256 the master files a context under, to ask whether it already has it.

    Example::

        sha256 = context_digest(build_context(Path("my_model")))
    """
    return hashlib.sha256(data).hexdigest()


def build_context(directory: Path, *, max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES) -> bytes:
    """Pack ``directory`` as a reproducible tar.gz, honouring its ``.stalwartignore``.

    Symlinks are kept as links when they point inside the directory (stored relative to it);
    one pointing outside is refused rather than silently dropped or followed.

    Example::

        data = build_context(Path("my_model"))
        Client().upload_context(data)
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"context directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"context directory {str(directory)!r} is not a directory")
    root = directory.resolve()
    ignore = _load_ignore(root)

    out = io.BytesIO()
    # mtime=0 and an empty file name keep the gzip header free of the build's time and place.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for rel in _walk(root, ignore):
            _add(archive, root, rel, out, max_bytes)
    if out.tell() > max_bytes:
        raise ContextTooLarge(out.tell(), max_bytes)
    return out.getvalue()


def _load_ignore(root: Path) -> pathspec.GitIgnoreSpec:
    ignore_file = root / IGNORE_FILE
    lines = ignore_file.read_text(encoding="utf-8").splitlines() if ignore_file.is_file() else []
    # GitIgnoreSpec: gitignore's own rules (gitwildmatch patterns, last match wins, negation).
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(root: Path, ignore: pathspec.GitIgnoreSpec, rel: str = "") -> list[str]:
    """Paths to pack, relative and '/'-separated, parents before children, siblings by name.

    An ignored directory is not entered, as with git: nothing under it can be re-included.
    """
    found: list[str] = []
    with os.scandir(root / rel if rel else root) as entries:
        listing = sorted(entries, key=lambda entry: entry.name)
    for entry in listing:
        path = f"{rel}/{entry.name}" if rel else entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        if entry.name in _ALWAYS_SKIPPED_NAMES:
            continue
        if not is_dir and entry.name.endswith(_ALWAYS_SKIPPED_SUFFIXES):
            continue
        if ignore.match_file(path + "/" if is_dir else path):
            continue
        found.append(path)
        if is_dir:
            found.extend(_walk(root, ignore, path))
    return found


def _add(archive: tarfile.TarFile, root: Path, rel: str, out: io.BytesIO, max_bytes: int) -> None:
    if "\\" in rel:
        raise ContextEntryRefused(rel, "the master refuses backslashes in paths")
    full = root / rel
    info = os.lstat(full)
    member = tarfile.TarInfo(rel)
    # Only what the trial needs survives: no owners, no times, permissions reduced to rwx or rw.
    member.mtime = 0
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
        member.mode = 0o755
        archive.addfile(member)
    elif stat.S_ISLNK(info.st_mode):
        member.type = tarfile.SYMTYPE
        member.mode = 0o777
        member.linkname = _link_target(root, rel)
        archive.addfile(member)
    elif stat.S_ISREG(info.st_mode):
        member.mode = 0o755 if info.st_mode & 0o111 else 0o644
        with open(full, "rb") as source:
            # The size comes from the open file so a file replaced meanwhile cannot skew the header.
            member.size = os.fstat(source.fileno()).st_size
            archive.addfile(member, _Watched(source, out, max_bytes, rel))
    else:
        raise ContextEntryRefused(rel, "only files, directories and symlinks can be packed")
    if out.tell() > max_bytes:
        raise ContextTooLarge(out.tell(), max_bytes, while_adding=rel)


def _link_target(root: Path, rel: str) -> str:
    """Where a symlink points, as a path relative to its own directory inside the tree.

    Resolved on disk rather than copied, so a chain through ignored links or an absolute link
    into the tree still lands in the same place after extraction.
    """
    link = root / rel
    try:
        os.stat(link)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ContextEntryRefused(rel, "symlink loop") from None
        # A dangling link is kept: it resolves inside or outside just the same.
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(root):
        raise ContextEntryRefused(rel, f"symlink points outside the context directory ({os.readlink(link)})")
    return posixpath.relpath(target.relative_to(root).as_posix(), posixpath.dirname(rel) or ".")


class _Watched:
    """Feeds a file to tarfile while watching the compressed size, so one huge file fails fast."""

    def __init__(self, source: BinaryIO, out: io.BytesIO, max_bytes: int, rel: str) -> None:
        self._source = source
        self._out = out
        self._max_bytes = max_bytes
        self._rel = rel

    def read(self, size: int = -1) -> bytes:
        if self._out.tell() > self._max_bytes:
            raise ContextTooLarge(self._out.tell(), self._max_bytes, while_adding=self._rel)
        return self._source.read(size)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
