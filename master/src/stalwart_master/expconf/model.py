"""The experiment configuration, with Determined's field names and meanings.

Field rules live on the models; rules that span sections (grid needs counts, epochs need
``records_per_epoch``) run on the raw input in ``ExperimentConfig``'s wrap validator so that they are
reported together with every other error instead of only once the rest is valid.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from stalwart_master.expconf.common import (
    INT32_MAX,
    INT64_MAX,
    Loc,
    NonBlank,
    Section,
    check,
    custom_error,
    field_error,
    field_errors,
)
from stalwart_master.expconf.hyperparameters import NUMERIC_TYPES, Hyperparameters, iter_specs
from stalwart_master.expconf.periods import Period, TimePeriod
from stalwart_master.expconf.searchers import Searcher

MAX_SEED = INT32_MAX
# Trials are placed whole on one agent; no machine has more slots than this.
MAX_SLOTS_PER_TRIAL = 1024
MAX_RESTARTS = 1_000_000
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b?)\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _is_absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute()


def _is_relative_inside(path: str) -> bool:
    return not PurePosixPath(path).is_absolute() and ".." not in PurePosixPath(path).parts


def _one_of(kinds: dict[type, str], message: str) -> Discriminator:
    """A discriminator choosing a union member by the Python type of the raw value."""

    def pick(value: Any) -> str | None:
        for kind, tag in kinds.items():
            if isinstance(value, kind):
                return tag
        return None

    return Discriminator(pick, custom_error_type="stalwart", custom_error_message=message)


# --- checkpoint storage -----------------------------------------------------------------------------

STORAGE_TYPES = ("shared_fs", "s3", "directory")


class _StorageBase(Section):
    type: str  # narrowed to a Literal by each storage type; declared here so it comes first
    save_experiment_best: int = Field(
        default=0, ge=0, le=INT32_MAX, description="Keep the N best checkpoints of the experiment."
    )
    save_trial_best: int = Field(
        default=1, ge=0, le=INT32_MAX, description="Keep the N best checkpoints of each trial."
    )
    save_trial_latest: int = Field(
        default=1, ge=0, le=INT32_MAX, description="Keep the N latest checkpoints of each trial."
    )
    compression: Literal["none", "zstd"] = Field(
        default="none", description="Compress checkpoint chunks (zstd pays off for sparse or int data)."
    )
    chunk_size: int = Field(
        default=8 * 2**20,
        ge=64 * 2**10,
        le=2**30,
        description="Bytes per chunk: unchanged chunks are stored once across checkpoints.",
    )


class SharedFSStorage(_StorageBase):
    """A directory every agent mounts at the same path (NFS and the like)."""

    type: Literal["shared_fs"]
    host_path: Annotated[str, check(_is_absolute, "must be an absolute path")]
    storage_path: (
        Annotated[str, check(_is_relative_inside, "must be a relative path without '..'")] | None
    ) = None


class S3Storage(_StorageBase):
    """An S3 bucket or any S3-compatible store (MinIO, Ceph, ...)."""

    type: Literal["s3"]
    bucket: NonBlank
    prefix: Annotated[str, check(lambda p: ".." not in p.split("/"), "must not contain '..'")] | None = None
    endpoint_url: (
        Annotated[
            str, check(lambda u: u.startswith(("http://", "https://")), "must start with http:// or https://")
        ]
        | None
    ) = None
    access_key: str | None = None
    secret_key: str | None = None


class DirectoryStorage(_StorageBase):
    """A path inside the trial's container; the user makes it persistent (e.g. a mounted volume)."""

    type: Literal["directory"]
    container_path: Annotated[str, check(_is_absolute, "must be an absolute path")]


_STORAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class NamedStorage(_StorageBase):
    """A storage the cluster's operator defined (``STALWART_STORAGE_NAMED``), picked by name.

    The master fills in its location and credentials for the runs of this experiment only; the
    experiment's config keeps just the name and its own GC policy and chunking.
    """

    type: Literal["named"]
    name: Annotated[
        str,
        check(
            lambda n: bool(_STORAGE_NAME.fullmatch(n)),
            "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
    ]


LocatedStorage = Annotated[SharedFSStorage | S3Storage | DirectoryStorage, Field(discriminator="type")]
#: Keys that say where checkpoints go and with which credentials, as opposed to how (policy, chunking).
LOCATION_KEYS = tuple(
    dict.fromkeys(
        key
        for model in (SharedFSStorage, S3Storage, DirectoryStorage)
        for key in model.model_fields
        if key not in _StorageBase.model_fields
    )
)
_LOCATED = TypeAdapter(LocatedStorage)


def _pick_named(value: Any) -> Any:
    """``{name: x}`` is a named storage, whose location comes from the operator's definition.
    A location or another type given beside the name is refused by ``cross_section_errors``
    (``merge_defaults`` already leaves the cluster default's location out)."""
    if isinstance(value, dict) and "name" in value:
        return {**{k: v for k, v in value.items() if k not in LOCATION_KEYS}, "type": "named"}
    return value


CheckpointStorage = Annotated[
    SharedFSStorage | S3Storage | DirectoryStorage | NamedStorage,
    Field(discriminator="type"),
    BeforeValidator(_pick_named),
]


def validate_named_storage(name: str, storage: Any) -> dict[str, Any]:
    """An operator's named storage checked like an experiment's own; raises ``ValueError``."""
    if not _STORAGE_NAME.fullmatch(name):
        raise ValueError(f"storage name {name!r} must be 1-128 letters, digits, '.', '_' or '-'")
    try:
        return dict(_LOCATED.validate_python(storage).model_dump(mode="json"))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'][1:]) or 'type'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ValueError(f"named storage {name!r}: {problems}") from None


# --- resources --------------------------------------------------------------------------------------


def _parse_size(value: Any) -> Any:
    """Turn ``4G`` / ``512Mi`` / ``1.5GB`` into bytes (powers of 1024, as Docker reads them)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise custom_error("must not be negative")
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
        # A long run of digits reads as inf, which int() cannot take.
        if size > INT64_MAX:
            raise custom_error(f"must be at most {INT64_MAX} bytes")
        return int(size)
    raise custom_error("must be a number of bytes or a size such as 4G")


class Resources(Section):
    """What each trial needs and how the experiment shares the cluster."""

    slots_per_trial: int = Field(
        default=1, ge=0, le=MAX_SLOTS_PER_TRIAL, description="Slots (GPUs) per trial; 0 runs on CPU."
    )
    # The allocations table holds at most 128 characters of pool name.
    resource_pool: Annotated[
        str, Field(max_length=128), check(lambda s: s.strip() != "", "must not be empty")
    ] = "default"
    priority: int | None = Field(
        default=None, ge=1, le=99, description="Lower runs first; unset = pool default."
    )
    max_slots: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Cap on slots used by the whole experiment."
    )
    weight: float = Field(default=1.0, gt=0, description="Fair-share weight.")
    shm_size: Annotated[int | None, BeforeValidator(_parse_size)] = Field(
        default=None, le=INT64_MAX, description="Size of /dev/shm in bytes; a string like 4G is accepted."
    )


# --- environment ------------------------------------------------------------------------------------

EnvName = Annotated[
    str, check(lambda k: bool(_ENV_NAME.match(k)), "is not a valid environment variable name")
]
EnvEntry = Annotated[
    str,
    check(
        lambda e: "=" in e and bool(_ENV_NAME.match(e.split("=", 1)[0])),
        "must look like NAME=value",
    ),
]
EnvList = list[EnvEntry]
EnvMap = dict[EnvName, Annotated[str, Field(description="Quote numbers and booleans.")]]
EnvSet = Annotated[
    Annotated[EnvList, Tag("list")] | Annotated[EnvMap, Tag("map")],
    _one_of({list: "list", dict: "map"}, "must be a list of NAME=value or a mapping"),
]
DEVICES = ("cpu", "cuda")


class EnvByDevice(Section):
    """Variables that differ by the kind of slot the trial runs on."""

    cpu: EnvSet = Field(default_factory=list)
    cuda: EnvSet = Field(default_factory=list)


def _env_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, EnvByDevice):  # dumping a validated config
        return "per_device"
    if not isinstance(value, dict):
        return None
    per_device = (
        value and set(value) <= set(DEVICES) and all(isinstance(v, list | dict) for v in value.values())
    )
    return "per_device" if per_device else "map"


EnvironmentVariables = Annotated[
    Annotated[EnvList, Tag("list")]
    | Annotated[EnvByDevice, Tag("per_device")]
    | Annotated[EnvMap, Tag("map")],
    Discriminator(
        _env_kind,
        custom_error_type="stalwart",
        custom_error_message="must be a list of NAME=value, a mapping, or a mapping by device (cpu, cuda)",
    ),
]


class ImageByDevice(Section):
    """Container images by the kind of slot the trial runs on."""

    cpu: NonBlank | None = None
    cuda: NonBlank | None = None


Image = Annotated[
    Annotated[NonBlank, Tag("str")] | Annotated[ImageByDevice, Tag("device")],
    # ImageByDevice is listed so that dumping a validated config picks the same member.
    _one_of(
        {str: "str", dict: "device", ImageByDevice: "device"},
        "must be an image name or a mapping by device (cpu, cuda)",
    ),
]


def _as_dict(entries: list[str] | dict[str, str]) -> dict[str, str]:
    if isinstance(entries, dict):
        return dict(entries)
    return dict(entry.split("=", 1) for entry in entries)


class Environment(Section):
    """The container a trial runs in."""

    image: Image | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=list)
    pod_spec: dict[str, Any] | None = Field(
        default=None, description="Kubernetes pod template merged into each pod."
    )

    def variables_for(self, device: str) -> dict[str, str]:
        """The environment variables for a trial on ``device`` slots ("cpu" or "cuda")."""
        env = self.environment_variables
        if isinstance(env, EnvByDevice):
            return _as_dict(env.cuda if device == "cuda" else env.cpu)
        return _as_dict(env)

    def image_for(self, device: str) -> str | None:
        """The image for a trial on ``device`` slots, or None to use the cluster's default."""
        if isinstance(self.image, ImageByDevice):
            return self.image.cuda if device == "cuda" else self.image.cpu
        return self.image


class Reproducibility(Section):
    experiment_seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="Seed for every trial's RNGs."
    )


# --- the experiment ---------------------------------------------------------------------------------

Entrypoint = Annotated[
    Annotated[NonBlank, Tag("str")] | Annotated[list[NonBlank], Field(min_length=1), Tag("list")],
    _one_of({str: "str", list: "list"}, "must be a command string or a list of arguments"),
]


def _unique_labels(labels: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, label in enumerate(labels):
        if label in seen:
            raise field_error((index,), "duplicate label", label)
        seen.add(label)
    return labels


class ExperimentConfig(Section):
    """A whole experiment as submitted: what to run, how to search, where to keep checkpoints."""

    name: (
        Annotated[str, Field(max_length=255), check(lambda s: s.strip() != "", "must not be empty")] | None
    ) = Field(default=None, description="Display name; the master picks one when unset.")
    description: str | None = None
    labels: Annotated[list[NonBlank], AfterValidator(_unique_labels)] = Field(default_factory=list)
    entrypoint: Entrypoint = Field(description="Command that starts the training code.")
    hyperparameters: Hyperparameters = Field(default_factory=dict)
    searcher: Searcher
    resources: Resources = Field(default_factory=Resources)
    checkpoint_storage: CheckpointStorage | None = Field(
        default=None, description="Unset: the cluster's storage."
    )
    checkpoint_policy: Literal["best", "all", "none"] = "best"
    min_validation_period: Period = Field(default_factory=lambda: Period(batches=0))
    min_checkpoint_period: Period = Field(default_factory=lambda: Period(batches=0))
    checkpoint_period: TimePeriod | None = Field(
        default=None, description="Also checkpoint every this many minutes of training (wall clock)."
    )
    max_restarts: int = Field(
        default=5, ge=0, le=MAX_RESTARTS, description="Retries of a failed trial from its latest checkpoint."
    )
    preemption_timeout: int | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description="Seconds a preempted trial gets to checkpoint and exit before it is killed "
        "(it then resumes from its latest checkpoint); unset: the cluster's, 300 by default.",
    )
    environment: Environment = Field(default_factory=Environment)
    reproducibility: Reproducibility = Field(default_factory=Reproducibility)
    records_per_epoch: int = Field(
        default=0, ge=0, le=INT64_MAX, description="Needed to express periods in epochs."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Free-form data for the training code.")
    perform_initial_validation: bool = Field(
        default=False, description="The Trainer validates once before training (a baseline)."
    )
    scheduling_unit: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Batches between the Trainer's reports and preemption checks; unset: report every "
        "100 batches and check for preemption after every batch.",
    )
    workspace: NonBlank | None = Field(default=None, description="With project: where the experiment goes.")
    project: NonBlank | None = Field(default=None, description="A project of workspace, by name.")

    @model_validator(mode="wrap")
    @classmethod
    def _cross_section_rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Self:
        extra = cross_section_errors(data) if isinstance(data, dict) else []
        try:
            config: Self = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            raise _combined(exc, extra) from None
        if extra:
            raise field_errors(extra)
        return config


def _combined(exc: ValidationError, extra: list[tuple[Loc, str, Any]]) -> ValidationError:
    # Re-create pydantic's own errors with their original type and context, so messages.py reads
    # them exactly as if they had been raised alone.
    details = [
        InitErrorDetails(
            type=PydanticCustomError(err["type"], "{message}", {**err.get("ctx", {}), "message": err["msg"]}),
            loc=err["loc"],
            input=err["input"],
        )
        for err in exc.errors(include_url=False)
    ]
    details += [InitErrorDetails(type=custom_error(msg), loc=loc, input=value) for loc, msg, value in extra]
    return ValidationError.from_exception_data(exc.title, details)


def cross_section_errors(raw: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """Rules that need more than one section, checked on the raw input.

    Each rule looks only at values of the expected type; a value of the wrong type is already an
    error of its own and should not also produce a confusing second one.
    """
    errors: list[tuple[Loc, str, Any]] = []
    records = raw.get("records_per_epoch", 0)
    no_epochs = isinstance(records, int) and not isinstance(records, bool) and records <= 0
    searcher = raw.get("searcher")
    periods: list[tuple[Loc, Any]] = [
        (("min_validation_period",), raw.get("min_validation_period")),
        (("min_checkpoint_period",), raw.get("min_checkpoint_period")),
    ]
    if isinstance(searcher, dict) and isinstance(searcher.get("name"), str):
        periods.append((("searcher", searcher["name"], "max_length"), searcher.get("max_length")))
    for loc, period in periods:
        if no_epochs and isinstance(period, dict) and period.get("epochs") is not None:
            errors.append(((*loc, "epochs"), "needs records_per_epoch greater than 0", period["epochs"]))

    # Determined: both or neither (neither is the Uncategorized project).
    for have, need in (("workspace", "project"), ("project", "workspace")):
        if raw.get(have) is not None and raw.get(need) is None:
            errors.append(((need,), f"required when {have} is set", None))

    storage = raw.get("checkpoint_storage")
    if isinstance(storage, dict) and "name" in storage:
        beside = [key for key in storage if key in LOCATION_KEYS]
        beside += ["type"] if storage.get("type", "named") != "named" else []
        for key in beside:
            errors.append(
                (
                    # The union's tag sits where pydantic puts it, so messages.py reads the path alike.
                    ("checkpoint_storage", "named", key),
                    "cannot be set together with name: its location is the cluster's",
                    storage[key],
                )
            )

    name = searcher.get("name") if isinstance(searcher, dict) else None
    # The single searcher samples ranges once (seeded by the experiment seed), as Determined does.
    if name == "grid":
        for loc, spec in iter_specs(raw.get("hyperparameters"), ("hyperparameters",)):
            kind = spec.get("type")
            if kind in NUMERIC_TYPES and spec.get("count") is None:
                errors.append(((*loc, kind, "count"), "required for grid search", None))
    return errors
