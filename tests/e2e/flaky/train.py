"""A trial whose first ``fail_runs`` runs each train one step, checkpoint it and exit 1; a later run
trains on to ``steps`` and completes. Every run starts after the step of the checkpoint it restores."""

import sys

import stalwart.core

with stalwart.core.init() as core:
    hp = core.info.hparams
    run = core.info.run_id or 1
    restored = core.checkpoint.load_latest_state()
    step = int(restored[1]["step"]) if restored else 0
    print(f"run {run} starts after step {step}", flush=True)
    while step < int(hp["steps"]):
        step += 1
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step, "run": run})
        core.checkpoint.save_state({"step": step}, steps_completed=step)
        core.checkpoint.wait()
        if run <= int(hp["fail_runs"]):
            print(f"run {run} fails after step {step}", flush=True)
            sys.exit(1)
    core.train.report_validation_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
