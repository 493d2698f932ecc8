"""Harness overhead per training step: plain PyTorch vs the Core API vs PyTorch Lightning.

The same tiny MLP (64 -> 64 -> 10, batch 32, SGD, one torch thread) trains 2,000 steps in each
variant, in one process, interleaved over a few rounds; every step is timed on its own.

  (a) plain PyTorch, no reporting
  (b) Core API off-cluster: report_training_metrics every step (JSON lines on local disk)
  (c) Core API on-cluster: the same against a stub master in another process (HTTP batches)
  (d) PyTorch Lightning: self.log() of the same metric every step (CSVLogger, log_every_n_steps=1)

For (b) and (c) it also prints the time the training thread spends inside each
report_training_metrics call (median, p99, max). Run: .venv/bin/python bench/harness_overhead.py
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

STEPS = 2_000
WARMUP = 200
BATCH = 32
ROUNDS = 5

STUB_MASTER = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def do_GET(self):  # the preemption long-poll: never preempt
            time.sleep(1)
            body = b'{"preempt": false}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(BATCH, 64, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator))
        for _ in range(STEPS)
    ]


def run_plain(batches: list[tuple[torch.Tensor, torch.Tensor]], steps: list[float]) -> None:
    model, optimizer = make_model()
    clock = time.perf_counter_ns
    last = clock()
    for step, (x, y) in enumerate(batches):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        now = clock()
        if step >= WARMUP:
            steps.append((now - last) / 1000)
        last = now


def run_core(
    batches: list[tuple[torch.Tensor, torch.Tensor]], steps: list[float], blocked: list[float]
) -> None:
    import stalwart.core

    model, optimizer = make_model()
    with tempfile.TemporaryDirectory() as local, stalwart.core.init(checkpoint_storage=local) as core_context:
        report = core_context.train.report_training_metrics
        clock = time.perf_counter_ns
        last = clock()
        for step, (x, y) in enumerate(batches):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            before = clock()
            report(steps_completed=step + 1, metrics={"loss": loss.item()})
            now = clock()
            if step >= WARMUP:
                blocked.append((now - before) / 1000)
                steps.append((now - last) / 1000)
            last = now


def run_lightning(batches: list[tuple[torch.Tensor, torch.Tensor]], steps: list[float]) -> None:
    import lightning as L  # noqa: N812  (Lightning's own spelling)
    from lightning.pytorch.loggers import CSVLogger

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, _ = make_model()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self.model(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(L.Callback):
        """Time from one batch's start to the next one's: the whole per-step cost of the loop."""

        last = 0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            now = time.perf_counter_ns()
            if batch_idx > WARMUP:
                steps.append((now - Clock.last) / 1000)
            Clock.last = now

    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            max_steps=STEPS,
            accelerator="cpu",
            devices=1,
            logger=CSVLogger(logs),
            log_every_n_steps=1,
            callbacks=[Clock()],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        # batch_size=None hands the ready-made batches through unchanged, as in the other loops.
        loader = torch.utils.data.DataLoader(batches, batch_size=None)  # type: ignore[arg-type]
        trainer.fit(Module(), train_dataloaders=loader)


def start_stub_master() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stub = subprocess.Popen([sys.executable, "-c", STUB_MASTER, str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return stub, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def on_cluster_env(master: str) -> dict[str, str]:
    return {
        "STALWART_MASTER": master,
        "STALWART_ALLOCATION_ID": "bench.1",
        "STALWART_ALLOCATION_TOKEN": "bench-token",
        "STALWART_TRIAL_ID": "1",
        "STALWART_EXPERIMENT_ID": "1",
        "STALWART_TRIAL_RUN_ID": "1",
        "STALWART_CHECKPOINT_STORAGE": '{"type": "directory", "container_path": "/tmp"}',
    }


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    batches = make_batches()
    try:
        import lightning  # noqa: F401

        have_lightning = True
        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    except ImportError:
        have_lightning = False
        sys.stderr.write(
            "note: lightning is not installed (pip install -r requirements-examples.txt); skipping (d)\n"
        )

    stub, master = start_stub_master()
    results: dict[str, list[float]] = {"plain": [], "core_local": [], "core_http": [], "lightning": []}
    blocked_local: list[float] = []
    blocked_http: list[float] = []
    saved_env = dict(os.environ)
    try:
        for _ in range(ROUNDS):
            run_plain(batches, results["plain"])
            run_core(batches, results["core_local"], blocked_local)
            os.environ.update(on_cluster_env(master))
            try:
                run_core(batches, results["core_http"], blocked_http)
            finally:
                os.environ.clear()
                os.environ.update(saved_env)
            if have_lightning:
                run_lightning(batches, results["lightning"])
    finally:
        stub.terminate()
        stub.wait()

    base = statistics.median(results["plain"])
    base_mean = statistics.fmean(results["plain"])
    labels = {
        "plain": "(a) plain PyTorch",
        "core_local": "(b) Core API, off-cluster",
        "core_http": "(c) Core API, stub master over HTTP",
        "lightning": "(d) PyTorch Lightning, self.log",
    }
    out = sys.stdout
    out.write(f"machine: {describe_machine()}\n")
    out.write(f"{STEPS} steps x {ROUNDS} rounds (first {WARMUP} of each not timed), batch {BATCH}\n")
    out.write("per-step times; the median resists other processes on the machine, the mean does not\n\n")
    header = f"{'variant':40} {'median us':>10} {'vs (a)':>7} {'+us':>7} {'mean us':>9} {'vs (a)':>7}\n"
    out.write(header)
    for key, label in labels.items():
        if not results[key]:
            out.write(f"{label:40} {'skipped':>10}\n")
            continue
        median, mean = statistics.median(results[key]), statistics.fmean(results[key])
        out.write(
            f"{label:40} {median:10.1f} {median / base:6.2f}x {median - base:7.1f} "
            f"{mean:9.1f} {mean / base_mean:6.2f}x\n"
        )
    out.write("\ntraining-thread time inside report_training_metrics (us):\n")
    for label, blocked in (("off-cluster", blocked_local), ("stub master", blocked_http)):
        out.write(
            f"  {label:12} median {statistics.median(blocked):6.2f}  p99 {percentile(blocked, 0.99):6.2f}  "
            f"max {max(blocked):8.1f}  ({len(blocked)} calls)\n"
        )


if __name__ == "__main__":
    main()
