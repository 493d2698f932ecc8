"""``bayesian``: TPE (Optuna's sampler) chooses each new trial from the results known so far.

Restoring must continue the *same* search, so nothing lives only in Optuna's memory. The state keeps
every trial's sampled parameters and the last searcher metric it reported; trial N's parameters are
a pure function of (experiment seed, N, that state when N is created): a fresh in-memory study is
rebuilt from the observations and a TPE sampler seeded from (seed, N) is asked once. Closed trials
with a finite metric are COMPLETE, open ones RUNNING (the constant-liar rule keeps concurrent asks
apart), the rest (no metric, invalid hyperparameters) FAIL, which TPE ignores.

With ``pruning`` the trials also go through one bracket of ASHA rungs (the rung rule of
``adaptive_asha``), so weak trials stop early; without it no trial is stopped by the searcher.
Optuna is imported only when a point is asked for, so importing the master stays fast.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Self

from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.hyperparameters import (
    CategoricalHyperparameter,
    DoubleHyperparameter,
    IntHyperparameter,
    LogHyperparameter,
)
from stalwart_master.expconf.searchers import BayesianSearcher as BayesianConfig
from stalwart_master.searcher.asha import AdaptiveASHASearcher, Bracket, rungs_possible
from stalwart_master.searcher.base import Op, derive_seed
from stalwart_master.searcher.space import SearchableSpec, build_hparams, searchable_specs

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

OPTUNA_SEED_LIMIT = 2**32  # numpy's RandomState takes seeds below 2**32


def distribution(spec: SearchableSpec) -> BaseDistribution:
    """The Optuna distribution of one hyperparameter, in the space TPE models.

    ``log`` is searched in its exponent (uniform in ``minval..maxval``, as random search samples
    it), which is TPE's log scale for any base. ``categorical`` is searched by index, so the values
    themselves may be anything JSON holds (Optuna's choices must be scalars).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(spec, IntHyperparameter):
        return IntDistribution(spec.minval, spec.maxval)
    if isinstance(spec, DoubleHyperparameter | LogHyperparameter):
        return FloatDistribution(spec.minval, spec.maxval)
    return CategoricalDistribution(list(range(len(spec.vals))))


def to_value(spec: SearchableSpec, param: Any) -> Any:
    """The hyperparameter value a trial gets for Optuna's ``param``."""
    if isinstance(spec, LogHyperparameter):
        return spec.base ** float(param)
    if isinstance(spec, CategoricalHyperparameter):
        return spec.vals[int(param)]
    if isinstance(spec, IntHyperparameter):
        return int(param)
    return float(param)


class BayesianSearcher(AdaptiveASHASearcher):
    """TPE-chosen trials, ``max_trials`` in all, optionally pruned at ASHA rungs."""

    name = "bayesian"

    def __init__(self, config: ExperimentConfig) -> None:
        assert isinstance(config.searcher, BayesianConfig)
        self._bayes = config.searcher
        self._specs = searchable_specs(config.hyperparameters)
        self._names = [f"p{i}" for i in range(len(self._specs))]
        self._params: list[dict[str, Any]] = []  # per trial, in creation order
        self._values: dict[str, float] = {}  # request id -> last searcher metric reported
        super().__init__(config)

    @classmethod
    def _plan(cls, config: ExperimentConfig) -> tuple[list[Bracket], float, float]:
        cfg = config.searcher
        assert isinstance(cfg, BayesianConfig)
        pruning = cfg.pruning
        if pruning is None:
            # A bracket without rungs: the rung rule never stops anything.
            return [Bracket(0, cfg.max_trials, cfg.max_concurrent_trials)], 1.0, 2.0
        rungs = min(
            rungs_possible(pruning.divisor, pruning.max_time, pruning.max_rungs),
            rungs_possible(pruning.divisor, cfg.max_trials, pruning.max_rungs),
        )
        return [Bracket(rungs, cfg.max_trials, cfg.max_concurrent_trials)], pruning.max_time, pruning.divisor

    # --- observations ---------------------------------------------------------------------------------

    def on_validation(self, request_id: str, metric: float, time: float | None = None) -> list[Op]:
        """Remember the trial's latest metric (TPE's observation), then apply the rung rule."""
        if request_id not in self._by_request:
            raise ValueError(f"unknown searcher request id {request_id!r}")
        if not self._by_request[request_id].closed and math.isfinite(metric):
            self._values[request_id] = float(metric)
        if self._bayes.pruning is None:
            return []
        return super().on_validation(request_id, metric, time)

    def _hparams(self, ordinal: int) -> dict[str, Any]:
        params = self._ask(ordinal)
        self._params.append(params)
        values = (to_value(spec, params[name]) for spec, name in zip(self._specs, self._names, strict=True))
        return build_hparams(self.config.hyperparameters, values)

    def _ask(self, ordinal: int) -> dict[str, Any]:
        """Trial ``ordinal``'s parameters from a study rebuilt from the trials before it."""
        if not self._specs:
            return {}
        import optuna
        from optuna.study import StudyDirection
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = {n: distribution(spec) for n, spec in zip(self._names, self._specs, strict=True)}
        with warnings.catch_warnings():
            # constant_liar is marked experimental; its behaviour is pinned by our tests.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=derive_seed(self.experiment_seed, "bayesian", ordinal) % OPTUNA_SEED_LIMIT,
                n_startup_trials=self._bayes.startup_trials,
                constant_liar=True,
            )
        smaller = self.config.searcher.smaller_is_better
        direction = StudyDirection.MINIMIZE if smaller else StudyDirection.MAXIMIZE
        study = optuna.create_study(sampler=sampler, direction=direction)
        for trial, params in zip(self._trials[:ordinal], self._params, strict=True):
            value = self._values.get(trial.request_id)
            if not trial.closed:
                state, value = TrialState.RUNNING, None
            elif value is None or self.replaced(trial.request_id):
                state, value = TrialState.FAIL, None
            else:
                state = TrialState.COMPLETE
            study.add_trial(
                create_trial(params=params, distributions=distributions, value=value, state=state)
            )
        return dict(study.ask(distributions).params)

    # --- persistence ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["bayesian"] = {"params": [dict(p) for p in self._params], "values": dict(self._values)}
        return state

    def _load(self, state: dict[str, Any]) -> Self:
        super()._load(state)
        extra = state.get("bayesian")
        if not isinstance(extra, dict):
            raise ValueError("searcher state has no bayesian section")
        params, values = extra.get("params"), extra.get("values")
        if not isinstance(params, list) or len(params) != len(self._trials):
            raise ValueError("searcher state has no parameters for every trial")
        for entry in params:
            if not isinstance(entry, dict) or set(entry) != set(self._names):
                raise ValueError("searcher state has parameters of another search space")
        if not isinstance(values, dict) or not set(values) <= set(self._by_request):
            raise ValueError("searcher state has metrics of unknown trials")
        self._params = [dict(p) for p in params]
        self._values = {k: float(v) for k, v in values.items()}
        return self
