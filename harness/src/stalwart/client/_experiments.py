"""``Client`` methods: experiments and the contexts (model definitions) they run."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Literal

from stalwart.client._base import ClientBase, OrderBy
from stalwart.client.errors import DigestMismatch, WaitTimeout
from stalwart.client.models import (
    TERMINAL_STATES,
    Context,
    ContextUpload,
    Experiment,
    ExperimentPage,
    Page,
)


class Experiments(ClientBase):
    """Experiments and the contexts (model definitions) they run."""

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
