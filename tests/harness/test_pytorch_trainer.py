"""stalwart.pytorch.Trainer: when it validates and checkpoints, how it resumes, how it stops."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import uuid as uuid_lib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import stalwart.core
from stalwart.core._info import read_cluster_info
from stalwart.exec.run import trial_env
from stalwart.pytorch import Batch, Epoch, Trainer, TrainerError
from stalwart.pytorch._policy import resolve_policy, to_length

pytestmark = pytest.mark.unit

SAMPLES, BATCH = 40, 8  # 5 batches per epoch


# --- stand-ins for the Core API: they record what the trainer asks for --------------------------


class FakeTrain:
    def __init__(self) -> None:
        self.training: list[tuple[int, dict[str, float]]] = []
        self.validation: list[tuple[int, dict[str, float]]] = []
        self.progress: list[float] = []

    def report_training_metrics(self, steps_completed: int, metrics: dict[str, float]) -> None:
        self.training.append((steps_completed, dict(metrics)))

    def report_validation_metrics(self, steps_completed: int, metrics: dict[str, float]) -> None:
        self.validation.append((steps_completed, dict(metrics)))

    def report_progress(self, progress: float) -> None:
        self.progress.append(progress)


class FakeCheckpoints:
    """Keeps saved states in memory, serialised with torch.save so nothing is shared with the trainer."""

    def __init__(self, latest: tuple[str, bytes] | None = None) -> None:
        self.saved: list[dict[str, Any]] = []
        self.latest = latest
        self.waits = 0

    def save_state(self, state: Any, *, steps_completed: int, metadata: dict[str, Any] | None = None) -> str:
        uuid = str(uuid_lib.uuid4())
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.saved.append({"uuid": uuid, "steps": steps_completed, "metadata": metadata or {}})
        self.latest = (uuid, buffer.getvalue())
        return uuid

    def load_latest_state(self, map_location: Any = None) -> tuple[str, Any] | None:
        if self.latest is None:
            return None
        uuid, data = self.latest
        return uuid, torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)

    def wait(self) -> None:
        self.waits += 1

    def reasons(self) -> list[tuple[int, str]]:
        return [(s["steps"], s["metadata"]["reason"]) for s in self.saved]


class FakePreempt:
    def __init__(self, at_call: int | None = None) -> None:
        self.calls = 0
        self.at_call = at_call

    def should_preempt(self, auto_ack: bool = True) -> bool:
        self.calls += 1
        return self.at_call is not None and self.calls >= self.at_call


class FakeOperation:
    def __init__(self, unit: str, length: int) -> None:
        self.unit, self.length = unit, length
        self.completed: list[float] = []

    def report_completed(self, metric: float) -> None:
        self.completed.append(metric)


def off_cluster_info(**changes: Any) -> stalwart.core.ClusterInfo:
    return dataclasses.replace(read_cluster_info({}), **changes)


def fake_core(
    *, info: stalwart.core.ClusterInfo | None = None, checkpoints: FakeCheckpoints | None = None, **kw: Any
) -> Any:
    operation = kw.pop("operation", None)
    return SimpleNamespace(
        info=info or off_cluster_info(),
        train=FakeTrain(),
        checkpoint=checkpoints or FakeCheckpoints(),
        preempt=kw.pop("preempt", FakePreempt()),
        searcher=SimpleNamespace(operations=lambda: iter([operation] if operation else [])),
        operation=operation,
    )


# --- a tiny problem with every kind of randomness: init, shuffling, dropout -----------------------


def data(seed: int = 0) -> tuple[DataLoader[Any], DataLoader[Any]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, 6, generator=g)
    y = (x.sum(dim=1) > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    return train, DataLoader(TensorDataset(x[:16], y[:16]), batch_size=16)


def model_and_optimizer(init_seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


class LossRecorder:
    """The loss function, recording every training loss (validation runs without gradients)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(outputs, targets)
        if torch.is_grad_enabled():
            self.losses.append(loss.item())
        return loss


def scripted_metric(values: list[float]) -> Any:
    """A metrics_fn giving the next value per validation (the validation set is one batch)."""
    it = iter(values)
    return lambda outputs, targets: {"score": next(it)}


def make_trainer(core: Any, init_seed: int = 0, **kw: Any) -> Trainer:
    model, optimizer = model_and_optimizer(init_seed)
    train, val = data()
    kw.setdefault("loss_fn", LossRecorder())
    kw.setdefault("val_data", val)
    return Trainer(core, model, optimizer, train, report_period=kw.pop("report_period", 100), **kw)


# --- policies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("best", [(2, "validation"), (4, "validation"), (8, "validation"), (10, "end")]),
        (
            "all",
            [(2, "validation"), (4, "validation"), (6, "validation"), (8, "validation"), (10, "validation")],
        ),
        ("none", [(10, "end")]),
    ],
)
def test_checkpoint_policy_decides_which_validations_are_followed_by_a_checkpoint(
    policy: str, expected: list[tuple[int, str]]
) -> None:
    core = fake_core()
    trainer = make_trainer(
        core,
        metrics_fn=scripted_metric([0.5, 0.7, 0.6, 0.9, 0.8]),
        searcher_metric="score",
        smaller_is_better=False,
        validation_period=Batch(2),
        checkpoint_policy=policy,
    )
    result = trainer.fit(max_length=Batch(10))
    assert [steps for steps, _ in core.train.validation] == [2, 4, 6, 8, 10]
    # Each validation says how far the trial got, for adaptive_asha's time_metric.
    assert all(m["batches"] == steps and "epochs" in m for steps, m in core.train.validation)
    assert core.checkpoint.reasons() == expected
    assert result.best_validation == 0.9 and not result.preempted
    assert result.checkpoint == core.checkpoint.saved[-1]["uuid"]
    assert core.checkpoint.waits == 1 and core.train.progress[-1] == 1.0


def test_smaller_is_better_picks_the_lowest_metric_as_best() -> None:
    core = fake_core()
    trainer = make_trainer(
        core, metrics_fn=scripted_metric([3.0, 2.0, 2.5]), searcher_metric="score", validation_period=Batch(3)
    )
    trainer.fit(max_length=Batch(9))
    assert core.checkpoint.reasons() == [(3, "validation"), (6, "validation"), (9, "end")]
    assert trainer.best_validation == 2.0


def test_batch_checkpoint_period_and_a_final_checkpoint() -> None:
    core = fake_core()
    trainer = make_trainer(core, checkpoint_period=Batch(3), checkpoint_policy="none", validation_period=0)
    trainer.fit(max_length=Batch(10))
    assert core.checkpoint.reasons() == [(3, "period"), (6, "period"), (9, "period"), (10, "end")]
    # Without a validation period the trainer still validates once, at the end.
    assert [steps for steps, _ in core.train.validation] == [10]


def test_epoch_periods_act_at_epoch_ends_and_epoch_hooks_run() -> None:
    core = fake_core()
    epochs_seen: list[tuple[int, int]] = []
    validated: list[int] = []
    trainer = make_trainer(
        core,
        validation_period=Epoch(1),
        checkpoint_period={"epochs": 2},
        checkpoint_policy="none",
        on_epoch_end=lambda t: epochs_seen.append((t.epochs_trained, t.batches_trained)),
        on_validation_end=lambda t, metrics: validated.append(t.batches_trained),
    )
    result = trainer.fit(max_length=Epoch(5))
    assert epochs_seen == [(1, 5), (2, 10), (3, 15), (4, 20), (5, 25)]
    assert validated == [5, 10, 15, 20, 25]
    assert core.checkpoint.reasons() == [(10, "period"), (20, "period"), (25, "end")]
    assert result.epochs_trained == 5 and result.batches_trained == 25


def test_wall_clock_checkpoint_period_uses_the_injected_clock() -> None:
    core = fake_core()
    seconds = [0.0]
    hooked: list[str] = []
    trainer = make_trainer(
        core,
        checkpoint_minutes=1,
        checkpoint_policy="none",
        validation_period=0,
        clock=lambda: seconds[0],
        on_checkpoint=lambda t, uuid: hooked.append(uuid),
        loss_fn=lambda out, tgt: (
            seconds.__setitem__(0, seconds[0] + 25.0),
            nn.functional.cross_entropy(out, tgt),
        )[1],
    )
    trainer.fit(max_length=Batch(10))
    # 25 s a batch: 60 s have passed since the last checkpoint after batches 3, 6 and 9.
    assert core.checkpoint.reasons() == [(3, "time"), (6, "time"), (9, "time"), (10, "end")]
    assert hooked == [s["uuid"] for s in core.checkpoint.saved]


def test_training_metrics_are_averaged_over_each_report_period() -> None:
    core = fake_core()
    recorder = LossRecorder()
    trainer = make_trainer(
        core, loss_fn=recorder, report_period=4, checkpoint_policy="none", validation_period=0
    )
    trainer.fit(max_length=Batch(10))
    assert [steps for steps, _ in core.train.training] == [4, 8, 10]
    for (_, metrics), losses in zip(
        core.train.training, [recorder.losses[:4], recorder.losses[4:8], recorder.losses[8:]], strict=True
    ):
        assert metrics["loss"] == pytest.approx(sum(losses) / len(losses))
        assert metrics["lr"] == 0.05
    assert core.train.progress[:2] == [0.4, 0.8]


def test_a_missing_searcher_metric_is_named() -> None:
    trainer = make_trainer(fake_core(), searcher_metric="validation_accuracy")
    with pytest.raises(
        TrainerError, match=r"no 'validation_accuracy' \(the searcher metric\); got \['validation_loss'\]"
    ):
        trainer.fit(max_length=Batch(5))


def test_a_batch_that_is_not_a_pair_is_refused() -> None:
    model, optimizer = model_and_optimizer()
    trainer = Trainer(fake_core(), model, optimizer, [torch.zeros(2, 6)], loss_fn=nn.functional.cross_entropy)
    with pytest.raises(TrainerError, match="a batch must be an \\(inputs, targets\\) pair, got Tensor"):
        trainer.fit(max_length=Batch(1))


# --- config, searcher -------------------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "searcher": {"name": "single", "metric": "score", "smaller_is_better": False, "max_length": None},
    "checkpoint_policy": "all",
    "min_validation_period": {"batches": 4},
    "min_checkpoint_period": {"records": 20},
    "checkpoint_period": {"minutes": 2.5},
}


def test_policy_comes_from_the_experiment_config_and_arguments_override_it() -> None:
    policy = resolve_policy(CONFIG, batch_size=8)
    assert policy.validation_period == Batch(4)
    assert policy.checkpoint_period == Batch(3)  # 20 records of 8 a batch
    assert (policy.checkpoint_minutes, policy.checkpoint_policy) == (2.5, "all")
    assert (policy.searcher_metric, policy.smaller_is_better) == ("score", False)
    overridden = resolve_policy(
        CONFIG,
        batch_size=8,
        validation_period=Epoch(2),
        checkpoint_policy="none",
        checkpoint_minutes=0.5,
        smaller_is_better=True,
    )
    assert overridden.validation_period == Epoch(2) and overridden.checkpoint_policy == "none"
    assert overridden.checkpoint_minutes == 0.5 and overridden.smaller_is_better
    off = resolve_policy(None)
    assert (off.validation_period, off.checkpoint_period, off.checkpoint_minutes) == (
        Epoch(1),
        Batch(0),
        None,
    )
    assert (off.checkpoint_policy, off.searcher_metric, off.smaller_is_better) == (
        "best",
        "validation_loss",
        True,
    )
    # On a cluster the stored config always has the periods: {batches: 0} means "only at the end".
    assert resolve_policy({"min_validation_period": {"batches": 0}}).validation_period == Batch(0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"records": 10}, "in records but the batch size is unknown"),
        ({"steps": 3}, "must be Batch"),
        ({"batches": -1}, "batches must be an int >= 0"),
        ("5", "must be Batch"),
    ],
)
def test_bad_lengths_are_refused_with_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(TrainerError, match=message):
        to_length(raw, name="max_length")
    with pytest.raises(TrainerError, match="checkpoint_policy must be one of"):
        resolve_policy(None, checkpoint_policy="sometimes")
    with pytest.raises(TrainerError, match="checkpoint minutes must be a number > 0"):
        resolve_policy({"checkpoint_period": {"minutes": 0}})


def test_on_a_cluster_the_searcher_length_is_trained_and_its_metric_reported() -> None:
    config = {**CONFIG, "searcher": {**CONFIG["searcher"], "max_length": {"batches": 6}}}
    operation = FakeOperation("batches", 6)
    core = fake_core(
        info=off_cluster_info(allocation_id="a1", trial_id=3, experiment_config=config), operation=operation
    )
    trainer = make_trainer(core, metrics_fn=scripted_metric([0.2, 0.4, 0.3]))
    result = trainer.fit()
    assert result.batches_trained == 6
    # The config's policy: validation every 4 batches, checkpoint after every validation and every 3 batches.
    assert [steps for steps, _ in core.train.validation] == [4, 6]
    assert core.checkpoint.reasons() == [(3, "period"), (4, "validation"), (6, "validation")]
    assert operation.completed == [0.4]


def test_without_max_length_or_a_searcher_length_fit_refuses() -> None:
    with pytest.raises(TrainerError, match="fit\\(\\) needs max_length"):
        make_trainer(fake_core()).fit()


# --- preemption and resume --------------------------------------------------------------------------


def test_preemption_checkpoints_waits_and_returns_without_reporting_completion() -> None:
    operation = FakeOperation("batches", 20)
    config = {**CONFIG, "searcher": {**CONFIG["searcher"], "max_length": {"batches": 20}}}
    core = fake_core(
        info=off_cluster_info(allocation_id="a1", trial_id=3, experiment_config=config),
        preempt=FakePreempt(at_call=7),
        operation=operation,
    )
    trainer = make_trainer(
        core, metrics_fn=scripted_metric([0.1] * 5), checkpoint_policy="none", checkpoint_period=0
    )
    result = trainer.fit()
    assert result.preempted and result.batches_trained == 7
    assert core.checkpoint.reasons() == [(7, "preemption")]
    assert core.checkpoint.saved[0]["metadata"]["batch_in_epoch"] == 2
    assert core.checkpoint.waits == 1
    assert operation.completed == [] and 1.0 not in core.train.progress


def run_interrupted(stop_at: int, total: int, **kw: Any) -> tuple[list[float], list[float], FakeCheckpoints]:
    """Train ``total`` batches in two processes' worth of objects, preempted after ``stop_at``."""
    checkpoints = FakeCheckpoints()
    first = LossRecorder()
    core = fake_core(checkpoints=checkpoints, preempt=FakePreempt(at_call=stop_at))
    result = make_trainer(core, loss_fn=first, **kw).fit(max_length=Batch(total))
    assert result.preempted and result.batches_trained == stop_at
    # A new "process": different initial weights and global RNG, which the checkpoint must override.
    torch.manual_seed(12345)
    second = LossRecorder()
    resumed = make_trainer(fake_core(checkpoints=checkpoints), init_seed=99, loss_fn=second, **kw)
    assert resumed.fit(max_length=Batch(total)).batches_trained == total
    return first.losses, second.losses, checkpoints


@pytest.mark.parametrize("stop_at", [7, 10, 3])
def test_a_resumed_run_trains_the_same_batches_with_the_same_losses_as_an_uninterrupted_one(
    stop_at: int,
) -> None:
    kw: dict[str, Any] = {"validation_period": Epoch(1), "checkpoint_policy": "none"}
    reference = LossRecorder()
    make_trainer(fake_core(), loss_fn=reference, **kw).fit(max_length=Batch(17))
    assert len(reference.losses) == 17

    before, after, checkpoints = run_interrupted(stop_at, 17, **kw)
    assert len(before) == stop_at and len(after) == 17 - stop_at
    assert before + after == reference.losses  # bit-for-bit: same order, same dropout masks, same weights
    assert checkpoints.reasons() == [(stop_at, "preemption"), (17, "end")]


def test_resume_restores_the_lr_scheduler_and_the_epoch_counters() -> None:
    def scheduled(core: Any, init_seed: int = 0, **kw: Any) -> Trainer:
        model, optimizer = model_and_optimizer(init_seed)
        train, val = data()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return Trainer(
            core,
            model,
            optimizer,
            train,
            val_data=val,
            loss_fn=kw["loss_fn"],
            lr_scheduler=scheduler,
            lr_scheduler_step="batch",
            validation_period=0,
            checkpoint_policy="none",
        )

    reference = LossRecorder()
    scheduled(fake_core(), loss_fn=reference).fit(max_length=Batch(8))
    checkpoints = FakeCheckpoints()
    first = LossRecorder()
    scheduled(fake_core(checkpoints=checkpoints, preempt=FakePreempt(6)), loss_fn=first).fit(
        max_length=Batch(8)
    )
    second = LossRecorder()
    resumed = scheduled(fake_core(checkpoints=checkpoints), init_seed=5, loss_fn=second)
    result = resumed.fit(max_length=Batch(8))
    assert first.losses + second.losses == reference.losses
    assert result.epochs_trained == 1 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.05 * 0.5**8
    )


def test_a_checkpoint_of_another_trial_is_a_warm_start_of_weights_only() -> None:
    donor_checkpoints = FakeCheckpoints()
    donor = make_trainer(fake_core(info=off_cluster_info(trial_id=1), checkpoints=donor_checkpoints))
    donor.fit(max_length=Batch(6))
    core = fake_core(info=off_cluster_info(trial_id=2), checkpoints=FakeCheckpoints(donor_checkpoints.latest))
    trainer = make_trainer(core, init_seed=7, checkpoint_policy="none", validation_period=0)
    assert not torch.equal(trainer.model[0].weight, donor.model[0].weight)
    result = trainer.fit(max_length=Batch(0))
    # The donor's weights, but this trial's counters and a fresh optimizer.
    assert torch.equal(trainer.model[0].weight, donor.model[0].weight)
    assert result.batches_trained == 0 and trainer.optimizer.state_dict()["state"] == {}
    assert core.checkpoint.reasons() == [(0, "end")]


def test_a_foreign_checkpoint_is_refused_by_name() -> None:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(1)}, buffer)
    core = fake_core(checkpoints=FakeCheckpoints(("c0ffee00-0000-4000-8000-000000000000", buffer.getvalue())))
    with pytest.raises(
        TrainerError, match=r"checkpoint c0ffee00-.* was not saved by stalwart\.pytorch\.Trainer"
    ):
        make_trainer(core).fit(max_length=Batch(1))


# --- packaging and cluster info -----------------------------------------------------------------------


def test_importing_stalwart_and_the_core_api_does_not_import_torch() -> None:
    code = "import sys, stalwart, stalwart.core; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_the_trial_runner_exports_the_experiment_config_to_cluster_info() -> None:
    config = {"searcher": {"metric": "m"}, "checkpoint_policy": "all", "checkpoint_period": {"minutes": 5.0}}
    info = {"trial_id": 4, "experiment_id": 2, "config": config, "hparams": {}, "entrypoint": "x"}
    env = trial_env(info, {"STALWART_ALLOCATION_ID": "a"})
    assert json.loads(env["STALWART_EXPERIMENT_CONFIG"]) == config
    assert read_cluster_info(env).experiment_config == config
    assert read_cluster_info({}).experiment_config is None
    assert trial_env({**info, "config": None}, {})["STALWART_EXPERIMENT_CONFIG"] == ""
    # Too big for one environment variable: left out rather than failing the trial's start.
    huge = {**config, "data": {"blob": "x" * 200_000}}
    assert trial_env({**info, "config": huge}, {})["STALWART_EXPERIMENT_CONFIG"] == ""


def test_the_configs_environment_variables_reach_the_trial_but_never_replace_its_identity() -> None:
    info = {
        "trial_id": 4,
        "experiment_id": 2,
        "hparams": {},
        "environment_variables": {"OMP_NUM_THREADS": "1", "STALWART_TRIAL_ID": "99", "PYTHONUNBUFFERED": "0"},
    }
    env = trial_env(info, {"OMP_NUM_THREADS": "8", "HOME": "/h"})
    assert (env["OMP_NUM_THREADS"], env["HOME"]) == ("1", "/h")
    assert (env["STALWART_TRIAL_ID"], env["PYTHONUNBUFFERED"]) == ("4", "1")


# --- with the real checkpoint engine, off-cluster ------------------------------------------------------


@pytest.fixture
def local_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str | None], stalwart.core.Context]:
    """``stalwart.core.init()`` off-cluster in ``tmp_path``, as a fresh process would see it."""
    for name in [n for n in os.environ if n.startswith("STALWART_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STALWART_LOCAL_DIR", str(tmp_path / "local"))

    def make(latest: str | None = None) -> stalwart.core.Context:
        monkeypatch.setenv("STALWART_LATEST_CHECKPOINT", latest or "")
        return stalwart.core.init()

    return make


def test_with_the_real_engine_a_preempted_run_resumes_mid_epoch_from_its_state(
    local_core: Callable[[str | None], stalwart.core.Context],
) -> None:
    kw: dict[str, Any] = {
        "validation_period": Epoch(1),
        "checkpoint_period": Batch(4),
        "checkpoint_policy": "none",
    }
    reference = LossRecorder()
    with local_core(None) as core:
        make_trainer(core, loss_fn=reference, **kw).fit(max_length=Batch(17))

    first = LossRecorder()
    with local_core(None) as core:
        core.preempt.should_preempt = FakePreempt(at_call=7).should_preempt  # type: ignore[method-assign]
        result = make_trainer(core, loss_fn=first, **kw).fit(max_length=Batch(17))
        assert result.preempted and result.batches_trained == 7
        preempted = result.checkpoint
        assert preempted is not None
        metadata = core.checkpoint.get_metadata(preempted)
    assert metadata["reason"] == "preemption" and metadata["batch_in_epoch"] == 2

    torch.manual_seed(4321)
    second = LossRecorder()
    saved: list[str] = []
    with local_core(preempted) as core:
        trainer = make_trainer(
            core, init_seed=3, loss_fn=second, on_checkpoint=lambda t, u: saved.append(u), **kw
        )
        result = trainer.fit(max_length=Batch(17))
        chain = [core.checkpoint.get_metadata(u)["steps_completed"] for u in saved]
    assert first.losses + second.losses == reference.losses
    assert result.batches_trained == 17 and not result.preempted
    # Checkpoints every 4 batches since the last one (7), then the end.
    assert chain == [11, 15, 17]
