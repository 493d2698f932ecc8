"""Packing a code directory into a context: ignore rules, reproducible bytes, limits, symlinks."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from stalwart.context import (
    DEFAULT_MAX_CONTEXT_BYTES,
    ContextEntryRefused,
    ContextTooLarge,
    build_context,
    context_digest,
)

pytestmark = pytest.mark.unit


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def test_stalwartignore_patterns_negation_and_directories(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            ".stalwartignore": "# comment\n*.log\n!keep.log\ndata/\n/build\n**/secret.txt\nckpt-*\n",
            "train.py": "",
            "run.log": "",
            "keep.log": "",
            "data/train.csv": "",
            "src/data/loader.py": "",  # 'data/' matches at any depth, as in git
            "build/out.o": "",
            "src/build/notes.md": "",  # '/build' is anchored to the root
            "src/deep/secret.txt": "",
            "ckpt-001/weights.bin": "",
            "src/model.py": "",
        },
    )

    names = set(_members(build_context(tmp_path)))

    assert names == {
        ".stalwartignore",
        "keep.log",
        "src",
        "src/build",
        "src/build/notes.md",
        "src/deep",
        "src/model.py",
        "train.py",
    }


def test_files_under_an_ignored_directory_cannot_be_re_included(tmp_path: Path) -> None:
    _write(tmp_path, {".stalwartignore": "data/\n!data/keep.txt\n", "data/keep.txt": "", "a.py": ""})

    assert set(_members(build_context(tmp_path))) == {".stalwartignore", "a.py"}


def test_vcs_and_bytecode_are_always_skipped(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            ".stalwartignore": "!*.pyc\n!__pycache__/\n",
            ".git/HEAD": "ref: refs/heads/main\n",
            "pkg/__pycache__/mod.cpython-311.pyc": b"\0",
            "pkg/stale.pyc": b"\0",
            "pkg/mod.py": "",
            "vendor/lib/.git": "gitdir: ../../.git/modules/lib\n",  # a submodule's .git file
        },
    )

    assert set(_members(build_context(tmp_path))) == {
        ".stalwartignore",
        "pkg",
        "pkg/mod.py",
        "vendor",
        "vendor/lib",
    }


def test_same_tree_gives_identical_bytes_whatever_the_times_and_location(tmp_path: Path) -> None:
    tree = tmp_path / "a"
    _write(tree, {"train.py": "print(1)\n", "pkg/__init__.py": "", "pkg/model.py": "x = 2\n"})
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o700)
    first = build_context(tree)

    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    copy = tmp_path / "elsewhere" / "b"
    shutil.copytree(tree, copy)
    (copy / "pkg" / "model.py").chmod(0o600)

    assert build_context(tree) == first
    assert build_context(copy) == first
    assert context_digest(first) == context_digest(build_context(copy))


def test_metadata_is_normalised(tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": "", "pkg/model.py": ""})
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o750)

    data = build_context(tmp_path)
    members = _members(data)

    assert data[4:8] == bytes(4)  # gzip header mtime
    assert list(members) == ["pkg", "pkg/model.py", "run.sh", "train.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, 0, "", "")}
    assert {name: m.mode for name, m in members.items()} == {
        "pkg": 0o755,
        "pkg/model.py": 0o644,
        "run.sh": 0o755,
        "train.py": 0o644,
    }


def test_changing_a_file_changes_the_digest(tmp_path: Path) -> None:
    _write(tmp_path, {"train.py": "lr = 0.1\n"})
    before = context_digest(build_context(tmp_path))
    (tmp_path / "train.py").write_text("lr = 0.2\n")

    assert context_digest(build_context(tmp_path)) != before


def test_context_over_the_limit_is_refused_with_advice(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": "", "weights.bin": os.urandom(2 * 1024 * 1024), "z.py": ""})

    with pytest.raises(ContextTooLarge) as caught:
        build_context(tmp_path, max_bytes=1024 * 1024)

    message = str(caught.value)
    assert caught.value.max_bytes == 1024 * 1024
    assert caught.value.size > 1024 * 1024
    assert "1.0 MiB" in message and "weights.bin" in message and ".stalwartignore" in message
    assert DEFAULT_MAX_CONTEXT_BYTES == 96 * 1024 * 1024


def test_large_file_stops_the_build_early(tmp_path: Path) -> None:
    _write(tmp_path, {"big.bin": os.urandom(8 * 1024 * 1024)})

    with pytest.raises(ContextTooLarge) as caught:
        build_context(tmp_path, max_bytes=512 * 1024)

    # Refused while copying, not after compressing the whole file.
    assert caught.value.size < 2 * 1024 * 1024


def test_ignoring_the_large_file_makes_it_fit(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": "", "weights.bin": os.urandom(2 * 1024 * 1024)})
    (tmp_path / ".stalwartignore").write_text("*.bin\n")

    assert set(_members(build_context(tmp_path, max_bytes=1024 * 1024))) == {".stalwartignore", "a.py"}


def test_symlinks_inside_the_tree_are_kept_as_relative_links(tmp_path: Path) -> None:
    tree = tmp_path / "code"
    _write(tree, {"configs/base.yaml": "lr: 0.1\n", "src/model.py": ""})
    (tree / "config.yaml").symlink_to("configs/base.yaml")
    (tree / "src" / "configs").symlink_to("../configs")
    (tree / "absolute.yaml").symlink_to(tree / "configs" / "base.yaml")

    members = _members(build_context(tree))

    assert members["config.yaml"].issym() and members["config.yaml"].linkname == "configs/base.yaml"
    assert members["src/configs"].linkname == "../configs"
    assert members["absolute.yaml"].linkname == "configs/base.yaml"


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd"], ids=["relative", "absolute"])
def test_symlink_leaving_the_tree_is_refused(tmp_path: Path, target: str) -> None:
    tree = tmp_path / "code"
    _write(tree, {"train.py": ""})
    (tmp_path / "outside.txt").write_text("secret")
    (tree / "link").symlink_to(target)

    with pytest.raises(ContextEntryRefused) as caught:
        build_context(tree)

    assert caught.value.path == "link"
    assert "outside the context directory" in str(caught.value) and ".stalwartignore" in str(caught.value)


def test_ignored_escaping_symlink_is_fine(tmp_path: Path) -> None:
    tree = tmp_path / "code"
    _write(tree, {"train.py": "", ".stalwartignore": "datasets\n"})
    (tree / "datasets").symlink_to(tmp_path)

    assert set(_members(build_context(tree))) == {".stalwartignore", "train.py"}


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")

    with pytest.raises(ContextEntryRefused, match="symlink loop"):
        build_context(tmp_path)


def test_special_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(ContextEntryRefused, match="pipe"):
        build_context(tmp_path)


def test_missing_or_non_directory_context(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_context(tmp_path / "nope")
    (tmp_path / "file.py").write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        build_context(tmp_path / "file.py")


def test_built_context_passes_master_inspection(tmp_path: Path) -> None:
    from stalwart_master.contexts.archive import inspect_context

    tree = tmp_path / "code"
    _write(
        tree,
        {
            "train.py": "print('train')\n",
            "pkg/__init__.py": "",
            "pkg/model.py": "x = 1\n",
            "pkg/" + "long_name_" * 20 + ".py": "",
            "configs/base.yaml": "lr: 0.1\n",
            "ünïcode.txt": "ok\n",
        },
    )
    (tree / "pkg" / "configs").symlink_to("../configs")
    (tree / "root").symlink_to(".")
    (tree / "empty").mkdir()
    data = build_context(tree)

    archive = inspect_context(data)

    assert archive.files == 6
    assert archive.sha256 == context_digest(data)
    assert archive.size == len(data)
