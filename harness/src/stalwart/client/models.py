"""What the master answers, as small frozen dataclasses.

Each model keeps the exact JSON it was built from in ``raw`` (left out of ``repr`` and equality),
so ``--json`` output and fields this SDK does not know yet are never lost.

Example::

    exp = Client().get_experiment(7)
    if exp.state in TERMINAL_STATES:
        print(exp.name, exp.ended_at)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeAlias, TypeVar

__all__ = [
    "TERMINAL_STATES",
    "Agent",
    "AuditEvent",
    "AuditEventPage",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointLineage",
    "Context",
    "ContextUpload",
    "CreatedToken",
    "Experiment",
    "ExperimentPage",
    "ExperimentState",
    "IssuedAgentToken",
    "LineageExperiment",
    "LineageTrial",
    "LogLine",
    "Login",
    "MasterInfo",
    "Metric",
    "Model",
    "ModelPage",
    "ModelVersion",
    "ModelVersionPage",
    "Page",
    "Project",
    "Slot",
    "TokenInfo",
    "Trial",
    "TrialRun",
    "User",
    "Workspace",
    "WorkspaceMember",
]


class ExperimentState(StrEnum):
    """Experiment states (Determined's names); members compare equal to the plain strings.

    Example::

        exp.state == ExperimentState.COMPLETED  # same as exp.state == "COMPLETED"
    """

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    STOPPING_CANCELED = "STOPPING_CANCELED"
    STOPPING_KILLED = "STOPPING_KILLED"
    STOPPING_COMPLETED = "STOPPING_COMPLETED"
    STOPPING_ERROR = "STOPPING_ERROR"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    ERROR = "ERROR"
    DELETING = "DELETING"
    DELETE_FAILED = "DELETE_FAILED"


TERMINAL_STATES: frozenset[str] = frozenset(
    {ExperimentState.COMPLETED, ExperimentState.CANCELED, ExperimentState.ERROR}
)
"""States an experiment never leaves on its own; ``wait_for_experiment`` waits for these by default."""


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _name(value: Any) -> str:
    # The owner may come as a user name or as a nested user object; callers only need the name.
    if isinstance(value, Mapping):
        return str(value.get("username") or value.get("id") or "")
    return "" if value is None else str(value)


@dataclass(frozen=True)
class User:
    """A user account.

    Example::

        me = Client().me()
        print(me.username, "admin" if me.admin else "")
    """

    id: int
    username: str
    admin: bool
    active: bool
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        return cls(
            id=int(data["id"]),
            username=str(data["username"]),
            admin=bool(data.get("admin", False)),
            active=bool(data.get("active", True)),
            created_at=_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Login:
    """A fresh token and the user it belongs to; the token is shown only this once.

    Example::

        login = Client("http://master:8080").login("admin", "secret")
        print(login.user.username, login.token[:6])
    """

    token: str
    user: User

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Login:
        return cls(token=str(data["token"]), user=User.from_json(data["user"]))


@dataclass(frozen=True)
class MasterInfo:
    """What the master says about itself; readable without logging in.

    Example::

        print(Client().master_info().version)
    """

    version: str
    cluster_id: str
    cluster_name: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MasterInfo:
        return cls(
            version=str(data.get("version", "")),
            cluster_id=str(data.get("cluster_id", "")),
            cluster_name=str(data.get("cluster_name", "")),
            raw=data,
        )


@dataclass(frozen=True)
class Context:
    """A stored model-code tarball, addressed by the SHA-256 of its bytes.

    Example::

        ctx = Client().upload_context(tarball_bytes).context
    """

    sha256: str
    size: int
    files: int
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Context:
        files = data.get("files", 0)
        return cls(
            sha256=str(data["sha256"]),
            size=int(data.get("size", 0)),
            files=len(files) if isinstance(files, list) else int(files or 0),
            created_at=_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class ContextUpload:
    """The outcome of ``upload_context``: the digest to put in an experiment, and whether bytes moved.

    ``uploaded`` is False when the master already held these bytes and nothing was sent; ``context``
    is then None because a ``HEAD`` carries no metadata.

    Example::

        up = Client().upload_context(data)
        print(up.sha256, "sent" if up.uploaded else "already stored")
    """

    sha256: str
    size: int
    uploaded: bool
    context: Context | None = None


@dataclass(frozen=True)
class Experiment:
    """An experiment as the master reports it.

    ``config`` is the validated config with cluster defaults merged in; ``original_config`` is the
    YAML text as submitted, present only on ``get_experiment``.

    Example::

        exp = Client().get_experiment(7)
        print(exp.id, exp.state, ", ".join(exp.labels))
    """

    id: int
    name: str
    description: str
    labels: tuple[str, ...]
    state: str
    archived: bool
    owner: str
    parent_id: int | None
    context_sha256: str | None
    created_at: datetime | None
    updated_at: datetime | None
    ended_at: datetime | None
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    original_config: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    project_id: int | None = None

    @property
    def terminal(self) -> bool:
        """True once the experiment reached COMPLETED, CANCELED or ERROR."""
        return self.state in TERMINAL_STATES

    @property
    def warnings(self) -> tuple[tuple[str, str], ...]:
        """``(field, message)`` for each config field the master accepted but ignores; only on
        the experiment ``create_experiment`` returns.

        Example::

            for field, message in client.create_experiment(text).warnings:
                print(f"{field}: {message}")
        """
        return tuple(
            (str(w.get("field", "")), str(w.get("message", "")))
            for w in self.raw.get("warnings") or ()
            if isinstance(w, Mapping)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Experiment:
        parent = data.get("parent_id")
        return cls(
            id=int(data["id"]),
            name=str(data.get("name") or ""),
            description=str(data.get("description") or ""),
            labels=tuple(str(label) for label in data.get("labels") or ()),
            state=str(data["state"]),
            archived=bool(data.get("archived", False)),
            owner=_name(data.get("owner")),
            parent_id=int(parent) if parent is not None else None,
            context_sha256=data.get("context_sha256"),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            ended_at=_time(data.get("ended_at")),
            config=data.get("config") or {},
            original_config=data.get("original_config"),
            raw=data,
            project_id=_optional_int(data.get("project_id")),
        )


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``total`` counts every match, not just this page.

    Example::

        page = Client().list_experiments(states=["ACTIVE"], limit=10)
        print(f"{len(page.items)} of {page.total}")
    """

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        items = tuple(item(entry) for entry in data.get("items") or ())
        return cls(
            items=items,
            total=int(data.get("total", len(items))),
            limit=int(data.get("limit", len(items))),
            offset=int(data.get("offset", 0)),
            raw=data,
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Trial:
    """One trial of an experiment: its hyperparameters, state and how far it got.

    ``state`` uses the experiment states (``ACTIVE`` while it waits for slots or runs);
    ``run_id`` counts its allocations and ``restarts`` the failed ones among them;
    ``warm_start_checkpoint`` is what it starts from until it has a checkpoint of its own.

    Example::

        for trial in Client().list_trials(7):
            print(trial.id, trial.state, trial.steps_completed, trial.best_validation)
    """

    id: int
    experiment_id: int
    request_id: str
    hparams: Mapping[str, Any] = field(hash=False)
    seed: int
    state: str
    restarts: int
    run_id: int
    steps_completed: int
    progress: float
    latest_checkpoint: str | None
    best_validation: float | None
    end_reason: str
    created_at: datetime | None
    ended_at: datetime | None
    warm_start_checkpoint: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True once the trial reached COMPLETED, CANCELED or ERROR."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        best = data.get("best_validation")
        return cls(
            id=int(data["id"]),
            experiment_id=int(data["experiment_id"]),
            request_id=str(data.get("request_id") or ""),
            hparams=data.get("hparams") or {},
            seed=int(data.get("seed") or 0),
            state=str(data["state"]),
            restarts=int(data.get("restarts") or 0),
            run_id=int(data.get("run_id") or 0),
            steps_completed=int(data.get("steps_completed") or 0),
            progress=float(data.get("progress") or 0.0),
            latest_checkpoint=_optional_str(data.get("latest_checkpoint")),
            best_validation=None if best is None else float(best),
            end_reason=str(data.get("end_reason") or ""),
            created_at=_time(data.get("created_at")),
            ended_at=_time(data.get("ended_at")),
            warm_start_checkpoint=_optional_str(data.get("warm_start_checkpoint")),
            raw=data,
        )


@dataclass(frozen=True)
class Metric:
    """One report of a trial: a group (``training``, ``validation``) of values at a step.

    Values may be NaN or infinite; they are kept as such. ``archived`` rows were reported by an
    earlier run past the step a later run restored; they are only listed when asked for.

    Example::

        for m in Client().trial_metrics(12, group="validation"):
            print(m.steps_completed, m.values["validation_loss"])
    """

    group: str
    steps_completed: int
    run_id: int
    values: Mapping[str, Any] = field(hash=False)
    reported_at: datetime | None
    archived: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metric:
        return cls(
            group=str(data["group"]),
            steps_completed=int(data["steps_completed"]),
            run_id=int(data.get("run_id") or 0),
            values=data.get("values") or {},
            reported_at=_time(data.get("reported_at")),
            archived=bool(data.get("archived")),
            raw=data,
        )


@dataclass(frozen=True)
class TrialRun:
    """One run (allocation) of a trial: the agent, when it ran, how it ended, what it restored.

    ``exit_reason`` is ``exited`` (only these count against ``max_restarts`` when non-zero),
    ``launch failed``, ``agent lost``, ``preemption timeout``, ``killed``, ``drained``,
    ``preempted`` or ``not started``; empty while the run is live.

    Example::

        for run in Client().list_trial_runs(12):
            print(run.run_id, run.agent_id, run.exit_code, run.exit_reason, run.restored_checkpoint)
    """

    run_id: int
    allocation_id: str
    agent_id: str | None
    state: str
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    exit_reason: str
    restored_checkpoint: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialRun:
        code = data.get("exit_code")
        return cls(
            run_id=int(data["run_id"]),
            allocation_id=str(data["allocation_id"]),
            agent_id=_optional_str(data.get("agent_id")),
            state=str(data.get("state") or ""),
            started_at=_time(data.get("started_at")),
            ended_at=_time(data.get("ended_at")),
            exit_code=None if code is None else int(code),
            exit_reason=str(data.get("exit_reason") or ""),
            restored_checkpoint=_optional_str(data.get("restored_checkpoint")),
            raw=data,
        )


@dataclass(frozen=True)
class LogLine:
    """One line a trial printed, with the rank and stream (``stdout``/``stderr``) it came from.

    Example::

        for line in Client().iter_trial_logs(12, tail=20):
            print(line.rank, line.message)
    """

    id: int
    ts: datetime | None
    rank: int
    stream: str
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogLine:
        return cls(
            id=int(data["id"]),
            ts=_time(data.get("ts")),
            rank=int(data.get("rank") or 0),
            stream=str(data.get("stream") or "stdout"),
            message=str(data.get("message") or ""),
            raw=data,
        )


@dataclass(frozen=True)
class CheckpointFile:
    """One file of a checkpoint's manifest."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint of a trial; ``files`` lists its manifest.

    ``state`` is COMPLETED, DELETED (GC removed it from storage; ``deleted_at`` says when) or
    CORRUPTED. ``model_versions`` ("name:version") protect it from GC and deletion;
    ``searcher_metric`` is the validation metric at its step, which GC ranks it by.

    Example::

        ckpt = Client().get_checkpoint("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        print(ckpt.steps_completed, ckpt.state, [f.path for f in ckpt.files])
    """

    uuid: str
    trial_id: int
    allocation_id: str | None
    steps_completed: int
    state: str
    storage: Mapping[str, Any] = field(hash=False)
    files: tuple[CheckpointFile, ...]
    metadata: Mapping[str, Any] = field(hash=False)
    size: int
    parent_uuid: str | None
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    experiment_id: int | None = None
    stored_size: int | None = None
    deleted_at: datetime | None = None
    searcher_metric: float | None = None
    model_versions: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        manifest = data.get("manifest") or {}
        files = tuple(
            CheckpointFile(
                path=str(item.get("path") or ""),
                size=int(item.get("size") or 0),
                sha256=str(item.get("sha256") or ""),
            )
            for item in manifest.get("files") or ()
            if isinstance(item, Mapping)
        )
        return cls(
            uuid=str(data["uuid"]),
            trial_id=int(data["trial_id"]),
            allocation_id=_optional_str(data.get("allocation_id")),
            steps_completed=int(data.get("steps_completed") or 0),
            state=str(data.get("state") or ""),
            storage=data.get("storage") or {},
            files=files,
            metadata=data.get("metadata") or {},
            size=int(data.get("size") or 0),
            parent_uuid=_optional_str(data.get("parent_uuid")),
            created_at=_time(data.get("created_at")),
            raw=data,
            experiment_id=None if data.get("experiment_id") is None else int(data["experiment_id"]),
            stored_size=None if data.get("stored_size") is None else int(data["stored_size"]),
            deleted_at=_time(data.get("deleted_at")),
            searcher_metric=None if data.get("searcher_metric") is None else float(data["searcher_metric"]),
            model_versions=tuple(str(v) for v in data.get("model_versions") or ()),
        )


@dataclass(frozen=True)
class Agent:
    """A machine that runs trials; ``draining`` agents finish their trials but take no new ones.

    Example::

        idle = [a.id for a in Client().list_agents() if a.connected and a.enabled]
    """

    id: str
    resource_pool: str
    version: str
    enabled: bool
    draining: bool
    connected: bool
    registered_at: datetime | None
    last_seen_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Agent:
        return cls(
            id=str(data["id"]),
            resource_pool=str(data.get("resource_pool") or ""),
            version=str(data.get("version") or ""),
            enabled=bool(data.get("enabled", True)),
            draining=bool(data.get("draining", False)),
            connected=bool(data.get("connected", False)),
            registered_at=_time(data.get("registered_at")),
            last_seen_at=_time(data.get("last_seen_at")),
            raw=data,
        )


@dataclass(frozen=True)
class AgentToken:
    """A credential an agent registers with, bound to one agent id; listings never show the secret.

    Example::

        live = [t.id for t in Client().list_agent_tokens() if t.revoked_at is None]
    """

    id: int
    agent_id: str | None
    created_by: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentToken:
        return cls(
            id=int(data["id"]),
            agent_id=_optional_str(data.get("agent_id")),
            created_by=_name(data.get("created_by")),
            created_at=_time(data.get("created_at")),
            expires_at=_time(data.get("expires_at")),
            revoked_at=_time(data.get("revoked_at")),
            raw=data,
        )


@dataclass(frozen=True)
class IssuedAgentToken:
    """A new agent token: the secret (shown only this once), its id to revoke it by, and its agent.

    Example::

        issued = Client().issue_agent_token("gpu-node-3")
        print(issued.id, issued.token[:6])
    """

    token: str = field(repr=False)
    id: int
    agent_id: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IssuedAgentToken:
        return cls(token=str(data["token"]), id=int(data["id"]), agent_id=str(data["agent_id"]), raw=data)


@dataclass(frozen=True)
class Slot:
    """One device of an agent (a GPU, the CPU, or an artificial slot) and the trial holding it.

    Example::

        free = [s for s in Client().list_slots() if s.allocation_id is None]
    """

    agent_id: str
    index: int
    type: str
    uuid: str
    name: str
    memory_mb: int
    allocation_id: str | None
    trial_id: int | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Slot:
        trial = data.get("trial_id")
        return cls(
            agent_id=str(data["agent_id"]),
            index=int(data["index"]),
            type=str(data.get("type") or ""),
            uuid=str(data.get("uuid") or ""),
            name=str(data.get("name") or ""),
            memory_mb=int(data.get("memory_mb") or 0),
            allocation_id=_optional_str(data.get("allocation_id")),
            trial_id=None if trial is None else int(trial),
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    """A named entry of the model registry; ``num_versions`` counts its registered checkpoints.

    Example::

        model = Client().get_model("resnet")
        print(model.name, model.latest_version, dict(model.metadata))
    """

    id: int
    name: str
    description: str
    labels: tuple[str, ...]
    metadata: Mapping[str, Any] = field(hash=False)
    owner: str
    num_versions: int
    latest_version: int | None
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    project_id: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        latest = data.get("latest_version")
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            labels=tuple(str(label) for label in data.get("labels") or ()),
            metadata=data.get("metadata") or {},
            owner=_name(data.get("owner")),
            num_versions=int(data.get("num_versions") or 0),
            latest_version=None if latest is None else int(latest),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            raw=data,
            project_id=_optional_int(data.get("project_id")),
        )


@dataclass(frozen=True)
class ModelVersion:
    """Version ``version`` of model ``model``: a registered checkpoint, protected from deletion.

    Example::

        v = Client().register_model_version("resnet", ckpt_uuid, comment="best val acc")
        print(f"{v.model}:{v.version}", v.checkpoint_uuid, v.experiment_id)
    """

    id: int
    model: str
    version: int
    checkpoint_uuid: str
    experiment_id: int | None
    trial_id: int | None
    comment: str
    labels: tuple[str, ...]
    metadata: Mapping[str, Any] = field(hash=False)
    owner: str
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelVersion:
        experiment, trial = data.get("experiment_id"), data.get("trial_id")
        return cls(
            id=int(data["id"]),
            model=str(data.get("model") or ""),
            version=int(data["version"]),
            checkpoint_uuid=str(data["checkpoint_uuid"]),
            experiment_id=None if experiment is None else int(experiment),
            trial_id=None if trial is None else int(trial),
            comment=str(data.get("comment") or ""),
            labels=tuple(str(label) for label in data.get("labels") or ()),
            metadata=data.get("metadata") or {},
            owner=_name(data.get("owner")),
            created_at=_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class LineageExperiment:
    """An experiment on a checkpoint's lineage: its config (secrets masked) and code digest."""

    id: int
    name: str
    context_sha256: str | None
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LineageTrial:
    """A trial on a checkpoint's lineage and the hyperparameters it ran with."""

    id: int
    experiment_id: int
    hparams: Mapping[str, Any] = field(default_factory=dict, hash=False)
    warm_start_checkpoint: str | None = None


@dataclass(frozen=True)
class CheckpointLineage:
    """Where a checkpoint came from: ``chain`` is its parent, grandparent, ... back to the first one.

    ``missing_parent`` is a parent uuid that was recorded but the master no longer knows.

    Example::

        lineage = Client().checkpoint_lineage(uuid)
        for ckpt in (lineage.checkpoint, *lineage.chain):
            print(ckpt.uuid, ckpt.trial_id, ckpt.steps_completed)
    """

    checkpoint: Checkpoint
    chain: tuple[Checkpoint, ...]
    missing_parent: str | None
    experiments: tuple[LineageExperiment, ...]
    trials: tuple[LineageTrial, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointLineage:
        return cls(
            checkpoint=Checkpoint.from_json(data["checkpoint"]),
            chain=tuple(Checkpoint.from_json(item) for item in data.get("chain") or ()),
            missing_parent=_optional_str(data.get("missing_parent")),
            experiments=tuple(
                LineageExperiment(
                    id=int(e["id"]),
                    name=str(e.get("name") or ""),
                    context_sha256=_optional_str(e.get("context_sha256")),
                    config=e.get("config") or {},
                )
                for e in data.get("experiments") or ()
            ),
            trials=tuple(
                LineageTrial(
                    id=int(t["id"]),
                    experiment_id=int(t["experiment_id"]),
                    hparams=t.get("hparams") or {},
                    warm_start_checkpoint=_optional_str(t.get("warm_start_checkpoint")),
                )
                for t in data.get("trials") or ()
            ),
            raw=data,
        )


# --- tokens, workspaces, projects and the audit log --------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """A live session (``kind`` ``session``, from a login) or API token (``api``) of a person.

    The secret is never listed; ``current`` marks the token this client is using.

    Example::

        for t in Client().list_tokens():
            print(t.id, t.kind, t.description, t.expires_at, "*" if t.current else "")
    """

    id: int
    kind: str
    username: str
    description: str
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    current: bool
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenInfo:
        return cls(
            id=int(data["id"]),
            kind=str(data.get("kind") or ""),
            username=str(data.get("username") or ""),
            description=str(data.get("description") or ""),
            created_at=_time(data.get("created_at")),
            expires_at=_time(data.get("expires_at")),
            last_used_at=_time(data.get("last_used_at")),
            current=bool(data.get("current", False)),
            raw=data,
        )


@dataclass(frozen=True)
class CreatedToken:
    """A new API token: the secret (shown this once, left out of ``repr``) and what it is.

    Example::

        created = Client().create_token(description="nightly job", expires_in_days=30)
        os.environ["STALWART_TOKEN"] = created.token
    """

    token: str = field(repr=False)
    info: TokenInfo
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreatedToken:
        # ``raw`` and ``info.raw`` leave the secret out, so printing either cannot leak it.
        info = {k: v for k, v in data.items() if k != "token"}
        return cls(token=str(data["token"]), info=TokenInfo.from_json(info), raw=info)


@dataclass(frozen=True)
class Workspace:
    """A workspace: projects of experiments and models, and members with roles in it.

    ``role`` is the caller's role there (``viewer``, ``editor``, ``admin``; cluster admins are
    ``admin`` everywhere).

    Example::

        ws = Client().create_workspace("vision")
        print(ws.id, ws.name, ws.role)  # ... "admin"
    """

    id: int
    name: str
    archived: bool
    created_at: datetime | None
    role: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Workspace:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            archived=bool(data.get("archived", False)),
            created_at=_time(data.get("created_at")),
            role=_optional_str(data.get("role")),
            raw=data,
        )


@dataclass(frozen=True)
class WorkspaceMember:
    """A user's role in a workspace: ``viewer`` reads, ``editor`` also creates, ``admin`` manages.

    Example::

        admins = [m.username for m in Client().list_workspace_members(2) if m.role == "admin"]
    """

    username: str
    role: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkspaceMember:
        return cls(username=str(data["username"]), role=str(data["role"]), raw=data)


@dataclass(frozen=True)
class Project:
    """A project of a workspace; experiments and models live in one (default 1, "Uncategorized").

    Example::

        project = Client().create_project(ws.id, "resnet", description="ImageNet runs")
        print(project.id, project.workspace_id)
    """

    id: int
    workspace_id: int
    name: str
    description: str
    archived: bool
    created_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Project:
        return cls(
            id=int(data["id"]),
            workspace_id=int(data["workspace_id"]),
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            archived=bool(data.get("archived", False)),
            created_at=_time(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit log: who (``username``, with which ``credential``, from which
    ``address``) did ``action`` to ``target_type``/``target_id``, and whether it was allowed.

    Example::

        for e in Client().list_audit_events(action="experiment.").items:
            print(e.at, e.username, e.action, e.target_id, e.outcome)
    """

    id: int
    at: datetime | None
    username: str
    credential: str
    address: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    details: Mapping[str, Any] = field(hash=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEvent:
        return cls(
            id=int(data["id"]),
            at=_time(data.get("at")),
            username=str(data.get("username") or ""),
            credential=str(data.get("credential") or ""),
            address=str(data.get("address") or ""),
            action=str(data.get("action") or ""),
            target_type=str(data.get("target_type") or ""),
            target_id=str(data.get("target_id") or ""),
            outcome=str(data.get("outcome") or ""),
            details=data.get("details") or {},
            raw=data,
        )


AuditEventPage: TypeAlias = Page[AuditEvent]
ExperimentPage: TypeAlias = Page[Experiment]
ModelPage: TypeAlias = Page[Model]
ModelVersionPage: TypeAlias = Page[ModelVersion]
