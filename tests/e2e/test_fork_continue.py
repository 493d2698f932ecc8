"""Fork and continue on a real cluster, driven through the CLI: an experiment that ended in ERROR
for want of restarts is continued with a larger ``max_restarts``, resumes its trial from its latest
checkpoint as new runs and completes; a fork of it shows up in the fork tree."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_fault_tolerance import faulty_config, only_trial, runs
from test_training import submit, upload, wait_terminal
from typer.testing import CliRunner

from stalwart.cli.main import app

from support import ManagedProcess

pytestmark = pytest.mark.e2e

FLAKY = Path(__file__).parent / "flaky"


def test_continue_with_more_restarts_resumes_from_the_latest_checkpoint_and_completes(
    live_master: Any, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    start_agent(f"continue-{uuid.uuid4().hex[:6]}", 1)
    token = admin_api.headers["Authorization"].removeprefix("Bearer ")
    env = {"STALWART_MASTER": live_master.url, "STALWART_TOKEN": token, "STALWART_CONFIG_DIR": str(tmp_path)}

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(app, ["e", *args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    # Runs 1-3 each train one step and fail; max_restarts 0 ends it after run 1.
    config = faulty_config("flaky", {"steps": 5, "fail_runs": 3}, max_restarts=0)
    experiment_id = submit(admin_api, config, upload(admin_api, FLAKY))
    assert wait_terminal(admin_api, experiment_id, timeout=60)["state"] == "ERROR"
    trial = only_trial(admin_api, experiment_id)
    assert (trial["state"], trial["run_id"]) == ("ERROR", 1)

    continued = cli("continue", str(experiment_id), "--config", "max_restarts=2")
    assert continued["state"] == "ACTIVE" and continued["resumed_trial_ids"] == [trial["id"]]
    assert wait_terminal(admin_api, experiment_id, timeout=90)["state"] == "COMPLETED"

    # Runs 2 and 3 failed within the new two restarts; run 4 started after step 3 and finished.
    trial = only_trial(admin_api, experiment_id)
    assert (trial["state"], trial["run_id"], trial["restarts"], trial["steps_completed"]) == (
        "COMPLETED",
        4,
        2,
        5,
    )
    steps_of = {
        c["uuid"]: c["steps_completed"]
        for c in admin_api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
    }
    history = runs(admin_api, trial["id"])
    assert [r["run_id"] for r in history] == [1, 2, 3, 4]
    assert [steps_of.get(r["restored_checkpoint"]) for r in history[1:]] == [1, 2, 3]
    assert [r["exit_code"] for r in history] == [1, 1, 1, 0]

    # A fork keeps the code and the config but for its overrides; the tree shows both.
    fork = cli("fork", str(experiment_id), "--paused", "--config", "hyperparameters.steps=2")
    assert fork["parent_id"] == experiment_id and fork["state"] == "PAUSED"
    assert fork["config"]["hyperparameters"] == {"steps": 2, "fail_runs": 3}
    assert fork["context_sha256"] == continued["context_sha256"]
    tree = cli("versions", str(fork["id"]))
    assert [(v["id"], v["parent_id"]) for v in tree] == [(experiment_id, None), (fork["id"], experiment_id)]
    admin_api.post(f"/api/v1/experiments/{fork['id']}/kill")
