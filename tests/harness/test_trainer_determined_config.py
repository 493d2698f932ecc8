"""The Trainer honours Determined's config fields: records_per_epoch, periods in any unit,
perform_initial_validation and scheduling_unit."""

from __future__ import annotations

from typing import Any

import pytest
from test_pytorch_trainer import (
    BATCH,
    FakeOperation,
    FakePreempt,
    fake_core,
    make_trainer,
    off_cluster_info,
    scripted_metric,
)

from stalwart.pytorch import Batch, Epoch
from stalwart.pytorch._policy import resolve_policy, to_length

pytestmark = pytest.mark.unit

SEARCHER = {"name": "single", "metric": "score", "smaller_is_better": False}


@pytest.mark.parametrize(
    ("raw", "records_per_epoch", "expected"),
    [
        ({"batches": 7}, 0, Batch(7)),
        ({"records": 20}, 0, Batch(3)),  # ceil(20 / 8)
        ({"epochs": 2}, 0, Epoch(2)),  # no records_per_epoch: passes over the data
        ({"epochs": 2}, 24, Batch(6)),  # 2 * 24 records / 8 per batch
        ({"epochs": 1}, 20, Batch(3)),  # a partial batch still counts as one
        (Epoch(2), 24, Epoch(2)),  # Epoch(n) is always passes over the data
    ],
)
def test_period_arithmetic_in_every_unit(raw: Any, records_per_epoch: int, expected: Any) -> None:
    assert to_length(raw, name="p", batch_size=BATCH, records_per_epoch=records_per_epoch) == expected


def test_policy_reads_the_determined_fields_from_the_config() -> None:
    policy = resolve_policy(
        {
            "searcher": SEARCHER,
            "records_per_epoch": 16,
            "min_validation_period": {"epochs": 1},
            "min_checkpoint_period": {"epochs": 3},
            "perform_initial_validation": True,
            "scheduling_unit": 4,
        },
        batch_size=BATCH,
    )
    assert policy.validation_period == Batch(2) and policy.checkpoint_period == Batch(6)
    assert policy.perform_initial_validation and policy.scheduling_unit == 4
    assert resolve_policy({"searcher": SEARCHER}).scheduling_unit is None


def cluster_core(config: dict[str, Any], **kw: Any) -> Any:
    info = off_cluster_info(
        allocation_id="a1", trial_id=3, experiment_config={"searcher": SEARCHER, **config}
    )
    return fake_core(info=info, **kw)


def test_records_per_epoch_turns_epoch_periods_and_max_length_into_batches() -> None:
    # 16 records per epoch at 8 per batch: an "epoch" is 2 batches, not the loader's 5.
    operation = FakeOperation("epochs", 3)
    core = cluster_core(
        {
            "searcher": {**SEARCHER, "max_length": {"epochs": 3}},
            "records_per_epoch": 16,
            "min_validation_period": {"epochs": 1},
        },
        operation=operation,
    )
    trainer = make_trainer(core, metrics_fn=scripted_metric([0.1] * 5), checkpoint_policy="none")
    result = trainer.fit()
    assert result.batches_trained == 6
    assert [steps for steps, _ in core.train.validation] == [2, 4, 6]
    assert len(operation.completed) == 1


def test_perform_initial_validation_validates_before_the_first_batch() -> None:
    core = cluster_core({"perform_initial_validation": True, "min_validation_period": {"batches": 4}})
    trainer = make_trainer(core, metrics_fn=scripted_metric([0.1] * 5), checkpoint_policy="none")
    trainer.fit(max_length=Batch(4))
    assert [steps for steps, _ in core.train.validation] == [0, 4]


def test_scheduling_unit_sets_the_report_and_preemption_check_cadence() -> None:
    core = cluster_core({"scheduling_unit": 3}, preempt=FakePreempt(at_call=2))
    trainer = make_trainer(
        core, report_period=None, metrics_fn=scripted_metric([0.1] * 5), checkpoint_policy="none"
    )
    result = trainer.fit(max_length=Batch(20))
    # Checked after batches 3 and 5 (end of the loader's epoch): preempted at the second check.
    assert result.preempted and result.batches_trained == 5
    assert [steps for steps, _ in core.train.training] == [3]
