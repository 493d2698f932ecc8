"""A trial for the agent's fault-tolerance tests: one numbered line and metric per step, a
checkpoint and exit 0 when preempted, and a resume from that checkpoint in the next run."""

import sys
import time

import stalwart.core

with stalwart.core.init() as core:
    hparams = core.info.hparams if core.info else {}
    steps, pause = int(hparams.get("steps", 10)), float(hparams.get("sleep", 0.2))
    # Without reports the trial never notices that the master ended its run (its token revoked).
    report = bool(hparams.get("report", True))
    restored = core.checkpoint.load_latest_state()
    first = restored[1]["step"] + 1 if restored else 1
    print(f"starting at step {first}", flush=True)
    for step in range(first, steps + 1):
        print(f"line {step}", flush=True)
        if report:
            core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
        time.sleep(pause)
        if core.preempt.should_preempt():
            core.checkpoint.save_state({"step": step}, steps_completed=step)
            print(f"preempted after step {step}", flush=True)
            sys.exit(0)
    if report:
        core.train.report_validation_metrics(steps_completed=steps, metrics={"loss": 1.0 / steps})
