"""``stalwart.core.init()``: one context object holding the sub-contexts a training script uses."""

from __future__ import annotations

import enum
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from stalwart._masking import mask_config
from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._distributed import DistributedContext
from stalwart.core._errors import CoreError, InvalidHP, MasterError
from stalwart.core._http import AllocationSession
from stalwart.core._info import ClusterInfo, ClusterInfoError, read_cluster_info
from stalwart.core._metrics import MetricsShipper
from stalwart.core._preempt import PreemptContext, PreemptMode
from stalwart.core._searcher import SearcherContext
from stalwart.core._train import EarlyExitReason, JsonLinesSink, TrainContext, http_sinks

logger = logging.getLogger("stalwart.core")
DEFAULT_LOCAL_DIR = "stalwart-local"


class TensorboardMode(enum.Enum):
    """Accepted for Determined compatibility and ignored: there is no TensorBoard upload here;
    metrics reported through ``core_context.train`` are what the web UI charts."""

    AUTO = "AUTO"
    MANUAL = "MANUAL"


class _TrialLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the trial and allocation ids in front of every harness log line."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['ids'] if self.extra else ''}] {msg}", kwargs


class Context:
    """What ``stalwart.core.init()`` returns: ``info``, ``train``, ``checkpoint``, ``searcher``,
    ``preempt`` and ``distributed``. Use it as a context manager so metrics are flushed at the end.

    Example::

        with stalwart.core.init() as core_context:
            core_context.train.report_training_metrics(steps_completed=1, metrics={"loss": 0.5})
    """

    def __init__(
        self,
        *,
        info: ClusterInfo,
        distributed: DistributedContext,
        train: TrainContext,
        checkpoint: CheckpointContext,
        searcher: SearcherContext,
        preempt: PreemptContext,
        shipper: MetricsShipper | None,
        session: AllocationSession | None,
        local_dir: Path | None,
        log: logging.LoggerAdapter[logging.Logger],
        on_close: list[Any] | None = None,
    ) -> None:
        self.info = info
        self.distributed = distributed
        self.train = train
        self.checkpoint = checkpoint
        self.searcher = searcher
        self.preempt = preempt
        self.local_dir = local_dir
        self._shipper = shipper
        self._session = session
        self._log = log
        self._on_close = on_close or []
        self._closed = False

    def __enter__(self) -> Context:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        invalid_hp = isinstance(exc, InvalidHP) and self._session is not None
        if invalid_hp:
            # Determined's contract: the report is the run's outcome, the process then exits 0.
            try:
                self.train.report_early_exit(EarlyExitReason.INVALID_HP)
            except MasterError:
                self._log.exception("could not report InvalidHP to the master; failing the run instead")
                invalid_hp = False
        try:
            self.close()
        except CoreError:
            if exc is None:
                raise
            # The block already failed; report the delivery problem without hiding the first error.
            self._log.exception("while closing after %s", exc_type.__name__ if exc_type else "an error")
        if invalid_hp:
            self._log.info("InvalidHP raised (%s): trial ends early, exiting 0", exc)
            sys.exit(0)

    def close(self) -> None:
        """Finish checkpoints in flight and flush metrics (raising a failure nobody has seen yet),
        then stop background threads."""
        if self._closed:
            return
        self._closed = True
        self.preempt.close()
        try:
            # Checkpoints first: registering one needs the session closed below.
            self.checkpoint.close()
        finally:
            self._close_rest()

    def _close_rest(self) -> None:
        try:
            if self._shipper is not None:
                self._shipper.close()
        finally:
            for close in self._on_close:
                close()
            if self._session is not None:
                self._session.close()


def _local_root(checkpoint_storage: str | os.PathLike[str] | dict[str, Any] | None) -> Path:
    if checkpoint_storage is not None and not isinstance(checkpoint_storage, dict):
        return Path(checkpoint_storage)
    return Path(os.environ.get("STALWART_LOCAL_DIR") or DEFAULT_LOCAL_DIR)


def _storage_for(
    checkpoint_storage: str | os.PathLike[str] | dict[str, Any] | None, default: dict[str, Any] | None
) -> dict[str, Any] | None:
    if isinstance(checkpoint_storage, dict):
        return checkpoint_storage
    if checkpoint_storage is not None:
        return {"type": "directory", "container_path": str(Path(checkpoint_storage).absolute())}
    return default


def init(
    *,
    distributed: DistributedContext | None = None,
    checkpoint_storage: str | os.PathLike[str] | dict[str, Any] | None = None,
    preempt_mode: PreemptMode = PreemptMode.WorkersAskChief,
    tensorboard_mode: TensorboardMode = TensorboardMode.AUTO,
) -> Context:
    """Start the Core API for this process: on a cluster when the trial runner started it,
    otherwise off-cluster with a local directory standing in for the master.

    ``checkpoint_storage`` overrides where checkpoints go: a directory path, or a storage dict
    like the experiment config's. Off-cluster a path also holds the metrics file.
    ``tensorboard_mode`` is accepted as Determined's and ignored (see ``TensorboardMode``).

    Example::

        import stalwart.core

        with stalwart.core.init() as core_context:
            hparams = core_context.info.hparams
            ...
    """
    info = read_cluster_info()
    distributed = distributed or DistributedContext()
    is_chief = distributed.is_chief
    if info.on_cluster:
        if not (info.master_url and info.allocation_token and info.trial_id is not None):
            raise ClusterInfoError(
                "STALWART_ALLOCATION_ID is set but STALWART_MASTER, STALWART_ALLOCATION_TOKEN or "
                "STALWART_TRIAL_ID is missing; was this started by `python -m stalwart.exec.run`?"
            )
        ids = f"trial {info.trial_id} allocation {info.allocation_id} rank {distributed.rank}"
    else:
        ids = f"off-cluster rank {distributed.rank}"
    log = _TrialLog(logger, {"ids": ids})
    if TensorboardMode(tensorboard_mode) is not TensorboardMode.AUTO:
        log.debug("tensorboard_mode=%s is accepted and ignored", tensorboard_mode)
    on_close: list[Any] = []
    session: AllocationSession | None = None
    shipper: MetricsShipper | None = None
    local_dir: Path | None = None

    if info.on_cluster:
        assert info.master_url is not None and info.allocation_token is not None
        assert info.trial_id is not None
        session = AllocationSession(info.master_url, info.allocation_token)
        storage = _storage_for(checkpoint_storage, info.checkpoint_storage)
        if is_chief:
            send_batch, send_progress = http_sinks(session, info.trial_id, info.run_id)
            shipper = MetricsShipper(send_batch, progress_sink=send_progress, log=log)
    else:
        root = _local_root(checkpoint_storage)
        local_dir = root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        default_storage = {"type": "directory", "container_path": str((root / "checkpoints").absolute())}
        storage = checkpoint_storage if isinstance(checkpoint_storage, dict) else default_storage
        if is_chief:
            sink = JsonLinesSink(local_dir / "metrics.jsonl")
            shipper = MetricsShipper(sink, log=log)
            on_close.append(sink.close)
            log.info("metrics go to %s, checkpoints to %s", sink.path, mask_config(storage))

    train = TrainContext(
        shipper,
        log=log,
        session=session,
        trial_id=info.trial_id,
        run_id=info.run_id,
        experiment_id=info.experiment_id,
        is_chief=is_chief,
    )
    return Context(
        info=info,
        distributed=distributed,
        train=train,
        checkpoint=CheckpointContext(
            storage=storage,
            # Every rank reads checkpoint records; only the chief registers them.
            session=session,
            trial_id=info.trial_id,
            allocation_id=info.allocation_id,
            parent_uuid=info.latest_checkpoint,
            is_chief=is_chief,
            log=log,
            rank=distributed.rank,
            world_size=distributed.size,
            # What every rank derives the same checkpoint uuids from (see CheckpointWriter).
            run_key=info.allocation_id or os.environ.get("STALWART_RUN_KEY") or None,
        ),
        searcher=SearcherContext(
            session=session,
            allocation_id=info.allocation_id,
            trial_id=info.trial_id,
            run_id=info.run_id,
            train=train,
            is_chief=is_chief,
            log=log,
            config=info.experiment_config,
        ),
        preempt=PreemptContext(
            session=session, allocation_id=info.allocation_id, is_chief=is_chief, mode=preempt_mode, log=log
        ),
        shipper=shipper,
        session=session,
        local_dir=local_dir,
        log=log,
        on_close=on_close,
    )
