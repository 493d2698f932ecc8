"""FilesystemStorage: atomic puts, batched durability, create-if-absent commits, listing leftovers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from stalwart.checkpoint import CheckpointWriter, StorageError, StorageNotFound, open_storage
from stalwart.checkpoint import fs as fs_module
from stalwart.checkpoint.fs import FilesystemStorage

pytestmark = pytest.mark.unit


def test_config_types_map_to_their_roots(tmp_path: Path) -> None:
    shared = open_storage({"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "sub"})
    assert isinstance(shared, FilesystemStorage) and shared.root == tmp_path / "sub"
    plain = open_storage({"type": "directory", "container_path": str(tmp_path / "c")})
    assert isinstance(plain, FilesystemStorage) and plain.root == tmp_path / "c"
    with pytest.raises(StorageError, match="host_path"):
        open_storage({"type": "shared_fs"})
    with pytest.raises(StorageError, match="not supported"):
        open_storage({"type": "gcs"})


def test_put_get_touch_delete_and_list(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    storage.put("chunks/ab/abc", memoryview(b"hello"))
    storage.put("chunks/ab/abc", b"again")  # replacing is allowed for put
    assert storage.get("chunks/ab/abc") == b"again" and storage.exists("chunks/ab/abc")
    old = time.time() - 1000
    os.utime(tmp_path / "chunks" / "ab" / "abc", (old, old))
    assert storage.touch("chunks/ab/abc") and not storage.touch("chunks/ab/missing")
    (listed,) = storage.list("chunks/")
    assert listed.key == "chunks/ab/abc" and listed.size == 5 and listed.mtime > old + 500
    assert list(storage.list("chunks/cd/")) == [] and list(storage.list("nothing/")) == []
    (tmp_path / "chunks" / "ab" / ".tmp-x.1").write_bytes(b"")  # an interrupted write's leftover
    assert {obj.key for obj in storage.list("chunks/a")} == {"chunks/ab/abc", "chunks/ab/.tmp-x.1"}
    storage.delete("chunks/ab/abc")
    storage.delete("chunks/ab/abc")  # already gone: still fine
    with pytest.raises(StorageNotFound, match="chunks/ab/abc"):
        storage.get("chunks/ab/abc")
    for bad in ("../x", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(StorageError, match="invalid key"):
            storage.get(bad)


def test_put_new_creates_once_and_never_replaces(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path)
    assert storage.put_new("manifests/x.json", b"first")
    assert not storage.put_new("manifests/x.json", b"second")
    assert storage.get("manifests/x.json") == b"first"
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == ["x.json"]  # no temp left


def test_sync_fsyncs_every_file_put_since_the_last_sync_then_their_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fs_module.os, "fsync", fsync)
    storage = FilesystemStorage(tmp_path)
    storage.put("chunks/aa/one", b"1")
    storage.put("chunks/bb/two", b"2")
    assert synced == []  # put alone never waits for the disk
    storage.sync()
    files = {str(tmp_path / "chunks" / "aa" / "one"), str(tmp_path / "chunks" / "bb" / "two")}
    directories = {str(tmp_path / "chunks" / "aa"), str(tmp_path / "chunks" / "bb")}
    assert set(synced[:2]) == files and set(synced[2:]) == directories
    synced.clear()
    storage.sync()
    assert synced == []  # nothing new since


def test_the_manifest_is_linked_only_after_every_chunk_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"link:{dst}")
        real_link(src, dst)

    monkeypatch.setattr(fs_module.os, "fsync", fsync)
    monkeypatch.setattr(fs_module.os, "link", link)
    storage = FilesystemStorage(tmp_path)
    writer = CheckpointWriter(storage, chunk_size=4096)
    uuid = writer.save_state({"w": torch.randn(4096), "n": 1}, steps_completed=1)
    writer.close()
    chunk_files = {str(p) for p in (tmp_path / "chunks").rglob("*") if p.is_file()}
    assert len(chunk_files) == 5  # 4 tensor chunks and the skeleton
    commit = events.index(f"link:{tmp_path / 'manifests' / f'{uuid}.json'}")
    assert chunk_files <= {event.removeprefix("fsync:") for event in events[:commit]}
    assert events[-1] == f"fsync:{tmp_path / 'manifests'}"  # the directory entry is durable last
