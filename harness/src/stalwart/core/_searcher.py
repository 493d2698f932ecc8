"""``core_context.searcher``: Determined's deprecated "train for this long" operations.

Experiments whose searcher sets ``max_length`` (or, for ``adaptive_asha``, ``max_time``) get one
operation of that length, as in Determined 0.38. Otherwise how long to train is the training
code's decision (a hyperparameter, an epoch count), as Determined recommends since it deprecated
``max_length``. Off-cluster the length comes from ``$STALWART_EXPERIMENT_CONFIG`` when set; unlike
Determined's stand-in (one operation of length 1) there is none otherwise, so nothing trains by
accident on a laptop for an arbitrary length.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from typing import Any

from stalwart.core._http import AllocationSession
from stalwart.core._train import TrainContext


class SearcherMode(enum.Enum):
    """Accepted for Determined compatibility: every rank gets the same single operation anyway."""

    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHIEF_ONLY"


def _length_from_config(config: dict[str, Any] | None) -> tuple[str, int] | None:
    """``(unit, length)`` from a config's ``searcher.max_length`` or ``max_time``/``time_metric``."""
    searcher = (config or {}).get("searcher") or {}
    max_length = searcher.get("max_length")
    if isinstance(max_length, dict) and len(max_length) == 1:
        ((unit, length),) = max_length.items()
        return str(unit), int(length)
    if isinstance(max_length, int):
        return "batches", max_length
    max_time = searcher.get("max_time")
    if isinstance(max_time, int | float) and not isinstance(max_time, bool):
        return str(searcher.get("time_metric") or "batches"), int(max_time)
    return None


class SearcherOperation:
    """Train until ``length`` units (of the searcher's ``max_length``), then report the metric.

    Example::

        for op in core_context.searcher.operations():
            while step < op.length:
                step += train_one_batch()
                op.report_progress(step)
            op.report_completed(validation_loss)
    """

    def __init__(
        self,
        *,
        length: int,
        unit: str,
        session: AllocationSession | None,
        trial_id: int | None,
        run_id: int | None,
        train: TrainContext,
        is_chief: bool,
    ) -> None:
        self.length = length
        self.unit = unit
        self._session = session
        self._trial_id = trial_id
        self._run_id = run_id
        self._train = train
        self._is_chief = is_chief
        self._completed = False

    def report_progress(self, length: float) -> None:
        """How many units are done so far; shown as the trial's progress."""
        self._train.report_progress(min(max(float(length) / self.length, 0.0), 1.0))

    def report_completed(self, searcher_metric: float) -> None:
        """Hand the searcher its metric for this operation (once)."""
        if self._completed:
            raise RuntimeError("report_completed() was already called for this operation")
        self._completed = True
        if not self._is_chief or self._session is None:
            return
        body = {"run_id": self._run_id, "metric": float(searcher_metric)}
        self._session.request_until(
            "POST", f"/trials/{self._trial_id}/searcher/completed", body=body, within=120.0, max_delay=10.0
        )


class SearcherContext:
    """Gives out the searcher's operations (only for configs with ``searcher.max_length``).

    Example::

        for op in core_context.searcher.operations():
            train_for(op.length)
            op.report_completed(metric)
    """

    def __init__(
        self,
        *,
        session: AllocationSession | None,
        allocation_id: str | None,
        trial_id: int | None,
        run_id: int | None,
        train: TrainContext,
        is_chief: bool,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        config: dict[str, Any] | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._allocation_id = allocation_id
        self._trial_id = trial_id
        self._run_id = run_id
        self._train = train
        self._is_chief = is_chief
        self._log = log

    def _max_length(self) -> tuple[str, int] | None:
        if self._session is None:
            return _length_from_config(self._config)
        info: Any = self._session.request("GET", f"/allocations/{self._allocation_id}/info").json()
        max_length = (info.get("searcher") or {}).get("max_length") if isinstance(info, dict) else None
        if isinstance(max_length, dict) and len(max_length) == 1:
            ((unit, length),) = max_length.items()
            return str(unit), int(length)
        # adaptive_asha without max_length: Determined 0.38's own tutorials moved it to max_time.
        return _length_from_config(self._config) if self._config else None

    def get_configured_units(self) -> str | None:
        """The unit of the operations' length (``"epochs"``, ``"batches"``, ...), None if none."""
        found = _length_from_config(self._config)
        return found[0] if found else None

    def acknowledge_out_of_ops(self) -> None:
        """Accepted for Determined compatibility; there is nothing to acknowledge."""

    def operations(
        self, searcher_mode: SearcherMode = SearcherMode.WorkersAskChief, auto_ack: bool = True
    ) -> Iterator[SearcherOperation]:
        """Yield one operation of the searcher's ``max_length`` (or ``max_time``), else nothing
        (and log why); off-cluster only when ``$STALWART_EXPERIMENT_CONFIG`` gives a length.

        ``searcher_mode`` and ``auto_ack`` are accepted as Determined's and change nothing here.
        """
        SearcherMode(searcher_mode)
        found = self._max_length()
        if found is None:
            self._log.info(
                "searcher.operations() yields nothing: the searcher has no max_length; decide the "
                "training length in your code (e.g. a hyperparameter), as max_length is deprecated"
            )
            return
        unit, length = found
        operation = SearcherOperation(
            length=length,
            unit=unit,
            session=self._session,
            trial_id=self._trial_id,
            run_id=self._run_id,
            train=self._train,
            is_chief=self._is_chief,
        )
        yield operation
        if not operation._completed:
            self._log.warning("searcher operation finished without report_completed()")
