"""Stalwart's side of bench/search.py: the Core API glue around objective.run_trial.

Timestamps taken here split a trial's time into runner start, imports, ``init``, the function and
closing; bench/search.py reads them back from ``timings_dir``.
"""

import time

started = time.time()

import os  # noqa: E402  (imports are timed: they are part of what a trial costs)
from pathlib import Path  # noqa: E402

from objective import record, run_trial  # noqa: E402  (first: it pins numpy to one thread)

import stalwart.core  # noqa: E402

imported = time.time()


def process_started(pid: int) -> float:
    """When process ``pid`` started, to the clock tick (psutil rounds the boot time to seconds)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


runner_started = process_started(os.getppid())
script_process_started = process_started(os.getpid())

with stalwart.core.init() as core:
    inited = time.time()
    hp = core.info.hparams
    seed = core.info.trial_seed

    def report(step: int, metrics: dict[str, float]) -> None:
        core.train.report_validation_metrics(steps_completed=step, metrics=metrics)

    def save(step: int, write: object) -> None:
        with core.checkpoint.store_path({"steps_completed": step}) as (path, _uuid):
            write(path)  # type: ignore[operator]

    timings = run_trial(hp, seed, report, save)
closed = time.time()
record(
    hp["timings_dir"],
    f"stalwart-{core.info.trial_id}",
    {
        **timings,
        "runner_started": runner_started,
        "script_process_started": script_process_started,
        "started": started,
        "imported": imported,
        "inited": inited,
        "closed": closed,
    },
)
