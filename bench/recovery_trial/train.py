"""The trial bench/recovery.py kills: one step every `step_seconds`, a checkpoint every `every` steps."""

import time

import torch

import stalwart.core

with stalwart.core.init() as core:
    hp = core.info.hparams
    steps, every, pause = int(hp["steps"]), int(hp["every"]), float(hp["step_seconds"])
    state = {"w": torch.zeros(1 << 18), "step": 0}  # 1 MiB of weights
    restored = core.checkpoint.load_latest_state()
    if restored is not None:
        state = restored[1]
    while state["step"] < steps:
        time.sleep(pause)
        state["w"] += 1.0
        state["step"] += 1
        core.train.report_training_metrics(
            steps_completed=state["step"], metrics={"loss": 1.0 / state["step"]}
        )
        if state["step"] % every == 0:
            core.checkpoint.save_state(state, steps_completed=state["step"])
        if core.preempt.should_preempt():
            core.checkpoint.save_state(state, steps_completed=state["step"])
            break
