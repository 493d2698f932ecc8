"""``adaptive_asha``: random trials in several brackets of asynchronous successive halving.

Each bracket has its own number of rungs. Rung ``i`` of an ``r``-rung bracket is reached when the
trial's ``time_metric`` gets to ``max_time / divisor**(r - 1 - i)``; the top rung is ``max_time``.
When a trial reaches a rung its searcher metric is recorded there, and it goes on only if it is
among the best ``max(1, n // divisor)`` of the ``n`` trials recorded in that rung so far; otherwise,
or at the top rung, the searcher stops it. Decisions are never revisited (that is what makes it
asynchronous): a trial promoted early is not stopped when better ones arrive later.

Brackets follow Determined's ``mode``: ``aggressive`` runs one bracket with the most rungs,
``standard`` the brackets with ``ceil(max_rungs / 2) ... max_rungs`` rungs, ``conservative`` those
with ``1 ... max_rungs``; ``bracket_rungs`` lists them explicitly. ``max_trials`` is split so each
bracket gets about the same compute, and ``max_concurrent_trials`` evenly.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Self

from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.searchers import AdaptiveASHASearcher as ASHAConfig
from stalwart_master.expconf.searchers import AsyncHalvingSearcher as HalvingConfig
from stalwart_master.searcher.base import Create, Op, Searcher, Stop, derive_seed
from stalwart_master.searcher.space import random_point


def rungs_possible(divisor: float, limit: int, cap: int) -> int:
    """``min(floor(log_divisor(limit)) + 1, cap)``, counted without floating-point logs.

    The cap also bounds the loop: a divisor just above 1 would otherwise count for a long time.
    """
    count = 1
    while count < cap and divisor**count <= limit:
        count += 1
    return count


def bracket_rungs(config: ASHAConfig) -> list[int]:
    """The rung count of every bracket, most aggressive (most rungs) first."""
    if config.bracket_rungs:
        return sorted(config.bracket_rungs, reverse=True)
    most = min(
        rungs_possible(config.divisor, config.max_time, config.max_rungs),
        rungs_possible(config.divisor, config.max_trials, config.max_rungs),
    )
    fewest = {"aggressive": most, "standard": math.ceil(most / 2), "conservative": 1}[config.mode]
    return list(range(most, fewest - 1, -1))


def split_trials(rungs: list[int], divisor: float, max_trials: int) -> list[int]:
    """Trials per bracket, each bracket weighted by ``divisor**(r - 1) / r`` so compute is even.

    Every bracket gets at least one trial; with fewer trials than brackets the least aggressive
    brackets get none. What rounding leaves over goes to the most aggressive brackets first.
    """
    weights = [divisor ** (r - 1) / r for r in rungs]
    total = sum(weights)
    counts = [max(1, int(max_trials * w / total)) for w in weights]
    while sum(counts) > max_trials:
        # Only the at-least-one rule overshoots: take back from the biggest bracket while one has
        # more than one trial, else the least aggressive bracket goes without.
        if max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
        else:
            counts[max(i for i, c in enumerate(counts) if c > 0)] -= 1
    i = 0
    while sum(counts) < max_trials:
        counts[i % len(counts)] += 1
        i += 1
    return counts


def split_concurrency(brackets: int, max_concurrent_trials: int) -> list[int]:
    """Concurrent trials per bracket (0 = no limit), never below one per bracket."""
    if max_concurrent_trials == 0:
        return [0] * brackets
    total = max(max_concurrent_trials, brackets)
    return [total // brackets + (1 if i < total % brackets else 0) for i in range(brackets)]


def _score(metric: float, smaller_is_better: bool) -> float:
    """Lower is better; NaN ranks last; kept finite so the searcher state stays valid JSON."""
    if math.isnan(metric):
        return sys.float_info.max
    score = metric if smaller_is_better else -metric
    return max(-sys.float_info.max, min(sys.float_info.max, score))


@dataclass(frozen=True)
class Bracket:
    rungs: int
    max_trials: int
    max_concurrent: int  # 0: no limit


class AdaptiveASHASearcher(Searcher):
    """Stops the weaker trials of each bracket at its rungs; creates a new trial for each that ends."""

    name = "adaptive_asha"

    def __init__(self, config: ExperimentConfig) -> None:
        self.brackets, self._max_time, self._divisor = self._plan(config)
        self._smaller_is_better = config.searcher.smaller_is_better
        self._bracket_of: dict[str, int] = {}
        # Per bracket, per rung: request id -> the searcher metric it had when it got there.
        self._recorded: list[list[dict[str, float]]] = [[{} for _ in range(b.rungs)] for b in self.brackets]
        self._stopped: set[str] = set()
        super().__init__(config)

    @classmethod
    def _plan(cls, config: ExperimentConfig) -> tuple[list[Bracket], float, float]:
        """The brackets, ``max_time`` and ``divisor``; subclasses plan their single bracket."""
        cfg = config.searcher
        assert isinstance(cfg, ASHAConfig)
        rungs = bracket_rungs(cfg)
        trials = split_trials(rungs, cfg.divisor, cfg.max_trials)
        concurrency = split_concurrency(len(rungs), cfg.max_concurrent_trials)
        brackets = [Bracket(r, n, c) for r, n, c in zip(rungs, trials, concurrency, strict=True) if n > 0]
        return brackets, cfg.max_time, cfg.divisor

    def _count_trials(self) -> int:
        return sum(b.max_trials for b in self.brackets)

    def _hparams(self, ordinal: int) -> dict[str, Any]:
        return random_point(
            self.config.hyperparameters, derive_seed(self.experiment_seed, "hparams", ordinal)
        )

    def rung_times(self, bracket: int) -> list[float]:
        """The ``time_metric`` value at which each rung of ``bracket`` is reached."""
        rungs = self.brackets[bracket].rungs
        return [self._max_time / self._divisor ** (rungs - 1 - i) for i in range(rungs)]

    @property
    def divisor(self) -> float:
        return self._divisor

    def bracket_of(self, request_id: str) -> int:
        return self._bracket_of[request_id]

    # --- the protocol -------------------------------------------------------------------------------

    def on_validation(self, request_id: str, metric: float, time: float | None = None) -> list[Op]:
        """Record the trial in every rung ``time`` reaches; ``Stop`` it at a rung it does not pass.

        A repeated report (a retried batch, or a resumed trial validating the same step again) finds
        the trial already recorded and changes nothing. A NaN metric ranks last.
        """
        super().on_validation(request_id, metric, time)
        trial = self._by_request[request_id]
        if time is None or trial.closed or request_id in self._stopped:
            return []
        bracket = self._bracket_of[request_id]
        score = _score(metric, self._smaller_is_better)
        for rung, needed in enumerate(self.rung_times(bracket)):
            recorded = self._recorded[bracket][rung]
            if time < needed or request_id in recorded:
                continue
            recorded[request_id] = score
            top = rung == self.brackets[bracket].rungs - 1
            if top or not self._promoted(recorded, request_id):
                self._stopped.add(request_id)
                return [Stop(request_id)]
        return []

    def _promoted(self, recorded: dict[str, float], request_id: str) -> bool:
        keep = max(1, int(len(recorded) // self._divisor))
        mine = recorded[request_id]
        better = sum(1 for other, score in recorded.items() if other != request_id and score < mine)
        return better < keep

    def is_stopped(self, request_id: str) -> bool:
        return request_id in self._stopped

    # --- creating trials bracket by bracket ---------------------------------------------------------

    def _fill(self) -> list[Create]:
        created: list[Create] = []
        for index, bracket in enumerate(self.brackets):
            mine = [t for t in self._trials if self._bracket_of[t.request_id] == index]
            running = sum(1 for t in mine if not t.closed)
            # A trial replaced after invalid hyperparameters is replaced in its own bracket.
            extra = sum(1 for t in mine if self.replaced(t.request_id))
            room = bracket.max_trials + extra - len(mine)
            if bracket.max_concurrent:
                room = min(room, bracket.max_concurrent - running)
            for _ in range(max(room, 0)):
                op = self._create()
                self._bracket_of[op.request_id] = index
                created.append(op)
        return created

    # --- persistence --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["asha"] = {
            "brackets": [self._bracket_of[t.request_id] for t in self._trials],
            "rungs": [[dict(rung) for rung in rungs] for rungs in self._recorded],
            "stopped": sorted(self._stopped),
        }
        return state

    def _load(self, state: dict[str, Any]) -> Self:
        super()._load(state)
        extra = state.get("asha")
        if not isinstance(extra, dict):
            raise ValueError("searcher state has no adaptive_asha section")
        brackets, rungs, stopped = extra.get("brackets"), extra.get("rungs"), extra.get("stopped")
        if not isinstance(brackets, list) or len(brackets) != len(self._trials):
            raise ValueError("searcher state has no bracket for every trial")
        for trial, index in zip(self._trials, brackets, strict=True):
            if not isinstance(index, int) or not 0 <= index < len(self.brackets):
                raise ValueError(f"searcher state puts a trial in bracket {index!r}")
            self._bracket_of[trial.request_id] = index
        shape = [b.rungs for b in self.brackets]
        if not isinstance(rungs, list) or [len(r) if isinstance(r, list) else None for r in rungs] != shape:
            raise ValueError("searcher state has rungs of another shape than the config's brackets")
        for b, bracket_rungs_state in enumerate(rungs):
            for r, recorded in enumerate(bracket_rungs_state):
                if not isinstance(recorded, dict) or not set(recorded) <= set(self._by_request):
                    raise ValueError("searcher state records an unknown trial in a rung")
                self._recorded[b][r] = {k: float(v) for k, v in recorded.items()}
        if not isinstance(stopped, list) or not set(stopped) <= set(self._by_request):
            raise ValueError("searcher state stops an unknown trial")
        self._stopped = set(stopped)
        return self


class AsyncHalvingSearcher(AdaptiveASHASearcher):
    """``async_halving``: Determined's one bracket of ``num_rungs`` rungs, all trials in it."""

    name = "async_halving"

    @classmethod
    def _plan(cls, config: ExperimentConfig) -> tuple[list[Bracket], float, float]:
        cfg = config.searcher
        assert isinstance(cfg, HalvingConfig)
        return [Bracket(cfg.num_rungs, cfg.max_trials, cfg.max_concurrent_trials)], cfg.max_time, cfg.divisor
