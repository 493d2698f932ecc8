"""What a trial knows about itself, read from the ``STALWART_*`` variables the trial runner exports."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialInfo:
    """What ``info.trial`` holds, in Determined's names.

    Example::

        info = stalwart.get_cluster_info()
        hparams = info.trial.hparams if info else {"lr": 0.01}
    """

    trial_id: int
    experiment_id: int
    trial_seed: int
    hparams: dict[str, Any]
    #: The experiment's config as stored by the master (defaults filled in).
    config: dict[str, Any]
    trial_run_id: int

    @property
    def _config(self) -> dict[str, Any]:
        # Determined kept the config "private"; some scripts read it anyway.
        return self.config

    @property
    def _trial_run_id(self) -> int:
        return self.trial_run_id


@dataclass(frozen=True)
class ClusterInfo:
    """The trial's identity and inputs; ``trial_id`` is None off-cluster.

    Both shapes work: our flat names (``info.trial_id``, ``info.hparams``) and Determined's
    (``info.trial.trial_id``, ``info.trial.hparams``, ``info.task_type``).

    Example::

        info = stalwart.get_cluster_info()
        lr = info.trial.hparams["learning_rate"] if info else 0.01
    """

    allocation_id: str | None
    master_url: str | None
    trial_id: int | None
    experiment_id: int | None
    run_id: int | None
    trial_seed: int
    hparams: dict[str, Any]
    latest_checkpoint: str | None
    checkpoint_storage: dict[str, Any] | None
    # The experiment's stored config (defaults filled in), e.g. for a trainer's checkpoint policy.
    experiment_config: dict[str, Any] | None = None
    slot_uuids: list[str] = field(default_factory=list)
    allocation_token: str | None = field(default=None, repr=False)

    @property
    def on_cluster(self) -> bool:
        """True when the trial was started by the trial runner for a master."""
        return self.allocation_id is not None

    @property
    def task_type(self) -> str:
        """``"TRIAL"``: trials are the only tasks that run user code on a cluster here."""
        return "TRIAL"

    @property
    def trial(self) -> TrialInfo:
        """Determined's ``info.trial``; raises ``RuntimeError`` when there is no trial (off-cluster)."""
        if self.trial_id is None or self.experiment_id is None:
            raise RuntimeError("info.trial is only available on a cluster (no STALWART_TRIAL_ID)")
        return TrialInfo(
            trial_id=self.trial_id,
            experiment_id=self.experiment_id,
            trial_seed=self.trial_seed,
            hparams=self.hparams,
            config=self.experiment_config or {},
            trial_run_id=self.run_id or 0,
        )

    @property
    def user_data(self) -> dict[str, Any]:
        """The experiment config's ``data`` section (``{}`` when absent)."""
        data = (self.experiment_config or {}).get("data")
        return data if isinstance(data, dict) else {}

    @property
    def gpu_uuids(self) -> list[str]:
        """The uuids of the slots assigned to this trial (Determined's name)."""
        return list(self.slot_uuids)

    @property
    def slot_ids(self) -> list[int]:
        """Indices of the assigned slots, as many as ``gpu_uuids``."""
        return list(range(len(self.slot_uuids)))

    @property
    def cluster_id(self) -> str | None:
        """Not tracked: one master is one cluster. Kept so Determined code that logs it runs."""
        return None

    @property
    def agent_id(self) -> str | None:
        """Not passed to trials yet; None."""
        return None

    @property
    def container_rank(self) -> int:
        """Multi-node launching is not supported yet, so every trial is container 0."""
        return 0


class ClusterInfoError(ValueError):
    """A ``STALWART_*`` variable is present but malformed; names the variable."""


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ClusterInfoError(f"{name}={raw!r} is not an integer") from None


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ClusterInfoError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ClusterInfoError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def read_cluster_info(env: Mapping[str, str] | None = None) -> ClusterInfo:
    """Parse the environment; off-cluster (no ``STALWART_ALLOCATION_ID``) ids are None."""
    env = os.environ if env is None else env
    allocation_id = env.get("STALWART_ALLOCATION_ID") or None
    slots = env.get("STALWART_SLOT_UUIDS", "")
    return ClusterInfo(
        allocation_id=allocation_id,
        master_url=env.get("STALWART_MASTER") or None,
        trial_id=_int(env, "STALWART_TRIAL_ID"),
        experiment_id=_int(env, "STALWART_EXPERIMENT_ID"),
        run_id=_int(env, "STALWART_TRIAL_RUN_ID"),
        trial_seed=_int(env, "STALWART_TRIAL_SEED") or 0,
        hparams=_json_object(env, "STALWART_HPARAMS") or {},
        latest_checkpoint=env.get("STALWART_LATEST_CHECKPOINT", "").strip() or None,
        checkpoint_storage=_json_object(env, "STALWART_CHECKPOINT_STORAGE"),
        experiment_config=_json_object(env, "STALWART_EXPERIMENT_CONFIG"),
        slot_uuids=[s for s in slots.split(",") if s],
        allocation_token=env.get("STALWART_ALLOCATION_TOKEN") or None,
    )


def get_cluster_info() -> ClusterInfo | None:
    """The running trial's info, or None off-cluster (as ``det.get_cluster_info()``).

    Example::

        info = stalwart.core.get_cluster_info()
        if info is None:
            print("running locally")
    """
    info = read_cluster_info()
    return info if info.on_cluster else None
