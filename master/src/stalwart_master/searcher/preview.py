"""Determined's ``preview-search``: which trials a config's searcher creates and how far each trains.

Runs the real searcher on the parsed config without touching the database: the first ``limit``
trials it would create (their hyperparameters are fixed by the experiment seed, so a config with a
seed previews exactly what will run) and, for the rung-based searchers, how many trials each rung
of each bracket keeps if every trial reports on time. ``bayesian`` chooses points from results, so
only its budget and rungs are known in advance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.parse import parse_experiment_config
from stalwart_master.searcher.asha import AdaptiveASHASearcher
from stalwart_master.searcher.base import Create, Op, Searcher, refuse_oversized_search
from stalwart_master.searcher.searchers import make_searcher


@dataclass(frozen=True)
class RungPreview:
    time: float  # the time_metric value at which the rung is reached
    trials: int  # trials that reach it (if trials keep the budget's shares)
    stop_here: int  # of those, how many the searcher stops at this rung


@dataclass(frozen=True)
class BracketPreview:
    trials: int
    max_concurrent_trials: int
    rungs: list[RungPreview]


@dataclass(frozen=True)
class TrialPreview:
    ordinal: int
    trial_seed: int
    hparams: dict[str, Any]
    bracket: int | None = None


@dataclass
class SearchPreview:
    searcher: str
    metric: str
    smaller_is_better: bool
    total_trials: int
    max_concurrent_trials: int
    adaptive: bool  # the hyperparameters depend on results: not listed in advance
    time_metric: str | None
    max_length: dict[str, Any] | None  # searcher.max_length, when the config gives one
    trials: list[TrialPreview] = field(default_factory=list)
    truncated: bool = False  # more trials than ``limit``
    brackets: list[BracketPreview] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rungs(searcher: AdaptiveASHASearcher, index: int, divisor: float) -> list[RungPreview]:
    """Successive halving's shares: rung i keeps ``max(1, n // divisor**i)`` of the bracket's n."""
    bracket = searcher.brackets[index]
    times = searcher.rung_times(index)
    reach = [max(1, int(bracket.max_trials // divisor**i)) for i in range(len(times))]
    out: list[RungPreview] = []
    for i, time in enumerate(times):
        nxt = reach[i + 1] if i + 1 < len(times) else 0
        out.append(RungPreview(time=time, trials=reach[i], stop_here=reach[i] - nxt))
    return out


def preview(config: ExperimentConfig, *, limit: int = 100) -> SearchPreview:
    """Simulate ``config``'s searcher: the first ``limit`` trials and the rung plan. Pure."""
    searcher: Searcher = make_searcher(config)
    cfg = config.searcher
    time_metric = getattr(cfg, "time_metric", None)
    pruning = getattr(cfg, "pruning", None)
    if pruning is not None:
        time_metric = pruning.time_metric
    out = SearchPreview(
        searcher=searcher.name,
        metric=cfg.metric,
        smaller_is_better=cfg.smaller_is_better,
        total_trials=searcher.total_trials,
        max_concurrent_trials=cfg.max_concurrent_trials,
        adaptive=searcher.name == "bayesian",
        time_metric=time_metric,
        max_length=cfg.max_length.model_dump(exclude_none=True) if cfg.max_length else None,
    )
    if isinstance(searcher, AdaptiveASHASearcher) and (not out.adaptive or pruning is not None):
        out.brackets = [
            BracketPreview(b.max_trials, b.max_concurrent, _rungs(searcher, i, searcher.divisor))
            for i, b in enumerate(searcher.brackets)
        ]
    if out.adaptive:
        return out
    # Close each trial as soon as it is created: the searcher then creates them all, in order.
    pending: list[Op] = list(searcher.initial_operations())
    while pending and len(out.trials) < limit:
        op = pending.pop(0)
        if not isinstance(op, Create):
            continue
        bracket = searcher.bracket_of(op.request_id) if isinstance(searcher, AdaptiveASHASearcher) else None
        out.trials.append(TrialPreview(len(out.trials), op.trial_seed, op.hparams, bracket))
        pending.extend(searcher.on_trial_closed(op.request_id))
    out.truncated = out.total_trials > len(out.trials)
    return out


def preview_search(
    yaml_text: str,
    *,
    defaults: dict[str, Any] | None = None,
    max_config_bytes: int,
    max_trials: int,
    limit: int = 100,
) -> dict[str, Any]:
    """The preview route's answer: parse and validate like experiment creation, then simulate.

    Refuses what creating the experiment would refuse: a bad config (``Invalid`` with field paths)
    and a search larger than the master's ``max_trials``.
    """
    parsed = parse_experiment_config(yaml_text, defaults, max_bytes=max_config_bytes)
    result = preview(parsed.config, limit=limit)
    refuse_oversized_search(result.searcher, result.total_trials, max_trials)
    answer = result.to_json()
    answer["experiment_seed"] = parsed.config.reproducibility.experiment_seed
    return answer
