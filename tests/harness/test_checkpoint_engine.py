"""The checkpoint engine on a real filesystem: round trips, dedup, compression, corruption, GC.

Real torch tensors, real numpy arrays, real files; the only stand-in is a storage subclass that
holds writes at a gate, to observe saves while they are in flight.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stalwart.checkpoint import (
    CheckpointWriter,
    StorageError,
    UnsafeCheckpointError,
    delete_manifests,
    export_safetensors,
    load_state,
    open_storage,
    read_manifest,
    restore_directory,
    sweep_chunks,
    verify_checkpoint,
)
from stalwart.checkpoint._reader import _Unpickler
from stalwart.checkpoint.fs import FilesystemStorage
from stalwart.core import CheckpointCorrupted, CheckpointError, CheckpointNotFound

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class Schedule:
    """A user class inside the state: pickled in the skeleton, its tensor stored as chunks."""

    name: str
    warmup: torch.Tensor


def _storage(tmp_path: Path, **extra: Any) -> FilesystemStorage:
    storage = open_storage({"type": "directory", "container_path": str(tmp_path / "store"), **extra})
    assert isinstance(storage, FilesystemStorage)
    return storage


def _rich_state() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=gen)
    complex_view = torch.randn(4, dtype=torch.complex64, generator=gen)
    return {
        "model": OrderedDict(
            [
                ("fc.weight", torch.randn(32, 32, generator=gen)),
                ("bf16", torch.randn(100, generator=gen).to(torch.bfloat16)),
                ("half", torch.randn(7, 3, generator=gen).half()),
                ("int8", torch.arange(-5, 5, dtype=torch.int8)),
                ("mask", torch.tensor([True, False, True])),
                ("complex", torch.randn(5, dtype=torch.complex64, generator=gen)),
                ("scalar", torch.tensor(2.5)),
                ("empty", torch.empty(0, 3)),
                ("transposed", base.t()),  # non-contiguous
                ("strided", base[::2, 1::3]),  # non-contiguous with an offset
                ("conj", complex_view.conj()),  # a lazily conjugated view
                ("int64", torch.arange(10)),
                ("param", torch.nn.Parameter(torch.ones(2, 2))),
            ]
        ),
        "numpy": {
            "big_endian": np.arange(12, dtype=">i4").reshape(3, 4),
            "fortran": np.asfortranarray(np.random.default_rng(0).random((3, 5))),
            "scalar": np.array(3.0),
            "empty": np.zeros((0, 2), dtype=np.float16),
            "objects": np.array([{"a": 1}, None], dtype=object),  # pickled, not chunked
        },
        "python": {
            "epoch": 3,
            "lr": 0.1,
            "tags": {"a", "b"},
            "nested": [1, (2, 3)],
            "none": None,
            7: "int key",
        },
        "tuple": (torch.zeros(2), "x"),
        "schedule": Schedule("cosine", torch.linspace(0, 1, 5)),
        "weird/key": torch.ones(1),
    }


def _assert_same(expected: Any, actual: Any, where: str = "state") -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert torch.equal(actual, expected.resolve_conj()), where
        assert type(actual) is type(expected), where
        return
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype, where
        assert actual.shape == expected.shape, where
        if expected.dtype.hasobject:
            assert actual.tolist() == expected.tolist(), where
        else:
            assert np.array_equal(actual, expected), where
        return
    assert type(actual) is type(expected), where
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            _assert_same(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _assert_same(e, a, f"{where}/{index}")
    elif isinstance(expected, Schedule):
        assert actual.name == expected.name
        _assert_same(expected.warmup, actual.warmup, f"{where}.warmup")
    else:
        assert actual == expected, where


def _save(storage: FilesystemStorage, state: Any, **kwargs: Any) -> dict[str, Any]:
    writer = CheckpointWriter(storage, **kwargs)
    uuid = writer.save_state(state, steps_completed=1)
    writer.close()
    return read_manifest(storage, uuid)


def _chunk_path(storage: FilesystemStorage, manifest: dict[str, Any], path: str, index: int = 0) -> Path:
    (entry,) = [entry for entry in manifest["files"] if entry["path"] == path]
    digest = entry["chunks"][index]["digest"]
    return storage.root / "chunks" / digest[:2] / digest


def test_nested_state_with_every_dtype_round_trips_exactly(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = _rich_state()
    state["alias"] = state["model"]["fc.weight"]  # the same tensor twice stays one tensor
    original = state["model"]["fc.weight"].clone()
    writer = CheckpointWriter(storage, chunk_size=4096)
    uuid = writer.save_state(state, steps_completed=12, metadata={"note": "hi"})
    state["model"]["fc.weight"].zero_()  # after save_state returns, changes do not reach the checkpoint
    writer.close()
    state["model"]["fc.weight"].copy_(original)

    manifest = read_manifest(storage, uuid)
    assert manifest["steps_completed"] == 12 and manifest["metadata"] == {"note": "hi", "steps_completed": 12}
    assert manifest["kind"] == "state" and manifest["world_size"] == 1 and manifest["compression"] is None
    entries = {entry["path"]: entry for entry in manifest["files"]}
    assert entries["state/model/fc.weight"]["type"] == "tensor"
    assert entries["state/model/fc.weight"]["shape"] == [32, 32]
    assert entries["state/model/bf16"]["dtype"] == "bfloat16"
    assert entries["state/numpy/big_endian"] == {
        **entries["state/numpy/big_endian"],
        "type": "ndarray",
        "dtype": ">i4",
    }
    assert "state/weird%2Fkey" in entries and "state/alias" not in entries
    assert entries["state/__skeleton__.pkl"]["type"] == "skeleton"
    assert len(entries["state/model/fc.weight"]["chunks"]) == 1  # 4096 bytes: one full chunk
    assert manifest["size"] == sum(entry["size"] for entry in manifest["files"])

    verify_checkpoint(storage, manifest)
    loaded = load_state(storage, manifest, allowed_globals=[f"{Schedule.__module__}.{Schedule.__qualname__}"])
    _assert_same(state, loaded)
    assert loaded["alias"] is loaded["model"]["fc.weight"]
    assert isinstance(loaded["model"]["param"], torch.nn.Parameter)
    assert loaded["model"]["param"].requires_grad


def test_tensors_larger_than_a_chunk_are_split_and_reassembled(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = {"big": torch.randn(10_000), "odd": torch.arange(3333, dtype=torch.int16)}
    manifest = _save(storage, state, chunk_size=4096)
    entries = {entry["path"]: entry for entry in manifest["files"]}
    assert [chunk["size"] for chunk in entries["state/big"]["chunks"]] == [4096] * 9 + [3136]
    _assert_same(state, load_state(storage, manifest))


def test_a_second_save_with_ten_percent_changed_writes_about_ten_percent(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    gen = torch.Generator().manual_seed(1)
    state = {f"layer{i}": torch.randn(64 * 1024, generator=gen) for i in range(20)}  # 20 x 256 KiB
    writer = CheckpointWriter(storage, chunk_size=64 * 1024)
    first = writer.save_state(state, steps_completed=1)
    state["layer3"].add_(1.0)
    state["layer11"].mul_(2.0)  # 2 of 20 tensors changed
    second = writer.save_state(state, steps_completed=2)
    writer.close()
    m1, m2 = read_manifest(storage, first), read_manifest(storage, second)
    assert m1["new_bytes"] >= m1["size"] - 4096  # everything new (the skeleton may be tiny)
    assert m2["new_bytes"] <= 0.15 * m1["new_bytes"]
    assert m2["new_bytes"] >= 0.09 * m1["new_bytes"]
    assert m2["parent_uuid"] is None and m1["parent_uuid"] is None  # a fresh run restored nothing
    _assert_same(state, load_state(storage, m2))


def test_zstd_compression_round_trips_and_shares_chunks_with_uncompressed_saves(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = {"zeros": torch.zeros(1 << 18), "noise": torch.randn(1 << 16), "steps": 5}
    packed = _save(storage, state, compression="zstd", chunk_size=1 << 16)
    assert packed["compression"] == "zstd"
    zeros = next(entry for entry in packed["files"] if entry["path"] == "state/zeros")
    assert all(chunk["stored"] < chunk["size"] // 10 for chunk in zeros["chunks"])
    assert packed["stored_size"] < packed["size"] // 2
    verify_checkpoint(storage, packed)
    _assert_same(state, load_state(storage, packed))
    # An uncompressed save of the same bytes reuses the compressed chunks (same raw digests).
    plain = _save(storage, state, chunk_size=1 << 16)
    assert plain["new_bytes"] < 4096
    _assert_same(state, load_state(storage, plain))


def test_a_flipped_byte_is_reported_with_its_file_and_chunk(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = {"model": {"w": torch.randn(4096)}, "epoch": 1}
    manifest = _save(storage, state, chunk_size=4096)
    chunk = _chunk_path(storage, manifest, "state/model/w", index=2)
    data = bytearray(chunk.read_bytes())
    data[17] ^= 0x40
    chunk.write_bytes(bytes(data))
    digest = chunk.name
    pattern = rf"file 'state/model/w' chunk 2 \(blake3 {digest}\) does not match"
    with pytest.raises(CheckpointCorrupted, match=pattern):
        verify_checkpoint(storage, manifest)
    with pytest.raises(CheckpointCorrupted, match=pattern):
        load_state(storage, manifest)
    chunk.unlink()
    with pytest.raises(CheckpointCorrupted, match=r"'state/model/w' chunk 2 .* is missing"):
        verify_checkpoint(storage, manifest)


def test_a_corrupted_compressed_chunk_is_reported(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    manifest = _save(storage, {"zeros": torch.zeros(1 << 14)}, compression="zstd")
    chunk = _chunk_path(storage, manifest, "state/zeros")
    chunk.write_bytes(chunk.read_bytes()[:-3])
    with pytest.raises(CheckpointCorrupted, match=r"'state/zeros' chunk 0"):
        verify_checkpoint(storage, manifest)


def test_missing_and_malformed_manifests(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    with pytest.raises(CheckpointNotFound, match="never committed"):
        read_manifest(storage, "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    with pytest.raises(CheckpointNotFound, match="not a checkpoint uuid"):
        read_manifest(storage, "../../etc/passwd")
    manifest = _save(storage, {"x": torch.ones(3)})
    path = storage.root / "manifests" / f"{manifest['uuid']}.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointCorrupted, match="not valid JSON"):
        read_manifest(storage, manifest["uuid"])
    path.write_text(json.dumps({**manifest, "files": [{**manifest["files"][1], "size": 1}]}))
    with pytest.raises(CheckpointCorrupted, match="chunks add up"):
        read_manifest(storage, manifest["uuid"])


def test_restore_directory_and_safetensors_export(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = _rich_state()
    manifest = _save(storage, state, chunk_size=4096)
    restore_directory(storage, manifest, tmp_path / "files")
    raw = (tmp_path / "files" / "state" / "model" / "fc.weight").read_bytes()
    assert raw == state["model"]["fc.weight"].numpy().tobytes()
    assert (tmp_path / "files" / "state" / "__skeleton__.pkl").is_file()

    names = export_safetensors(storage, manifest, tmp_path / "out" / "model.safetensors")
    assert "model.fc.weight" in names and "schedule" not in names and "numpy.scalar" not in names
    assert "model.bf16" in names and "weird%2Fkey" in names
    loaded = load_file(tmp_path / "out" / "model.safetensors")
    assert set(loaded) == set(names)
    assert torch.equal(loaded["model.fc.weight"], state["model"]["fc.weight"])
    assert torch.equal(loaded["model.transposed"], state["model"]["transposed"])
    assert loaded["model.bf16"].dtype == torch.bfloat16


def test_store_directory_round_trip_through_the_writer(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.pt").write_bytes(os.urandom(10_000))
    (source / "sub" / "empty").write_bytes(b"")
    writer = CheckpointWriter(storage, chunk_size=4096)
    manifest = writer.save_directory(source, steps_completed=4, metadata={"k": "v"})
    writer.close()
    assert manifest is not None and manifest["kind"] == "directory"
    restore_directory(storage, manifest, tmp_path / "dst")
    assert (tmp_path / "dst" / "model.pt").read_bytes() == (source / "model.pt").read_bytes()
    assert (tmp_path / "dst" / "sub" / "empty").read_bytes() == b""
    assert json.loads((tmp_path / "dst" / "metadata.json").read_text()) == {"k": "v", "steps_completed": 4}
    with pytest.raises(CheckpointError, match="holds files"):
        load_state(storage, manifest)


class _GatedStorage(FilesystemStorage):
    """Real files, but every put waits until the test opens the gate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()

    def put(self, key: str, data: bytes | memoryview) -> None:
        assert self.gate.wait(30), "gate never opened"
        super().put(key, data)


def test_at_most_max_in_flight_saves_persist_at_once(tmp_path: Path) -> None:
    storage = _GatedStorage(tmp_path / "store")
    writer = CheckpointWriter(storage, max_in_flight=2)
    first = writer.save_state({"w": torch.randn(100)}, steps_completed=1)
    second = writer.save_state({"w": torch.randn(100)}, steps_completed=2)
    assert writer.in_flight == 2
    third: list[str] = []
    blocked = threading.Thread(
        target=lambda: third.append(writer.save_state({"w": torch.ones(3)}, steps_completed=3))
    )
    blocked.start()
    blocked.join(timeout=0.5)
    assert blocked.is_alive() and not third  # waits for the oldest save to finish
    storage.gate.set()
    blocked.join(timeout=30)
    assert third and not blocked.is_alive()
    assert (storage.root / "manifests" / f"{first}.json").is_file()  # the oldest was done first
    writer.close()
    assert {read_manifest(storage, u)["steps_completed"] for u in (first, second, third[0])} == {1, 2, 3}


def test_default_max_in_flight_of_one_commits_the_previous_save_first(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    writer = CheckpointWriter(storage)
    first = writer.save_state({"w": torch.randn(1000)}, steps_completed=1)
    writer.save_state({"w": torch.randn(1000)}, steps_completed=2)
    assert (storage.root / "manifests" / f"{first}.json").is_file()
    writer.close()


def test_a_writer_error_surfaces_on_the_next_call_and_commits_nothing(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    writer = CheckpointWriter(storage)
    good = writer.save_state({"w": torch.randn(100)}, steps_completed=1)
    writer.wait()
    # A file where the chunk directory for new chunks should be: every put of a new chunk fails.
    for directory in (storage.root / "chunks").iterdir():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    (storage.root / "chunks").rmdir()
    (storage.root / "chunks").write_text("not a directory")
    bad = writer.save_state({"w": torch.randn(100)}, steps_completed=2)
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad}: .*cannot write chunks/") as raised:
        writer.save_state({"w": torch.randn(100)}, steps_completed=3)
    assert isinstance(raised.value.__cause__, StorageError)
    assert not (storage.root / "manifests" / f"{bad}.json").exists()
    writer.wait()  # raised once, not again; the third save was refused before it started
    assert (storage.root / "manifests" / f"{good}.json").is_file()
    writer.close()


def test_wait_and_close_raise_a_pending_failure(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    (tmp_path / "store").write_text("a file, not a directory")
    writer = CheckpointWriter(storage)
    writer.save_state({"w": torch.ones(4)}, steps_completed=1)
    with pytest.raises(CheckpointError, match=r"cannot write chunks/.*Not a directory"):
        writer.wait()
    writer.save_state({"w": torch.ones(4)}, steps_completed=2)
    with pytest.raises(CheckpointError, match="cannot write chunks/"):
        writer.close()
    with pytest.raises(CheckpointError, match="closed"):
        writer.save_state({}, steps_completed=3)


def test_bad_input_is_refused_on_the_calling_thread(tmp_path: Path) -> None:
    writer = CheckpointWriter(_storage(tmp_path))
    with pytest.raises(CheckpointError, match="steps_completed"):
        writer.save_state({}, steps_completed=-1)
    with pytest.raises(CheckpointError, match="JSON"):
        writer.save_state({}, steps_completed=1, metadata={"x": object()})
    with pytest.raises(CheckpointError, match="cannot be saved"):
        writer.save_state({"f": lambda: 1}, steps_completed=1)
    with pytest.raises(CheckpointError, match="sparse"):
        writer.save_state({"s": torch.eye(3).to_sparse()}, steps_completed=1)
    writer.close()


def test_prepare_preallocates_buffers_the_next_save_reuses(tmp_path: Path) -> None:
    writer = CheckpointWriter(_storage(tmp_path))
    state = {"a": torch.randn(1 << 18), "b": torch.randn(10), "n": np.ones(5)}
    reserved = writer.prepare(state)
    assert reserved == (1 << 20) + 40 + 40
    assert writer._pool.free_bytes == reserved
    writer.save_state(state, steps_completed=1)
    assert writer._pool.free_bytes == 0  # every buffer came from the pool
    writer.close()


def test_sweep_keeps_referenced_and_young_chunks_and_deletes_old_unreferenced(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    kept = _save(storage, {"w": torch.randn(2048)}, chunk_size=4096)
    dropped = _save(storage, {"w": torch.randn(2048)}, chunk_size=4096)
    young = _save(storage, {"w": torch.randn(2048)}, chunk_size=4096)
    assert (
        delete_manifests(storage, [dropped["uuid"], young["uuid"], "1b4e28ba-2fa1-11d2-883f-0016d3cca427"])
        == 3
    )
    old = time.time() - 7200
    for manifest in (kept, dropped):
        for entry in manifest["files"]:
            for chunk in entry["chunks"]:
                path = storage.root / "chunks" / chunk["digest"][:2] / chunk["digest"]
                os.utime(path, (old, old))
    leftovers = [
        storage.root / "chunks" / "ab" / ".tmp-abc.1234",
        storage.root / "shards" / "1b4e28ba-2fa1-11d2-883f-0016d3cca427" / "rank-1.json",
        storage.root / "manifests" / ".tmp-x.json.99",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (old, old))
    fresh_leftover = storage.root / "chunks" / "cd" / ".tmp-fresh.1"
    fresh_leftover.parent.mkdir(parents=True, exist_ok=True)
    fresh_leftover.write_text("y")

    report = sweep_chunks(storage, grace_seconds=3600)
    dropped_chunks = {c["digest"] for e in dropped["files"] for c in e["chunks"]}
    kept_chunks = {c["digest"] for e in kept["files"] for c in e["chunks"]}
    young_chunks = {c["digest"] for e in young["files"] for c in e["chunks"]}
    remaining = {p.name for p in (storage.root / "chunks").rglob("*") if p.is_file()}
    assert kept_chunks <= remaining and young_chunks <= remaining
    assert not (dropped_chunks - kept_chunks - young_chunks) & remaining
    assert not any(path.exists() for path in leftovers) and fresh_leftover.exists()
    assert report.deleted == len(dropped_chunks - kept_chunks - young_chunks) + len(leftovers)
    assert report.bytes_freed > 0
    verify_checkpoint(storage, kept)
    # With no grace period the young, now unreferenced chunks go too.
    sweep_chunks(storage, grace_seconds=0)
    remaining = {p.name for p in (storage.root / "chunks").rglob("*") if p.is_file()}
    assert remaining == kept_chunks


def test_saving_touches_reused_chunks_so_a_sweep_keeps_them(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    state = {"w": torch.randn(4096)}
    first = _save(storage, state)
    delete_manifests(storage, [first["uuid"]])
    old = time.time() - 7200
    for path in (storage.root / "chunks").rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    second = _save(storage, state)  # same bytes: nothing new written, but every chunk touched
    assert second["new_bytes"] < 1024
    sweep_chunks(storage, grace_seconds=3600)
    verify_checkpoint(storage, second)


def test_the_skeleton_unpickler_refuses_code_execution_gadgets() -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    with pytest.raises(UnsafeCheckpointError, match=r"'posix\.system'"):
        _Unpickler(pickle.dumps(Evil()), {}).load()
    with pytest.raises(UnsafeCheckpointError, match=r"'pathlib\.Path\.write_text'"):
        _Unpickler(pickle.dumps(Path.write_text), {}).load()
    schedule = pickle.dumps(Schedule("x", "warmup"))  # type: ignore[arg-type]
    with pytest.raises(UnsafeCheckpointError):
        _Unpickler(schedule, {}).load()
    allowed = [f"{Schedule.__module__}.{Schedule.__qualname__}"]
    assert _Unpickler(schedule, {}, allowed_globals=allowed).load().name == "x"
