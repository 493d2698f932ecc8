"""A master SIGKILLed mid-search continues the *same* search (adaptive_asha and bayesian/TPE).

One trial at a time (``max_concurrent_trials: 1``) with a fixed experiment seed and a deterministic
objective (the scripted trial validates ``loss = quality + 1/step`` at every step), so the trials an
uninterrupted search creates are known exactly: the searcher classes compute them in-process, fed
the same metrics. The master is killed while the second trial trains; the trials created after the
restart must be exactly the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants

from stalwart_master.expconf import ExperimentConfig
from stalwart_master.searcher import Create, Op, Stop, make_searcher
from stalwart_master.searcher.feed import validation_feed

from support import wait_for

pytestmark = pytest.mark.chaos

STEPS = 8
SEARCHERS: dict[str, dict[str, Any]] = {
    "adaptive_asha": {
        "name": "adaptive_asha",
        "time_metric": "batches",
        "max_time": STEPS,
        "max_trials": 4,
        "mode": "aggressive",
        "divisor": 2,
    },
    # Pruned, so the scripted trial's last report (loss 1/step, without batches) is not what TPE
    # sees: it sees quality + 1/step at the step the trial stopped.
    "bayesian": {
        "name": "bayesian",
        "max_trials": 4,
        "startup_trials": 2,
        "pruning": {"time_metric": "batches", "max_time": STEPS, "divisor": 2, "max_rungs": 3},
    },
}


def reference(config: ExperimentConfig) -> list[float]:
    """The qualities an uninterrupted search creates, fed what the scripted trial reports."""
    searcher = make_searcher(config)
    feed = validation_feed(config.model_dump(mode="json")["searcher"])
    assert feed is not None
    queue: list[Op] = list(searcher.initial_operations())
    qualities: list[float] = []
    while queue:
        op = queue.pop(0)
        if not isinstance(op, Create):
            continue
        quality = float(op.hparams["quality"])
        qualities.append(quality)
        for step in range(1, STEPS + 1):
            if any(
                isinstance(o, Stop) for o in searcher.on_validation(op.request_id, quality + 1 / step, step)
            ):
                break
        else:
            if feed.time_metric is None:  # the trial's final report: loss 1/step, no batches
                searcher.on_validation(op.request_id, 1 / STEPS)
        queue += searcher.on_trial_closed(op.request_id)
    return qualities


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_a_master_sigkilled_mid_search_continues_the_same_search(
    chaos_cluster: Callable[..., ChaosCluster], name: str
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    experiment = cluster.submit(
        f"{name}-restore",
        [{"report": STEPS, "every": 0.25, "validate": True}],
        searcher={**SEARCHERS[name], "metric": "loss", "max_concurrent_trials": 1},
        hyperparameters={"quality": {"type": "double", "minval": 0.0, "maxval": 3.0}},
        reproducibility={"experiment_seed": 11},
    )

    def trials() -> list[dict[str, Any]]:
        return sorted(cluster.api.get(f"/api/v1/experiments/{experiment.id}/trials"), key=lambda t: t["id"])

    wait_for(lambda: len(trials()) >= 2, 120, "the second trial to be created", interval=0.1)
    second = trials()[1]["id"]
    cluster.wait_step(second, 2)
    cluster.master.restart(downtime=1)

    check_invariants(cluster, Expected(experiment.id, restarts=0, validated_every_step=True))
    stored = cluster.experiment(experiment.id)["config"]
    expected = reference(ExperimentConfig.model_validate(stored))
    got = [float(t["hparams"]["quality"]) for t in trials()]
    assert got == expected, (got, expected)
    assert all(t["state"] == "COMPLETED" for t in trials())
