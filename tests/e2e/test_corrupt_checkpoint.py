"""A corrupt latest checkpoint is detected on restore, marked CORRUPTED, and the trial resumes from
the newest valid one: real master, Celery worker, agent and trial processes, real files."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_training import TERMINAL, submit, upload

from support import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

CORRUPTER = Path(__file__).parent / "corrupter"


def test_a_flipped_byte_is_detected_and_the_trial_resumes_from_the_previous_checkpoint(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    start_agent(f"corrupt-{uuid.uuid4().hex[:6]}", 1)
    config = (
        "name: corrupt-resume\nentrypoint: python3 train.py\n"
        "searcher: {name: single, metric: loss}\nmax_restarts: 1\n"
        # Keep every checkpoint: the one to fall back to has no validation metric.
        f"checkpoint_storage: {{type: shared_fs, host_path: {tmp_path}, save_trial_latest: 5}}\n"
    )
    experiment_id = submit(admin_api, config, upload(admin_api, CORRUPTER))

    def experiment() -> dict[str, object]:
        return dict(admin_api.get(f"/api/v1/experiments/{experiment_id}").json())

    wait_for(lambda: experiment()["state"] in TERMINAL, 90, "the experiment to end", interval=0.2)
    assert experiment()["state"] == "COMPLETED"
    (trial,) = admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    assert trial["restarts"] == 1 and trial["run_id"] == 2

    by_step = {
        c["steps_completed"]: c
        for c in admin_api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
    }
    first, second, third = by_step[1], by_step[2], by_step[3]
    assert second["state"] == "CORRUPTED"
    assert "tuned" in second["corrupt_reason"] and "chunk" in second["corrupt_reason"]
    assert first["state"] == third["state"] == "COMPLETED"
    assert third["parent_uuid"] == first["uuid"]
    assert trial_latest(admin_api, trial["id"]) == third["uuid"]
    logs = admin_api.get(f"/api/v1/trials/{trial['id']}/logs").text
    assert f"resumed from {first['uuid']} at step 1" in logs


def trial_latest(api: httpx.Client, trial_id: int) -> str:
    return str(api.get(f"/api/v1/trials/{trial_id}").json()["latest_checkpoint"])
