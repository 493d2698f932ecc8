"""The same hyperparameter search on Stalwart and on Ray Tune, and ASHA against random search.

Part 1 (a real cluster): ``--trials`` trials of bench/search_trial/objective.run_trial (10 rounds
of fixed single-threaded numpy work, each reported as a validation, then one small checkpoint),
random search over the same space, ``--slots`` trials at once (each trial takes one slot / one CPU;
no searcher cap unless ``--cap``). Stalwart runs it on a local cluster
(`stalwart deploy local up`: master, Celery worker, one agent with ``--slots`` artificial slots);
Ray Tune (installed by this script only, into bench/.ray-venv) runs it with its function API in a
subprocess. Per system: wall time, trials per minute and the overhead per trial,

    overhead = wall * slots / trials - mean own run time

where the own run time is measured inside the function, from entry to return (it includes the
report and checkpoint calls; "over work" subtracts only the numpy work instead). Wall time starts
at submission (context upload, Tuner built) with the cluster / Ray already started.

Part 2 (in-process, no cluster): the master's ``adaptive_asha`` and ``random`` searchers, which
are pure code, driven through their protocol on a synthetic learning curve (bench/search_asha.py).

Run: .venv/bin/python bench/search.py [--trials 64] [--slots 2] [--skip-ray] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from recovery import Cluster, _wait  # the same local-cluster driver as the recovery benchmark
from search_asha import compare

from stalwart.context import build_context
from stalwart_master.local.process import free_port

BENCH = Path(__file__).parent
TRIAL = BENCH / "search_trial"
sys.path.insert(0, str(TRIAL))
from objective import SPACE, run_trial  # noqa: E402

RAY_VENV = BENCH / ".ray-venv"
RAY_PYTHON = RAY_VENV / "bin" / "python"
# One BLAS thread in every trial on both systems: the same work, and no oversubscription of slots.
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TERMINAL = {"COMPLETED", "CANCELED", "ERROR", "DELETED"}


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _timings(directory: Path, prefix: str) -> list[dict[str, float]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob(f"{prefix}-*.json"))]


def reference_run(constants: dict[str, Any]) -> float:
    """The function's run time alone in this process, no platform around it (median of 3)."""
    hp = {"lr": 1e-2, "width": 128, "dropout": 0.2, **constants}

    def save(step: int, write: Any) -> None:
        with tempfile.TemporaryDirectory() as directory:
            write(Path(directory))

    return float(
        statistics.median(run_trial(hp, seed, lambda s, m: None, save)["run_s"] for seed in range(3))
    )


def _summary(
    name: str, wall: float, trials: int, slots: int, timings: list[dict[str, float]], reference: float
) -> dict[str, Any]:
    slot_s = wall * slots / trials
    run = statistics.mean(t["run_s"] for t in timings)
    work = statistics.mean(t["work_s"] for t in timings)
    return {
        "system": name,
        "wall_s": wall,
        "trials": trials,
        "trials_timed": len(timings),
        "trials_per_min": trials / wall * 60,
        "slot_s_per_trial": slot_s,
        "mean_run_s": run,
        "mean_work_s": work,
        "overhead_s": slot_s - run,
        "overhead_over_work_s": slot_s - work,
        "overhead_over_reference_s": slot_s - reference,
    }


def run_stalwart(args: argparse.Namespace, constants: dict[str, Any], timings: Path) -> dict[str, Any]:
    """The search on a fresh local cluster; its wall time runs from context upload to COMPLETED."""
    data = Path(tempfile.mkdtemp(prefix="stalwart-search-"))
    # Trials inherit the agent's environment (environment.environment_variables is not applied to
    # trials yet), so the thread pins go on the cluster; objective.py also sets them itself.
    cluster = Cluster(data, free_port(), {**os.environ, **THREADS})
    began = time.time()
    cluster.deploy("up", "--port", str(cluster.port), "--agents", "1", "--artificial-slots", str(args.slots))
    try:
        api = cluster.api()
        _wait(lambda: len(api.get("/api/v1/slots").json()) >= args.slots, 60, "the agent's slots")
        up_s = time.time() - began
        config = {
            "name": "search-bench",
            "entrypoint": "python3 train.py",
            "hyperparameters": {**SPACE, **constants},
            "searcher": {
                "name": "random",
                "metric": "loss",
                "max_trials": args.trials,
                "max_concurrent_trials": args.cap,
            },
            "max_restarts": 0,
        }
        submitted = time.time()
        sha = api.post(
            "/api/v1/contexts", content=build_context(TRIAL), headers={"Content-Type": "application/gzip"}
        ).json()["sha256"]
        response = api.post("/api/v1/experiments", json={"config": yaml.safe_dump(config), "context": sha})
        response.raise_for_status()
        experiment_id = response.json()["id"]
        experiment = _wait(
            lambda: (e := api.get(f"/api/v1/experiments/{experiment_id}").json())["state"] in TERMINAL and e,
            args.trials * 120,
            "the experiment to end",
            interval=0.1,
        )
        ended = _ts(experiment["ended_at"]) if experiment.get("ended_at") else time.time()
        trials = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
        runs = [run for t in trials for run in api.get(f"/api/v1/trials/{t['id']}/runs").json()]
        checkpoints = api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
        if experiment["state"] != "COMPLETED" or any(t["state"] != "COMPLETED" for t in trials):
            raise RuntimeError(f"experiment {experiment_id} ended {experiment['state']}; see {data}/logs")
    finally:
        cluster.deploy("down")
    rows = _timings(timings, "stalwart")
    summary = _summary("stalwart", ended - submitted, len(trials), args.slots, rows, args.reference)
    in_trial = {
        "runner (python start, harness import, trial info, context fetch+extract)": [
            t["script_process_started"] - t["runner_started"] for t in rows
        ],
        "script's python start": [t["started"] - t["script_process_started"] for t in rows],
        "script imports (numpy, stalwart.core)": [t["imported"] - t["started"] for t in rows],
        "core.init()": [t["entered"] - t["imported"] for t in rows],
        "the function (entry to return)": [t["run_s"] for t in rows],
        "closing the Core API (flush)": [t["closed"] - t["returned"] for t in rows],
    }
    stages = {k: statistics.mean(v) for k, v in in_trial.items()}
    stages["between trials (all of the below)"] = summary["slot_s_per_trial"] - statistics.mean(
        t["closed"] - t["runner_started"] for t in rows
    )
    # The master's records split the gap: a run ends when the agent's TERMINATED report arrives, and
    # each end frees the slot the next runner (in start order, after the first `slots`) fills.
    ends = sorted(_ts(r["ended_at"]) for r in runs)
    starts = sorted(t["runner_started"] for t in rows)[args.slots :]
    closes = sorted(t["closed"] for t in rows)
    stages["  script done -> master has the run's end (runner exit, log flush, report)"] = statistics.mean(
        e - c for e, c in zip(ends, closes, strict=True)
    )
    stages["  run end -> next runner starts (trial close, scheduling, long poll, launch)"] = statistics.mean(
        s - e for s, e in zip(starts, ends, strict=False)
    )
    summary.update(
        cluster_up_s=up_s,
        first_start_s=min(t["runner_started"] for t in rows) - submitted,
        tail_s=ended - max(t["closed"] for t in rows),
        checkpoints=len(checkpoints),
        stages=stages,
    )
    return summary


def ensure_ray() -> None:
    """Ray Tune lives in its own venv, created on first use; the project's venv never gets it."""
    probe = [str(RAY_PYTHON), "-c", "import ray.tune, numpy"]
    if RAY_PYTHON.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    print(f"installing ray[tune] into {RAY_VENV} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(RAY_VENV)], check=True)
    # The numpy of this venv, so both systems do the very same work.
    pip = [str(RAY_PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "ray[tune]", f"numpy=={np.__version__}"], check=True)


def run_ray(args: argparse.Namespace, constants: dict[str, Any], timings: Path) -> dict[str, Any]:
    ensure_ray()
    storage = Path(tempfile.mkdtemp(prefix="ray-search-"))
    settings = {
        "slots": args.slots,
        "trials": args.trials,
        "cap": args.cap,
        "storage": str(storage),
        "constants": constants,
    }
    env = {**os.environ, **THREADS, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [str(RAY_PYTHON), str(BENCH / "search_ray.py"), json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        timeout=args.trials * 120 + 300,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the Ray Tune run failed:\n{out.stderr[-4000:]}")
    result = json.loads(lines[-1])
    if result["errors"] or result["finished_with_checkpoint"] != args.trials:
        raise RuntimeError(f"Ray Tune trials failed: {result}")
    rows = _timings(timings, "ray")
    summary = _summary("ray", result["wall_s"], result["trials"], args.slots, rows, args.reference)
    summary.update(
        ray_version=result["version"],
        ray_init_s=result["init_s"],
        first_start_s=min(t["entered"] for t in rows) - result["search_started"],
        tail_s=result["search_started"] + result["wall_s"] - max(t["returned"] for t in rows),
        checkpoints=result["finished_with_checkpoint"],
    )
    return summary


def print_overhead(systems: list[dict[str, Any]]) -> None:
    names = [s["system"] for s in systems]
    header = f"{'':30s}" + "".join(f"{n:>12s}" for n in names)
    print(header + ("     stalwart/ray" if len(systems) == 2 else ""))
    for key, label in (
        ("wall_s", "wall time (s)"),
        ("trials_per_min", "trials per minute"),
        ("slot_s_per_trial", "slot time per trial (s)"),
        ("mean_run_s", "own run time per trial (s)"),
        ("mean_work_s", "  of which numpy work (s)"),
        ("overhead_s", "overhead per trial (s)"),
        ("overhead_over_work_s", "overhead over work (s)"),
        ("overhead_over_reference_s", "overhead over reference (s)"),
        ("first_start_s", "submit -> first trial (s)"),
        ("tail_s", "last trial -> search done (s)"),
    ):
        row = f"{label:30s}" + "".join(f"{s[key]:12.2f}" for s in systems)
        if len(systems) == 2 and systems[1][key]:
            row += f"{systems[0][key] / systems[1][key]:17.2f}"
        print(row)
    for s in systems:
        if "stages" in s:
            print("\nStalwart, where a trial's slot time goes (mean per trial, s):")
            for stage, seconds in s["stages"].items():
                print(f"  {seconds:7.3f}  {stage}")
            print(f"  cluster start (not in the wall time): {s['cluster_up_s']:.1f} s")
        if "ray_init_s" in s:
            print(f"Ray {s['ray_version']}: ray.init (not in the wall time) {s['ray_init_s']:.1f} s")


def print_asha(result: dict[str, Any]) -> None:
    print(
        f"\nASHA quality (in-process searchers, {result['seeds']} seeds, max_time {result['max_time']}, "
        f"validation every {result['period']} steps; known optimum {result['optimum']:.4f}):"
    )
    print(
        f"  random search, {result['random_trials']} trials: {result['random_steps']} steps, "
        f"mean best {result['random_best']:.4f}"
    )
    for row in result["asha"]:
        print(
            f"  adaptive_asha, {row['trials']} trials: {row['steps']} steps "
            f"({row['steps_ratio']:.2f}x fewer), "
            f"mean best {row['best']:.4f} ({row['gap']:+.1%} vs random), "
            f"median rank of its pick among random's trials: top {row['median_quantile']:.1%}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--cap", type=int, default=0, help="max_concurrent_trials on both systems (0: only the slots limit)"
    )
    parser.add_argument("--validations", type=int, default=10)
    parser.add_argument("--work-iterations", type=int, default=1000, help="128x128 matmuls per validation")
    parser.add_argument("--asha-seeds", type=int, default=10)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-cluster", action="store_true", help="only the in-process ASHA part")
    parser.add_argument("--quick", action="store_true", help="a small run to smoke-test the script")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.work_iterations, args.asha_seeds = min(args.trials, 6), 200, 3
    result: dict[str, Any] = {"trials": args.trials, "slots": args.slots, "cpus": os.cpu_count()}
    if not args.skip_cluster:
        timings = Path(tempfile.mkdtemp(prefix="search-timings-"))
        timings.chmod(0o777)  # trials may run as another user (stalwart-trial)
        constants = {
            "validations": args.validations,
            "work_iterations": args.work_iterations,
            "timings_dir": str(timings),
        }
        args.reference = reference_run({**constants, "timings_dir": ""})
        result["reference_run_s"] = args.reference
        systems = [run_stalwart(args, constants, timings)]
        if not args.skip_ray:
            systems.append(run_ray(args, constants, timings))
        result["systems"] = systems
        if len(systems) == 2:
            result["overhead_ratio"] = systems[0]["overhead_s"] / systems[1]["overhead_s"]
            result["overhead_over_reference_ratio"] = (
                systems[0]["overhead_over_reference_s"] / systems[1]["overhead_over_reference_s"]
            )
        if not args.json:
            print(f"reference: the function alone in this process takes {args.reference:.2f} s\n")
            print_overhead(systems)
    result["asha"] = compare(args.asha_seeds, 64, 256, 4, 4, asha_trials=[64, 128])
    if not args.json:
        print_asha(result["asha"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
