"""``adaptive_asha`` on a real cluster: real trial processes are stopped early by the searcher.

A stop reaches the trial as a preemption: it checkpoints and exits 0, and the trial is COMPLETED,
not resumed, without using a restart. Only trials that keep up in their rungs train to max_time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_training import submit, upload, wait_terminal

from support import ManagedProcess

pytestmark = pytest.mark.e2e

ASHA_TRIAL = Path(__file__).parent / "asha"

CONFIG = """\
name: asha-e2e
entrypoint: python3 train.py
hyperparameters:
  quality: {{type: categorical, vals: [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}}
  steps: 8
  sleep: 0.6  # per step: a stop takes a metrics flush, a scheduler pass and a poll to arrive
searcher:
  name: adaptive_asha
  metric: loss
  time_metric: batches
  max_time: 8
  max_trials: 6
  max_concurrent_trials: 2
  mode: aggressive
  divisor: 2
reproducibility: {{experiment_seed: 11}}
resources: {{resource_pool: {pool}}}
"""


def test_asha_stops_weak_trials_through_preemption_and_the_experiment_completes(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    pool = f"asha-{uuid.uuid4().hex[:6]}"
    start_agent(f"{pool}-agent", 2, pool=pool)
    experiment_id = submit(admin_api, CONFIG.format(pool=pool), upload(admin_api, ASHA_TRIAL))
    assert wait_terminal(admin_api, experiment_id, timeout=180)["state"] == "COMPLETED"

    trials: list[dict[str, Any]] = admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    assert len(trials) == 6
    assert all(t["state"] == "COMPLETED" and t["restarts"] == 0 for t in trials), trials
    steps = {t["id"]: t["steps_completed"] for t in trials}
    early = [t for t in trials if t["steps_completed"] < 8]
    assert early, f"no trial was stopped before max_time: {steps}"
    assert any(s == 8 for s in steps.values()), f"no trial trained to max_time: {steps}"
    for trial in early:
        # Stopped at a rung (2 or 4 batches) or just after it, while the stop was on its way.
        assert "stopped by the searcher at batches" in trial["end_reason"], trial
        runs = admin_api.get(f"/api/v1/trials/{trial['id']}/runs").json()
        assert [r["exit_reason"] for r in runs] == ["stopped by searcher"], runs
        assert trial["latest_checkpoint"], "a stopped trial checkpoints before it leaves"
    # Each rung keeps the better half of the trials that reached it before: the best possible
    # trial (quality 0) is never stopped below max_time.
    best = [t for t in trials if t["hparams"]["quality"] == 0.0]
    assert best and all(t["steps_completed"] == 8 for t in best), best  # seed 11 draws two
