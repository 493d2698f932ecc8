"""Searchers: which trials an experiment runs, in what order, and how they survive a master restart."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart_master.expconf import ExperimentConfig, parse_experiment_config
from stalwart_master.searcher import (
    Create,
    GridSearcher,
    Op,
    RandomSearcher,
    Searcher,
    Shutdown,
    SingleSearcher,
    grid_axis,
    make_searcher,
)
from stalwart_master.searcher.base import SEED_LIMIT, trial_seed
from stalwart_master.searcher.space import searchable_specs

pytestmark = pytest.mark.unit

PROPERTY = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def make_config(
    hyperparameters: dict[str, Any] | None = None,
    *,
    name: str = "grid",
    seed: int | None = 1234,
    **searcher: Any,
) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "entrypoint": "python3 train.py",
        "hyperparameters": hyperparameters or {},
        "searcher": {"name": name, "metric": "loss", **searcher},
    }
    if seed is not None:
        raw["reproducibility"] = {"experiment_seed": seed}
    # JSON is YAML, so the config goes through the same parser as a user's file.
    return parse_experiment_config(json.dumps(raw)).config


def roundtrip(searcher: Searcher) -> dict[str, Any]:
    """The state as the database would hand it back, checked to be plain JSON and stable."""
    state = searcher.state()
    stored: dict[str, Any] = json.loads(json.dumps(state))
    assert stored == state
    return stored


def run_to_end(
    config: ExperimentConfig, *, close_seed: int = 0, restore_every_step: bool = False
) -> tuple[list[Create], list[float]]:
    """Drive a searcher like the master would, closing open trials in a random order.

    Checks on the way: the concurrency cap, JSON state at every step, exactly one Shutdown that comes
    last, and progress that never goes backwards.
    """
    rng = random.Random(close_seed)
    searcher = make_searcher(config)
    limit = config.searcher.max_concurrent_trials or math.inf
    created = searcher.initial_operations()
    open_ids = [op.request_id for op in created]
    shutdowns = 0
    progress = [searcher.progress()]
    while open_ids:
        assert len(open_ids) <= limit
        state = roundtrip(searcher)
        if restore_every_step:
            searcher = Searcher.restore(config, state)
            assert searcher.state() == state
        closing = open_ids.pop(rng.randrange(len(open_ids)))
        ops = searcher.on_trial_closed(closing)
        for op in ops:
            assert shutdowns == 0, "nothing may follow Shutdown"
            if isinstance(op, Shutdown):
                shutdowns += 1
            else:
                created.append(op)
                open_ids.append(op.request_id)
        assert progress[-1] <= searcher.progress() <= 1.0
        progress.append(searcher.progress())
    assert shutdowns == 1
    assert searcher.is_shut_down and searcher.progress() == 1.0
    assert len(created) == searcher.total_trials
    assert len({op.request_id for op in created}) == len(created)
    roundtrip(searcher)
    return created, progress


def one_create(ops: list[Op]) -> Create:
    [op] = ops
    assert isinstance(op, Create)
    return op


def hparams_of(ops: list[Create]) -> list[dict[str, Any]]:
    return [op.hparams for op in ops]


# --- single ---------------------------------------------------------------------------------------


def test_single_runs_one_trial_with_the_constants_and_shuts_down() -> None:
    hps = {"batch": 64, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "x": {"type": "const", "val": 3}}
    config = make_config(hps, name="single")
    searcher = make_searcher(config)
    assert isinstance(searcher, SingleSearcher)
    [op] = searcher.initial_operations()
    assert op.hparams == {"batch": 64, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "x": 3}
    assert searcher.progress() == 0.0
    assert searcher.on_trial_closed(op.request_id) == [Shutdown()]
    assert searcher.progress() == 1.0


# --- grid axes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "int", "minval": 0, "maxval": 10, "count": 3}, [0, 5, 10]),
        ({"type": "int", "minval": 0, "maxval": 10, "count": 4}, [0, 3, 7, 10]),
        ({"type": "int", "minval": 0, "maxval": 5, "count": 3}, [0, 3, 5]),  # 2.5 rounds half up
        ({"type": "int", "minval": -5, "maxval": 0, "count": 3}, [-5, -2, 0]),  # -2.5 rounds up too
        ({"type": "int", "minval": 1, "maxval": 3, "count": 10}, [1, 2, 3]),  # more points than ints
        ({"type": "int", "minval": 1, "maxval": 4, "count": 1}, [3]),  # one point: the middle
        ({"type": "double", "minval": 0, "maxval": 1, "count": 5}, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ({"type": "double", "minval": 0.1, "maxval": 0.3, "count": 3}, [0.1, 0.2, 0.3]),
        ({"type": "double", "minval": -1, "maxval": 1, "count": 1}, [0.0]),
        ({"type": "log", "minval": 0, "maxval": 3, "base": 2, "count": 4}, [1.0, 2.0, 4.0, 8.0]),
        ({"type": "log", "minval": -4, "maxval": -1, "count": 4}, [1e-4, 1e-3, 1e-2, 1e-1]),
        (
            {"type": "categorical", "vals": ["relu", {"name": "gelu"}, [1, 2]]},
            ["relu", {"name": "gelu"}, [1, 2]],
        ),
    ],
)
def test_grid_axis_values(spec: dict[str, Any], expected: list[Any]) -> None:
    [parsed] = searchable_specs(make_config({"h": spec}).hyperparameters)
    axis = grid_axis(parsed)
    assert axis == pytest.approx(expected) if spec["type"] in ("double", "log") else axis == expected
    if spec["type"] == "int":
        assert all(type(v) is int for v in axis)
    if spec["type"] in ("double", "log"):
        assert all(type(v) is float for v in axis)


def test_grid_axis_ends_exactly_on_both_bounds() -> None:
    config = make_config({"h": {"type": "double", "minval": 0.1, "maxval": 0.7, "count": 7}})
    [spec] = searchable_specs(config.hyperparameters)
    axis = grid_axis(spec)
    assert axis[0] == 0.1 and axis[-1] == 0.7
    assert axis == sorted(axis) and len(set(axis)) == 7


@given(
    minval=st.integers(-1000, 1000),
    width=st.integers(1, 500),
    count=st.integers(1, 40),
)
@PROPERTY
def test_int_grid_axis_is_sorted_unique_and_inside_the_range(minval: int, width: int, count: int) -> None:
    maxval = minval + width
    config = make_config({"h": {"type": "int", "minval": minval, "maxval": maxval, "count": count}})
    axis = grid_axis(searchable_specs(config.hyperparameters)[0])
    assert axis == sorted(set(axis))
    assert all(minval <= v <= maxval for v in axis)
    assert len(axis) == min(count, width + 1) or count == 1
    if count > 1:
        assert axis[0] == minval and axis[-1] == maxval


# --- grid searcher --------------------------------------------------------------------------------


NESTED = {
    "lr": {"type": "log", "minval": -3, "maxval": -1, "count": 3},
    "model": {
        "layers": {"type": "int", "minval": 1, "maxval": 2, "count": 2},
        "act": {"type": "categorical", "vals": ["relu", "tanh"]},
        "width": 128,
        "extra": {"type": "const", "val": {"type_like": "stays a value"}},
    },
    "sizes": [1, 2, 3],
    "empty": {},
    "name": "cnn",
}


def test_grid_is_the_cartesian_product_in_a_fixed_order_with_nested_structure() -> None:
    config = make_config(NESTED, max_concurrent_trials=0)
    ops, _ = run_to_end(config)
    # Trials are created in order, so the creation order is the grid order: the last axis varies fastest.
    expected: list[dict[str, Any]] = [
        {
            "lr": lr,
            "model": {"layers": layers, "act": act, "width": 128, "extra": {"type_like": "stays a value"}},
            "sizes": [1, 2, 3],
            "empty": {},
            "name": "cnn",
        }
        for lr, layers, act in itertools.product([1e-3, 1e-2, 1e-1], [1, 2], ["relu", "tanh"])
    ]
    got = hparams_of(ops)
    assert len(got) == 12
    for actual, wanted in zip(got, expected, strict=True):
        assert actual["lr"] == pytest.approx(wanted["lr"])
        assert {**actual, "lr": None} == {**wanted, "lr": None}
        assert list(actual) == list(wanted) and list(actual["model"]) == list(wanted["model"])


def test_grid_size_multiplies_the_axes_after_int_deduplication() -> None:
    hps = {
        "a": {"type": "int", "minval": 1, "maxval": 3, "count": 10},  # 3 distinct values
        "b": {"type": "double", "minval": 0, "maxval": 1, "count": 4},
        "c": {"type": "categorical", "vals": [1, 2, 3, 4, 5]},
    }
    searcher = make_searcher(make_config(hps))
    assert isinstance(searcher, GridSearcher)
    assert searcher.total_trials == 3 * 4 * 5
    ops, _ = run_to_end(make_config(hps, max_concurrent_trials=7))
    assert len({json.dumps(h, sort_keys=True) for h in hparams_of(ops)}) == 60


def test_grid_without_hyperparameters_runs_one_trial() -> None:
    ops, _ = run_to_end(make_config({}))
    assert hparams_of(ops) == [{}]


def test_grid_and_single_trial_seeds_come_from_the_experiment_seed() -> None:
    ops_a, _ = run_to_end(make_config(NESTED, seed=7), close_seed=1)
    ops_b, _ = run_to_end(make_config(NESTED, seed=7), close_seed=2)
    ops_c, _ = run_to_end(make_config(NESTED, seed=8))
    assert [op.trial_seed for op in ops_a] == [op.trial_seed for op in ops_b]
    assert [op.trial_seed for op in ops_a] != [op.trial_seed for op in ops_c]
    assert [op.trial_seed for op in ops_a] == [trial_seed(7, i) for i in range(len(ops_a))]


def test_created_hparams_do_not_share_objects_with_the_config_or_each_other() -> None:
    config = make_config(
        {"v": {"type": "categorical", "vals": [{"k": [1]}]}, "c": {"a": [1]}}, name="random", max_trials=2
    )
    searcher = make_searcher(config)
    first, second = searcher.initial_operations()
    first.hparams["v"]["k"].append(2)
    first.hparams["c"]["a"].append(2)
    assert second.hparams == {"v": {"k": [1]}, "c": {"a": [1]}}
    assert make_searcher(config).initial_operations()[0].hparams == {"v": {"k": [1]}, "c": {"a": [1]}}


# --- random searcher ------------------------------------------------------------------------------

SPACE = {
    "n": {"type": "int", "minval": 1, "maxval": 3},
    "dropout": {"type": "double", "minval": 0.1, "maxval": 0.5, "count": 2},  # count is ignored here
    "lr": {"type": "log", "minval": -4, "maxval": -2, "base": 10},
    "opt": {"name": {"type": "categorical", "vals": ["sgd", "adam", "lamb"]}, "momentum": 0.9},
    "fixed": "yes",
}


def test_random_samples_stay_in_range_and_cover_the_choices() -> None:
    ops, _ = run_to_end(make_config(SPACE, name="random", max_trials=200, max_concurrent_trials=0))
    hps = hparams_of(ops)
    assert {h["n"] for h in hps} == {1, 2, 3}  # both ends of an int range are included
    assert all(type(h["n"]) is int for h in hps)
    assert all(0.1 <= h["dropout"] <= 0.5 for h in hps)
    assert len({h["dropout"] for h in hps}) > 100  # sampled, not gridded
    assert all(1e-4 <= h["lr"] <= 1e-2 for h in hps)
    # Log-uniform: about half the samples fall below the geometric middle, 1e-3.
    assert 60 < sum(h["lr"] < 1e-3 for h in hps) < 140
    assert {h["opt"]["name"] for h in hps} == {"sgd", "adam", "lamb"}
    assert all(h["opt"]["momentum"] == 0.9 and h["fixed"] == "yes" for h in hps)
    seeds = [op.trial_seed for op in ops]
    assert all(0 <= s < SEED_LIMIT for s in seeds) and len(set(seeds)) == len(seeds)


def test_random_is_reproducible_from_the_experiment_seed() -> None:
    first, _ = run_to_end(make_config(SPACE, name="random", max_trials=20, max_concurrent_trials=3, seed=42))
    again, _ = run_to_end(
        make_config(SPACE, name="random", max_trials=20, max_concurrent_trials=5, seed=42), close_seed=9
    )
    other, _ = run_to_end(make_config(SPACE, name="random", max_trials=20, max_concurrent_trials=3, seed=43))
    assert hparams_of(first) == hparams_of(again)
    assert [op.trial_seed for op in first] == [op.trial_seed for op in again]
    assert hparams_of(first) != hparams_of(other)
    assert {op.request_id for op in first}.isdisjoint(op.request_id for op in again)


def test_random_restore_continues_the_same_sequence() -> None:
    config = make_config(SPACE, name="random", max_trials=15, max_concurrent_trials=2, seed=5)
    straight, _ = run_to_end(config)
    resumed, _ = run_to_end(config, close_seed=3, restore_every_step=True)
    assert hparams_of(resumed) == hparams_of(straight)
    assert [op.trial_seed for op in resumed] == [op.trial_seed for op in straight]


def test_searcher_without_a_seed_is_still_deterministic() -> None:
    config = ExperimentConfig.model_validate(
        {
            "entrypoint": "x",
            "hyperparameters": SPACE,
            "searcher": {"name": "random", "metric": "m", "max_trials": 3},
        }
    )
    assert config.reproducibility.experiment_seed is None
    a = make_searcher(config).initial_operations()
    b = make_searcher(config).initial_operations()
    assert hparams_of(a) == hparams_of(b)
    assert make_searcher(config).state()["experiment_seed"] == 0


# --- the protocol: concurrency, shutdown, state ------------------------------------------------------


@given(
    name=st.sampled_from(["grid", "random"]),
    trials=st.integers(1, 12),
    limit=st.integers(0, 5),
    close_seed=st.integers(0, 2**16),
    restore=st.booleans(),
)
@PROPERTY
def test_every_searcher_respects_the_cap_and_shuts_down_exactly_once(
    name: str, trials: int, limit: int, close_seed: int, restore: bool
) -> None:
    if name == "grid":
        config = make_config(
            {"c": {"type": "categorical", "vals": list(range(trials))}}, max_concurrent_trials=limit
        )
    else:
        config = make_config(SPACE, name="random", max_trials=trials, max_concurrent_trials=limit)
    searcher = make_searcher(config)
    first = searcher.initial_operations()
    assert len(first) == (min(limit, trials) if limit else trials)
    ops, progress = run_to_end(config, close_seed=close_seed, restore_every_step=restore)
    assert len(ops) == trials
    assert progress[0] == 0.0 and progress[-1] == 1.0
    if name == "grid":
        assert [h["c"] for h in hparams_of(ops)] == list(range(trials))


def test_closing_one_trial_creates_the_next_under_the_cap() -> None:
    config = make_config({"c": {"type": "categorical", "vals": [0, 1, 2, 3, 4]}}, max_concurrent_trials=2)
    searcher = make_searcher(config)
    a, b = searcher.initial_operations()
    c = one_create(searcher.on_trial_closed(b.request_id))
    assert c.hparams == {"c": 2}
    assert searcher.progress() == pytest.approx(1 / 5)
    d = one_create(searcher.on_trial_closed(a.request_id))
    e = one_create(searcher.on_trial_closed(c.request_id))
    assert searcher.on_trial_closed(d.request_id) == []  # nothing left to create, e still running
    assert searcher.on_trial_closed(e.request_id) == [Shutdown()]


def test_closing_a_trial_twice_changes_nothing() -> None:
    config = make_config({"c": {"type": "categorical", "vals": [0, 1, 2]}}, max_concurrent_trials=1)
    searcher = make_searcher(config)
    [a] = searcher.initial_operations()
    b = one_create(searcher.on_trial_closed(a.request_id))
    before = searcher.state()
    assert searcher.on_trial_closed(a.request_id) == []
    assert searcher.state() == before
    c = one_create(searcher.on_trial_closed(b.request_id))
    assert searcher.on_trial_closed(c.request_id) == [Shutdown()]
    assert searcher.on_trial_closed(c.request_id) == []  # no second Shutdown


def test_initial_operations_twice_is_a_bug() -> None:
    searcher = make_searcher(make_config({}))
    searcher.initial_operations()
    with pytest.raises(RuntimeError):
        searcher.initial_operations()


def test_unknown_request_ids_are_refused() -> None:
    searcher = make_searcher(make_config({}))
    [op] = searcher.initial_operations()
    with pytest.raises(ValueError, match="unknown searcher request id"):
        searcher.on_trial_closed("nope")
    with pytest.raises(ValueError, match="unknown searcher request id"):
        searcher.on_validation("nope", 0.5)
    assert searcher.on_validation(op.request_id, 0.5) == []


def test_restore_keeps_open_trials_and_the_shutdown_flag() -> None:
    config = make_config({"c": {"type": "categorical", "vals": [0, 1, 2]}}, max_concurrent_trials=2)
    searcher = make_searcher(config)
    a, b = searcher.initial_operations()
    restored = Searcher.restore(config, roundtrip(searcher))
    assert isinstance(restored, GridSearcher)
    c = one_create(restored.on_trial_closed(a.request_id))
    assert c.hparams == {"c": 2}
    assert restored.on_trial_closed(b.request_id) == []
    assert restored.on_trial_closed(c.request_id) == [Shutdown()]
    final = Searcher.restore(config, roundtrip(restored))
    assert final.is_shut_down and final.progress() == 1.0
    assert final.on_trial_closed(c.request_id) == []


def test_restore_picks_the_searcher_class_from_the_config() -> None:
    config = make_config(SPACE, name="random", max_trials=3)
    restored = Searcher.restore(config, make_searcher(config).state())
    assert isinstance(restored, RandomSearcher)
    assert RandomSearcher.restore(config, make_searcher(config).state()).total_trials == 3


def _state_for(config: ExperimentConfig) -> dict[str, Any]:
    searcher = make_searcher(config)
    searcher.initial_operations()
    return searcher.state()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(version=2), "version"),
        (lambda s: s.update(searcher="random"), "searcher"),
        (lambda s: s.update(experiment_seed=99), "experiment_seed"),
        (lambda s: s.update(total_trials=4), "total_trials"),
        (lambda s: s.update(trials="x"), "trial list"),
        (lambda s: s["trials"].append("x"), "malformed"),
        (lambda s: s["trials"][0].update(closed="yes"), "malformed"),
        (lambda s: s["trials"].append(dict(s["trials"][0])), "twice"),
        (lambda s: s.update(shutdown=None), "shutdown"),
        (lambda s: s.update(shutdown=True), "shut down"),
    ],
)
def test_restore_refuses_a_state_that_does_not_belong_to_the_config(change: Any, message: str) -> None:
    config = make_config({"c": {"type": "categorical", "vals": [0, 1, 2]}}, seed=1, max_concurrent_trials=2)
    state = copy.deepcopy(_state_for(config))
    change(state)
    with pytest.raises(ValueError, match=message):
        Searcher.restore(config, state)


def test_restore_refuses_the_state_of_a_different_search_space() -> None:
    state = _state_for(make_config({"c": {"type": "categorical", "vals": [0, 1, 2]}}))
    with pytest.raises(ValueError, match="total_trials"):
        Searcher.restore(make_config({"c": {"type": "categorical", "vals": [0, 1]}}), state)


def test_a_searcher_class_refuses_another_searchers_config() -> None:
    with pytest.raises(ValueError, match="cannot run"):
        RandomSearcher(make_config({}))
