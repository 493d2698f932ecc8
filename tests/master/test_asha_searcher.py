"""``adaptive_asha``: brackets, the split of trials, rung decisions, restore, and an oracle run.

Pure logic: the searcher is driven as the master drives it, without a database.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from stalwart_master.expconf import ExperimentConfig, parse_experiment_config
from stalwart_master.expconf.searchers import AdaptiveASHASearcher as ASHAConfig
from stalwart_master.searcher import AdaptiveASHASearcher, Create, Searcher, Shutdown, Stop, make_searcher
from stalwart_master.searcher.asha import bracket_rungs, rungs_possible, split_concurrency, split_trials

pytestmark = pytest.mark.unit


def config(**searcher: Any) -> ExperimentConfig:
    raw = {
        "entrypoint": "python3 train.py",
        "hyperparameters": {"lr": {"type": "log", "minval": -4, "maxval": -1, "base": 10}},
        "searcher": {
            "name": "adaptive_asha",
            "metric": "loss",
            "time_metric": "batches",
            "max_time": 64,
            "max_trials": 16,
            **searcher,
        },
        "reproducibility": {"experiment_seed": 7},
    }
    return parse_experiment_config(json.dumps(raw)).config


def asha(**searcher: Any) -> AdaptiveASHASearcher:
    made = make_searcher(config(**searcher))
    assert isinstance(made, AdaptiveASHASearcher)
    return made


def test_rungs_possible_is_floor_log_plus_one_without_float_error() -> None:
    assert [rungs_possible(4, n, 99) for n in (1, 3, 4, 15, 16, 63, 64, 65)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert rungs_possible(10, 1000, 99) == 4  # 10**3 == 1000 exactly: a float log gives 2.9999...
    assert rungs_possible(4, 65, 2) == 2
    # A divisor just above 1 would count for minutes without the cap.
    assert rungs_possible(1.0000001, 2**31 - 1, 64) == 64


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("aggressive", [4]), ("standard", [4, 3, 2]), ("conservative", [4, 3, 2, 1])],
)
def test_brackets_by_mode_are_capped_by_max_time_and_max_trials(mode: str, expected: list[int]) -> None:
    # max_rungs 5, but max_time 64 and divisor 4 allow 4 rungs (1, 4, 16, 64); 300 trials allow 5.
    cfg = config(mode=mode, max_rungs=5, max_trials=300).searcher
    assert isinstance(cfg, ASHAConfig)
    assert bracket_rungs(cfg) == expected
    few = config(mode=mode, max_rungs=5, max_trials=3).searcher  # 3 trials: one rung at most
    assert isinstance(few, ASHAConfig)
    assert bracket_rungs(few) == [1]


def test_explicit_bracket_rungs_are_used_most_aggressive_first() -> None:
    cfg = config(bracket_rungs=[2, 4]).searcher
    assert isinstance(cfg, ASHAConfig)
    assert bracket_rungs(cfg) == [4, 2]


def test_trials_are_split_for_even_compute_and_always_sum_to_max_trials() -> None:
    assert split_trials([4, 3, 2], 4.0, 100) == [69, 23, 8]  # weights 16, 16/3, 2 of 23.33
    for max_trials in range(1, 60):
        counts = split_trials([4, 3, 2, 1], 4.0, max_trials)
        assert sum(counts) == max_trials
        assert all(c >= 1 for c in counts[: min(max_trials, 4)])
    assert split_trials([4, 3, 2], 4.0, 2) == [1, 1, 0]


def test_concurrency_is_split_evenly_and_never_below_one_per_bracket() -> None:
    assert split_concurrency(3, 16) == [6, 5, 5]
    assert split_concurrency(3, 2) == [1, 1, 1]
    assert split_concurrency(2, 0) == [0, 0]


def test_rungs_are_reached_at_max_time_over_powers_of_the_divisor() -> None:
    searcher = asha(mode="standard", max_trials=100)
    assert [b.rungs for b in searcher.brackets] == [4, 3, 2]
    assert searcher.rung_times(0) == [1, 4, 16, 64]
    assert searcher.rung_times(2) == [16, 64]


def test_a_trial_outside_the_top_fraction_of_a_rung_is_stopped_and_the_top_rung_stops_all() -> None:
    searcher = asha(mode="aggressive", divisor=2, max_time=4, max_trials=8, max_concurrent_trials=8)
    ids = [op.request_id for op in searcher.initial_operations() if isinstance(op, Create)]
    assert len(ids) == 8 and searcher.rung_times(0) == [1, 2, 4]
    # Rung 0 (time 1): the first arrivals are each alone or in the top half of those so far.
    assert searcher.on_validation(ids[0], 0.5, 1) == []
    assert searcher.on_validation(ids[1], 0.4, 1) == []  # best of 2: keep 1, it is that one
    assert searcher.on_validation(ids[2], 0.9, 1) == [Stop(ids[2])]  # third of 3: keep 1
    assert searcher.on_validation(ids[3], 0.1, 1) == []
    # Stopped trials are not asked about again, whatever they report.
    assert searcher.on_validation(ids[2], 0.0, 4) == []
    # A report that jumps two rungs is recorded in both, stopping at the first it fails.
    assert searcher.on_validation(ids[1], 0.3, 2) == []  # alone in rung 1
    assert searcher.on_validation(ids[3], 0.35, 2) == [Stop(ids[3])]  # 2 in rung 1: keep 1, 0.3 wins
    # The same report again (a retried batch) changes nothing.
    assert searcher.on_validation(ids[3], 0.35, 2) == []
    assert searcher.on_validation(ids[1], 0.2, 4) == [Stop(ids[1])]  # the top rung: done
    assert searcher.is_stopped(ids[1]) and not searcher.is_stopped(ids[0])


def test_larger_is_better_and_nan_ranks_last() -> None:
    searcher = asha(
        mode="aggressive",
        divisor=2,
        max_time=4,
        max_trials=8,
        smaller_is_better=False,
        max_concurrent_trials=8,
    )
    ids = [op.request_id for op in searcher.initial_operations() if isinstance(op, Create)]
    assert searcher.on_validation(ids[0], 0.9, 1) == []
    assert searcher.on_validation(ids[1], math.nan, 1) == [Stop(ids[1])]
    assert searcher.on_validation(ids[2], 0.95, 1) == []  # better than 0.9 and NaN
    assert searcher.on_validation(ids[3], 0.5, 1) == [Stop(ids[3])]
    json.dumps(searcher.state(), allow_nan=False)  # the state stays storable in JSONB


def test_without_a_time_value_nothing_is_decided() -> None:
    searcher = asha()
    (first, *_) = [op.request_id for op in searcher.initial_operations() if isinstance(op, Create)]
    assert searcher.on_validation(first, 0.1, None) == []


def drive(searcher: Searcher, curves: dict[int, list[float]], rng: random.Random) -> dict[str, int]:
    """Run a whole search: open trials report one validation per time unit in random order; a
    stopped trial closes, and so does one that reaches the end of its curve. Returns time reached."""
    open_trials: dict[str, int] = {}
    ordinals: dict[str, int] = {}
    reached: dict[str, int] = {}

    def apply(ops: list[Any]) -> None:
        for op in ops:
            if isinstance(op, Create):
                ordinals[op.request_id] = len(ordinals)
                open_trials[op.request_id] = 0

    apply(searcher.initial_operations())
    shutdowns = 0
    while open_trials:
        request_id = rng.choice(sorted(open_trials))
        open_trials[request_id] += 1
        time = open_trials[request_id]
        curve = curves[ordinals[request_id] % len(curves)]
        ops = searcher.on_validation(request_id, curve[min(time, len(curve)) - 1], time)
        if any(isinstance(op, Stop) for op in ops) or time >= len(curve):
            reached[request_id] = open_trials.pop(request_id)
            closed = searcher.on_trial_closed(request_id)
            shutdowns += sum(isinstance(op, Shutdown) for op in closed)
            apply(closed)
        # A master restart at any point continues the same search.
        restored = Searcher.restore(searcher.config, json.loads(json.dumps(searcher.state())))
        assert restored.state() == searcher.state()
        searcher = restored
    assert shutdowns == 1 and searcher.is_shut_down and searcher.progress() == 1.0
    return reached


def test_a_whole_search_runs_every_trial_and_only_the_best_reach_max_time() -> None:
    max_time = 16
    # Curve k: loss falls with time, trial quality k (0 best) sets its level.
    curves = {k: [1.0 + k - t / (4 * max_time) for t in range(1, max_time + 1)] for k in range(8)}
    searcher = asha(mode="standard", divisor=2, max_time=max_time, max_trials=24, max_concurrent_trials=4)
    reached = drive(searcher, curves, random.Random(3))
    assert len(reached) == 24
    finished = sum(1 for time in reached.values() if time >= max_time)
    assert 1 <= finished < 24, "ASHA let either nobody or everybody train to max_time"
    assert sum(reached.values()) < 24 * max_time / 2, "early stopping saved less than half the compute"


def test_restore_refuses_a_state_from_other_brackets() -> None:
    searcher = asha(mode="standard", max_trials=100)
    searcher.initial_operations()
    state = searcher.state()
    with pytest.raises(ValueError, match=r"rungs of another shape|in bracket"):
        Searcher.restore(config(mode="aggressive", max_trials=100), state)
    broken = json.loads(json.dumps(state))
    broken["asha"]["brackets"] = broken["asha"]["brackets"][:-1]
    with pytest.raises(ValueError, match="bracket for every trial"):
        Searcher.restore(config(mode="standard", max_trials=100), broken)


def test_concurrency_is_respected_per_bracket_and_closing_creates_in_that_bracket() -> None:
    searcher = asha(mode="standard", max_trials=100, max_concurrent_trials=6)
    first = [op for op in searcher.initial_operations() if isinstance(op, Create)]
    per_bracket = [sum(1 for op in first if searcher.bracket_of(op.request_id) == b) for b in range(3)]
    assert per_bracket == [2, 2, 2]
    closed_in = searcher.bracket_of(first[-1].request_id)
    (created,) = searcher.on_trial_closed(first[-1].request_id)
    assert isinstance(created, Create) and searcher.bracket_of(created.request_id) == closed_in
    assert created.hparams != first[0].hparams  # drawn afresh, like random
