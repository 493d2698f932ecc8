"""Python SDK for the Stalwart master's REST API, for scripts and notebooks.

It shares the CLI's login: after ``stalwart user login`` a bare ``Client()`` is authenticated.

Example::

    from stalwart.client import Client

    client = Client()                       # $STALWART_MASTER or http://127.0.0.1:8080
    exp = client.get_experiment(7)
    exp = client.wait_for_experiment(exp.id, timeout=3600)
    print(exp.state)
"""

from stalwart.client._client import Client
from stalwart.client.errors import (
    APIError,
    BadRequestError,
    ConflictError,
    DigestMismatch,
    FieldError,
    ForbiddenError,
    InvalidTransitionError,
    MasterUnreachable,
    NotFoundError,
    NotLoggedIn,
    PayloadTooLargeError,
    StalwartError,
    UnauthorizedError,
    ValidationError,
    WaitTimeout,
)
from stalwart.client.models import (
    TERMINAL_STATES,
    Agent,
    Checkpoint,
    CheckpointFile,
    CheckpointLineage,
    Context,
    ContextUpload,
    Experiment,
    ExperimentPage,
    ExperimentState,
    LineageExperiment,
    LineageTrial,
    Login,
    LogLine,
    MasterInfo,
    Metric,
    Model,
    ModelPage,
    ModelVersion,
    ModelVersionPage,
    Page,
    Slot,
    Trial,
    TrialRun,
    User,
)

__all__ = [
    "TERMINAL_STATES",
    "APIError",
    "Agent",
    "BadRequestError",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointLineage",
    "Client",
    "ConflictError",
    "Context",
    "ContextUpload",
    "DigestMismatch",
    "Experiment",
    "ExperimentPage",
    "ExperimentState",
    "FieldError",
    "ForbiddenError",
    "InvalidTransitionError",
    "LineageExperiment",
    "LineageTrial",
    "LogLine",
    "Login",
    "MasterInfo",
    "MasterUnreachable",
    "Metric",
    "Model",
    "ModelPage",
    "ModelVersion",
    "ModelVersionPage",
    "NotFoundError",
    "NotLoggedIn",
    "Page",
    "PayloadTooLargeError",
    "Slot",
    "StalwartError",
    "Trial",
    "TrialRun",
    "UnauthorizedError",
    "User",
    "ValidationError",
    "WaitTimeout",
]
