"""``Client``: one typed method per route of the master's REST API (docs/api.md)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from stalwart.client import auth
from stalwart.client._http import HTTPSession
from stalwart.client.errors import DigestMismatch, WaitTimeout
from stalwart.client.models import (
    TERMINAL_STATES,
    Agent,
    AgentToken,
    AuditEvent,
    AuditEventPage,
    Checkpoint,
    CheckpointLineage,
    Context,
    ContextUpload,
    CreatedToken,
    Experiment,
    ExperimentPage,
    IssuedAgentToken,
    Login,
    LogLine,
    MasterInfo,
    Metric,
    Model,
    ModelPage,
    ModelVersion,
    ModelVersionPage,
    Page,
    Project,
    Slot,
    TokenInfo,
    Trial,
    TrialRun,
    User,
    Workspace,
    WorkspaceMember,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["Client"]

OrderBy = Literal["id", "name", "state", "created_at", "ended_at"]
ModelOrderBy = Literal["id", "name", "created_at", "updated_at"]


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _model_path(name: str) -> str:
    # Names may hold spaces, '%', '?' or '#': each must reach the master as one path segment.
    return f"/api/v1/models/{urllib.parse.quote(name, safe='')}"


class Client:
    """A connection to one master.

    ``master`` defaults to ``$STALWART_MASTER`` or http://127.0.0.1:8080; ``token`` to
    ``$STALWART_TOKEN`` or the token ``stalwart user login`` cached for that master. Calls that
    need a token raise ``NotLoggedIn`` when there is none. Use it as a context manager (or call
    ``close()``) to release pooled connections.

    Example::

        from stalwart.client import Client

        with Client("http://master:8080") as client:
            for exp in client.list_experiments(states=["ACTIVE"]).items:
                print(exp.id, exp.name)
    """

    def __init__(
        self,
        master: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.master = auth.resolve_master(master)
        if token is None:
            cached = auth.resolve_token(self.master)
            token = cached.token if cached else None
        self._session = HTTPSession(
            self.master, token=token, timeout=timeout, retries=retries, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    @property
    def token(self) -> str | None:
        """The bearer token sent with each call (None when not logged in)."""
        return self._session.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._session.token = value

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._session.request(method, path, **kwargs).json()

    # --- master -------------------------------------------------------------------------------

    def master_info(self) -> MasterInfo:
        """Version, cluster id and name; works without logging in.

        Example::

            print(Client().master_info().cluster_name)
        """
        return MasterInfo.from_json(self._json("GET", "/api/v1/master", auth=False))

    def experiment_schema(self) -> dict[str, Any]:
        """The JSON Schema of the experiment config, e.g. for editor completion.

        Example::

            schema = Client().experiment_schema()
            print(sorted(schema["properties"]))
        """
        result: dict[str, Any] = self._json("GET", "/api/v1/schemas/experiment")
        return result

    # --- auth and users -----------------------------------------------------------------------

    def login(self, username: str, password: str) -> Login:
        """Exchange a password for a token; later calls on this client use it.

        The token is not cached on disk; ``auth.save_token`` does that (as ``stalwart user login``).

        Example::

            client = Client("http://master:8080")
            client.login("admin", "secret")
            print(client.me().username)
        """
        body = {"username": username, "password": password}
        login = Login.from_json(self._json("POST", "/api/v1/auth/login", json=body, auth=False))
        self.token = login.token
        return login

    def logout(self) -> None:
        """Revoke the token in use on the master and forget it on this client.

        Example::

            Client().logout()
        """
        self._session.request("POST", "/api/v1/auth/logout")
        self.token = None

    def me(self) -> User:
        """The user the token belongs to.

        Example::

            print(Client().me().admin)
        """
        return User.from_json(self._json("GET", "/api/v1/me"))

    def list_users(self) -> list[User]:
        """Every user account.

        Example::

            names = [u.username for u in Client().list_users()]
        """
        return [User.from_json(item) for item in self._json("GET", "/api/v1/users")]

    def create_user(self, username: str, password: str, *, admin: bool = False) -> User:
        """Create an account (admins only); ``ConflictError`` if the name is taken.

        Example::

            Client().create_user("alice", "a long passphrase", admin=False)
        """
        body = {"username": username, "password": password, "admin": admin}
        return User.from_json(self._json("POST", "/api/v1/users", json=body))

    # --- contexts -----------------------------------------------------------------------------

    def context_exists(self, sha256: str) -> bool:
        """Whether the master already stores the context with this digest.

        Example::

            Client().context_exists("9f86d08...")
        """
        response = self._session.request("HEAD", f"/api/v1/contexts/{sha256}", ok=(404,))
        return response.status_code != 404

    def upload_context(self, data: bytes) -> ContextUpload:
        """Store a gzip'd tar of model code, skipping the upload if the master has these bytes.

        Example::

            from stalwart.context import build_context

            up = Client().upload_context(build_context(Path("model_dir")))
            print(up.sha256, up.uploaded)
        """
        sha256 = hashlib.sha256(data).hexdigest()
        if self.context_exists(sha256):
            return ContextUpload(sha256=sha256, size=len(data), uploaded=False)
        context = Context.from_json(
            self._json(
                "POST",
                "/api/v1/contexts",
                content=data,
                headers={"Content-Type": "application/gzip"},
            )
        )
        return ContextUpload(sha256=context.sha256, size=context.size, uploaded=True, context=context)

    def download_context(self, sha256: str) -> bytes:
        """The context tarball, checked against its digest (``DigestMismatch`` if it differs).

        Example::

            data = Client().download_context(exp.context_sha256)
        """
        data = self._session.request(
            "GET", f"/api/v1/contexts/{sha256}", headers={"Accept": "application/gzip"}
        ).content
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise DigestMismatch(f"context {sha256}: the downloaded bytes hash to {actual}")
        return data

    # --- experiments --------------------------------------------------------------------------

    def create_experiment(
        self,
        config: str | Mapping[str, Any],
        *,
        context: str | None = None,
        paused: bool = False,
        parent_id: int | None = None,
        project_id: int | None = None,
    ) -> Experiment:
        """Submit an experiment; ``config`` is YAML text (kept verbatim) or a mapping.

        ``context`` is the SHA-256 of an uploaded context (see ``upload_context``); ``project_id``
        defaults to the master's "Uncategorized" project.

        Example::

            up = client.upload_context(build_context(Path("mnist")))
            exp = client.create_experiment(Path("mnist/const.yaml").read_text(), context=up.sha256)
        """
        if not isinstance(config, str):
            import yaml

            config = yaml.safe_dump(dict(config), sort_keys=False)
        body = {"config": config, "context": context, "paused": paused, "parent_id": parent_id}
        if project_id is not None:
            body["project_id"] = project_id
        return Experiment.from_json(self._json("POST", "/api/v1/experiments", json=body))

    def preview_search(self, config: str, *, limit: int = 100) -> dict[str, Any]:
        """What ``config``'s searcher would do (Determined's ``preview-search``); creates nothing.

        The answer lists the first ``limit`` trials with their hyperparameters and, for the ASHA
        searchers, each bracket's rungs; a bad config raises the same 422 as creating it.
        """
        body = {"config": config, "limit": limit}
        answer: dict[str, Any] = self._json("POST", "/api/v1/experiments/preview", json=body)
        return answer

    def list_experiments(
        self,
        *,
        states: Iterable[str] | None = None,
        labels: Iterable[str] | None = None,
        name: str | None = None,
        owner: str | None = None,
        archived: bool | None = None,
        order_by: OrderBy | None = None,
        order: Literal["asc", "desc"] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        workspace_id: int | None = None,
        project_id: int | None = None,
    ) -> ExperimentPage:
        """One page of experiments; every given filter must match (``labels``: all of them).

        ``name`` matches a substring, case-insensitively; ``archived=None`` means both.

        Example::

            page = Client().list_experiments(states=["ACTIVE", "PAUSED"], labels=["nightly"])
        """
        params: dict[str, Any] = {
            "state": [str(s) for s in states or ()],
            "label": list(labels or ()),
            "name": name,
            "owner": owner,
            "archived": archived,
            "order_by": order_by,
            "order": order,
            "limit": limit,
            "offset": offset,
            "workspace_id": workspace_id,
            "project_id": project_id,
        }
        return Page.parse(self._json("GET", "/api/v1/experiments", params=params), Experiment.from_json)

    def iter_experiments(self, *, page_size: int = 100, **filters: Any) -> Iterator[Experiment]:
        """Every matching experiment, fetching pages as needed; takes ``list_experiments`` filters.

        Example::

            ids = [exp.id for exp in Client().iter_experiments(owner="alice")]
        """
        offset = int(filters.pop("offset", None) or 0)
        while True:
            page = self.list_experiments(limit=page_size, offset=offset, **filters)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def get_experiment(self, experiment_id: int) -> Experiment:
        """One experiment, including ``original_config``.

        Example::

            print(Client().get_experiment(7).original_config)
        """
        return Experiment.from_json(self._json("GET", f"/api/v1/experiments/{experiment_id}"))

    def patch_experiment(
        self,
        experiment_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        labels: Iterable[str] | None = None,
    ) -> Experiment:
        """Change name, description or the whole label list; None leaves a field as it is.

        Example::

            Client().patch_experiment(7, name="resnet-baseline", labels=["baseline"])
        """
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        if labels is not None:
            body["labels"] = list(labels)
        return Experiment.from_json(self._json("PATCH", f"/api/v1/experiments/{experiment_id}", json=body))

    def add_experiment_label(self, experiment_id: int, label: str) -> Experiment:
        """Add one label, keeping the others (a no-op if it is already there).

        Read-modify-write: two clients editing labels of one experiment at once may lose one edit.

        Example::

            Client().add_experiment_label(7, "keep")
        """
        exp = self.get_experiment(experiment_id)
        if label in exp.labels:
            return exp
        return self.patch_experiment(experiment_id, labels=[*exp.labels, label])

    def remove_experiment_label(self, experiment_id: int, label: str) -> Experiment:
        """Remove one label if present, keeping the others.

        Example::

            Client().remove_experiment_label(7, "keep")
        """
        exp = self.get_experiment(experiment_id)
        if label not in exp.labels:
            return exp
        return self.patch_experiment(experiment_id, labels=[x for x in exp.labels if x != label])

    def set_gc_policy(
        self,
        experiment_id: int,
        *,
        save_experiment_best: int | None = None,
        save_trial_best: int | None = None,
        save_trial_latest: int | None = None,
    ) -> Experiment:
        """Change which checkpoints GC keeps; None leaves a value as it is. GC runs at once.

        Determined's rules: a checkpoint is kept if it is among the experiment's N best, its
        trial's N best, or its trial's N latest (validated by the searcher metric).

        Example::

            Client().set_gc_policy(7, save_experiment_best=3, save_trial_latest=1)
        """
        body = {
            key: value
            for key, value in (
                ("save_experiment_best", save_experiment_best),
                ("save_trial_best", save_trial_best),
                ("save_trial_latest", save_trial_latest),
            )
            if value is not None
        }
        return Experiment.from_json(
            self._json("PATCH", f"/api/v1/experiments/{experiment_id}/gc-policy", json=body)
        )

    def set_experiment_resources(
        self,
        experiment_id: int,
        *,
        priority: int | None = None,
        weight: float | None = None,
        max_slots: int | None = None,
    ) -> Experiment:
        """Change the experiment's ``resources.priority`` (1-99, lower runs first; queued and running
        runs take it too), ``weight`` or ``max_slots``; None leaves a value as it is.

        Example::

            Client().set_experiment_resources(7, priority=10)
        """
        changes = {"priority": priority, "weight": weight, "max_slots": max_slots}
        body = {key: value for key, value in changes.items() if value is not None}
        return Experiment.from_json(
            self._json("PATCH", f"/api/v1/experiments/{experiment_id}/resources", json=body)
        )

    def _verb(self, experiment_id: int, verb: str) -> Experiment:
        return Experiment.from_json(self._json("POST", f"/api/v1/experiments/{experiment_id}/{verb}"))

    def pause_experiment(self, experiment_id: int) -> Experiment:
        """Pause: running trials checkpoint and stop; ``InvalidTransitionError`` unless ACTIVE/PAUSED.

        Example::

            Client().pause_experiment(7).state  # "PAUSED"
        """
        return self._verb(experiment_id, "pause")

    def activate_experiment(self, experiment_id: int) -> Experiment:
        """Resume a paused experiment.

        Example::

            Client().activate_experiment(7)
        """
        return self._verb(experiment_id, "activate")

    def cancel_experiment(self, experiment_id: int) -> Experiment:
        """Stop gracefully: trials checkpoint, then the experiment ends CANCELED.

        Example::

            Client().cancel_experiment(7).state  # "STOPPING_CANCELED"
        """
        return self._verb(experiment_id, "cancel")

    def kill_experiment(self, experiment_id: int) -> Experiment:
        """Stop now without checkpointing; ends CANCELED.

        Example::

            Client().kill_experiment(7)
        """
        return self._verb(experiment_id, "kill")

    def archive_experiment(self, experiment_id: int) -> Experiment:
        """Hide a finished experiment from default listings.

        Example::

            Client().archive_experiment(7).archived  # True
        """
        return self._verb(experiment_id, "archive")

    def unarchive_experiment(self, experiment_id: int) -> Experiment:
        """Undo ``archive_experiment``.

        Example::

            Client().unarchive_experiment(7)
        """
        return self._verb(experiment_id, "unarchive")

    def delete_experiment(self, experiment_id: int) -> Experiment:
        """Start deleting a finished experiment; it answers DELETING, then ``get`` raises NotFound.

        Example::

            Client().delete_experiment(7).state  # "DELETING"
        """
        return Experiment.from_json(self._json("DELETE", f"/api/v1/experiments/{experiment_id}"))

    def fork_experiment(
        self, experiment_id: int, config_overrides: Mapping[str, Any] | None = None, *, paused: bool = False
    ) -> Experiment:
        """A new experiment with ``experiment_id`` as parent: the parent's config as submitted with
        ``config_overrides`` deep-merged over it, the parent's context, in the parent's project.

        Example::

            child = Client().fork_experiment(7, {"hyperparameters": {"lr": 0.1}})
            child.parent_id  # 7
        """
        body = {"config_overrides": dict(config_overrides or {}), "paused": paused}
        return Experiment.from_json(
            self._json("POST", f"/api/v1/experiments/{experiment_id}/fork", json=body)
        )

    def continue_experiment(
        self, experiment_id: int, config_overrides: Mapping[str, Any] | None = None
    ) -> Experiment:
        """Run a COMPLETED, CANCELED or ERROR experiment again (Determined's ``det e continue``).

        Its ERROR and CANCELED trials (or its only trial) resume from their latest checkpoints as
        new runs. Overrides may change how trials run (``max_restarts``, ``resources``, checkpoint
        GC and periods; ``searcher.max_length`` of a single trial), never what they train.
        ``raw["resumed_trial_ids"]`` lists the trials that resume.

        Example::

            Client().continue_experiment(7, {"max_restarts": 10}).state  # "ACTIVE"
        """
        body = {"config_overrides": dict(config_overrides or {})}
        return Experiment.from_json(
            self._json("POST", f"/api/v1/experiments/{experiment_id}/continue", json=body)
        )

    def experiment_versions(self, experiment_id: int) -> list[Experiment]:
        """The fork tree of an experiment: its root ancestor and every descendant you can see, by
        id (each with id, name, state, owner, project_id, parent_id and created_at).

        Example::

            for exp in Client().experiment_versions(7):
                print(exp.id, exp.parent_id, exp.state)
        """
        rows = self._json("GET", f"/api/v1/experiments/{experiment_id}/versions")
        return [Experiment.from_json(row) for row in rows]

    def wait_for_experiment(
        self,
        experiment_id: int,
        states: Collection[str] = TERMINAL_STATES,
        *,
        timeout: float | None = None,
        poll: float = 2.0,
    ) -> Experiment:
        """Poll until the experiment is in one of ``states`` (default: any terminal state).

        Also returns once the experiment is terminal, since it will not move on by itself.
        Raises ``WaitTimeout`` (carrying the last state seen) when ``timeout`` seconds pass.

        Example::

            exp = Client().wait_for_experiment(7, timeout=3600)
            print(exp.state)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = {str(s) for s in states}
        while True:
            exp = self.get_experiment(experiment_id)
            if exp.state in wanted or exp.terminal:
                return exp
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(exp, timeout or 0.0)
                time.sleep(min(poll, remaining))
            else:
                time.sleep(poll)

    # --- trials -------------------------------------------------------------------------------

    def list_trials(self, experiment_id: int) -> list[Trial]:
        """The experiment's trials, oldest first.

        Example::

            states = {t.id: t.state for t in Client().list_trials(7)}
        """
        return [Trial.from_json(t) for t in self._json("GET", f"/api/v1/experiments/{experiment_id}/trials")]

    def get_trial(self, trial_id: int) -> Trial:
        """One trial.

        Example::

            print(Client().get_trial(12).latest_checkpoint)
        """
        return Trial.from_json(self._json("GET", f"/api/v1/trials/{trial_id}"))

    def kill_trial(self, trial_id: int) -> Trial:
        """Stop one trial at once without a checkpoint; it ends CANCELED, its experiment goes on.

        Example::

            Client().kill_trial(12).state  # "ACTIVE" until its run is gone, then "CANCELED"
        """
        return Trial.from_json(self._json("POST", f"/api/v1/trials/{trial_id}/kill"))

    def trial_metrics(
        self, trial_id: int, *, group: str | None = None, include_archived: bool = False
    ) -> list[Metric]:
        """The trial's reported metrics in step order; ``group`` keeps one group (``validation``).

        One row per (group, step): the live one. ``include_archived`` adds rows of earlier runs
        past the step a later run restored from (``Metric.archived``).

        Example::

            losses = [m.values["loss"] for m in Client().trial_metrics(12, group="training")]
        """
        params = {"group": group, "include_archived": include_archived or None}
        data = self._json("GET", f"/api/v1/trials/{trial_id}/metrics", params=params)
        return [Metric.from_json(item) for item in data.get("items") or ()]

    def list_trial_runs(self, trial_id: int) -> list[TrialRun]:
        """Each run of the trial, first to last: agent, start, end, exit code and reason, and the
        checkpoint it restored.

        Example::

            failed = [r for r in Client().list_trial_runs(12) if r.exit_reason == "exited" and r.exit_code]
        """
        return [TrialRun.from_json(r) for r in self._json("GET", f"/api/v1/trials/{trial_id}/runs")]

    def iter_trial_logs(
        self,
        trial_id: int,
        *,
        follow: bool = False,
        tail: int | None = None,
        head: int | None = None,
        rank_ids: Sequence[int] = (),
        stdtypes: Sequence[str] = (),
        level: str | None = None,
    ) -> Iterator[LogLine]:
        """The trial's log lines in order, as they arrive.

        ``tail`` starts at the last N lines, ``head`` stops after the first N. With ``follow`` the
        iterator keeps waiting for new lines while a run of the trial is queued, going or about to
        be queued (waiting for slots and restarts count) and ends once the trial ends or its
        experiment is paused. Stopping the iteration early closes the stream. The master filters:
        ``rank_ids``, ``stdtypes`` (stdout, stderr) and ``level`` (this level or above, Determined's
        TRACE..CRITICAL; a line not starting ``LEVEL:`` counts as INFO).

        Example::

            for line in Client().iter_trial_logs(12, follow=True, tail=100, level="WARNING"):
                print(line.message)
        """
        params: dict[str, Any] = {
            "follow": follow,
            "tail": tail,
            "head": head,
            "rank_id": list(rank_ids),
            "stdtype": list(stdtypes),
            "level": level,
        }
        headers = {"Accept": "application/x-ndjson"}
        # No read timeout while following: a quiet trial sends nothing for minutes.
        read_timeout = None if follow else self._session.timeout
        with self._session.stream(
            f"/api/v1/trials/{trial_id}/logs", params=params, headers=headers, read_timeout=read_timeout
        ) as response:
            for text in response.iter_lines():
                if text.strip():
                    yield LogLine.from_json(json.loads(text))

    # --- checkpoints --------------------------------------------------------------------------

    def list_checkpoints(self, experiment_id: int) -> list[Checkpoint]:
        """Every checkpoint of the experiment's trials, oldest first.

        Example::

            latest = Client().list_checkpoints(7)[-1].uuid
        """
        data = self._json("GET", f"/api/v1/experiments/{experiment_id}/checkpoints")
        return [Checkpoint.from_json(item) for item in data]

    def get_checkpoint(self, checkpoint_uuid: str) -> Checkpoint:
        """One checkpoint with its manifest.

        Example::

            files = Client().get_checkpoint(uuid).files
        """
        return Checkpoint.from_json(self._json("GET", f"/api/v1/checkpoints/{checkpoint_uuid}"))

    def delete_checkpoint(self, checkpoint_uuid: str) -> Checkpoint:
        """Ask the master to delete a checkpoint's files; it turns DELETED once storage confirms.

        ``ConflictError`` if a model version registers it (or a running trial warm-starts from it).

        Example::

            Client().delete_checkpoint("1b4e28ba-2fa1-11d2-883f-0016d3cca427").state  # "COMPLETED"
        """
        return Checkpoint.from_json(self._json("DELETE", f"/api/v1/checkpoints/{checkpoint_uuid}"))

    def checkpoint_lineage(self, checkpoint_uuid: str) -> CheckpointLineage:
        """Where a checkpoint came from: its parent chain (across warm starts) with the configs,
        context digests and hyperparameters of the experiments and trials involved.

        Example::

            lineage = Client().checkpoint_lineage(uuid)
            print([c.uuid for c in lineage.chain], [e.context_sha256 for e in lineage.experiments])
        """
        return CheckpointLineage.from_json(
            self._json("GET", f"/api/v1/checkpoints/{checkpoint_uuid}/lineage")
        )

    # --- model registry -----------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        project_id: int | None = None,
    ) -> Model:
        """Add a model to the registry; ``ConflictError`` if the name is taken.

        ``project_id`` defaults to the master's "Uncategorized" project.

        Example::

            Client().create_model("resnet", description="ImageNet classifier", labels=["vision"])
        """
        body: dict[str, Any] = {
            "name": name,
            "description": description,
            "labels": list(labels),
            "metadata": dict(metadata or {}),
        }
        if project_id is not None:
            body["project_id"] = project_id
        return Model.from_json(self._json("POST", "/api/v1/models", json=body))

    def list_models(
        self,
        *,
        name: str | None = None,
        labels: Iterable[str] | None = None,
        owner: str | None = None,
        order_by: ModelOrderBy | None = None,
        order: Literal["asc", "desc"] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        workspace_id: int | None = None,
        project_id: int | None = None,
    ) -> ModelPage:
        """One page of models, by name unless ``order_by`` says otherwise; ``name`` is a substring.

        Example::

            page = Client().list_models(labels=["vision"])
            print([m.name for m in page.items])
        """
        params: dict[str, Any] = {
            "name": name,
            "label": list(labels or ()),
            "owner": owner,
            "order_by": order_by,
            "order": order,
            "limit": limit,
            "offset": offset,
            "workspace_id": workspace_id,
            "project_id": project_id,
        }
        return Page.parse(self._json("GET", "/api/v1/models", params=params), Model.from_json)

    def get_model(self, name: str) -> Model:
        """One model by name.

        Example::

            print(Client().get_model("resnet").num_versions)
        """
        return Model.from_json(self._json("GET", _model_path(name)))

    def patch_model(
        self,
        name: str,
        *,
        description: str | None = None,
        labels: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Model:
        """Change the description, replace the labels, or merge ``metadata`` into the stored one at
        the top level (a key set to None is removed); None leaves a field as it is.

        Example::

            Client().patch_model("resnet", metadata={"dataset": "imagenet-21k", "draft": None})
        """
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if labels is not None:
            body["labels"] = list(labels)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return Model.from_json(self._json("PATCH", _model_path(name), json=body))

    def register_model_version(
        self,
        name: str,
        checkpoint_uuid: str,
        *,
        comment: str = "",
        labels: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register a COMPLETED checkpoint as the model's next version; it is then kept from GC
        and deletion. ``ConflictError`` if the checkpoint is not COMPLETED.

        Example::

            v = Client().register_model_version("resnet", uuid, comment="val_acc 0.91")
            print(v.version)
        """
        body = {
            "checkpoint_uuid": checkpoint_uuid,
            "comment": comment,
            "labels": list(labels),
            "metadata": dict(metadata or {}),
        }
        return ModelVersion.from_json(self._json("POST", f"{_model_path(name)}/versions", json=body))

    def list_model_versions(
        self, name: str, *, limit: int | None = None, offset: int | None = None
    ) -> ModelVersionPage:
        """One page of the model's versions, oldest first.

        Example::

            latest = Client().list_model_versions("resnet").items[-1]
        """
        params = {"limit": limit, "offset": offset}
        return Page.parse(
            self._json("GET", f"{_model_path(name)}/versions", params=params), ModelVersion.from_json
        )

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model.

        Example::

            uuid = Client().get_model_version("resnet", 3).checkpoint_uuid
        """
        return ModelVersion.from_json(self._json("GET", f"{_model_path(name)}/versions/{version}"))

    # --- people's tokens and accounts ---------------------------------------------------------

    def create_token(self, description: str = "", expires_in_days: float | None = None) -> CreatedToken:
        """An API token that acts as you, for scripts and CI (``$STALWART_TOKEN``); the secret is
        in the answer only this once. Without ``expires_in_days`` it never expires.

        Revoking it, a password change or deactivating the account ends it.

        Example::

            created = Client().create_token("nightly job", expires_in_days=30)
            print(created.info.id, created.token)
        """
        body: dict[str, Any] = {"description": description}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return CreatedToken.from_json(self._json("POST", "/api/v1/tokens", json=body))

    def list_tokens(self, all_users: bool = False) -> list[TokenInfo]:
        """Your live sessions and API tokens, newest first, never their secrets.

        ``all_users`` lists everyone's when you are a cluster admin (only yours otherwise).

        Example::

            stale = [t.id for t in Client().list_tokens() if t.kind == "api" and t.last_used_at is None]
        """
        params = {"all_users": all_users or None}
        return [TokenInfo.from_json(item) for item in self._json("GET", "/api/v1/tokens", params=params)]

    def revoke_token(self, token_id: int) -> None:
        """End one of your sessions or API tokens (a cluster admin: anyone's); ``NotFoundError`` for
        a token that is not yours to see.

        Example::

            Client().revoke_token(42)
        """
        self._session.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def update_user(
        self,
        username: str,
        *,
        active: bool | None = None,
        admin: bool | None = None,
        password: str | None = None,
    ) -> User:
        """Deactivate or reactivate, promote or demote an account, or reset its password (cluster
        admins only); None leaves a field as it is.

        Deactivating ends every session and API token of the user; ``ConflictError`` for the last
        active admin.

        Example::

            Client().update_user("alice", active=False)
        """
        body = {
            key: value
            for key, value in (("active", active), ("admin", admin), ("password", password))
            if value is not None
        }
        return User.from_json(self._json("PATCH", f"/api/v1/users/{_segment(username)}", json=body))

    def change_password(self, old_password: str, new_password: str) -> None:
        """Change your own password; your other sessions and API tokens are revoked, this one stays.

        ``ForbiddenError`` if ``old_password`` is wrong.

        Example::

            Client().change_password("old secret", "a new long passphrase")
        """
        body = {"old_password": old_password, "new_password": new_password}
        self._session.request("POST", "/api/v1/me/password", json=body)

    # --- workspaces and projects --------------------------------------------------------------

    def list_workspaces(self) -> list[Workspace]:
        """The workspaces you have a role in (every one for a cluster admin), with your role.

        Example::

            names = {w.id: w.name for w in Client().list_workspaces()}
        """
        return [Workspace.from_json(item) for item in self._json("GET", "/api/v1/workspaces")]

    def create_workspace(self, name: str) -> Workspace:
        """A new workspace with you as its admin; ``ConflictError`` if the name is taken.

        Example::

            ws = Client().create_workspace("vision")
        """
        return Workspace.from_json(self._json("POST", "/api/v1/workspaces", json={"name": name}))

    def get_workspace(self, workspace_id: int) -> Workspace:
        """One workspace; ``NotFoundError`` also when you have no role in it.

        Example::

            print(Client().get_workspace(2).role)
        """
        return Workspace.from_json(self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}"))

    def update_workspace(
        self, workspace_id: int, *, name: str | None = None, archived: bool | None = None
    ) -> Workspace:
        """Rename, archive or unarchive (workspace admins); None leaves a field as it is.

        Example::

            Client().update_workspace(2, archived=True)
        """
        body = {key: value for key, value in (("name", name), ("archived", archived)) if value is not None}
        return Workspace.from_json(self._json("PATCH", f"/api/v1/workspaces/{int(workspace_id)}", json=body))

    def delete_workspace(self, workspace_id: int) -> None:
        """Delete an empty workspace and its projects; ``ConflictError`` while it holds experiments
        or models (move or delete them first).

        Example::

            Client().delete_workspace(2)
        """
        self._session.request("DELETE", f"/api/v1/workspaces/{int(workspace_id)}")

    def list_workspace_members(self, workspace_id: int) -> list[WorkspaceMember]:
        """Who has which role in the workspace, by user name.

        Example::

            roles = {m.username: m.role for m in Client().list_workspace_members(2)}
        """
        data = self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}/members")
        return [WorkspaceMember.from_json(item) for item in data]

    def set_workspace_member(
        self, workspace_id: int, username: str, role: Literal["viewer", "editor", "admin"]
    ) -> WorkspaceMember:
        """Give ``username`` a role in the workspace, or change it (workspace admins).

        ``viewer`` reads, ``editor`` also creates and changes what it owns, ``admin`` changes
        everything inside and manages members.

        Example::

            Client().set_workspace_member(2, "alice", "editor")
        """
        path = f"/api/v1/workspaces/{int(workspace_id)}/members/{_segment(username)}"
        return WorkspaceMember.from_json(self._json("PUT", path, json={"role": role}))

    def remove_workspace_member(self, workspace_id: int, username: str) -> None:
        """Take away ``username``'s role in the workspace (a no-op if it had none).

        Example::

            Client().remove_workspace_member(2, "alice")
        """
        self._session.request(
            "DELETE", f"/api/v1/workspaces/{int(workspace_id)}/members/{_segment(username)}"
        )

    def list_projects(self, workspace_id: int) -> list[Project]:
        """The workspace's projects.

        Example::

            ids = [p.id for p in Client().list_projects(2)]
        """
        data = self._json("GET", f"/api/v1/workspaces/{int(workspace_id)}/projects")
        return [Project.from_json(item) for item in data]

    def create_project(self, workspace_id: int, name: str, description: str = "") -> Project:
        """A new project in the workspace (editors); names are unique within a workspace.

        Example::

            project = Client().create_project(2, "resnet", "ImageNet runs")
        """
        body = {"name": name, "description": description}
        return Project.from_json(
            self._json("POST", f"/api/v1/workspaces/{int(workspace_id)}/projects", json=body)
        )

    def get_project(self, project_id: int) -> Project:
        """One project.

        Example::

            print(Client().get_project(3).workspace_id)
        """
        return Project.from_json(self._json("GET", f"/api/v1/projects/{int(project_id)}"))

    def update_project(
        self,
        project_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        archived: bool | None = None,
    ) -> Project:
        """Rename, describe, archive or unarchive; None leaves a field as it is.

        Example::

            Client().update_project(3, description="ImageNet-21k runs")
        """
        body = {
            key: value
            for key, value in (("name", name), ("description", description), ("archived", archived))
            if value is not None
        }
        return Project.from_json(self._json("PATCH", f"/api/v1/projects/{int(project_id)}", json=body))

    def delete_project(self, project_id: int) -> None:
        """Delete an empty project; ``ConflictError`` while it holds experiments or models.

        Example::

            Client().delete_project(3)
        """
        self._session.request("DELETE", f"/api/v1/projects/{int(project_id)}")

    def move_experiment(self, experiment_id: int, project_id: int) -> Experiment:
        """Move an experiment into another project, and so under that workspace's roles.

        Needs change rights on the experiment and the editor role in the destination.

        Example::

            Client().move_experiment(7, project_id=3).project_id  # 3
        """
        body = {"project_id": project_id}
        return Experiment.from_json(
            self._json("POST", f"/api/v1/experiments/{int(experiment_id)}/move", json=body)
        )

    # --- deleting from the model registry -----------------------------------------------------

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions; their checkpoints become deletable again.

        Example::

            Client().delete_model("resnet")
        """
        self._session.request("DELETE", _model_path(name))

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete one version; its checkpoint is no longer protected from GC by it.

        Example::

            Client().delete_model_version("resnet", 3)
        """
        self._session.request("DELETE", f"{_model_path(name)}/versions/{int(version)}")

    # --- audit log ----------------------------------------------------------------------------

    def list_audit_events(
        self,
        username: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditEventPage:
        """One page of the audit log, newest first (cluster admins only).

        ``action`` is exact (``auth.login``) or a prefix ending in '.' (``experiment.``); ``since``
        a datetime or an ISO 8601 string.

        Example::

            page = Client().list_audit_events(action="auth.", limit=20)
            refused = [e for e in page.items if e.outcome != "ok"]
        """
        params: dict[str, Any] = {
            "username": username,
            "action": action,
            "since": since.isoformat() if isinstance(since, datetime) else since,
            "limit": limit,
            "offset": offset,
        }
        return Page.parse(self._json("GET", "/api/v1/audit", params=params), AuditEvent.from_json)

    # --- agents and slots ---------------------------------------------------------------------

    def create_agent_token(self, agent_id: str) -> str:
        """The secret for ``stalwart-agent --token`` (admins only), good for this one agent id.

        It may only register as, poll for and report for ``agent_id``: a leaked token cannot
        impersonate another agent. ``issue_agent_token`` also gives its id, to revoke it by.

        Example::

            token = Client().create_agent_token("gpu-node-3")
        """
        return self.issue_agent_token(agent_id).token

    def issue_agent_token(self, agent_id: str) -> IssuedAgentToken:
        """Like ``create_agent_token``, with the new token's id; the secret is shown only this once.

        Example::

            issued = Client().issue_agent_token("gpu-node-3")
            Client().revoke_agent_token(issued.id)
        """
        body = {"agent_id": agent_id}
        return IssuedAgentToken.from_json(self._json("POST", "/api/v1/agents/tokens", json=body))

    def list_agent_tokens(self) -> list[AgentToken]:
        """Every agent token, revoked and expired ones too, without their secrets (admins only).

        Example::

            mine = [t.id for t in Client().list_agent_tokens() if t.agent_id == "gpu-node-3"]
        """
        return [AgentToken.from_json(item) for item in self._json("GET", "/api/v1/agents/tokens")]

    def revoke_agent_token(self, token_id: int) -> None:
        """Refuse the token from its next request on (admins only); the agent's running trials
        carry on until it is declared lost.

        Example::

            Client().revoke_agent_token(12)
        """
        self._session.request("DELETE", f"/api/v1/agents/tokens/{int(token_id)}")

    def list_agents(self) -> list[Agent]:
        """Every agent that ever registered, connected or not.

        Example::

            connected = [a.id for a in Client().list_agents() if a.connected]
        """
        return [Agent.from_json(item) for item in self._json("GET", "/api/v1/agents")]

    def list_slots(self) -> list[Slot]:
        """Every slot of every agent, with the trial holding it if any.

        Example::

            busy = [s for s in Client().list_slots() if s.trial_id is not None]
        """
        return [Slot.from_json(item) for item in self._json("GET", "/api/v1/slots")]

    def enable_agent(self, agent_id: str) -> Agent:
        """Let the scheduler place trials on the agent again (admins only).

        Example::

            Client().enable_agent("gpu-node-3")
        """
        return Agent.from_json(self._json("POST", f"/api/v1/agents/{agent_id}/enable"))

    def disable_agent(self, agent_id: str, *, drain: bool = False) -> Agent:
        """Schedule nothing new on the agent (admins only).

        With ``drain`` its running trials finish there; without, they checkpoint and move.

        Example::

            Client().disable_agent("gpu-node-3", drain=True).draining  # True
        """
        body = {"drain": drain}
        return Agent.from_json(self._json("POST", f"/api/v1/agents/{agent_id}/disable", json=body))
