"""The searchers that sample without looking at results: single, grid and random."""

from __future__ import annotations

from typing import Any

from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.searchers import RandomSearcher as RandomConfig
from stalwart_master.searcher.base import Searcher, derive_seed
from stalwart_master.searcher.space import grid_axis, grid_point, random_point, searchable_specs


class GridSearcher(Searcher):
    """Every point of the cartesian product of the hyperparameters' grid axes, in a fixed order."""

    name = "grid"
    replaces_invalid = False  # a grid point is fixed: its replacement would be the same point

    def __init__(self, config: ExperimentConfig) -> None:
        # The axes are needed by _count_trials, which the base constructor calls.
        self._axes = [grid_axis(spec) for spec in searchable_specs(config.hyperparameters)]
        super().__init__(config)

    def _count_trials(self) -> int:
        total = 1
        for axis in self._axes:
            total *= len(axis)
        return total

    def _hparams(self, ordinal: int) -> dict[str, Any]:
        return grid_point(self.config.hyperparameters, self._axes, ordinal)


class RandomSearcher(Searcher):
    """``max_trials`` independent samples; trial N's sample depends only on the seed and N."""

    name = "random"

    def _count_trials(self) -> int:
        assert isinstance(self.config.searcher, RandomConfig)
        return self.config.searcher.max_trials

    def _hparams(self, ordinal: int) -> dict[str, Any]:
        return random_point(
            self.config.hyperparameters, derive_seed(self.experiment_seed, "hparams", ordinal)
        )


class SingleSearcher(RandomSearcher):
    """One trial, ranges sampled once from the experiment seed (constants stay as written).

    As in Determined, a trial that exits with invalid hyperparameters is replaced by a new sample.
    """

    name = "single"

    def _count_trials(self) -> int:
        return 1


def make_searcher(config: ExperimentConfig) -> Searcher:
    """A fresh searcher for ``config``; ``Invalid`` on ``searcher.name`` for one we cannot run yet.

    Call it when the experiment is created so an unsupported searcher is refused with a 422 then,
    not discovered when the first trial should start.
    """
    return Searcher.for_config(config)(config)
