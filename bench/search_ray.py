"""Ray Tune's side of bench/search.py; runs inside bench/.ray-venv, never in the project's venv.

Reads its settings as JSON from argv[1], runs the search with Ray Tune's function API (random
search over the same space on ``slots`` CPUs, one CPU per trial, so ``slots`` run at once) and prints one
JSON line: Ray's start time, the search's wall time and how many trials finished with a checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

TRIAL_DIR = str(Path(__file__).parent / "search_trial")
sys.path.insert(0, TRIAL_DIR)
# Ray's worker processes inherit the environment of the node ray.init starts: they import it too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TRIAL_DIR, os.environ.get("PYTHONPATH")]))

import ray  # noqa: E402
from objective import record, run_trial  # noqa: E402
from ray import tune  # noqa: E402


def trainable(config: dict[str, Any]) -> None:
    """The same function body as Stalwart's train.py, with Ray Tune's report and checkpoint."""
    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    seed = zlib.crc32(trial_id.encode())
    last: dict[str, float] = {}

    def report(step: int, metrics: dict[str, float]) -> None:
        last.update(metrics)
        tune.report(metrics)

    def save(step: int, write: Any) -> None:
        # Ray attaches a checkpoint to a report: the last metrics go again, with the checkpoint.
        with tempfile.TemporaryDirectory() as directory:
            write(Path(directory))
            tune.report(last, checkpoint=tune.Checkpoint.from_directory(directory))

    timings = run_trial(config, seed, report, save)
    record(config["timings_dir"], f"ray-{trial_id}", {**timings, "started": started})


def main() -> int:
    settings = json.loads(sys.argv[1])
    slots, trials = int(settings["slots"]), int(settings["trials"])
    space = {
        "lr": tune.loguniform(1e-4, 1.0),
        "width": tune.randint(16, 513),  # upper bound exclusive: 16..512 like Stalwart's int range
        "dropout": tune.uniform(0.0, 0.5),
        **settings["constants"],
    }
    began = time.time()
    ray.init(
        num_cpus=slots,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024**2,
    )
    ready = time.time()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=trials,
            max_concurrent_trials=int(settings["cap"]) or None,  # else the CPUs alone limit it
            metric="loss",
            mode="min",
        ),
        run_config=tune.RunConfig(name="search-bench", storage_path=settings["storage"], verbose=0),
    )
    results = tuner.fit()
    ended = time.time()
    finished = sum(1 for r in results if r.error is None and r.checkpoint is not None)
    ray.shutdown()
    print(
        json.dumps(
            {
                "version": ray.__version__,
                "init_s": ready - began,
                "search_started": ready,
                "wall_s": ended - ready,
                "trials": len(results),
                "finished_with_checkpoint": finished,
                "errors": len(results.errors),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
