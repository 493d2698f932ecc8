"""Training lengths and the checkpoint/validation policy, read from the experiment config.

Pure Python (no torch) so the rules can be tested and reused without a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

CheckpointPolicy = Literal["best", "all", "none"]
CHECKPOINT_POLICIES: tuple[CheckpointPolicy, ...] = ("best", "all", "none")


class TrainerError(ValueError):
    """The Trainer's arguments or the experiment config cannot be used; names the setting and why."""


@dataclass(frozen=True)
class Batch:
    """A length in batches (optimizer steps), e.g. ``Batch(500)``; 0 means "never" for a period."""

    value: int

    def __post_init__(self) -> None:
        if type(self.value) is not int or self.value < 0:
            raise TrainerError(f"Batch({self.value!r}): the length must be an int >= 0")


@dataclass(frozen=True)
class Epoch:
    """A length in passes over the training data, e.g. ``Epoch(3)``; 0 means "never" for a period."""

    value: int

    def __post_init__(self) -> None:
        if type(self.value) is not int or self.value < 0:
            raise TrainerError(f"Epoch({self.value!r}): the length must be an int >= 0")


Length = Batch | Epoch


def to_length(raw: Any, *, name: str, batch_size: int | None = None, records_per_epoch: int = 0) -> Length:
    """Read ``Batch``/``Epoch``, an int (batches) or a config period ``{batches|epochs|records: N}``.

    Records become batches with ``batch_size`` (the data loader's, or ``global_batch_size``). A
    config's ``{epochs: N}`` is ``N * records_per_epoch`` records when the config sets
    ``records_per_epoch`` (Determined's meaning); otherwise, like ``Epoch(N)``, N passes over the data.
    """
    if isinstance(raw, Batch | Epoch):
        return raw
    if type(raw) is int:
        return Batch(raw)
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((unit, value),) = raw.items()
        if type(value) is not int or value < 0:
            raise TrainerError(f"{name}: {unit} must be an int >= 0, got {value!r}")
        if unit == "batches":
            return Batch(value)
        if unit == "epochs":
            if records_per_epoch > 0:
                return to_length({"records": value * records_per_epoch}, name=name, batch_size=batch_size)
            return Epoch(value)
        if unit == "records":
            if not batch_size:
                raise TrainerError(
                    f"{name} is in records but the batch size is unknown; use a DataLoader with a "
                    "batch_size or set the global_batch_size hyperparameter"
                )
            return Batch(math.ceil(value / batch_size))
    raise TrainerError(
        f"{name} must be Batch(n), Epoch(n), an int or {{batches|epochs|records: n}}, got {raw!r}"
    )


@dataclass(frozen=True)
class Policy:
    """When the trainer validates and checkpoints, and which metric decides "best"."""

    validation_period: Length
    checkpoint_period: Length
    checkpoint_minutes: float | None
    checkpoint_policy: CheckpointPolicy
    searcher_metric: str
    smaller_is_better: bool
    perform_initial_validation: bool = False
    # Batches between reports and preemption checks; None: report every 100, check every batch.
    scheduling_unit: int | None = None
    records_per_epoch: int = 0


# Off-cluster there is no config: validate every epoch so a local run shows progress, and keep the
# config's own defaults for everything else.
OFF_CLUSTER_VALIDATION = Epoch(1)
DEFAULT_METRIC = "validation_loss"


def resolve_policy(
    config: Mapping[str, Any] | None,
    *,
    validation_period: Any = None,
    checkpoint_period: Any = None,
    checkpoint_minutes: float | None = None,
    checkpoint_policy: str | None = None,
    searcher_metric: str | None = None,
    smaller_is_better: bool | None = None,
    batch_size: int | None = None,
) -> Policy:
    """Arguments win over the experiment config, which wins over the defaults."""
    config = config or {}
    searcher: Mapping[str, Any] = config.get("searcher") or {}
    records = _positive_int(config.get("records_per_epoch"), "records_per_epoch") or 0

    raw_validation = (
        validation_period if validation_period is not None else config.get("min_validation_period")
    )
    validation = (
        to_length(raw_validation, name="validation period", batch_size=batch_size, records_per_epoch=records)
        if raw_validation is not None
        else (Batch(0) if config else OFF_CLUSTER_VALIDATION)
    )
    raw_checkpoint = (
        checkpoint_period if checkpoint_period is not None else config.get("min_checkpoint_period")
    )
    checkpoint = (
        to_length(raw_checkpoint, name="checkpoint period", batch_size=batch_size, records_per_epoch=records)
        if raw_checkpoint is not None
        else Batch(0)
    )

    minutes: Any = checkpoint_minutes
    if minutes is None:
        timed = config.get("checkpoint_period")
        minutes = timed.get("minutes") if isinstance(timed, Mapping) else None
    if minutes is not None and (
        isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0
    ):
        raise TrainerError(f"checkpoint minutes must be a number > 0, got {minutes!r}")

    chosen = checkpoint_policy or config.get("checkpoint_policy") or "best"
    policy = next((p for p in CHECKPOINT_POLICIES if p == chosen), None)
    if policy is None:
        raise TrainerError(f"checkpoint_policy must be one of best, all, none, got {chosen!r}")

    metric = searcher_metric or searcher.get("metric") or DEFAULT_METRIC
    smaller = smaller_is_better
    if smaller is None:
        configured = searcher.get("smaller_is_better")
        smaller = configured if isinstance(configured, bool) else True
    return Policy(
        validation_period=validation,
        checkpoint_period=checkpoint,
        checkpoint_minutes=float(minutes) if minutes is not None else None,
        checkpoint_policy=policy,
        searcher_metric=str(metric),
        smaller_is_better=smaller,
        perform_initial_validation=config.get("perform_initial_validation") is True,
        scheduling_unit=_positive_int(config.get("scheduling_unit"), "scheduling_unit"),
        records_per_epoch=records,
    )


def _positive_int(value: Any, name: str) -> int | None:
    if value is None or value == 0:
        return None
    if type(value) is not int or value < 0:
        raise TrainerError(f"{name} must be an int >= 1, got {value!r}")
    return value
