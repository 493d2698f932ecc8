"""A quick trial for scheduler tests: numbered log lines, a metric per step, optional long sleep."""

import logging
import sys
import time

import stalwart.core

logging.basicConfig(level=logging.INFO)

with stalwart.core.init() as core:
    hparams = core.info.hparams if core.info else {}
    steps = int(hparams.get("steps", 5))
    pause = float(hparams.get("sleep", 0.2))
    for step in range(1, steps + 1):
        print(f"line {step}", flush=True)
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
        time.sleep(pause)
    core.train.report_validation_metrics(steps_completed=steps, metrics={"loss": 1.0 / steps})
    sys.exit(int(hparams.get("exit_code", 0)))
