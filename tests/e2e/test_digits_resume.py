"""A trial killed mid-training resumes from its last ``save_state`` checkpoint and completes."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from stalwart.context import build_context

from support import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _submit(api: httpx.Client, config: dict[str, Any]) -> int:
    context = api.post(
        "/api/v1/contexts", content=build_context(DIGITS), headers={"Content-Type": "application/gzip"}
    )
    assert context.status_code in (200, 201), context.text
    response = api.post(
        "/api/v1/experiments", json={"config": yaml.safe_dump(config), "context": context.json()["sha256"]}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _trial_process(agent: ManagedProcess, trial_id: int) -> psutil.Process | None:
    """The trial's own python (train.py), found under the agent by the trial id in its environment."""
    for process in psutil.Process(agent.process.pid).children(recursive=True):
        try:
            ours = process.environ().get("STALWART_TRIAL_ID") == str(trial_id)
            if ours and "train.py" in process.cmdline():
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def test_a_killed_digits_trial_resumes_from_its_checkpoint_at_the_same_step_and_completes(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    started = time.monotonic()
    agent = start_agent(f"resume-{uuid.uuid4().hex[:6]}", 1)
    config = yaml.safe_load((DIGITS / "const.yaml").read_text())
    config.update(
        name="digits-resume",
        # Long enough to be killed mid-way, with a checkpoint every 300 batches and none after validations.
        hyperparameters={**config["hyperparameters"], "epochs": 150},
        min_checkpoint_period={"batches": 300},
        checkpoint_policy="none",
        max_restarts=1,
    )
    experiment_id = _submit(admin_api, config)

    def trials() -> list[dict[str, Any]]:
        return list(admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json())

    def checkpoints() -> list[dict[str, Any]]:
        return list(admin_api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json())

    wait_for(lambda: bool(trials()), 30, "the trial to be created")
    trial_id = trials()[0]["id"]
    wait_for(lambda: bool(checkpoints()), 60, "the first checkpoint to be registered", interval=0.05)
    process = _trial_process(agent, trial_id)
    assert process is not None, "the trial finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    killed_at = {c["uuid"] for c in checkpoints()}

    def state() -> str:
        return str(admin_api.get(f"/api/v1/experiments/{experiment_id}").json()["state"])

    wait_for(lambda: state() in ("COMPLETED", "CANCELED", "ERROR"), 90, "the experiment to end", interval=0.2)
    assert state() == "COMPLETED"
    (trial,) = trials()
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 1 and trial["run_id"] == 2

    # Two runs: the first wrote the checkpoints seen at the kill (maybe one more in flight).
    every = sorted(checkpoints(), key=lambda c: c["steps_completed"])
    first_run = {c["allocation_id"] for c in every if c["uuid"] in killed_at}
    assert len(first_run) == 1
    before = [c for c in every if c["allocation_id"] in first_run]
    after = [c for c in every if c["allocation_id"] not in first_run]
    restored = before[-1]  # the trial's latest checkpoint when the second run started
    assert restored["manifest"]["kind"] == "state" and restored["steps_completed"] > 0
    assert after, "the second run saved no checkpoint"
    # Every checkpoint of the second run descends from what it restored (the lineage parent).
    assert {c["parent_uuid"] for c in after} == {restored["uuid"]}
    assert all(c["steps_completed"] > restored["steps_completed"] for c in after)
    assert after[-1]["steps_completed"] == 150 * 45  # 1437 images in batches of 32: 45 batches an epoch

    # The second run's metrics continue from the restored step, never from 0.
    metrics = admin_api.get(f"/api/v1/trials/{trial_id}/metrics").json()["items"]
    second_steps = [m["steps_completed"] for m in metrics if m["run_id"] == 2]
    assert second_steps and min(second_steps) > restored["steps_completed"]
    assert trial["best_validation"] > 0.95
    assert time.monotonic() - started < 90
