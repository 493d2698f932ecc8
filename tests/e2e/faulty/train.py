"""A scripted trial for fault-tolerance tests, driven by its hyperparameters.

steps: report training metrics for steps 1..steps (``sleep`` seconds apart), resuming after the
step of the checkpoint it restores. checkpoint_every: checkpoint every N steps (0: never);
checkpoint_at: also at that step.
fail_run / fail_at: run ``fail_run`` exits 1 right after step ``fail_at``. hang_from: from that step
on, sleep forever without ever asking about preemption. Otherwise a preemption request is answered
as it should be: checkpoint, then exit 0.
"""

import logging
import sys
import time

import stalwart.core

logging.basicConfig(level=logging.INFO)

with stalwart.core.init() as core:
    hp = core.info.hparams
    run = core.info.run_id or 1
    restored = core.checkpoint.load_latest_state()
    step = int(restored[1]["step"]) if restored else 0
    print(f"run {run} starts after step {step}", flush=True)
    every = int(hp.get("checkpoint_every", 0))
    while step < int(hp.get("steps", 10)):
        step += 1
        time.sleep(float(hp.get("sleep", 0.05)))
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step, "run": run})
        if (every and step % every == 0) or step == int(hp.get("checkpoint_at", 0)):
            core.checkpoint.save_state({"step": step}, steps_completed=step)
            core.checkpoint.wait()
        if run == int(hp.get("fail_run", 0)) and step == int(hp.get("fail_at", 0)):
            print(f"run {run} fails after step {step}", flush=True)
            sys.exit(1)
        if 0 < int(hp.get("hang_from", 0)) <= step:
            print(f"run {run} hangs at step {step}, deaf to preemption", flush=True)
            time.sleep(600)
        if core.preempt.should_preempt():
            core.checkpoint.save_state({"step": step}, steps_completed=step)
            print(f"run {run} preempted after step {step}", flush=True)
            sys.exit(0)
    core.train.report_validation_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
