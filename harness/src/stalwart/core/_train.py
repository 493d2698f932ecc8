"""``core_context.train``: metric and progress reports, sent by the background shipper."""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from stalwart.core._http import AllocationSession
from stalwart.core._metrics import (
    BatchSink,
    MetricsShipper,
    ProgressSink,
    Record,
    check_group,
    check_progress,
    validate_report,
)

TRAINING = "training"
VALIDATION = "validation"


class EarlyExitReason(enum.Enum):
    """Why a trial ends before its training is done (Determined's names; the name goes on the wire).

    ``INVALID_HP`` ends the trial without counting as a failure; the searcher may replace it.
    """

    ERRORED = "ERRORED"
    USER_REQUESTED_STOP = "USER_REQUESTED_STOP"
    INVALID_HP = "INVALID_HP"


class TrainContext:
    """Reports training and validation metrics; never waits on the network.

    Only the chief (rank 0) reports; on other ranks every call is a no-op, so the same script
    runs on every rank.

    Example::

        core_context.train.report_training_metrics(steps_completed=100, metrics={"loss": 0.25})
        core_context.train.report_validation_metrics(steps_completed=100, metrics={"accuracy": 0.97})
    """

    def __init__(
        self,
        shipper: MetricsShipper | None,
        *,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        session: AllocationSession | None = None,
        trial_id: int | None = None,
        run_id: int | None = None,
        experiment_id: int | None = None,
        is_chief: bool = True,
    ) -> None:
        self._shipper = shipper
        self._experiment_id = experiment_id
        self._log = log
        self._session = session
        self._trial_id = trial_id
        self._run_id = run_id
        self._is_chief = is_chief

    def report_training_metrics(self, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Report training metrics after ``steps_completed`` batches (NaN and infinities allowed).

        Example::

            train.report_training_metrics(steps_completed=step, metrics={"loss": loss.item()})
        """
        shipper = self._shipper
        if shipper is not None:
            shipper.put(validate_report(TRAINING, steps_completed, metrics))

    def report_validation_metrics(self, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Report validation metrics; the searcher reads its ``metric`` from these.

        Example::

            train.report_validation_metrics(steps_completed=step, metrics={"validation_loss": 0.1})
        """
        if self._shipper is not None:
            record = validate_report(VALIDATION, steps_completed, metrics)
            self._shipper.put(record)
            self._log.info("validation after %d steps: %s", record["steps_completed"], record["values"])

    def report_metrics(self, group: str, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Report metrics of any group (e.g. ``"inference"``); the group must not contain a dot.

        Example::

            train.report_metrics("profiling", steps_completed=step, metrics={"samples_per_s": 812.0})
        """
        check_group(group)
        if self._shipper is not None:
            self._shipper.put(validate_report(group, steps_completed, metrics))

    def report_progress(self, progress: float) -> None:
        """Tell the master how far the trial is, between 0 and 1 (drives the UI's progress bar).

        Example::

            train.report_progress(step / max_steps)
        """
        value = check_progress(progress)
        if self._shipper is not None:
            self._shipper.set_progress(value)

    def get_experiment_best_validation(self) -> float | None:
        """The best searcher metric any trial of this experiment has reported, or None (also
        off-cluster), e.g. to keep a checkpoint only when this trial beats it.

        Example::

            best = core_context.train.get_experiment_best_validation()
            if best is None or loss < best:
                save_checkpoint()
        """
        if self._session is None or self._experiment_id is None:
            return None
        answer: Any = self._session.request(
            "GET", f"/experiments/{self._experiment_id}/searcher/best_searcher_validation_metric"
        ).json()
        metric = answer.get("metric") if isinstance(answer, dict) else None
        return None if metric is None else float(metric)

    def report_early_exit(self, reason: EarlyExitReason) -> None:
        """Tell the master this run is ending early and why; then exit the process (chief only).

        The master takes the report as the run's outcome whatever the exit code: ``INVALID_HP``
        ends the trial without counting as a failure. Off-cluster it is only logged.

        Example::

            train.report_early_exit(stalwart.core.EarlyExitReason.INVALID_HP)
            sys.exit(0)
        """
        reason = EarlyExitReason(reason)
        if not self._is_chief:
            return
        if self._session is None:
            self._log.info("early exit (%s) noted; off-cluster there is no master to tell", reason.name)
            return
        body = {"reason": reason.name, "run_id": self._run_id}
        self._session.request_until(
            "POST", f"/trials/{self._trial_id}/early_exit", body=body, within=60.0, max_delay=5.0
        )
        self._log.info("reported early exit to the master: %s", reason.name)


def http_sinks(
    session: AllocationSession, trial_id: int, run_id: int | None
) -> tuple[BatchSink, ProgressSink]:
    """The batch and progress senders that post to the master."""

    def send_batch(batch_id: str, records: list[Record]) -> None:
        session.request(
            "POST",
            f"/trials/{trial_id}/metrics",
            body={"run_id": run_id, "batch_id": batch_id, "metrics": records},
        )

    def send_progress(progress: float) -> None:
        session.request("POST", f"/trials/{trial_id}/progress", body={"run_id": run_id, "progress": progress})

    return send_batch, send_progress


class JsonLinesSink:
    """Off-cluster stand-in for the master: one JSON line per report, appended to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def __call__(self, batch_id: str, records: list[Record]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(json.dumps(record) + "\n" for record in records))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
