"""``Client`` methods: trials, their metrics, logs and runs, and checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from stalwart.client._base import ClientBase
from stalwart.client.models import (
    Checkpoint,
    CheckpointLineage,
    LogLine,
    Metric,
    Trial,
    TrialRun,
)


class Trials(ClientBase):
    """Trials, their metrics, logs and runs, and checkpoints."""

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
        timestamp_before: datetime | None = None,
        timestamp_after: datetime | None = None,
    ) -> Iterator[LogLine]:
        """The trial's log lines in order, as they arrive.

        ``tail`` starts at the last N lines, ``head`` stops after the first N. With ``follow`` the
        iterator keeps waiting for new lines while a run of the trial is queued, going or about to
        be queued (waiting for slots and restarts count) and ends once the trial ends or its
        experiment is paused. Stopping the iteration early closes the stream. The master filters:
        ``rank_ids``, ``stdtypes`` (stdout, stderr) and ``level`` (this level or above, Determined's
        TRACE..CRITICAL; a line not starting ``LEVEL:`` counts as INFO) and the time window
        ``timestamp_after`` < written < ``timestamp_before`` (a time without a zone is UTC).

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
            "timestamp_before": timestamp_before.isoformat() if timestamp_before else None,
            "timestamp_after": timestamp_after.isoformat() if timestamp_after else None,
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
