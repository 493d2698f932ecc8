"""Scripts written the way Determined's Core API tutorials use the API (``import stalwart as det``,
Determined's calls and configs) reach COMPLETED on one real cluster, all submitted at once.

Covers ``examples/tutorials/core_api`` (start, metrics, checkpoints with pause/activate, a search
with ``searcher.operations()``, ``det.InvalidHP``) and ``core_api_pytorch_mnist`` (plain, metrics,
checkpoints, adaptive search) with scikit-learn's digits instead of MNIST.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.test_training import submit, upload, wait_terminal

from support import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
CORE_API = HERE / "core_api"
DIGITS = HERE / "pytorch_digits"
# Every experiment's trials at once (3 + 3 searches, 1 grid of 2, 6 single ones) with room to spare.
SLOTS = 8


def _trials(api: httpx.Client, experiment_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/experiments/{experiment_id}/trials").json())


def _metrics(api: httpx.Client, trial_id: int, group: str) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/trials/{trial_id}/metrics", params={"group": group}).json()["items"])


def _runs(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/trials/{trial_id}/runs").json())


def _pause_after_first_checkpoint_then_activate(api: httpx.Client, experiment_id: int) -> str:
    """Pause once the trial has a checkpoint, wait for its run to stop, activate; return that checkpoint."""
    wait_for(lambda: bool(_trials(api, experiment_id)), 60, "the checkpoints trial", interval=0.2)
    (trial,) = _trials(api, experiment_id)

    def checkpoint() -> str | None:
        latest = api.get(f"/api/v1/trials/{trial['id']}").json()["latest_checkpoint"]
        return str(latest) if latest else None

    wait_for(lambda: checkpoint() is not None, 120, "the first checkpoint", interval=0.2)
    assert api.post(f"/api/v1/experiments/{experiment_id}/pause").status_code == 200
    wait_for(
        lambda: all(run["state"] == "TERMINATED" for run in _runs(api, trial["id"])),
        60,
        "the paused run to checkpoint and exit",
        interval=0.2,
    )
    paused_at = checkpoint()
    assert paused_at is not None
    assert api.post(f"/api/v1/experiments/{experiment_id}/activate").status_code == 200
    return paused_at


def test_determined_tutorial_scripts_complete_on_one_cluster(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    start_agent(f"compat-{uuid.uuid4().hex[:6]}", SLOTS)
    core_api, digits = upload(admin_api, CORE_API), upload(admin_api, DIGITS)
    submitted = {
        name: submit(admin_api, (directory / f"{name}.yaml").read_text(), context)
        for directory, context, names in (
            (CORE_API, core_api, ("0_start", "1_metrics", "2_checkpoints", "3_hpsearch", "invalid_hp")),
            (DIGITS, digits, ("const", "metrics", "checkpoints", "adaptive")),
        )
        for name in names
    }
    paused_at = _pause_after_first_checkpoint_then_activate(admin_api, submitted["2_checkpoints"])

    ended = {name: wait_terminal(admin_api, eid, timeout=400) for name, eid in submitted.items()}
    assert {name: e["state"] for name, e in ended.items()} == dict.fromkeys(submitted, "COMPLETED")
    trials = {name: _trials(admin_api, eid) for name, eid in submitted.items()}

    # Metrics: the stages that report them stored them, under Determined's groups.
    (metrics_trial,) = trials["1_metrics"]
    training = _metrics(admin_api, metrics_trial["id"], "training")
    assert [m["steps_completed"] for m in training] == [10, 20, 30]
    increment_by = metrics_trial["hparams"]["increment_by"]  # sampled once by the single searcher
    assert increment_by in (1, 2, 3)
    validation = [m["values"] for m in _metrics(admin_api, metrics_trial["id"], "validation")]
    assert validation == [{"x": 30 * increment_by}]
    (digits_trial,) = trials["metrics"]
    assert len(_metrics(admin_api, digits_trial["id"], "validation")) == 3
    assert _metrics(admin_api, digits_trial["id"], "training")

    # Checkpoints: the paused trial's second run restored what the first stored and carried on.
    (ckpt_trial,) = trials["2_checkpoints"]
    _first, second = _runs(admin_api, ckpt_trial["id"])
    assert second["restored_checkpoint"] == paused_at
    steps_after_resume = [
        m["steps_completed"]
        for m in _metrics(admin_api, ckpt_trial["id"], "training")
        if m["run_id"] == second["run_id"]
    ]
    assert steps_after_resume and min(steps_after_resume) > 10  # did not start over at batch 0
    assert [m["values"] for m in _metrics(admin_api, ckpt_trial["id"], "validation")] == [{"x": 60}]
    (digits_ckpt_trial,) = trials["checkpoints"]
    latest = admin_api.get(f"/api/v1/checkpoints/{digits_ckpt_trial['latest_checkpoint']}").json()
    assert latest["steps_completed"] == 3 * 23  # three epochs of 23 batches

    # Searches: every trial reported the searcher metric its operation asked for.
    assert len(trials["3_hpsearch"]) == 3 and len(trials["adaptive"]) == 3
    for trial in trials["3_hpsearch"] + trials["adaptive"]:
        assert trial["state"] == "COMPLETED" and trial["best_validation"] is not None

    # InvalidHP: the refused trial ended early, COMPLETED, not failed and not retried.
    by_increment = {t["hparams"]["increment_by"]: t for t in trials["invalid_hp"]}
    refused = by_increment[6]
    assert (refused["state"], refused["restarts"]) == ("COMPLETED", 0)
    (run,) = _runs(admin_api, refused["id"])
    assert run["exit_reason"] == "invalid hyperparameters" and run["exit_code"] == 0
    assert not _metrics(admin_api, refused["id"], "validation")
    assert by_increment[2]["best_validation"] == 40  # 20 batches of 2
