"""A trial for adaptive_asha tests: its loss is ``quality + 1 / step``, validated at every step.

Each validation carries ``batches`` (the step), the searcher's time metric. When the master asks it
to stop (the searcher's Stop comes as a preemption), it checkpoints and exits 0.
"""

import sys
import time

import stalwart.core

with stalwart.core.init() as core:
    hp = core.info.hparams
    quality = float(hp["quality"])
    restored = core.checkpoint.load_latest_state()
    step = int(restored[1]["step"]) if restored else 0
    while step < int(hp["steps"]):
        step += 1
        time.sleep(float(hp.get("sleep", 0.1)))
        loss = quality + 1.0 / step
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": loss})
        core.train.report_validation_metrics(steps_completed=step, metrics={"loss": loss, "batches": step})
        if core.preempt.should_preempt():
            core.checkpoint.save_state({"step": step}, steps_completed=step)
            print(f"stopped after step {step}", flush=True)
            sys.exit(0)
    print(f"trained all {step} steps", flush=True)
