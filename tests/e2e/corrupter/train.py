"""A trial whose newest checkpoint goes bad on disk between two runs.

Run 1 saves checkpoints at steps 1 and 2, then flips one byte of a chunk only checkpoint 2 holds
(standing in for a disk that corrupted it) and fails. Run 2 must find checkpoint 2 corrupt,
have the master mark it so, and resume from checkpoint 1.
"""

import logging
import sys
from pathlib import Path

import torch

import stalwart.core
from stalwart.checkpoint import open_storage, read_manifest

logging.basicConfig(level=logging.INFO)

with stalwart.core.init() as core:
    restored = core.checkpoint.load_latest_state()
    if restored is None:
        state = {"frozen": torch.zeros(256, 256), "tuned": torch.ones(256, 256), "step": 1}
        core.checkpoint.save_state(state, steps_completed=1)
        state["tuned"] += 1
        state["step"] = 2
        second = core.checkpoint.save_state(state, steps_completed=2)
        core.checkpoint.wait()
        storage = open_storage(core.info.checkpoint_storage or {})
        entry = next(f for f in read_manifest(storage, second)["files"] if f["path"].endswith("tuned"))
        digest = entry["chunks"][0]["digest"]
        chunk = Path(storage.path_of(f"chunks/{digest[:2]}/{digest}"))  # type: ignore[attr-defined]
        data = bytearray(chunk.read_bytes())
        data[100] ^= 0xFF
        chunk.write_bytes(bytes(data))
        print(f"corrupted chunk {digest} of checkpoint {second}", flush=True)
        sys.exit(3)
    uuid, state = restored
    print(f"resumed from {uuid} at step {state['step']}", flush=True)
    core.train.report_training_metrics(steps_completed=3, metrics={"loss": 0.5, "restored": state["step"]})
    core.checkpoint.save_state({**state, "step": 3}, steps_completed=3)
