"""bayesian, async_halving, single with ranges, early exits and reopen: state round-trips at every step.

Every searcher is driven through a whole search with a restore from JSON after *every* decision;
the restored run must create exactly the trials an uninterrupted run creates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from stalwart_master.errors import Invalid
from stalwart_master.expconf import ExperimentConfig, parse_experiment_config
from stalwart_master.searcher import (
    AsyncHalvingSearcher,
    BayesianSearcher,
    Create,
    EarlyExit,
    Op,
    Searcher,
    Shutdown,
    Stop,
    make_searcher,
)
from stalwart_master.searcher.preview import preview, preview_search
from stalwart_master.services import outcomes
from stalwart_master.services.states import ExperimentState

pytestmark = pytest.mark.unit

SPACE = {
    "lr": {"type": "log", "minval": -4, "maxval": -1, "base": 10, "count": 2},
    "layers": {"type": "int", "minval": 1, "maxval": 8, "count": 3},
    "opt": {"type": "categorical", "vals": ["sgd", {"name": "adam", "beta": 0.9}]},
    "group": {"dropout": {"type": "double", "minval": 0.0, "maxval": 0.5, "count": 2}, "fixed": 7},
    "c": {"type": "const", "val": [1, 2]},
}


def config(
    name: str, seed: int = 42, space: dict[str, Any] | None = None, **searcher: Any
) -> ExperimentConfig:
    raw = {
        "entrypoint": "python3 train.py",
        "hyperparameters": SPACE if space is None else space,
        "reproducibility": {"experiment_seed": seed},
        "searcher": {"name": name, "metric": "loss", **searcher},
    }
    return parse_experiment_config(json.dumps(raw)).config


SEARCHERS: dict[str, dict[str, Any]] = {
    "single": {},
    "grid": {"max_concurrent_trials": 2},
    "random": {"max_trials": 6, "max_concurrent_trials": 2},
    "adaptive_asha": {"max_trials": 9, "time_metric": "t", "max_time": 16, "max_concurrent_trials": 2},
    "async_halving": {"num_rungs": 3, "max_trials": 8, "time_metric": "t", "max_time": 16, "divisor": 2},
    "bayesian": {"max_trials": 8, "max_concurrent_trials": 2, "startup_trials": 3},
    "bayesian-pruned": {
        "max_trials": 8,
        "startup_trials": 2,
        "pruning": {"time_metric": "t", "max_time": 16, "divisor": 2, "max_rungs": 3},
    },
}


def objective(hparams: dict[str, Any], time: float) -> float:
    """A deterministic loss that improves with training time and depends on every hparam."""
    opt = 0.0 if hparams["opt"] == "sgd" else 0.3
    base = (
        (math.log10(hparams["lr"]) + 2.5) ** 2 + 0.1 * hparams["layers"] + hparams["group"]["dropout"] + opt
    )
    return base + 1.0 / (1.0 + time)


def drive(
    cfg: ExperimentConfig,
    *,
    restore_every_step: bool,
    exit_early: Callable[[int], EarlyExit | None] = lambda _: None,
) -> tuple[list[dict[str, Any]], Searcher]:
    """Run a whole search, one trial at a time in creation order; returns every trial's hparams.

    A trial reports its metric at times 1, 2, 4, ... 16 until the searcher stops it, then closes
    (or exits early when ``exit_early(ordinal)`` says so). With ``restore_every_step`` the searcher
    is rebuilt from its JSON state after each decision, as a restarted master does.
    """
    searcher = make_searcher(cfg)

    def step(ops: list[Op]) -> list[Op]:
        nonlocal searcher
        if restore_every_step:
            state = json.loads(json.dumps(searcher.state()))
            searcher = Searcher.restore(cfg, state)
            assert searcher.state() == state
        return ops

    queue: list[Op] = step(list(searcher.initial_operations()))
    created: list[dict[str, Any]] = []
    shutdowns = 0
    while queue:
        op = queue.pop(0)
        if isinstance(op, Shutdown):
            shutdowns += 1
            continue
        assert isinstance(op, Create)
        ordinal = len(created)
        created.append(op.hparams)
        reason = exit_early(ordinal)
        if reason is None:
            for time in (1, 2, 4, 8, 16):
                ops = step(searcher.on_validation(op.request_id, objective(op.hparams, time), time))
                if any(isinstance(o, Stop) for o in ops):
                    break
            queue += step(searcher.on_trial_closed(op.request_id))
        else:
            queue += step(searcher.on_trial_exited_early(op.request_id, reason))
    assert shutdowns == 1 and searcher.is_shut_down
    return created, searcher


def cfg_for(key: str, seed: int = 42) -> ExperimentConfig:
    name = "bayesian" if key.startswith("bayesian") else key
    return config(name, seed, **SEARCHERS[key])


@pytest.mark.parametrize("key", sorted(SEARCHERS))
def test_restoring_after_every_decision_continues_the_same_search(key: str) -> None:
    cfg = cfg_for(key)
    straight, _ = drive(cfg, restore_every_step=False)
    restored, searcher = drive(cfg, restore_every_step=True)
    assert restored == straight
    assert len(straight) == searcher.total_trials


@pytest.mark.parametrize("key", ["random", "adaptive_asha", "async_halving", "bayesian", "single"])
def test_an_invalid_hp_trial_is_replaced_and_the_search_keeps_its_budget(key: str) -> None:
    cfg = cfg_for(key)
    budget = make_searcher(cfg).budget
    invalid = {0, 2}
    created, searcher = drive(
        cfg, restore_every_step=True, exit_early=lambda n: EarlyExit.INVALID_HP if n in invalid else None
    )
    replaced = min(len(invalid), budget)
    assert len(created) == budget + replaced
    assert searcher.total_trials == budget + replaced


def test_grid_does_not_replace_an_invalid_point_and_other_reasons_never_replace() -> None:
    cfg = cfg_for("grid")
    budget = make_searcher(cfg).budget
    created, _ = drive(cfg, restore_every_step=True, exit_early=lambda n: EarlyExit.INVALID_HP)
    assert len(created) == budget
    for reason in (EarlyExit.ERRORED, EarlyExit.USER_REQUESTED_STOP):
        created, _ = drive(cfg_for("random"), restore_every_step=True, exit_early=lambda n, r=reason: r)
        assert len(created) == 6


def test_replacements_are_capped_so_an_all_invalid_space_still_ends() -> None:
    created, searcher = drive(
        cfg_for("random"), restore_every_step=True, exit_early=lambda n: EarlyExit.INVALID_HP
    )
    assert len(created) == 12 == 2 * searcher.budget


def test_reopen_resumes_a_closed_trial_and_round_trips() -> None:
    cfg = cfg_for("random")
    searcher = make_searcher(cfg)
    queue = list(searcher.initial_operations())
    first = queue[0]
    assert isinstance(first, Create)
    while queue:
        op = queue.pop(0)
        if isinstance(op, Create):
            queue += searcher.on_trial_closed(op.request_id)
    assert searcher.is_shut_down
    searcher.reopen(first.request_id)
    searcher.reopen(first.request_id)  # harmless when already open
    assert not searcher.is_shut_down
    searcher = Searcher.restore(cfg, json.loads(json.dumps(searcher.state())))
    assert searcher.progress() < 1.0
    assert searcher.on_trial_closed(first.request_id) == [Shutdown()]
    with pytest.raises(ValueError, match="unknown"):
        searcher.reopen("nope")


def test_single_samples_ranges_from_the_experiment_seed() -> None:
    one = make_searcher(config("single", seed=1)).initial_operations()[0].hparams
    again = make_searcher(config("single", seed=1)).initial_operations()[0].hparams
    other = [make_searcher(config("single", seed=s)).initial_operations()[0].hparams for s in range(2, 6)]
    assert one == again
    assert any(o != one for o in other)
    assert 10**-4 <= one["lr"] <= 10**-1 and 1 <= one["layers"] <= 8
    assert one["c"] == [1, 2] and one["group"]["fixed"] == 7


def test_async_halving_has_one_bracket_of_num_rungs() -> None:
    searcher = make_searcher(cfg_for("async_halving"))
    assert isinstance(searcher, AsyncHalvingSearcher)
    assert [(b.rungs, b.max_trials) for b in searcher.brackets] == [(3, 8)]
    assert searcher.rung_times(0) == [4.0, 8.0, 16.0]


def test_bayesian_uses_the_results_it_has_seen() -> None:
    """Past the startup trials TPE samples near good points: not the random sequence any more."""
    cfg = config(
        "bayesian",
        space={"x": {"type": "double", "minval": 0, "maxval": 10}},
        max_trials=30,
        max_concurrent_trials=1,
        startup_trials=5,
    )
    searcher = make_searcher(cfg)
    assert isinstance(searcher, BayesianSearcher)
    xs: list[float] = []
    queue = list(searcher.initial_operations())
    while queue:
        op = queue.pop(0)
        if isinstance(op, Create):
            xs.append(op.hparams["x"])
            searcher.on_validation(op.request_id, (op.hparams["x"] - 3) ** 2)
            queue += searcher.on_trial_closed(op.request_id)
    late = xs[20:]
    assert sum(abs(x - 3) for x in late) / len(late) < 1.5, xs


def test_bayesian_state_from_another_space_is_refused() -> None:
    state = drive(cfg_for("bayesian"), restore_every_step=False)[1].state()
    other = config(
        "bayesian", space={"x": {"type": "double", "minval": 0, "maxval": 1}}, **SEARCHERS["bayesian"]
    )
    with pytest.raises(ValueError):
        Searcher.restore(other, state)


def test_early_exits_decide_the_trial_without_retrying() -> None:
    def end(reason: str | None, **kw: Any) -> outcomes.Outcome:
        return outcomes.decide(
            outcomes.RunEnd(experiment_state=ExperimentState.ACTIVE, exit_code=1, early_exit=reason, **kw)
        )

    assert end("INVALID_HP") == outcomes.Outcome("COMPLETED", True, outcomes.INVALID_HP)
    assert end("USER_REQUESTED_STOP") == outcomes.Outcome("COMPLETED", True, outcomes.USER_REQUESTED_STOP)
    assert end("ERRORED") == outcomes.Outcome("ERROR", True, outcomes.ERRORED_EARLY)
    assert end("INVALID_HP", agent_lost=True).trial_state == "COMPLETED"
    assert end("INVALID_HP", kill_requested=True).trial_state == "CANCELED"  # a kill still wins
    assert end(None).trial_state == "ACTIVE"  # no early exit: an ordinary retried failure


def test_preview_lists_grid_points_and_asha_rungs_without_creating_anything() -> None:
    grid = preview(cfg_for("grid"))
    assert grid.total_trials == len(grid.trials) == 2 * 3 * 2 * 2 and not grid.truncated
    assert grid.trials[0].hparams["c"] == [1, 2]
    asha = preview(cfg_for("async_halving"))
    assert [(r.time, r.trials, r.stop_here) for r in asha.brackets[0].rungs] == [
        (4.0, 8, 4),
        (8.0, 4, 2),
        (16.0, 2, 2),
    ]
    assert [t.hparams for t in asha.trials] == drive(cfg_for("async_halving"), restore_every_step=False)[0]
    bayes = preview(cfg_for("bayesian"))
    assert bayes.adaptive and bayes.trials == [] and bayes.total_trials == 8
    limited = preview(cfg_for("random"), limit=2)
    assert len(limited.trials) == 2 and limited.truncated


def test_preview_refuses_a_bad_config_with_field_paths() -> None:
    bad = "entrypoint: x\nsearcher: {name: bayesian, metric: loss, max_trials: 0}\n"
    with pytest.raises(Invalid) as caught:
        preview_search(bad, max_config_bytes=10_000, max_trials=100)
    assert [e.path for e in caught.value.errors] == ["searcher.max_trials"]
    big = "entrypoint: x\nsearcher: {name: random, metric: loss, max_trials: 500}\n"
    with pytest.raises(Invalid, match="more than this master allows") as caught:
        preview_search(big, max_config_bytes=10_000, max_trials=100)
    assert [e.path for e in caught.value.errors] == ["searcher.max_trials"]
