"""The training function bench/search.py runs on both systems, and the synthetic learning curve.

Only the glue differs: Stalwart's train.py and Ray Tune's trainable (bench/search_ray.py) each call
``run_trial`` with their own ``report`` and ``save`` callables, so the work, the metrics and the
checkpoint are byte for byte the same. Pure Python plus numpy, so it imports in either venv.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS thread, set before numpy loads: the same work on both systems, and two trials on two
# slots do not fight over cores (OpenBLAS threads spinning on a busy machine cost 10x here).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

# The learning-curve model: a floor that depends on the hyperparameters (minimum 0.1 + 8/512 at
# lr=1e-2, dropout=0.2, width=512) plus a power-law decay whose speed also depends on them. Dropout
# lowers the floor's dropout term but slows convergence, so curves cross, as real ones do.
BEST_LR, BEST_DROPOUT = 1e-2, 0.2
SPACE = {
    "lr": {"type": "log", "base": 10, "minval": -4, "maxval": 0},
    "width": {"type": "int", "minval": 16, "maxval": 512},
    "dropout": {"type": "double", "minval": 0.0, "maxval": 0.5},
}


def floor(hp: dict[str, Any]) -> float:
    """Where the curve converges to; its minimum over SPACE is 0.1 + 8/512 = 0.115625."""
    x = math.log10(hp["lr"]) - math.log10(BEST_LR)
    dropout, width = float(hp["dropout"]), float(hp["width"])
    return 0.1 + 0.08 * x * x + 0.5 * (dropout - BEST_DROPOUT) ** 2 + 8.0 / width


def curve(hp: dict[str, Any], t: float) -> float:
    """The noiseless loss after ``t`` steps of training."""
    rate = 0.5 * math.sqrt(float(hp["lr"]) / BEST_LR) / (1.0 + 2.0 * float(hp["dropout"]))
    return floor(hp) + 2.0 / math.pow(1.0 + t * rate, 0.7)


def noisy(hp: dict[str, Any], t: float, seed: int, sigma: float = 0.01) -> float:
    """``curve`` plus Gaussian noise fixed by (seed, t): reruns see the same validation values."""
    rng = np.random.default_rng([seed % 2**32, int(t)])
    return curve(hp, t) + float(rng.normal(0.0, sigma))


def work(iterations: int, seed: int) -> float:
    """A fixed amount of CPU work (single-threaded matmuls): the same on every run and system."""
    rng = np.random.default_rng(seed % 2**32)
    a = rng.standard_normal((128, 128))
    w = rng.standard_normal((128, 128)) / 128.0
    for _ in range(iterations):
        a = np.tanh(a @ w)
    return float(a[0, 0])


def run_trial(
    hp: dict[str, Any],
    seed: int,
    report: Callable[[int, dict[str, float]], None],
    save: Callable[[int, Callable[[Path], None]], None],
) -> dict[str, float]:
    """The function both systems run: ``validations`` rounds of work, each reported, then one
    checkpoint. Returns its own run time (entry to return) and the time spent in ``work`` alone."""
    entered = time.time()
    worked = 0.0
    steps_per_validation = int(hp.get("steps_per_validation", 10))
    step = 0
    for _ in range(int(hp["validations"])):
        started = time.perf_counter()
        work(int(hp["work_iterations"]), seed + step)
        worked += time.perf_counter() - started
        step += steps_per_validation
        report(step, {"loss": noisy(hp, step, seed), "batches": float(step)})

    def write(path: Path) -> None:
        (path / "state.json").write_text(json.dumps({"hp": hp, "steps": step}))

    save(step, write)
    returned = time.time()
    return {"entered": entered, "returned": returned, "run_s": returned - entered, "work_s": worked}


def record(directory: str, name: str, timings: dict[str, Any]) -> None:
    """Leave one trial's timings where the benchmark collects them (one small file per trial)."""
    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps(timings))
    os.chmod(path, 0o666)
