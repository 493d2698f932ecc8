"""Checkpoint cost: Stalwart's ``save_state`` vs ``torch.save``, measured in one run on one disk.

For a state dict of float32 tensors (1 GiB by default; ``--sizes 1,4`` adds a 4 GiB run where
memory allows) it prints, each against a baseline measured in the same run:

  disk         sequential write bandwidth of the target disk (8 MiB writes, then fsync)
  torch.save   torch.save of the state + fsync (the time a synchronous checkpoint blocks training)
  stall        how long save_state blocks the caller (snapshot into host buffers), first and later
  persist      background write throughput (chunk, hash, write, fsync, commit) vs disk bandwidth
  incremental  bytes written by a checkpoint where 10 % of the tensors changed, vs the first
  restore      load_state (reads and verifies every chunk) vs torch.load, both from page cache
  steps        mean training-step time while a persist runs in the background vs without
  memory       peak resident memory of the process, and the snapshot buffers on top of the state

With ``--device cuda`` the state lives on the GPU and is snapshotted into pinned host buffers.
Run: .venv/bin/python bench/checkpoint.py [--sizes 1,4] [--device cuda] [--dir PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

from stalwart.checkpoint import CheckpointWriter, load_state, open_storage, read_manifest

TENSOR_MIB = 16  # tensors of 16 MiB: a model's big matrices, many of them
CHANGED = 0.10


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_bandwidth(directory: Path, nbytes: int) -> float:
    """Bytes/s of a plain sequential write of nbytes plus fsync: the ceiling any persist can reach."""
    block = os.urandom(8 << 20)
    path = directory / "disk-probe.bin"
    started = time.perf_counter()
    with path.open("wb", buffering=0) as handle:
        written = 0
        while written < nbytes:
            written += handle.write(block)
        os.fsync(handle.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return written / elapsed


def make_state(nbytes: int, device: str) -> dict[str, Any]:
    count = max(1, nbytes // (TENSOR_MIB << 20))
    numel = (TENSOR_MIB << 20) // 4
    layers = {f"layer{i}.weight": torch.randn(numel, device=device) for i in range(count)}
    return {"model": layers, "step": 0, "note": "bench"}


def change_fraction(state: dict[str, Any], fraction: float, salt: float) -> None:
    layers = list(state["model"].values())
    for tensor in layers[: max(1, round(len(layers) * fraction))]:
        tensor.add_(salt)


def state_bytes(state: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in state["model"].values())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class PeakRss:
    """Samples the process's resident memory every 5 ms; torch allocations bypass tracemalloc."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def training_step_fn(device: str) -> Any:
    """A small MLP training step: stands in for the model's compute while a checkpoint persists."""
    torch.manual_seed(0)
    width = 2048 if device == "cuda" else 512
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(256, width, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
        _sync(device)

    return step


def timed_steps(step: Any, *, count: int | None = None, until: threading.Event | None = None) -> list[float]:
    times: list[float] = []
    while (count is not None and len(times) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def run_size(gib: float, device: str, root: Path, threads: int | None) -> dict[str, Any]:
    nbytes = int(gib * (1 << 30))
    state = make_state(nbytes, device)
    size = state_bytes(state)
    out: dict[str, Any] = {"gib": size / (1 << 30), "device": device, "threads": threads}
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=root))
    try:
        out["disk_bytes_per_s"] = disk_bandwidth(work, size)

        # Baseline: the synchronous checkpoint most training scripts do.
        torch_file = work / "state.pt"
        _sync(device)
        started = time.perf_counter()
        torch.save(state, torch_file)
        _fsync(torch_file)
        out["torch_save_s"] = time.perf_counter() - started

        storage = open_storage({"type": "directory", "container_path": str(work / "store")})
        writer = CheckpointWriter(storage, threads=threads)
        stalls: list[float] = []
        persists: list[float] = []
        new_bytes: list[int] = []
        uuids: list[str] = []
        rss_before = psutil.Process().memory_info().rss
        with PeakRss() as peak:
            for index in range(4):
                if index:
                    change_fraction(state, CHANGED, salt=float(index))
                _sync(device)
                started = time.perf_counter()
                uuid = writer.save_state(state, steps_completed=index)
                stalled = time.perf_counter() - started
                writer.wait()
                persists.append(time.perf_counter() - started - stalled)
                stalls.append(stalled)
                uuids.append(uuid)
                new_bytes.append(int(read_manifest(storage, uuid)["new_bytes"]))
        writer.close()
        # A fresh writer whose buffers prepare() allocated beforehand (the trainer helper does this
        # after its first step): its first save should cost what a later one does.
        writer = CheckpointWriter(storage, threads=threads)
        started = time.perf_counter()
        writer.prepare(state)
        out["prepare_s"] = time.perf_counter() - started
        _sync(device)
        started = time.perf_counter()
        writer.save_state(state, steps_completed=50)
        out["stall_first_prepared_s"] = time.perf_counter() - started
        writer.wait()
        out["stall_first_s"] = stalls[0]
        out["stall_later_s"] = statistics.median(stalls[1:])
        out["persist_first_s"] = persists[0]
        out["persist_bytes_per_s"] = size / persists[0]
        out["first_new_bytes"] = new_bytes[0]
        out["incremental_new_bytes"] = statistics.median(new_bytes[1:])
        out["peak_rss_bytes"] = peak.peak
        out["snapshot_overhead_bytes"] = peak.peak - rss_before

        # Restore: both read from page cache (both files were just written).
        started = time.perf_counter()
        torch.load(torch_file, map_location=device)
        _sync(device)
        out["torch_load_s"] = time.perf_counter() - started
        manifest = read_manifest(storage, uuids[-1])
        started = time.perf_counter()
        restored = load_state(storage, manifest, map_location=device)
        _sync(device)
        out["restore_verify_s"] = time.perf_counter() - started
        assert all(torch.equal(restored["model"][k], v) for k, v in state["model"].items())
        del restored

        # Training steps with and without a full (all tensors changed) persist in the background.
        step = training_step_fn(device)
        timed_steps(step, count=20)
        quiet = timed_steps(step, count=200)
        change_fraction(state, 1.0, salt=10.0)
        done = threading.Event()
        uuid = writer.save_state(state, steps_completed=99)
        waiter = threading.Thread(target=lambda: (writer.wait(), done.set()))
        waiter.start()
        busy = timed_steps(step, until=done)
        waiter.join()
        out["step_quiet_s"] = statistics.mean(quiet)
        out["step_during_persist_s"] = statistics.mean(busy)
        out["steps_during_persist"] = len(busy)
        writer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def report(r: dict[str, Any]) -> None:
    mb = 1 << 20
    ts = r["torch_save_s"]
    threads = r["threads"] or "default"
    print(f"\n== {r['gib']:.2f} GiB of float32 tensors on {r['device']}, writer threads: {threads} ==")
    print(f"disk sequential write + fsync     {r['disk_bytes_per_s'] / mb:9.1f} MiB/s")
    print(f"torch.save + fsync                {ts:9.3f} s")
    later = r["stall_later_s"]
    for label, key in (
        ("save_state stall, first (cold)  ", "stall_first_s"),
        ("save_state stall, first prepared", "stall_first_prepared_s"),
        ("save_state stall, later (median)", "stall_later_s"),
    ):
        print(
            f"{label}  {r[key]:9.3f} s   {r[key] / ts:6.3f}x torch.save   {r[key] / later:5.2f}x a later save"
        )
    print(f"prepare() beforehand              {r['prepare_s']:9.3f} s")
    print(
        f"background persist                {r['persist_bytes_per_s'] / mb:9.1f} MiB/s "
        f"{r['persist_bytes_per_s'] / r['disk_bytes_per_s']:6.1%} of disk ({r['persist_first_s']:.3f} s)"
    )
    print(f"bytes written, first checkpoint   {r['first_new_bytes'] / mb:9.1f} MiB")
    print(
        f"bytes written, 10 % changed       {r['incremental_new_bytes'] / mb:9.1f} MiB "
        f"{r['incremental_new_bytes'] / r['first_new_bytes']:6.1%} of the first"
    )
    print(f"torch.load                        {r['torch_load_s']:9.3f} s")
    print(
        f"load_state (verify every chunk)   {r['restore_verify_s']:9.3f} s   "
        f"{r['torch_load_s'] / r['restore_verify_s']:5.2f}x torch.load's speed"
    )
    print(f"training step, quiet              {r['step_quiet_s'] * 1e3:9.3f} ms")
    print(
        f"training step, while persisting   {r['step_during_persist_s'] * 1e3:9.3f} ms   "
        f"{r['step_during_persist_s'] / r['step_quiet_s']:5.2f}x ({r['steps_during_persist']} steps)"
    )
    print(
        f"peak RSS                          {r['peak_rss_bytes'] / mb:9.1f} MiB "
        f"(snapshot buffers etc. {r['snapshot_overhead_bytes'] / mb:.1f} MiB over the state)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1", help="GiB per run, comma-separated (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="disk to measure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--threads", type=int, help="writer threads (default: the engine's)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    print(
        f"{platform.node()} {platform.processor() or platform.machine()} cpus={os.cpu_count()} "
        f"torch {torch.__version__} python {platform.python_version()} dir={args.dir}"
    )
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    results = []
    for gib in (float(s) for s in args.sizes.split(",")):
        need = gib * (1 << 30) * 3.2  # state + snapshot buffers + torch.load's copy
        if psutil.virtual_memory().available < need:
            print(
                f"\n== {gib} GiB skipped: {psutil.virtual_memory().available / (1 << 30):.1f} GiB available,"
                f" about {need / (1 << 30):.1f} GiB needed =="
            )
            continue
        result = run_size(gib, args.device, args.dir, args.threads)
        report(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
