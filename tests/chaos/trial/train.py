"""The chaos suite's scripted trial: it does exactly what its ``actions`` hyperparameter says.

Actions run in order; each is a mapping with one verb and optional ``run`` (an int or a list of
ints: only on those run ids, from ``STALWART_TRIAL_RUN_ID``), so a scenario fails a chosen run
and no other:

    {"report": 20, "every": 0.05}   20 training steps, one metric row each, then sleep ``every``;
                                    preemption is checked after every step. With "validate": true
                                    each step is also validated: loss = quality + 1/step (the
                                    ``quality`` hyperparameter, default 0) with batches = step
    {"checkpoint": true}            save_state at the current step and wait until it is registered
    {"exit": 3}                     exit with this code now
    {"ignore_preemption": true}     from here on a preemption request is noted, never obeyed
    {"write_mb": 8}                 later checkpoints carry this many MB of random bytes
    {"sleep": 1.5}                  sleep (preemption is not checked meanwhile)
    {"wait_file": "go", "timeout": 60}   wait until ``<journal>/go`` exists

A resumed run restores the newest checkpoint with ``load_latest_state`` and continues from the
action and step it records. A preemption request (unless ignored) saves a checkpoint at the
current step and exits 0. The last step is validated once at the end.

Every run appends JSON lines to ``<journal>/trial-<id>.jsonl`` (start, checkpoint, preempt_seen,
preempted, exit, done): the tests' record of what the trial itself did, independent of the master.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

import stalwart.core

logging.basicConfig(level=logging.INFO)


class Preempted(Exception):
    """The master asked this run to stop; its checkpoint is saved."""


class Journal:
    def __init__(self, directory: str, trial_id: int, run_id: int) -> None:
        self.path = Path(directory) / f"trial-{trial_id}.jsonl"
        self.directory = Path(directory)
        self.run_id = run_id

    def write(self, event: str, **fields: object) -> None:
        record = {"t": time.time(), "run": self.run_id, "pid": os.getpid(), "event": event, **fields}
        # One write per line with O_APPEND: concurrent runs never interleave within a line.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
        print(f"chaos-trial: {event} {fields}", flush=True)


def applies(action: dict, run_id: int) -> bool:
    runs = action.get("run")
    if runs is None:
        return True
    return run_id in (runs if isinstance(runs, list) else [runs])


def main() -> int:
    with stalwart.core.init() as core:
        hparams = core.info.hparams
        actions: list[dict] = list(hparams["actions"])
        run_id = int(core.info.run_id or 0)
        journal = Journal(str(hparams["journal"]), int(core.info.trial_id or 0), run_id)

        step, pc, done_in_block = 0, 0, 0
        found = core.checkpoint.load_latest_state()
        if found is not None:
            restored_uuid, state = found
            step, pc, done_in_block = int(state["step"]), int(state["pc"]), int(state["done"])
            journal.write("start", restored=restored_uuid, restored_step=step, pc=pc)
        else:
            journal.write("start", restored=None, restored_step=0, pc=0)

        ignore_preemption = False
        payload_mb = 0

        def checkpoint(reason: str, next_pc: int, done: int) -> None:
            state: dict[str, object] = {"step": step, "pc": next_pc, "done": done}
            if payload_mb:
                state["payload"] = np.frombuffer(os.urandom(payload_mb * 2**20), dtype=np.uint8)
            uuid = core.checkpoint.save_state(state, steps_completed=step)
            core.checkpoint.wait()  # committed and registered before the journal says so
            journal.write("checkpoint", uuid=uuid, step=step, reason=reason)

        noted: list[bool] = []

        def preemption_due() -> bool:
            if ignore_preemption:
                if not noted and core.preempt.should_preempt(auto_ack=False):
                    noted.append(True)
                    journal.write("preempt_seen", step=step, obeyed=False)
                return False
            return core.preempt.should_preempt()

        try:
            while pc < len(actions):
                action = actions[pc]
                if not applies(action, run_id):
                    pc += 1
                    continue
                if "report" in action:
                    count, every = int(action["report"]), float(action.get("every", 0.05))
                    while done_in_block < count:
                        step += 1
                        done_in_block += 1
                        core.train.report_training_metrics(
                            steps_completed=step, metrics={"loss": 1.0 / step, "run": run_id}
                        )
                        if action.get("validate"):
                            loss = float(hparams.get("quality", 0)) + 1.0 / step
                            core.train.report_validation_metrics(
                                steps_completed=step, metrics={"loss": loss, "batches": step}
                            )
                        time.sleep(every)
                        if preemption_due():
                            finished = done_in_block == count
                            checkpoint(
                                "preempt", pc + 1 if finished else pc, 0 if finished else done_in_block
                            )
                            raise Preempted
                    done_in_block = 0
                    pc += 1
                elif "checkpoint" in action:
                    pc += 1
                    checkpoint("scripted", pc, 0)
                elif "exit" in action:
                    code = int(action["exit"])
                    journal.write("exit", code=code, step=step)
                    core.close()  # metrics reported so far are delivered first
                    return code
                elif "ignore_preemption" in action:
                    ignore_preemption = bool(action["ignore_preemption"])
                    pc += 1
                elif "write_mb" in action:
                    payload_mb = int(action["write_mb"])
                    pc += 1
                elif "sleep" in action:
                    time.sleep(float(action["sleep"]))
                    pc += 1
                elif "wait_file" in action:
                    gate = journal.directory / str(action["wait_file"])
                    deadline = time.monotonic() + float(action.get("timeout", 120))
                    while not gate.exists():
                        if time.monotonic() > deadline:
                            journal.write("exit", code=4, step=step, reason=f"no {gate}")
                            return 4
                        time.sleep(0.05)
                    pc += 1
                else:
                    raise ValueError(f"unknown action {action!r}")
        except Preempted:
            journal.write("preempted", step=step)
            return 0
        core.train.report_validation_metrics(steps_completed=step, metrics={"loss": 1.0 / max(step, 1)})
        journal.write("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
