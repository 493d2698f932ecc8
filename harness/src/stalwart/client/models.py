"""What the master answers, as small frozen dataclasses.

Each model keeps the exact JSON it was built from in ``raw`` (left out of ``repr`` and equality),
so ``--json`` output and fields this SDK does not know yet are never lost.

Example::

    exp = Client().get_experiment(7)
    if exp.state in TERMINAL_STATES:
        print(exp.name, exp.ended_at)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "TERMINAL_STATES",
    "Context",
    "ContextUpload",
    "Experiment",
    "ExperimentPage",
    "ExperimentState",
    "Login",
    "MasterInfo",
    "User",
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

    @property
    def terminal(self) -> bool:
        """True once the experiment reached COMPLETED, CANCELED or ERROR."""
        return self.state in TERMINAL_STATES

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
        )


@dataclass(frozen=True)
class ExperimentPage:
    """One page of ``list_experiments``; ``total`` counts every match, not just this page.

    Example::

        page = Client().list_experiments(states=["ACTIVE"], limit=10)
        print(f"{len(page.items)} of {page.total}")
    """

    items: tuple[Experiment, ...]
    total: int
    limit: int
    offset: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExperimentPage:
        items = tuple(Experiment.from_json(item) for item in data.get("items") or ())
        return cls(
            items=items,
            total=int(data.get("total", len(items))),
            limit=int(data.get("limit", len(items))),
            offset=int(data.get("offset", 0)),
            raw=data,
        )
