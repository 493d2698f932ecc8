"""``stalwart.pytorch.Trainer``: a plain PyTorch loop that validates, checkpoints and resumes exactly.

Everything goes through the Core API: metrics through ``core_context.train`` (batched by its
shipper, so nothing here talks to the master per batch), state through
``core_context.checkpoint.save_state`` / ``load_latest_state``, preemption through
``core_context.preempt.should_preempt()`` (a flag read), the training length through
``core_context.searcher`` when the searcher still sets ``max_length``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

import stalwart.core
from stalwart.core import SearcherOperation
from stalwart.pytorch._policy import Batch, Length, Policy, TrainerError, resolve_policy, to_length
from stalwart.pytorch._state import (
    batch_size_of,
    capture_rng,
    data_generators,
    restore_rng,
    seed_all,
    skip_batches,
    to_device,
)

FORMAT = "stalwart.pytorch/1"
logger = logging.getLogger("stalwart.pytorch")

ValidationHook = Callable[["Trainer", dict[str, float]], None]
CheckpointHook = Callable[["Trainer", str], None]
EpochHook = Callable[["Trainer"], None]


class _TrialLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['ids'] if self.extra else ''}] {msg}", kwargs


@dataclass(frozen=True)
class FitResult:
    """How ``fit()`` ended. ``preempted`` means "checkpointed and stopped early; exit 0 to resume"."""

    preempted: bool
    batches_trained: int
    epochs_trained: int
    validation_metrics: dict[str, float] | None
    best_validation: float | None
    checkpoint: str | None


class Trainer:
    """Trains ``model`` on ``(inputs, targets)`` batches and keeps the trial resumable.

    Validation runs every ``validation_period`` and at the end; checkpoints are taken after a
    validation (``checkpoint_policy``: ``best`` = the best of this trial so far, since a trial
    only sees its own validations where Determined compares across the experiment; ``all``;
    ``none``), every ``checkpoint_period`` and ``checkpoint_minutes``, on preemption and at the
    end. Unset arguments come from the experiment config on a cluster (``min_validation_period``,
    ``min_checkpoint_period``, ``checkpoint_period.minutes``, ``checkpoint_policy``,
    ``searcher.metric``/``smaller_is_better``); off-cluster validation defaults to every epoch.

    ``fit()`` first restores the trial's latest checkpoint: weights, optimizer, scheduler, every
    RNG and the position inside the epoch, so a resumed run trains the same batches with the same
    randomness as one that never stopped (single-process data loading; worker processes are
    reseeded by torch per epoch). A checkpoint of another trial (a warm start) only loads weights.
    One process trains; multi-rank training is not handled here.

    The trainer's own state restores with the default allowlist of ``load_latest_state``. If the
    model, optimizer or scheduler state holds objects of your own classes, name them in
    ``allowed_globals`` (``"module.qualname"``), or pass ``trusted=True``: either applies to every
    checkpoint the trial restores, including a warm start's, so use them only when those are yours.

    Example::

        with stalwart.core.init() as core_context:
            trainer = stalwart.pytorch.Trainer(
                core_context, model, optimizer, train_loader,
                val_data=val_loader, loss_fn=nn.functional.cross_entropy, metrics_fn=accuracy,
            )
            trainer.fit(max_length=stalwart.pytorch.Epoch(10))
    """

    def __init__(
        self,
        core_context: stalwart.core.Context,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: Iterable[Any],
        *,
        val_data: Iterable[Any] | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        metrics_fn: Callable[[Any, Any], Mapping[str, float | torch.Tensor]] | None = None,
        lr_scheduler: Any = None,
        lr_scheduler_step: Literal["batch", "epoch"] = "epoch",
        device: str | torch.device | None = None,
        validation_period: Length | int | Mapping[str, int] | None = None,
        checkpoint_period: Length | int | Mapping[str, int] | None = None,
        checkpoint_minutes: float | None = None,
        checkpoint_policy: Literal["best", "all", "none"] | None = None,
        searcher_metric: str | None = None,
        smaller_is_better: bool | None = None,
        report_period: int | None = None,
        seed: int | None = None,
        on_validation_end: ValidationHook | None = None,
        on_checkpoint: CheckpointHook | None = None,
        on_epoch_end: EpochHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        allowed_globals: Iterable[str] = (),
        trusted: bool = False,
    ) -> None:
        if report_period is not None and report_period < 1:
            raise TrainerError(f"report_period must be >= 1 batch, got {report_period}")
        if lr_scheduler_step not in ("batch", "epoch"):
            raise TrainerError(f"lr_scheduler_step must be 'batch' or 'epoch', got {lr_scheduler_step!r}")
        self.core = core_context
        info = core_context.info
        self.device = torch.device(device) if device is not None else _default_device()
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.train_data = train_data
        self.val_data = val_data
        self.loss_fn = loss_fn
        self.metrics_fn = metrics_fn
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_step = lr_scheduler_step
        self.seed = info.trial_seed if seed is None else seed
        self.on_validation_end = on_validation_end
        self.on_checkpoint = on_checkpoint
        self.on_epoch_end = on_epoch_end
        self._clock = clock
        self._restore_options: dict[str, Any] = {}
        if allowed_globals:
            from stalwart.checkpoint._unpickle import check_allowed_globals

            self._restore_options["allowed_globals"] = check_allowed_globals(allowed_globals)  # fail early
        if trusted:
            self._restore_options["trusted"] = True
        batch_size = getattr(train_data, "batch_size", None) or info.hparams.get("global_batch_size")
        self._batch_size = int(batch_size) if isinstance(batch_size, int) else None
        self.policy: Policy = resolve_policy(
            info.experiment_config,  # None off-cluster, unless STALWART_EXPERIMENT_CONFIG is set by hand
            validation_period=validation_period,
            checkpoint_period=checkpoint_period,
            checkpoint_minutes=checkpoint_minutes,
            checkpoint_policy=checkpoint_policy,
            searcher_metric=searcher_metric,
            smaller_is_better=smaller_is_better,
            batch_size=self._batch_size,
        )
        # Determined's scheduling_unit: batches between reports (and preemption checks).
        self.report_period = report_period or self.policy.scheduling_unit or 100
        self._epoch_len = _len_or_none(train_data)
        self._generators = data_generators(train_data)
        ids = f"trial {info.trial_id} allocation {info.allocation_id}" if info.on_cluster else "off-cluster"
        self._log = _TrialLog(logger, {"ids": ids})

        # Progress, all of it saved in checkpoints.
        self._batches = 0
        self._epochs = 0
        self._batch_in_epoch = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._last_validation: int | None = None  # batches at the last validation
        self._last_validation_epoch = 0
        self._last_checkpoint: int | None = None
        self._last_checkpoint_epoch = 0
        self._best: float | None = None
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_count = 0
        # Not saved: this process's view.
        self._total: int | None = None
        self._operations: Iterator[SearcherOperation] = iter(())
        self._last_checkpoint_time = 0.0
        self._last_metrics: dict[str, float] | None = None
        self._last_uuid: str | None = None
        self._preparing: threading.Thread | None = None

    # --- public state -------------------------------------------------------------------------

    @property
    def batches_trained(self) -> int:
        """Batches (optimizer steps) trained by this trial so far, across restarts."""
        return self._batches

    @property
    def epochs_trained(self) -> int:
        """Whole passes over the training data completed so far."""
        return self._epochs

    @property
    def best_validation(self) -> float | None:
        """The best searcher-metric value this trial has validated (None before the first)."""
        return self._best

    # --- fit ------------------------------------------------------------------------------------

    def fit(self, max_length: Length | int | Mapping[str, int] | None = None) -> FitResult:
        """Train until ``max_length`` (``Batch(n)``, ``Epoch(n)`` or an int of batches), or the
        searcher's ``max_length`` when not given; return how it ended.

        Example::

            result = trainer.fit(max_length=stalwart.pytorch.Epoch(15))
            if result.preempted:
                return  # exit 0: the master resumes the trial from the checkpoint just taken
        """
        operation = self._searcher_operation(max_length)
        records = self.policy.records_per_epoch
        if max_length is not None:
            limit = to_length(
                max_length, name="max_length", batch_size=self._batch_size, records_per_epoch=records
            )
        elif operation is not None:
            limit = to_length(
                {operation.unit: operation.length},
                name="searcher.max_length",
                batch_size=self._batch_size,
                records_per_epoch=records,
            )
        else:
            raise TrainerError("fit() needs max_length: the searcher has no max_length to train for")
        if operation is not None and self.val_data is None:
            raise TrainerError("the searcher expects a metric: pass val_data so the trainer can validate")
        self._restore()
        self._last_checkpoint_time = self._clock()
        if (
            self.policy.perform_initial_validation
            and self.val_data is not None
            and self._last_validation is None
        ):
            # A baseline before any training (Determined's perform_initial_validation); a resumed
            # trial has validated already, so it is not repeated.
            self._validate_and_maybe_checkpoint()
        total = self._total_batches(limit)
        if self._train(limit, total):
            self.core.checkpoint.wait()
            return self._result(preempted=True)

        if self._loss_count:
            self._report_training()
        # A run resumed from its final checkpoint has no metrics in hand yet: validate again.
        if self.val_data is not None and (self._last_validation != self._batches or not self._last_metrics):
            self._validate_and_maybe_checkpoint()
        self._save("end")
        self.core.checkpoint.wait()
        self.core.train.report_progress(1.0)
        if operation is not None:
            operation.report_completed(self._searcher_value(self._last_metrics or {}))
            next(self._operations, None)  # let the generator see the completion
        return self._result(preempted=False)

    def validate(self) -> dict[str, float]:
        """Run ``val_data`` through the model without gradients; ``validation_loss`` plus
        ``metrics_fn``'s values, each a per-sample mean (batches weighted by their size)."""
        if self.val_data is None:
            raise TrainerError("validate() needs val_data")
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, Any] = {}
        count = 0
        try:
            with torch.no_grad():
                for batch in self.val_data:
                    inputs, targets = _split(to_device(batch, self.device))
                    outputs = self.model(inputs)
                    size = batch_size_of(targets)
                    values: dict[str, Any] = {"validation_loss": self.loss_fn(outputs, targets)}
                    if self.metrics_fn is not None:
                        values.update(self.metrics_fn(outputs, targets))
                    for name, value in values.items():
                        sums[name] = sums.get(name, 0.0) + value * size
                    count += size
        finally:
            self.model.train(was_training)
        if count == 0:
            raise TrainerError("val_data produced no batches")
        return {name: float(total) / count for name, total in sums.items()}

    # --- the loop -------------------------------------------------------------------------------

    def _train(self, limit: Length, total: int | None) -> bool:
        """Train until ``limit``; True when it stopped for preemption (after checkpointing)."""
        self._total = total
        self.model.train()
        while not self._reached(limit):
            iterator = self._epoch_iterator()
            finished_epoch = True
            for batch in iterator:
                self._train_batch(batch)
                if self._epoch_len is not None and self._batch_in_epoch >= self._epoch_len:
                    break  # the epoch's end is handled below, for this same batch
                if self._after_batch(epoch_ended=False):
                    return True
                if self._reached(limit):
                    finished_epoch = False
                    break
            if not finished_epoch:
                break
            if self._batch_in_epoch == 0:
                raise TrainerError("train_data produced no batches")
            self._end_epoch()
            if self._after_batch(epoch_ended=True):
                return True
        return False

    def _reached(self, limit: Length) -> bool:
        if isinstance(limit, Batch):
            return self._batches >= limit.value
        return self._epochs >= limit.value

    def _total_batches(self, limit: Length) -> int | None:
        if isinstance(limit, Batch):
            return limit.value
        return limit.value * self._epoch_len if self._epoch_len is not None else None

    def _epoch_iterator(self) -> Iterator[Any]:
        sampler = getattr(self.train_data, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self._epochs)  # type: ignore[union-attr]
        if self._batch_in_epoch == 0 or self._epoch_rng is None:
            self._batch_in_epoch = 0
            self._epoch_rng = capture_rng(self._generators)
            return iter(self.train_data)
        # Resuming inside an epoch: rebuild the epoch's order from the RNGs as they were when it
        # began, skip what was trained, then continue with the RNGs as they were at the checkpoint.
        current = capture_rng(self._generators)
        restore_rng(self._epoch_rng, self._generators)
        iterator = iter(self.train_data)
        try:
            skip_batches(self.train_data, iterator, self._batch_in_epoch)
        except StopIteration:
            raise TrainerError(
                f"train_data has fewer than the {self._batch_in_epoch} batches this epoch already "
                "trained before the checkpoint; did the data change?"
            ) from None
        restore_rng(current, self._generators)
        return iterator

    def _train_batch(self, batch: Any) -> None:
        inputs, targets = _split(to_device(batch, self.device))
        loss = self.loss_fn(self.model(inputs), targets)
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.optimizer.step()
        if self.lr_scheduler is not None and self.lr_scheduler_step == "batch":
            self.lr_scheduler.step()
        self._batches += 1
        self._batch_in_epoch += 1
        # Summed on the device: no host sync per batch, only when a report is due.
        self._loss_sum += loss.detach()
        self._loss_count += 1
        if self._preparing is None:
            self._start_preparing()
        if self._batches % self.report_period == 0:
            self._report_training()

    def _end_epoch(self) -> None:
        self._epochs += 1
        self._batch_in_epoch = 0
        self._epoch_rng = None
        if self.lr_scheduler is not None and self.lr_scheduler_step == "epoch":
            self.lr_scheduler.step()
        if self.on_epoch_end is not None:
            self.on_epoch_end(self)

    def _after_batch(self, *, epoch_ended: bool) -> bool:
        """Validations and checkpoints that are due now; True when preempted (checkpoint taken)."""
        policy = self.policy
        if self.val_data is not None and self._due(
            policy.validation_period, self._last_validation, self._last_validation_epoch, epoch_ended
        ):
            self._validate_and_maybe_checkpoint()
        if self._due(
            policy.checkpoint_period, self._last_checkpoint, self._last_checkpoint_epoch, epoch_ended
        ):
            self._save("period")
        minutes = policy.checkpoint_minutes
        if minutes is not None and self._clock() - self._last_checkpoint_time >= minutes * 60:
            self._save("time")
        unit = policy.scheduling_unit
        check = unit is None or epoch_ended or self._batches % unit == 0
        if check and self.core.preempt.should_preempt():
            self._log.info("preempted after %d batches: checkpointing and stopping", self._batches)
            self._save("preemption")
            return True
        return False

    def _due(self, period: Length, last: int | None, last_epoch: int, epoch_ended: bool) -> bool:
        if period.value == 0 or last == self._batches:
            return False
        if isinstance(period, Batch):
            return self._batches - (last or 0) >= period.value
        return epoch_ended and self._epochs - last_epoch >= period.value

    # --- validation and checkpoints -------------------------------------------------------------

    def _validate_and_maybe_checkpoint(self) -> None:
        metrics = self.validate()
        self._last_validation = self._batches
        self._last_validation_epoch = self._epochs
        self._last_metrics = metrics
        # How far the trial got goes with each validation, so adaptive_asha can use
        # ``time_metric: batches`` (or ``epochs``); a metric of the user's with that name wins.
        reported = {"batches": self._batches, "epochs": self._epochs, **metrics}
        self.core.train.report_validation_metrics(steps_completed=self._batches, metrics=reported)
        value = self._searcher_value(metrics)
        improved = self._best is None or (
            value < self._best if self.policy.smaller_is_better else value > self._best
        )
        if improved:
            self._best = value
        if self.on_validation_end is not None:
            self.on_validation_end(self, metrics)
        policy = self.policy.checkpoint_policy
        if policy == "all" or (policy == "best" and improved):
            self._save("validation")

    def _searcher_value(self, metrics: Mapping[str, float]) -> float:
        name = self.policy.searcher_metric
        if name not in metrics:
            raise TrainerError(
                f"validation metrics have no {name!r} (the searcher metric); got {sorted(metrics)}: "
                "return it from metrics_fn or set searcher_metric"
            )
        return float(metrics[name])

    def _start_preparing(self) -> None:
        """After the first step (when optimizer state exists) reserve the checkpoint's host buffers
        on a background thread, so the first checkpoint stalls training no longer than later ones."""
        state = self._state()

        def prepare() -> None:
            try:
                self.core.checkpoint.prepare(state)
            except Exception as exc:  # only an optimisation: the save itself will report real errors
                self._log.debug("preparing checkpoint buffers failed: %s", exc)

        self._preparing = threading.Thread(target=prepare, name="stalwart-prepare", daemon=True)
        self._preparing.start()

    def _save(self, reason: str) -> str | None:
        if self._last_checkpoint == self._batches:
            return None  # this exact state is already in a checkpoint
        if self._preparing is not None:
            self._preparing.join()
        self._last_checkpoint = self._batches
        self._last_checkpoint_epoch = self._epochs
        uuid = self.core.checkpoint.save_state(
            self._state(),
            steps_completed=self._batches,
            metadata={
                "format": FORMAT,
                "framework": f"torch-{torch.__version__}",
                "reason": reason,
                "epochs_trained": self._epochs,
                "batch_in_epoch": self._batch_in_epoch,
            },
        )
        self._last_checkpoint_time = self._clock()
        self._last_uuid = uuid
        self._log.info(
            "checkpoint %s (%s) after %d batches, epoch %d + %d batches",
            uuid,
            reason,
            self._batches,
            self._epochs,
            self._batch_in_epoch,
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(self, uuid)
        return uuid

    def _state(self) -> dict[str, Any]:
        scheduler = self.lr_scheduler
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng(self._generators),
            "epoch_rng": self._epoch_rng if self._batch_in_epoch else None,
            "trainer": {
                "trial_id": self.core.info.trial_id,
                "batches": self._batches,
                "epochs": self._epochs,
                "batch_in_epoch": self._batch_in_epoch,
                "last_validation": self._last_validation,
                "last_validation_epoch": self._last_validation_epoch,
                "last_checkpoint": self._last_checkpoint,
                "last_checkpoint_epoch": self._last_checkpoint_epoch,
                "best": self._best,
                "loss_sum": float(self._loss_sum.item()),
                "loss_count": self._loss_count,
            },
        }

    def _restore(self) -> None:
        # Only the options the caller set, so Core API stand-ins without them keep working.
        found = self.core.checkpoint.load_latest_state(map_location="cpu", **self._restore_options)
        if found is None:
            seed_all(self.seed)
            return
        uuid, state = found
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise TrainerError(f"checkpoint {uuid} was not saved by stalwart.pytorch.Trainer; cannot resume")
        counters = state["trainer"]
        self.model.load_state_dict(state["model"])
        own_trial = self.core.info.trial_id
        if (
            counters.get("trial_id") is not None
            and own_trial is not None
            and counters["trial_id"] != own_trial
        ):
            # A warm start from another trial: its weights, but this trial's own fresh schedule.
            self._log.info(
                "warm start: loaded the weights of checkpoint %s (trial %s)", uuid, counters["trial_id"]
            )
            seed_all(self.seed)
            return
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self._batches = int(counters["batches"])
        self._epochs = int(counters["epochs"])
        self._batch_in_epoch = int(counters["batch_in_epoch"])
        self._last_validation = counters["last_validation"]
        self._last_validation_epoch = int(counters["last_validation_epoch"])
        self._last_checkpoint = counters["last_checkpoint"]
        self._last_checkpoint_epoch = int(counters["last_checkpoint_epoch"])
        self._best = counters["best"]
        self._loss_sum.fill_(float(counters["loss_sum"]))
        self._loss_count = int(counters["loss_count"])
        self._epoch_rng = state.get("epoch_rng")
        restore_rng(state["rng"], self._generators)
        self._last_uuid = uuid
        self._log.info(
            "resumed from checkpoint %s at batch %d (epoch %d + %d batches)",
            uuid,
            self._batches,
            self._epochs,
            self._batch_in_epoch,
        )

    # --- reporting ------------------------------------------------------------------------------

    def _report_training(self) -> None:
        metrics = {
            "loss": float(self._loss_sum.item()) / self._loss_count,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        self.core.train.report_training_metrics(steps_completed=self._batches, metrics=metrics)
        self._loss_sum.zero_()
        self._loss_count = 0
        if self._total:
            self.core.train.report_progress(min(self._batches / self._total, 1.0))

    def _searcher_operation(self, max_length: object) -> SearcherOperation | None:
        info = self.core.info
        if not info.on_cluster:
            return None
        searcher = (info.experiment_config or {}).get("searcher") or {}
        if max_length is not None and not searcher.get("max_length"):
            return None  # the common case: the script decides the length, the searcher has no op
        self._operations = self.core.searcher.operations()
        return next(self._operations, None)

    def _result(self, *, preempted: bool) -> FitResult:
        return FitResult(
            preempted=preempted,
            batches_trained=self._batches,
            epochs_trained=self._epochs,
            validation_metrics=self._last_metrics,
            best_validation=self._best,
            checkpoint=self._last_uuid,
        )


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _len_or_none(data: Iterable[Any]) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise TrainerError(
        f"a batch must be an (inputs, targets) pair, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
    )
