"""The ``searcher`` section: one model per search method, chosen by ``name``."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from stalwart_master.expconf.common import INT32_MAX, INT64_MAX, NonBlank, Section, check, field_error
from stalwart_master.expconf.periods import Period, period_from_int

# divisor ** 63 (64 rungs) must stay a finite float.
MAX_DIVISOR = 1000


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


SEARCHER_NAMES = ("single", "grid", "random", "adaptive_asha", "async_halving", "bayesian")


class _SearcherBase(Section):
    name: str  # narrowed to a Literal by each searcher; declared here so it comes first in the data
    metric: NonBlank = Field(description="Validation metric the searcher optimises.")
    smaller_is_better: bool = True
    max_concurrent_trials: int = Field(default=16, ge=0, le=INT32_MAX, description="0 means no limit.")
    source_trial_id: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Warm-start every trial from this trial."
    )
    source_checkpoint_uuid: Annotated[str, check(_is_uuid, "must be a checkpoint UUID")] | None = Field(
        default=None, description="Warm-start every trial from this checkpoint."
    )
    max_length: Annotated[Period | None, BeforeValidator(period_from_int)] = Field(
        default=None, description="Deprecated: length of each trial."
    )

    @model_validator(mode="after")
    def _one_warm_start(self) -> Self:
        if self.source_trial_id is not None and self.source_checkpoint_uuid is not None:
            raise field_error(
                ("source_checkpoint_uuid",),
                "cannot be set together with source_trial_id",
                self.source_checkpoint_uuid,
            )
        return self


class SingleSearcher(_SearcherBase):
    """One trial; hyperparameter ranges are sampled once, seeded by the experiment seed."""

    name: Literal["single"]


class GridSearcher(_SearcherBase):
    """Every combination of the hyperparameters' grid points."""

    name: Literal["grid"]


class RandomSearcher(_SearcherBase):
    """``max_trials`` trials with independently sampled hyperparameters."""

    name: Literal["random"]
    max_trials: int = Field(ge=1, le=INT32_MAX)


class AdaptiveASHASearcher(_SearcherBase):
    """Random sampling plus early stopping of the weaker trials (asynchronous successive halving)."""

    name: Literal["adaptive_asha"]
    max_trials: int = Field(ge=1, le=INT32_MAX)
    time_metric: NonBlank = Field(description="Metric that measures how far a trial has trained.")
    max_time: int = Field(ge=1, le=INT64_MAX, description="Value of time_metric at which a trial is done.")
    mode: Literal["standard", "aggressive", "conservative"] = "standard"
    divisor: float = Field(default=4.0, gt=1, le=MAX_DIVISOR)
    # Bounded: each rung is kept in the searcher's state, and past ~30 rungs the first is tiny.
    max_rungs: int = Field(default=5, ge=1, le=64)
    bracket_rungs: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=list, max_length=64)
    stop_once: bool = Field(default=True, description="Decisions are never revisited; false acts as true.")


class AsyncHalvingSearcher(_SearcherBase):
    """One bracket of asynchronous successive halving with ``num_rungs`` rungs (Determined's)."""

    name: Literal["async_halving"]
    num_rungs: int = Field(ge=1, le=64)
    max_trials: int = Field(ge=1, le=INT32_MAX)
    time_metric: NonBlank = Field(description="Metric that measures how far a trial has trained.")
    max_time: int = Field(ge=1, le=INT64_MAX, description="Value of time_metric at which a trial is done.")
    divisor: float = Field(default=4.0, gt=1, le=MAX_DIVISOR)
    stop_once: bool = Field(default=True, description="Decisions are never revisited; false acts as true.")


class BayesianPruning(Section):
    """Stop weak trials early by the ASHA rung rule (one bracket of ``max_rungs`` rungs at most)."""

    time_metric: NonBlank = Field(description="Metric that measures how far a trial has trained.")
    max_time: int = Field(ge=1, le=INT64_MAX, description="Value of time_metric at which a trial is done.")
    divisor: float = Field(default=4.0, gt=1, le=MAX_DIVISOR)
    max_rungs: int = Field(default=5, ge=1, le=64)


class BayesianSearcher(_SearcherBase):
    """Tree-structured Parzen estimator (Optuna's TPE): each new trial is chosen from the results so far."""

    name: Literal["bayesian"]
    max_trials: int = Field(ge=1, le=INT32_MAX)
    startup_trials: int = Field(
        default=10, ge=0, le=INT32_MAX, description="Trials sampled at random before TPE takes over."
    )
    pruning: BayesianPruning | None = None


Searcher = Annotated[
    SingleSearcher
    | GridSearcher
    | RandomSearcher
    | AdaptiveASHASearcher
    | AsyncHalvingSearcher
    | BayesianSearcher,
    Field(discriminator="name"),
]
