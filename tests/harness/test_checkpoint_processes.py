"""The checkpoint engine across real processes and real failures: kill -9 mid-save, a full disk,
and a two-rank sharded save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid as uuid_lib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stalwart.checkpoint import (
    CheckpointWriter,
    load_state,
    open_storage,
    read_manifest,
    sweep_chunks,
    verify_checkpoint,
)
from stalwart.core import CheckpointError, CheckpointNotFound

pytestmark = pytest.mark.integration

# A child that commits checkpoint A, then starts B and stops for good inside B's sync(): every
# chunk of B is written, its manifest is not.
_CRASHING_CHILD = """
import sys, threading, torch
from stalwart.checkpoint import CheckpointWriter
from stalwart.checkpoint.fs import FilesystemStorage

class HangingSync(FilesystemStorage):
    hang = False
    def sync(self):
        super().sync()
        if self.hang:
            print("syncing", flush=True)
            threading.Event().wait()

storage = HangingSync(sys.argv[1])
writer = CheckpointWriter(storage, chunk_size=64 * 1024)
first = writer.save_state({"w": torch.arange(100_000, dtype=torch.float32), "step": 1}, steps_completed=1)
writer.wait()
print("A", first, flush=True)
storage.hang = True
second = writer.save_state({"w": torch.randn(100_000), "step": 2}, steps_completed=2)
print("B", second, flush=True)
writer.wait()
"""


def _readline(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    assert line or time.monotonic() < deadline, "child said nothing"
    return line.strip()


def test_kill_9_mid_save_leaves_no_manifest_and_the_previous_checkpoint_loads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_CHILD, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        tag_a, first = _readline(proc).split()
        tag_b, second = _readline(proc).split()
        assert (tag_a, tag_b) == ("A", "B")
        assert _readline(proc) == "syncing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    storage = open_storage({"type": "directory", "container_path": str(root)})
    assert not (root / "manifests" / f"{second}.json").exists()
    with pytest.raises(CheckpointNotFound):
        read_manifest(storage, second)
    chunks_before = sum(1 for p in (root / "chunks").rglob("*") if p.is_file())
    manifest = read_manifest(storage, first)
    assert chunks_before > sum(len(entry["chunks"]) for entry in manifest["files"])  # B's orphans
    verify_checkpoint(storage, manifest)
    state = load_state(storage, manifest)
    assert torch.equal(state["w"], torch.arange(100_000, dtype=torch.float32)) and state["step"] == 1
    # GC removes what the killed save left behind and nothing of A.
    sweep_chunks(storage, grace_seconds=0)
    remaining = sum(1 for p in (root / "chunks").rglob("*") if p.is_file())
    assert remaining == len({c["digest"] for e in manifest["files"] for c in e["chunks"]})
    verify_checkpoint(storage, manifest)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill a disk: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_the_save_and_keeps_the_earlier_checkpoint(small_tmpfs: Path) -> None:
    storage = open_storage({"type": "directory", "container_path": str(small_tmpfs)})
    writer = CheckpointWriter(storage, chunk_size=1 << 20)
    small = {"w": torch.randn(256 * 1024)}  # 1 MiB
    first = writer.save_state(small, steps_completed=1)
    writer.wait()
    big = {"w": torch.randn(8 * 1024 * 1024)}  # 32 MiB of incompressible bytes on a 16 MiB disk
    second = writer.save_state(big, steps_completed=2)
    with pytest.raises(CheckpointError, match=rf"checkpoint {second}: .*no space left on device"):
        writer.wait()
    writer.close()
    assert not (small_tmpfs / "manifests" / f"{second}.json").exists()
    manifest = read_manifest(storage, first)
    verify_checkpoint(storage, manifest)
    assert torch.equal(load_state(storage, manifest)["w"], small["w"])
    assert not list(small_tmpfs.rglob(".tmp-*"))  # a failed put removes its temporary file


_RANK_CHILD = """
import json, sys, torch
import stalwart.core
from stalwart.core import DistributedContext

dist = DistributedContext.from_torch_distributed()
with stalwart.core.init(distributed=dist, checkpoint_storage=sys.argv[1]) as core:
    shared = torch.arange(50_000, dtype=torch.float32)  # the same on both ranks: stored once
    uuids = []
    for step in (1, 2):
        mine = torch.full((1000,), float(dist.rank * 10 + step))
        state = {"rank": dist.rank, "mine": mine, "shared": shared}
        uuids.append(core.checkpoint.save_state(state, steps_completed=step))
    core.checkpoint.wait()
    loaded = core.checkpoint.load_state(uuids[-1])
    assert loaded["rank"] == dist.rank and float(loaded["mine"][0]) == dist.rank * 10 + 2
print(json.dumps(uuids), flush=True)
"""


def test_two_ranks_save_one_sharded_checkpoint_with_the_same_uuids(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    env.update(
        WORLD_SIZE="2", STALWART_RUN_KEY=str(uuid_lib.uuid4()), STALWART_LOCAL_DIR=str(tmp_path / "local")
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK_CHILD, str(tmp_path / "ckpt")],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    uuids = [json.loads(out) for out, _err in outputs]
    assert uuids[0] == uuids[1] and len(set(uuids[0])) == 2

    storage = open_storage({"type": "directory", "container_path": str(tmp_path / "ckpt" / "checkpoints")})
    manifest = read_manifest(storage, uuids[0][1])
    assert manifest["world_size"] == 2 and manifest["parent_uuid"] is None  # a fresh run restored nothing
    assert {entry["rank"] for entry in manifest["files"]} == {0, 1}
    assert {entry["path"] for entry in manifest["files"]} >= {"state/rank-0/mine", "state/rank-1/mine"}
    assert not list((tmp_path / "ckpt" / "checkpoints").glob("shards/*/*"))  # merged, then removed
    verify_checkpoint(storage, manifest)
    for rank in (0, 1):
        state = load_state(storage, manifest, rank=rank)
        assert state["rank"] == rank and float(state["mine"][0]) == rank * 10 + 2
    shared = next(e for e in manifest["files"] if e["path"] == "state/rank-1/shared")
    assert all(chunk["stored"] for chunk in shared["chunks"])
    assert manifest["stored_size"] < manifest["size"]  # the shared tensor is stored once
