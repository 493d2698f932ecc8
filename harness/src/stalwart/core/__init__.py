"""The Core API: what training code uses to report metrics, checkpoint and honour preemption.

Names, signatures and meanings follow Determined's Core API, so porting a script is changing
``import determined as det`` to ``import stalwart as det``; ``det.core.init()`` then works as is.

Example::

    import stalwart.core

    with stalwart.core.init() as core_context:
        for step in range(1, 101):
            core_context.train.report_training_metrics(steps_completed=step, metrics={"loss": 1 / step})
"""

from stalwart.core._checkpoint import CheckpointContext, DownloadMode
from stalwart.core._context import Context, TensorboardMode, init
from stalwart.core._distributed import DistributedContext
from stalwart.core._errors import (
    CheckpointCorrupted,
    CheckpointError,
    CheckpointNotFound,
    CoreError,
    InvalidHP,
    MasterError,
    MetricsError,
)
from stalwart.core._info import ClusterInfo, ClusterInfoError, TrialInfo, get_cluster_info
from stalwart.core._preempt import PreemptContext, PreemptMode
from stalwart.core._searcher import SearcherContext, SearcherMode, SearcherOperation
from stalwart.core._train import EarlyExitReason, TrainContext

__all__ = [
    "CheckpointContext",
    "CheckpointCorrupted",
    "CheckpointError",
    "CheckpointNotFound",
    "ClusterInfo",
    "ClusterInfoError",
    "Context",
    "CoreError",
    "DistributedContext",
    "DownloadMode",
    "EarlyExitReason",
    "InvalidHP",
    "MasterError",
    "MetricsError",
    "PreemptContext",
    "PreemptMode",
    "SearcherContext",
    "SearcherMode",
    "SearcherOperation",
    "TensorboardMode",
    "TrainContext",
    "TrialInfo",
    "get_cluster_info",
    "init",
]
