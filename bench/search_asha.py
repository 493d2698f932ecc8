"""ASHA quality for bench/search.py: the master's searchers driven in-process on a synthetic objective.

The searchers are pure code, so this drives ``adaptive_asha`` and ``random`` through exactly the
calls the master makes (``initial_operations``, ``on_validation(request_id, metric, time)`` after
each validation, ``on_trial_closed`` when a trial ends) and simulates the trials: each trains one
step per time unit, validates every ``period`` steps on objective.curve plus seeded noise, and stops
at ``max_time`` or when the searcher answers ``Stop`` (applied at once; on a cluster the trial
would notice at its next check). With one experiment seed both searchers sample the same
hyperparameters for the same trial ordinals, so ASHA is compared with random search on the very
same configurations.
"""

from __future__ import annotations

import heapq
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stalwart_master.expconf.parse import parse_experiment_config
from stalwart_master.searcher import Create, Searcher, Shutdown, Stop, make_searcher

sys.path.insert(0, str(Path(__file__).parent / "search_trial"))
from objective import BEST_DROPOUT, SPACE, curve, noisy


@dataclass
class _Trial:
    hp: dict[str, Any]
    seed: int
    steps: int = 0
    last: float = math.inf
    closed: bool = False


@dataclass(frozen=True)
class Outcome:
    total_steps: int
    trials: int
    full_trials: int  # trained to max_time
    best_true: float  # noiseless final loss of the trial with the best reported final metric
    finals: list[float]  # noiseless final loss of every trial trained to max_time


def searcher_for(name: str, seed: int, trials: int, max_time: int, concurrency: int) -> Searcher:
    searcher: dict[str, Any] = {
        "name": name,
        "metric": "loss",
        "smaller_is_better": True,
        "max_trials": trials,
        "max_concurrent_trials": concurrency,
    }
    if name == "adaptive_asha":
        searcher.update(time_metric="batches", max_time=max_time)  # mode standard, divisor 4
    config = {
        "name": f"asha-quality-{name}",
        "entrypoint": "python3 train.py",
        "hyperparameters": SPACE,
        "searcher": searcher,
        "reproducibility": {"experiment_seed": seed},
    }
    return make_searcher(parse_experiment_config(yaml.safe_dump(config)).config)


def simulate(searcher: Searcher, max_time: int, period: int) -> Outcome:
    """Run one search to its Shutdown; trials advance in simulated time, ``period`` steps per event."""
    trials: dict[str, _Trial] = {}
    events: list[tuple[int, int, str]] = []  # (time of the next validation, tie-break, request id)
    order = 0

    def apply(ops: list[Any], now: int) -> bool:
        nonlocal order
        done = False
        for op in ops:
            if isinstance(op, Create):
                trials[op.request_id] = _Trial(op.hparams, op.trial_seed)
                order += 1
                heapq.heappush(events, (now + period, order, op.request_id))
            elif isinstance(op, Stop):
                trials[op.request_id].closed = True
                done |= apply(searcher.on_trial_closed(op.request_id), now)
            elif isinstance(op, Shutdown):
                done = True
        return done

    finished = apply(list(searcher.initial_operations()), 0)
    while events and not finished:
        now, _, request_id = heapq.heappop(events)
        trial = trials[request_id]
        if trial.closed:
            continue
        trial.steps = min(trial.steps + period, max_time)
        trial.last = noisy(trial.hp, trial.steps, trial.seed)
        ops = list(searcher.on_validation(request_id, trial.last, float(trial.steps)))
        if trial.steps >= max_time and not any(isinstance(o, Stop) for o in ops):
            ops.append(Stop(request_id))  # a trial that reached max_time ends on its own
        finished = apply(ops, now)
        if not trial.closed:
            order += 1
            heapq.heappush(events, (now + period, order, request_id))
    full = [t for t in trials.values() if t.steps >= max_time]
    best = min(full, key=lambda t: t.last)
    return Outcome(
        total_steps=sum(t.steps for t in trials.values()),
        trials=len(trials),
        full_trials=len(full),
        best_true=curve(best.hp, max_time),
        finals=[curve(t.hp, max_time) for t in full],
    )


def known_optimum(max_time: int) -> float:
    """min over the space of curve(hp, max_time), on a fine grid (width=512 is best at any time)."""
    lr = np.logspace(-4.0, 0.0, 801)  # SPACE["lr"]: 10**-4 .. 10**0
    dropout = np.linspace(0.0, 0.5, 501)
    best = math.inf
    for value in lr:
        losses = [curve({"lr": value, "dropout": d, "width": 512}, max_time) for d in dropout]
        best = min(best, min(losses))
    assert best <= curve({"lr": 1e-2, "dropout": BEST_DROPOUT, "width": 512}, max_time)
    return best


def compare(
    seeds: int, trials: int, max_time: int, period: int, concurrency: int, asha_trials: list[int]
) -> dict[str, Any]:
    """Random search with ``trials`` trials against ASHA with each of ``asha_trials``, on ``seeds``
    experiment seeds: total steps, the steps ratio and the noiseless final loss of each one's pick."""
    randoms = [
        simulate(searcher_for("random", seed, trials, max_time, concurrency), max_time, period)
        for seed in range(1, seeds + 1)
    ]
    random_steps = sum(r.total_steps for r in randoms)
    random_best = statistics.mean(r.best_true for r in randoms)
    rows = []
    for count in asha_trials:
        ashas = [
            simulate(searcher_for("adaptive_asha", seed, count, max_time, concurrency), max_time, period)
            for seed in range(1, seeds + 1)
        ]
        steps = sum(a.total_steps for a in ashas)
        best = statistics.mean(a.best_true for a in ashas)
        # Where ASHA's pick ranks among the same seed's random-search trials (0: better than all).
        quantiles = [
            sum(1 for f in r.finals if f < a.best_true) / len(r.finals)
            for a, r in zip(ashas, randoms, strict=True)
        ]
        rows.append(
            {
                "trials": count,
                "steps": steps,
                "steps_ratio": random_steps / steps,
                "best": best,
                "gap": best / random_best - 1.0,
                "full_trials": statistics.mean(a.full_trials for a in ashas),
                "median_quantile": statistics.median(quantiles),
                "per_seed_best": [a.best_true for a in ashas],
            }
        )
    return {
        "seeds": seeds,
        "max_time": max_time,
        "period": period,
        "max_concurrent_trials": concurrency,
        "optimum": known_optimum(max_time),
        "random_trials": trials,
        "random_steps": random_steps,
        "random_best": random_best,
        "random_per_seed_best": [r.best_true for r in randoms],
        "asha": rows,
    }
