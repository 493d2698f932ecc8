"""The Core API's exceptions: one base, one family per failure a training script can act on."""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the Core API raises."""


class MasterError(CoreError):
    """The master could not be reached, or refused a request the harness made for the trial."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class MetricsError(CoreError):
    """Reported metrics could not be delivered; raised on the next report call or at exit."""


class CheckpointError(CoreError):
    """A checkpoint could not be written, registered or found."""


class CheckpointNotFound(CheckpointError):
    """No committed checkpoint has this uuid (it never existed, or its save never finished)."""


class CheckpointCorrupted(CheckpointError):
    """A checkpoint file is missing or its bytes differ from the manifest."""


class InvalidHP(Exception):
    """Raise it when this trial's hyperparameters cannot work (e.g. out of memory for this size).

    Inside ``with stalwart.core.init()`` on a cluster, the harness reports an early exit with reason
    ``INVALID_HP`` and the process exits 0: the trial ends early without counting as a failure and
    the searcher may replace it. Off-cluster it propagates like any exception.

    Example::

        if hparams["hidden"] * hparams["layers"] > 4096:
            raise stalwart.InvalidHP("model too large for one slot")
    """

    def __init__(self, msg: str = "the hyperparameters are invalid for this trial") -> None:
        super().__init__(msg)
