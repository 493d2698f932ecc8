"""Fault tolerance on a real cluster (master, agent and trial processes): only code failures use up
``max_restarts``, preemption by pause, priority and timeout resumes trials from their checkpoints,
``kill`` ends a stopping experiment at once, and a restarted run's metrics replace the rolled-back ones."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_training import _tar, submit, upload, wait_terminal
from typer.testing import CliRunner

from stalwart.cli.main import app
from stalwart.client import Client

from support import PREEMPTIVE_POOL, ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).parent / "faulty"


def faulty_config(name: str, hparams: dict[str, Any], **extra: Any) -> str:
    lines = [
        f"name: {name}",
        "entrypoint: python3 train.py",
        f"hyperparameters: {json.dumps(hparams)}",
        "searcher: {name: single, metric: loss}",
    ]
    return "\n".join(lines + [f"{key}: {value}" for key, value in extra.items()]) + "\n"


def only_trial(api: httpx.Client, experiment_id: int) -> dict[str, Any]:
    wait_for(lambda: bool(trials(api, experiment_id)), 30, f"experiment {experiment_id}'s trial")
    (trial,) = trials(api, experiment_id)
    return trial


def trials(api: httpx.Client, experiment_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/experiments/{experiment_id}/trials").json())


def runs(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/trials/{trial_id}/runs")
    assert response.status_code == 200, response.text
    return list(response.json())


def metrics(api: httpx.Client, trial_id: int, **params: Any) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/trials/{trial_id}/metrics", params=params).json()["items"])


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def test_max_restarts_2_with_a_trial_that_always_fails_gives_exactly_3_runs_then_error(
    live_master: Any, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    agent_id = f"fail3-{uuid.uuid4().hex[:6]}"
    start_agent(agent_id, 1)
    data = _tar({"train.py": b"import sys\nprint('failing', flush=True)\nsys.exit(3)\n"})
    context = admin_api.post("/api/v1/contexts", content=data, headers={"Content-Type": "application/gzip"})
    config = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\nmax_restarts: 2\n"
    experiment_id = submit(admin_api, config, context.json()["sha256"])
    assert wait_terminal(admin_api, experiment_id, timeout=50)["state"] == "ERROR"

    trial = only_trial(admin_api, experiment_id)
    assert (trial["state"], trial["restarts"], trial["run_id"]) == ("ERROR", 3, 3)
    assert "exited with code 3" in trial["end_reason"] and "max_restarts (2)" in trial["end_reason"]
    history = runs(admin_api, trial["id"])
    assert [r["run_id"] for r in history] == [1, 2, 3]
    for run in history:
        assert (run["state"], run["exit_code"], run["exit_reason"]) == ("TERMINATED", 3, "exited")
        assert run["agent_id"] == agent_id and run["started_at"] and run["ended_at"]
        assert run["restored_checkpoint"] is None

    # `stalwart trial describe` shows the same history, as a table and as JSON.
    token = admin_api.headers["Authorization"].removeprefix("Bearer ")
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_TOKEN": token,
        "STALWART_CONFIG_DIR": str(tmp_path / "cli"),
        "COLUMNS": "250",
    }
    shown = CliRunner().invoke(app, ["trial", "describe", str(trial["id"])], env=env)
    assert shown.exit_code == 0, shown.stderr
    header = next(line for line in shown.stdout.splitlines() if "Exit reason" in line)
    assert header.split()[:3] == ["Run", "Agent", "State"] and "Restored checkpoint" in header
    rows = [line.split() for line in shown.stdout.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert [(row[0], row[1], row[2]) for row in rows] == [(str(n), agent_id, "TERMINATED") for n in (1, 2, 3)]
    assert all("exited" in row and "3" in row[3:] for row in rows)
    described = json.loads(
        CliRunner().invoke(app, ["t", "describe", str(trial["id"]), "--json"], env=env).stdout
    )
    assert [r["exit_reason"] for r in described["runs"]] == ["exited"] * 3


def test_a_failed_runs_metrics_past_its_checkpoint_are_archived_and_the_next_run_replaces_them(
    live_master: Any, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    start_agent(f"rollback-{uuid.uuid4().hex[:6]}", 1)
    hparams = {"steps": 10, "checkpoint_at": 5, "fail_run": 1, "fail_at": 10}
    config = faulty_config("rollback", hparams, max_restarts=1)
    experiment_id = submit(admin_api, config, upload(admin_api, FAULTY))
    assert wait_terminal(admin_api, experiment_id, timeout=50)["state"] == "COMPLETED"

    trial = only_trial(admin_api, experiment_id)
    assert (trial["restarts"], trial["run_id"], trial["steps_completed"]) == (1, 2, 10)
    live = [m for m in metrics(admin_api, trial["id"]) if m["group"] == "training"]
    assert [(m["steps_completed"], m["run_id"]) for m in live] == [
        (s, 1 if s <= 5 else 2) for s in range(1, 11)
    ]
    assert not any(m["archived"] for m in live)
    every = metrics(admin_api, trial["id"], include_archived=True, group="training")
    archived = [(m["steps_completed"], m["run_id"]) for m in every if m["archived"]]
    assert archived == [(s, 1) for s in range(6, 11)] and len(every) == 15

    (checkpoint,) = [
        c
        for c in admin_api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
        if c["steps_completed"] == 5
    ]
    first, second = runs(admin_api, trial["id"])
    assert (first["exit_code"], first["exit_reason"], first["restored_checkpoint"]) == (1, "exited", None)
    assert (second["exit_code"], second["exit_reason"]) == (0, "exited")
    assert second["restored_checkpoint"] == checkpoint["uuid"]

    # The SDK reads the same: live rows only unless asked, and each run.
    token = admin_api.headers["Authorization"].removeprefix("Bearer ")
    with Client(live_master.url, token=token) as client:
        assert len(client.trial_metrics(trial["id"], group="training")) == 10
        assert sum(m.archived for m in client.trial_metrics(trial["id"], include_archived=True)) == 5
        assert [r.restored_checkpoint for r in client.list_trial_runs(trial["id"])] == [
            None,
            checkpoint["uuid"],
        ]


def test_a_trial_deaf_to_preemption_is_killed_after_its_timeout_resumes_and_kill_ends_a_stopping_one(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    agent_id = f"deaf-{uuid.uuid4().hex[:6]}"
    start_agent(agent_id, 1)
    hparams = {"steps": 5, "checkpoint_every": 1, "hang_from": 1}
    config = faulty_config("deaf", hparams, max_restarts=0, preemption_timeout=2)
    experiment_id = submit(admin_api, config, upload(admin_api, FAULTY))
    trial_id = only_trial(admin_api, experiment_id)["id"]
    wait_for(
        lambda: admin_api.get(f"/api/v1/trials/{trial_id}").json()["latest_checkpoint"] is not None,
        30,
        "run 1 to checkpoint step 1",
        interval=0.2,
    )
    first_checkpoint = admin_api.get(f"/api/v1/trials/{trial_id}").json()["latest_checkpoint"]

    paused_at = time.time()
    assert admin_api.post(f"/api/v1/experiments/{experiment_id}/pause").status_code == 200
    wait_for(lambda: runs(admin_api, trial_id)[0]["state"] == "TERMINATED", 20, "the kill", interval=0.2)
    (first,) = runs(admin_api, trial_id)
    assert first["exit_reason"] == "preemption timeout" and first["exit_code"] != 0
    assert when(first["ended_at"]).timestamp() - paused_at >= 2.0  # not before its timeout
    trial = admin_api.get(f"/api/v1/trials/{trial_id}").json()
    # max_restarts 0, yet not ended: PAUSED with its experiment, as in Determined.
    assert (trial["state"], trial["restarts"]) == ("PAUSED", 0)

    assert admin_api.post(f"/api/v1/experiments/{experiment_id}/activate").status_code == 200
    wait_for(
        lambda: len(runs(admin_api, trial_id)) == 2 and runs(admin_api, trial_id)[1]["restored_checkpoint"],
        30,
        "run 2 to start from run 1's checkpoint",
        interval=0.2,
    )
    assert runs(admin_api, trial_id)[1]["restored_checkpoint"] == first_checkpoint

    # Cancel waits for the trial to checkpoint; kill does not wait, even while STOPPING_CANCELED.
    assert (
        admin_api.post(f"/api/v1/experiments/{experiment_id}/cancel").json()["state"] == "STOPPING_CANCELED"
    )
    assert admin_api.post(f"/api/v1/experiments/{experiment_id}/kill").json()["state"] == "STOPPING_KILLED"
    assert wait_terminal(admin_api, experiment_id, timeout=20)["state"] == "CANCELED"
    second = runs(admin_api, trial_id)[1]
    assert second["exit_reason"] == "killed"
    slots = [s for s in admin_api.get("/api/v1/slots").json() if s["agent_id"] == agent_id]
    assert slots and all(s["allocation_id"] is None for s in slots)


def test_a_higher_priority_trial_preempts_a_lower_one_which_resumes_and_completes(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    # The live master runs with STALWART_POOL_PREEMPTION={PREEMPTIVE_POOL: true}; one slot in that pool.
    start_agent(f"prio-{uuid.uuid4().hex[:6]}", 1, pool=PREEMPTIVE_POOL)
    context = upload(admin_api, FAULTY)
    resources = f"{{resource_pool: {PREEMPTIVE_POOL}, priority: %d}}"
    low = submit(
        admin_api, faulty_config("low", {"steps": 16, "sleep": 0.25}, resources=resources % 50), context
    )
    low_trial = only_trial(admin_api, low)["id"]
    wait_for(lambda: len(metrics(admin_api, low_trial)) >= 2, 30, "the low-priority trial to train")
    high = submit(admin_api, faulty_config("high", {"steps": 3}, resources=resources % 10), context)
    for experiment_id in (high, low):
        assert wait_terminal(admin_api, experiment_id, timeout=60)["state"] == "COMPLETED"

    (high_run,) = runs(admin_api, only_trial(admin_api, high)["id"])
    low_runs = runs(admin_api, low_trial)
    assert [(r["exit_code"], r["exit_reason"]) for r in low_runs] == [(0, "preempted"), (0, "exited")]
    assert low_runs[0]["restored_checkpoint"] is None and low_runs[1]["restored_checkpoint"] is not None
    # One slot: the high-priority run got it once the low one had left, and gave it back after.
    assert when(low_runs[0]["ended_at"]) <= when(high_run["started_at"])
    assert when(high_run["ended_at"]) <= when(low_runs[1]["started_at"])
    assert admin_api.get(f"/api/v1/trials/{low_trial}").json()["restarts"] == 0
    steps = [m["steps_completed"] for m in metrics(admin_api, low_trial, group="training")]
    assert steps == list(range(1, 17))  # resumed where it checkpointed: no step lost or repeated
