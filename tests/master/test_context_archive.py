"""Inspection of uploaded contexts: every way an archive can escape or abuse its directory is refused."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from stalwart_master.contexts.archive import (
    ArchiveOverLimit,
    ArchiveTooLarge,
    ContextArchive,
    UnsafeArchive,
    check_content_length,
    inspect_context,
    receive_context,
)
from stalwart_master.errors import BadRequest, PayloadTooLarge

pytestmark = pytest.mark.unit

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"print('hi')\n") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _pax_path(name: str) -> Member:
    info = tarfile.TarInfo("placeholder.py")
    info.pax_headers = {"path": name}
    return info, b""


def _pack(tmp_path: Path, members: list[Member], *, compress: bool = True) -> bytes:
    """Writes a real archive file with tarfile, the way a client would, and returns its bytes."""
    path = tmp_path / ("context.tar.gz" if compress else "context.tar")
    with tarfile.open(path, "w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path.read_bytes()


def test_valid_archive_passes_with_file_count_and_digest(tmp_path: Path) -> None:
    data = _pack(
        tmp_path,
        [
            _special(".", tarfile.DIRTYPE),
            _file("./train.py"),
            _special("model", tarfile.DIRTYPE),
            _file("model/net.py", b"x = 1\n"),
            _special("model/latest.py", tarfile.SYMTYPE, "net.py"),
            _special("alias", tarfile.SYMTYPE, "model"),
            _special("model/up", tarfile.SYMTYPE, ".."),
            _special("copy.py", tarfile.LNKTYPE, "train.py"),
            _file("deep/" + "x" * 200 + ".py"),  # long enough to need a pax header
        ],
    )

    archive = inspect_context(data)

    assert archive == ContextArchive(sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=3)


def test_uncompressed_tar_is_accepted(tmp_path: Path) -> None:
    data = _pack(tmp_path, [_file("a.py"), _file("b.py")], compress=False)

    assert inspect_context(data).files == 2


def test_symlinks_resolve_through_other_symlinks_in_the_archive(tmp_path: Path) -> None:
    # Lexically 'deep/..' is the root, but 'deep' is a link two levels down, so this stays inside.
    data = _pack(
        tmp_path,
        [
            _special("a", tarfile.DIRTYPE),
            _special("a/b", tarfile.DIRTYPE),
            _special("deep", tarfile.SYMTYPE, "a/b"),
            _special("l", tarfile.SYMTYPE, "deep/../.."),
        ],
    )

    assert inspect_context(data).files == 0


MALICIOUS: dict[str, tuple[list[Member], str, str]] = {
    "absolute path": ([_file("/etc/cron.d/evil")], "/etc/cron.d/evil", "absolute"),
    "dot-dot path": ([_file("../evil.py")], "../evil.py", "path leaves the context directory"),
    "dot-dot inside path": ([_file("a/../../evil.py")], "a/../../evil.py", "leaves the context directory"),
    "backslash dot-dot": ([_file("..\\..\\evil.py")], "..\\..\\evil.py", "backslash"),
    "drive letter": ([_file("C:/Windows/evil.dll")], "C:/Windows/evil.dll", "absolute"),
    "symlink absolute": ([_special("etc", tarfile.SYMTYPE, "/etc")], "etc", "absolute"),
    "symlink escaping": (
        [_special("sub", tarfile.DIRTYPE), _special("sub/out", tarfile.SYMTYPE, "../../outside")],
        "sub/out",
        "resolves outside the context directory",
    ),
    "symlink escaping through a symlink": (
        # 'here -> .' is harmless; 'up -> here/..' looks like the root but is its parent.
        [_special("here", tarfile.SYMTYPE, "."), _special("up", tarfile.SYMTYPE, "here/..")],
        "up",
        "resolves outside the context directory",
    ),
    "symlink written through an escaping parent": (
        [_special("sub", tarfile.SYMTYPE, "."), _special("sub/x", tarfile.SYMTYPE, "../../etc")],
        "sub/x",
        "outside the context directory",
    ),
    "symlink loop": (
        [_special("a", tarfile.SYMTYPE, "b"), _special("b", tarfile.SYMTYPE, "a/x")],
        "a",
        "circular",
    ),
    "hardlink absolute": ([_special("passwd", tarfile.LNKTYPE, "/etc/passwd")], "passwd", "absolute"),
    "hardlink escaping": (
        [_special("shadow", tarfile.LNKTYPE, "../../etc/shadow")],
        "shadow",
        "leaves the context directory",
    ),
    "hardlink to nothing in the archive": (
        [_special("x", tarfile.LNKTYPE, "not-here.py")],
        "x",
        "not an earlier regular file",
    ),
    "char device": ([_special("dev/mem", tarfile.CHRTYPE)], "dev/mem", "character device"),
    "block device": ([_special("sda", tarfile.BLKTYPE)], "sda", "block device"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "pipe", "FIFO"),
    "unknown type": ([_special("odd", b"V")], "odd", "unsupported member type"),
    "duplicate path": ([_file("a.py"), _file("./a.py")], "./a.py", "more than once"),
    # A ustar name field stops at NUL on reading, but a pax path keeps it.
    "NUL in a pax path": ([_pax_path("ok\x00/../../evil")], "ok\x00/../../evil", "NUL"),
}


@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_malicious_member_refuses_the_whole_archive_naming_it(tmp_path: Path, kind: str) -> None:
    members, bad_name, reason = MALICIOUS[kind]
    data = _pack(tmp_path, [_file("train.py"), *members, _file("zz_after.py")])

    with pytest.raises(UnsafeArchive) as caught:
        inspect_context(data)

    assert caught.value.member == bad_name
    assert reason in caught.value.reason
    assert isinstance(caught.value, BadRequest)
    assert caught.value.status == 400


def test_detail_names_member_and_reason(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive) as caught:
        inspect_context(_pack(tmp_path, [_file("../evil.py")]))

    assert caught.value.detail == "context member '../evil.py' rejected: path leaves the context directory"


def test_first_bad_member_is_the_one_named(tmp_path: Path) -> None:
    data = _pack(tmp_path, [_file("ok.py"), _file("../first"), _file("/second")])

    with pytest.raises(UnsafeArchive) as caught:
        inspect_context(data)

    assert caught.value.member == "../first"


def test_too_many_members(tmp_path: Path) -> None:
    data = _pack(tmp_path, [_file(f"f{i}.py") for i in range(6)])

    assert inspect_context(data, max_members=6).files == 6
    with pytest.raises(ArchiveOverLimit) as caught:
        inspect_context(data, max_members=5)
    assert (caught.value.member, caught.value.limit, caught.value.status) == (
        "f5.py",
        "context_max_members",
        413,
    )
    assert "more than 5 members" in caught.value.detail
    assert "STALWART_CONTEXT_MAX_MEMBERS=5" in caught.value.detail


def test_zero_filled_member_over_unpacked_limit(tmp_path: Path) -> None:
    data = _pack(tmp_path, [_file("zeros.bin", bytes(2 * 1024 * 1024))])

    assert len(data) < 16 * 1024
    with pytest.raises(ArchiveOverLimit) as caught:
        inspect_context(data, max_unpacked_bytes=1024 * 1024)
    assert caught.value.member == "zeros.bin"
    assert caught.value.limit == "context_max_unpacked_bytes"
    assert "unpacks to more than 1048576 bytes" in caught.value.detail


def test_a_path_deeper_than_the_cap_is_refused(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 4) + "/f.py"
    data = _pack(tmp_path, [_file(deep)])

    assert inspect_context(data, max_depth=5).files == 1
    with pytest.raises(ArchiveOverLimit) as caught:
        inspect_context(data, max_depth=4)
    assert (caught.value.member, caught.value.limit) == (deep, "context_max_depth")
    assert "STALWART_CONTEXT_MAX_DEPTH=4" in caught.value.detail


def test_a_symlink_target_longer_than_twice_the_depth_is_refused(tmp_path: Path) -> None:
    climb = _special("up", tarfile.SYMTYPE, "/".join([".."] * 2 + ["a"] * 6))

    with pytest.raises(ArchiveOverLimit) as caught:
        inspect_context(_pack(tmp_path, [climb]), max_depth=3)
    assert (caught.value.member, caught.value.limit) == ("up", "context_max_depth")


def _gzip_bomb(tmp_path: Path, unpacked: int) -> bytes:
    """A real tar.gz with one all-zero member of ``unpacked`` bytes, made without compressing it all.

    gzip allows concatenated members, so one compressed 64 MiB run of zeros is simply repeated.
    """
    run = 64 * 1024 * 1024
    assert unpacked % run == 0
    info = tarfile.TarInfo("weights.bin")
    info.size = unpacked
    zeros = gzip.compress(bytes(run), compresslevel=9, mtime=0)
    path = tmp_path / "bomb.tar.gz"
    with path.open("wb") as out:
        out.write(gzip.compress(info.tobuf(tarfile.PAX_FORMAT), mtime=0))
        for _ in range(unpacked // run):
            out.write(zeros)
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))
    return path.read_bytes()


def test_gzip_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    data = _gzip_bomb(tmp_path, 5 * 1024**3)

    assert len(data) < 8 * 1024 * 1024
    with pytest.raises(ArchiveOverLimit) as caught:
        inspect_context(data)
    assert caught.value.member == "weights.bin"
    assert f"more than {1024**3} bytes" in caught.value.detail


def test_oversized_header_extension_is_refused(tmp_path: Path) -> None:
    # A pax header is read into memory whole; a big one is a memory bomb that is not "file data".
    info = tarfile.TarInfo("a.py")
    info.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
    data = _pack(tmp_path, [(info, b"")])

    with pytest.raises(BadRequest, match="header larger than"):
        inspect_context(data)


def test_many_header_extensions_stop_decompression(tmp_path: Path) -> None:
    members: list[Member] = []
    for i in range(3):
        info = tarfile.TarInfo(f"f{i}.py")
        info.pax_headers = {"comment": "x" * (600 * 1024)}
        members.append((info, b""))
    data = _pack(tmp_path, members)

    assert inspect_context(data, max_members=10, max_unpacked_bytes=10 * 1024 * 1024).files == 3
    # The files are empty: only counting the headers themselves stops this.
    with pytest.raises(ArchiveOverLimit, match="unpacks to more than"):
        inspect_context(data, max_members=10, max_unpacked_bytes=1024 * 1024)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated or corrupt"),
        (lambda data: data[:-5], "truncated or corrupt"),
        (lambda data: data[:10] + bytes(b ^ 0xFF for b in data[10:40]) + data[40:], "truncated or corrupt"),
        (lambda data: data + b"trailing junk", "truncated or corrupt"),
    ],
    ids=["half", "missing-trailer", "corrupt-deflate", "trailing-junk"],
)
def test_truncated_or_corrupt_gzip_is_refused(
    tmp_path: Path, mangle: Callable[[bytes], bytes], message: str
) -> None:
    data = _pack(tmp_path, [_file("a.py", bytes(range(256)) * 400), _file("b.py")])

    with pytest.raises(BadRequest, match=message) as caught:
        inspect_context(mangle(data))
    assert not isinstance(caught.value, UnsafeArchive)


def test_tar_cut_between_members_is_refused(tmp_path: Path) -> None:
    whole = _pack(tmp_path, [_file("a.py"), _file("b.py")], compress=False)
    # Header + one data block per member; dropping the second member and the end marker.
    cut = whole[: 2 * tarfile.BLOCKSIZE]
    assert inspect_context(whole).files == 2

    with pytest.raises(BadRequest, match="no end-of-archive marker"):
        inspect_context(cut)
    with pytest.raises(BadRequest, match="no end-of-archive marker"):
        inspect_context(gzip.compress(cut))


def test_members_hidden_after_the_end_marker_are_refused(tmp_path: Path) -> None:
    first = _pack(tmp_path, [_file("a.py")], compress=False)
    hidden = _pack(tmp_path, [_file("../evil.py")], compress=False)

    with pytest.raises(BadRequest, match="after its end-of-archive marker"):
        inspect_context(gzip.compress(first + hidden))


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world\n" * 100, gzip.compress(b"just some text\n" * 100), b"BZh91AY&SY" + bytes(600)],
    ids=["empty", "text", "gzip-not-tar", "bzip2"],
)
def test_not_an_archive(data: bytes) -> None:
    with pytest.raises(BadRequest, match=r"context is (empty|not a tar or tar\.gz archive)"):
        inspect_context(data)


async def _chunks(data: bytes, size: int, consumed: list[int]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        consumed.append(start)
        yield data[start : start + size]


def test_receive_context_stops_reading_once_over_the_limit() -> None:
    consumed: list[int] = []
    body = bytes(100 * 1000)

    with pytest.raises(ArchiveTooLarge) as caught:
        asyncio.run(receive_context(_chunks(body, 1000, consumed), max_bytes=10_500))

    # The 11th chunk takes the total to 11 000 > 10 500; nothing after it is read.
    assert len(consumed) == 11
    assert caught.value.status == 413
    assert isinstance(caught.value, PayloadTooLarge)
    assert "10500" in caught.value.detail and ".stalwartignore" in caught.value.detail


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spooled"])
def test_receive_context_returns_archive_and_bytes(tmp_path: Path, spool: bool) -> None:
    data = _pack(tmp_path, [_file("a.py", bytes(range(256)) * 100), _file("b.py")])
    consumed: list[int] = []

    archive, received = asyncio.run(
        receive_context(
            _chunks(data, 97, consumed), max_bytes=len(data), spool_dir=str(tmp_path) if spool else None
        )
    )

    assert received == data
    assert archive == ContextArchive(sha256=hashlib.sha256(data).hexdigest(), size=len(data), files=2)


def test_receive_context_inspects_what_it_received(tmp_path: Path) -> None:
    data = _pack(tmp_path, [_file("../evil.py")])

    with pytest.raises(UnsafeArchive):
        asyncio.run(receive_context(_chunks(data, 64, []), max_bytes=len(data)))


def test_check_content_length() -> None:
    check_content_length(None, 100)
    check_content_length("100", 100)
    check_content_length(" 7 ", 100)

    with pytest.raises(ArchiveTooLarge) as caught:
        check_content_length("101", 100)
    assert caught.value.size == 101 and caught.value.max_bytes == 100


@pytest.mark.parametrize("value", ["", "abc", "-1", "+5", "1_000", "1e3", "12 34"])
def test_check_content_length_refuses_malformed_values(value: str) -> None:
    with pytest.raises(BadRequest, match="not a byte count") as caught:
        check_content_length(value, 10**9)
    assert not isinstance(caught.value, PayloadTooLarge)
