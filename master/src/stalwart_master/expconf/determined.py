"""Fields of a Determined 0.38 experiment config that Stalwart accepts without acting on them.

A Determined user's config should load unchanged. Each field listed here is checked for a valid
shape (a wrong value is still a 422 naming the field), taken out of the config before the model
sees it, and reported as one warning that names it and says why it is ignored. Storage types we
cannot write to are refused instead: silently dropping checkpoints is worse than an error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from stalwart_master.errors import FieldError
from stalwart_master.expconf.common import INT32_MAX, Section
from stalwart_master.expconf.messages import field_errors_from

NO_CONTAINERS = "trials run as processes on the agents, not in containers"


@dataclass(frozen=True)
class ConfigWarning:
    """A field that was accepted but is not acted on: its dotted path and why."""

    field: str
    message: str


class BindMount(Section):
    host_path: str
    container_path: str
    read_only: bool = False
    propagation: str = "rprivate"


class Device(Section):
    host_path: str
    container_path: str
    mode: str = "mrw"


class Profiling(Section):
    enabled: bool = False
    begin_on_batch: int = Field(default=0, ge=0)
    end_after_batch: int | None = Field(default=None, ge=0)
    sync_timings: bool = True


class Optimizations(Section):
    aggregation_frequency: int = Field(default=1, ge=1)
    average_aggregated_gradients: bool = True
    average_training_metrics: bool = True
    gradient_compression: bool = False
    grad_updates_size_file: str | None = None
    mixed_precision: str = "O0"
    tensor_fusion_threshold: int = Field(default=64, ge=0)
    tensor_fusion_cycle_time: int = Field(default=1, ge=0)
    auto_tune_tensor_fusion: bool = False


class RegistryAuth(Section):
    username: str | None = None
    password: str | None = None
    serveraddress: str | None = None
    email: str | None = None
    auth: str | None = None
    identitytoken: str | None = None
    registrytoken: str | None = None


class ProxyPort(Section):
    proxy_port: int = Field(ge=1, le=65535)
    proxy_tcp: bool = False
    unauthenticated: bool = False
    default_service_id: bool = False


class LogPolicy(Section):
    name: str | None = None
    pattern: str | None = None
    action: dict[str, Any] | str | None = None


class RetentionPolicy(Section):
    log_retention_days: int = Field(ge=-1, le=32767)


class Slurm(Section):
    slots_per_node: int | None = Field(default=None, ge=1)
    gpu_type: str | None = None
    sbatch_args: list[str] = Field(default_factory=list)


class Pbs(Section):
    slots_per_node: int | None = Field(default=None, ge=1)
    pbsbatch_args: list[str] = Field(default_factory=list)


AnyMapping = dict[str, Any]


@dataclass(frozen=True)
class Ignored:
    """One field we accept and ignore: the shape its value must have and why it does nothing."""

    path: tuple[str, ...]
    shape: Any
    reason: str
    # Keep the value in the stored config (another part of Stalwart will use it later).
    keep: bool = False
    # Only a value this returns True for is worth a warning; others (unset, empty, false, or what
    # we do anyway) change nothing.
    matters: Callable[[Any], bool] = field(default=lambda value: value not in (None, False, [], {}, ""))


IGNORED: tuple[Ignored, ...] = (
    Ignored(("bind_mounts",), list[BindMount], f"{NO_CONTAINERS}; use paths the agents already have"),
    Ignored(("profiling",), Profiling, "the system-metrics profiler is not part of Stalwart"),
    Ignored(("optimizations",), Optimizations, "Horovod-era settings; Determined had deprecated them"),
    Ignored(("debug",), bool, "log levels are set per cluster (STALWART_LOG_LEVEL)"),
    Ignored(("integrations",), AnyMapping, "Pachyderm and per-experiment webhooks are not supported"),
    Ignored(("security",), AnyMapping, "Kerberos is not supported"),
    Ignored(("slurm",), Slurm, "Slurm is not a resource manager of Stalwart"),
    Ignored(("pbs",), Pbs, "PBS is not a resource manager of Stalwart"),
    Ignored(("tensorboard_storage",), AnyMapping, "deprecated in Determined; TensorBoard files are not kept"),
    Ignored(("data_layer",), AnyMapping, "deprecated in Determined; read data from your own code"),
    Ignored(("internal",), AnyMapping | None, "internal to Determined"),
    Ignored(("log_policies",), list[LogPolicy], "log patterns do not change retries or placement"),
    Ignored(("retention_policy",), RetentionPolicy, "trial logs are kept by the cluster's retention"),
    Ignored(("environment", "force_pull_image"), bool, f"{NO_CONTAINERS}; no image is pulled"),
    Ignored(("environment", "registry_auth"), RegistryAuth, f"{NO_CONTAINERS}; no registry is used"),
    Ignored(("environment", "add_capabilities"), list[str], NO_CONTAINERS),
    Ignored(("environment", "drop_capabilities"), list[str], NO_CONTAINERS),
    Ignored(("environment", "proxy_ports"), list[ProxyPort], "trials are not proxied through the master"),
    Ignored(("environment", "ports"), dict[str, int], "trials are not proxied through the master"),
    # Kept in the stored config (the model checks them): a container runtime will use them.
    Ignored(("environment", "image"), Any, f"{NO_CONTAINERS}; the agent's Python runs the code", keep=True),
    Ignored(
        ("environment", "pod_spec"),
        Any,
        "not applied yet; the Kubernetes resource manager will merge it into trial pods",
        keep=True,
    ),
    Ignored(("resources", "shm_size"), Any, f"{NO_CONTAINERS}; /dev/shm is the agent's", keep=True),
    Ignored(("environment", "image", "rocm"), str, "ROCm slots are not supported"),
    Ignored(
        ("environment", "environment_variables", "rocm"),
        list[str] | dict[str, str],
        "ROCm slots are not supported",
    ),
    Ignored(("resources", "devices"), list[Device | str], f"{NO_CONTAINERS}; every device is visible"),
    Ignored(("resources", "agent_label"), str, "removed in Determined; use resource pools"),
    Ignored(("resources", "native_parallel"), bool, "removed in Determined"),
    Ignored(
        ("resources", "slots"),
        Annotated[int, Field(ge=0, le=INT32_MAX)],
        "for commands; trials use slots_per_trial",
    ),
    Ignored(
        ("resources", "is_single_node"),
        bool,
        "a trial always runs on one agent",
        matters=lambda value: value is False,
    ),
    Ignored(("checkpoint_storage", "propagation"), str, f"{NO_CONTAINERS}; nothing is mounted"),
    Ignored(("checkpoint_storage", "container_path"), str, "legacy shared_fs field; host_path is used"),
    Ignored(("checkpoint_storage", "checkpoint_path"), str, "legacy shared_fs field; host_path is used"),
    Ignored(("checkpoint_storage", "tensorboard_path"), str, "TensorBoard files are not kept"),
)

#: Storage types a Determined config may name that Stalwart cannot write to.
UNSUPPORTED_STORAGE = {
    "gcs": "gcs storage is not supported: use s3 with endpoint_url https://storage.googleapis.com",
    "azure": "azure storage is not supported: use s3 (an S3-compatible store) or shared_fs",
    "hdfs": "hdfs storage is not supported: use s3 or shared_fs",
}


def ignored_names() -> set[str]:
    """Every field name in the table, for "did you mean" suggestions."""
    return {part for item in IGNORED for part in item.path}


@dataclass
class Accepted:
    """The config without the ignored fields, a warning for each, and errors in their values."""

    config: dict[str, Any]
    warnings: list[ConfigWarning] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)


def _applies(config: dict[str, Any], item: Ignored, value: Any) -> bool:
    if item.path[0] == "checkpoint_storage":
        # The legacy keys only mean something for shared_fs (directory has its own container_path).
        return bool(config["checkpoint_storage"].get("type") == "shared_fs")
    if item.path[-2:] == ("environment_variables", "rocm"):
        # Only in a mapping by device; in a plain mapping "rocm" is just a variable's name.
        return isinstance(value, list | dict)
    return True


def accept_determined_fields(raw: dict[str, Any]) -> Accepted:
    """Check, remove and report the fields of ``raw`` that Stalwart accepts but does not act on."""
    config = copy.deepcopy(raw)
    result = Accepted(config)
    storage = config.get("checkpoint_storage")
    if isinstance(storage, dict) and isinstance(storage.get("type"), str):
        reason = UNSUPPORTED_STORAGE.get(storage["type"])
        if reason is not None:
            result.errors.append(FieldError("checkpoint_storage.type", reason))
            del config["checkpoint_storage"]  # its other keys would only add confusing errors
    for item in IGNORED:
        parent: Any = config
        for key in item.path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        name = item.path[-1]
        if not isinstance(parent, dict) or name not in parent or not _applies(config, item, parent[name]):
            continue
        dotted = ".".join(item.path)
        value = parent[name] if item.keep else parent.pop(name)
        try:
            TypeAdapter(item.shape).validate_python(value, strict=True)
        except ValidationError as exc:
            for error in field_errors_from(exc):
                path = f"{dotted}.{error.path}" if error.path else dotted
                result.errors.append(FieldError(path, error.message))
            continue
        if item.matters(value):
            result.warnings.append(ConfigWarning(dotted, f"ignored: {item.reason}"))
    return result
