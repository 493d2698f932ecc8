"""The Core API: what training code uses to report metrics, checkpoint and honour preemption.

Names, signatures and meanings follow Determined's Core API, so porting a script is changing
``import determined as det`` / ``det.core.init()`` to ``import stalwart.core`` /
``stalwart.core.init()``.

Example::

    import stalwart.core

    with stalwart.core.init() as core_context:
        for step in range(1, 101):
            core_context.train.report_training_metrics(steps_completed=step, metrics={"loss": 1 / step})
"""

from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._context import Context, init
from stalwart.core._distributed import DistributedContext
from stalwart.core._errors import (
    CheckpointCorrupted,
    CheckpointError,
    CheckpointNotFound,
    CoreError,
    MasterError,
    MetricsError,
)
from stalwart.core._info import ClusterInfo, ClusterInfoError, get_cluster_info
from stalwart.core._preempt import PreemptContext, PreemptMode
from stalwart.core._searcher import SearcherContext, SearcherOperation
from stalwart.core._train import TrainContext

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
    "MasterError",
    "MetricsError",
    "PreemptContext",
    "PreemptMode",
    "SearcherContext",
    "SearcherOperation",
    "TrainContext",
    "get_cluster_info",
    "init",
]
