"""Determined's Python SDK names over ``stalwart.client.Client``, so a script written against
``determined.experimental.client`` ports by changing its import.

Example::

    from stalwart.experimental import client   # was: from determined.experimental import client

    client.login(master="http://master:8080", user="admin", password="...")
    exp = client.create_experiment(config="const.yaml", model_dir=".")
    print(exp.wait())                           # ExperimentState.COMPLETED
    path = exp.top_checkpoint().download()      # checkpoints/<uuid>, every chunk verified

Only the commonly used part of Determined's SDK is here (docs/migrating-from-determined.md lists it);
``stalwart.client.Client`` has one method for every REST route.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stalwart.client import TERMINAL_STATES, Client, ExperimentState, ModelVersion
from stalwart.client import Checkpoint as _Checkpoint
from stalwart.client import Experiment as _Experiment
from stalwart.client import Model as _Model
from stalwart.client import Trial as _Trial
from stalwart.client._ranking import best_checkpoints

__all__ = [
    "Checkpoint",
    "Experiment",
    "ExperimentState",
    "Model",
    "Trial",
    "create_experiment",
    "create_model",
    "get_checkpoint",
    "get_experiment",
    "get_model",
    "get_trial",
    "list_experiments",
    "login",
]

_session: Client | None = None


def login(
    master: str | None = None,
    user: str | None = None,
    password: str | None = None,
    cert_path: str | None = None,
    noverify: bool = False,
) -> None:
    """Connect every later call to ``master`` ($STALWART_MASTER or $DET_MASTER by default).

    With ``user``, log in with ``password`` ($STALWART_PASSWORD or $DET_PASS when None); without,
    the token ``stalwart user login`` saved (or $STALWART_TOKEN) is used, as Determined's does.
    ``cert_path`` and ``noverify`` are Determined's: TLS trust comes from $STALWART_CA_CERT here.
    """
    global _session
    if cert_path is not None or noverify:
        raise ValueError(
            "cert_path/noverify: set STALWART_CA_CERT to the CA that signed the master's certificate"
        )
    session = Client(master)
    if user is not None:
        secret = password or os.environ.get("STALWART_PASSWORD") or os.environ.get("DET_PASS")
        if not secret:
            raise ValueError(f"no password for {user}: pass password= or set STALWART_PASSWORD")
        session.login(user, secret)
    if _session is not None:
        _session.close()
    _session = session


def _client() -> Client:
    global _session
    if _session is None:
        _session = Client()
    return _session


class Checkpoint:
    """A registered checkpoint (Determined's ``Checkpoint``): ``uuid``, ``metadata``, ``download()``."""

    def __init__(self, found: _Checkpoint) -> None:
        self._found = found
        self.uuid = found.uuid
        self.metadata: Mapping[str, Any] = found.metadata
        self.state = found.state
        self.steps_completed = found.steps_completed
        self.trial_id = found.trial_id

    def download(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the checkpoint's files, every chunk verified, to ``path`` (default
        ``checkpoints/UUID``) and return that directory."""
        from stalwart.checkpoint._registered import download_registered

        return str(download_registered(self._found, Path(path) if path is not None else None))

    def __repr__(self) -> str:
        return f"Checkpoint(uuid={self.uuid!r})"


def _top(
    checkpoints: list[_Checkpoint], experiment: _Experiment, sort_by: str | None, smaller: bool | None
) -> Checkpoint:
    metric = (experiment.config.get("searcher") or {}).get("metric")
    if sort_by is not None and sort_by != metric:
        raise ValueError(f"checkpoints are ranked by the searcher metric {metric!r}, not {sort_by!r}")
    best = best_checkpoints(checkpoints, experiment.config, 1, smaller=smaller)
    if not best:
        raise ValueError(f"no checkpoint of experiment {experiment.id} has a searcher metric yet")
    return Checkpoint(best[0])


class Trial:
    """One trial (Determined's ``Trial``): ``id``, ``hparams``, ``top_checkpoint()``, ``logs()``."""

    def __init__(self, found: _Trial) -> None:
        self._load(found)

    def _load(self, found: _Trial) -> None:
        self.id = found.id
        self.experiment_id = found.experiment_id
        self.hparams: Mapping[str, Any] = found.hparams
        self.state = found.state

    def _checkpoints(self) -> list[_Checkpoint]:
        return [c for c in _client().list_checkpoints(self.experiment_id) if c.trial_id == self.id]

    def top_checkpoint(self, sort_by: str | None = None, smaller_is_better: bool | None = None) -> Checkpoint:
        """This trial's best checkpoint by the searcher metric."""
        return _top(
            self._checkpoints(), _client().get_experiment(self.experiment_id), sort_by, smaller_is_better
        )

    def list_checkpoints(self) -> list[Checkpoint]:
        """This trial's checkpoints, oldest first."""
        return [Checkpoint(c) for c in self._checkpoints()]

    def logs(self, follow: bool = False, head: int | None = None, tail: int | None = None) -> Iterator[str]:
        """The trial's log lines, as text."""
        for line in _client().iter_trial_logs(self.id, follow=follow, head=head, tail=tail):
            yield line.message

    def kill(self) -> None:
        """End this trial now (CANCELED); its experiment goes on."""
        _client().kill_trial(self.id)

    def reload(self) -> None:
        self._load(_client().get_trial(self.id))


class Experiment:
    """One experiment (Determined's ``Experiment``): lifecycle verbs, ``wait()``, ``top_checkpoint()``."""

    def __init__(self, found: _Experiment) -> None:
        self._load(found)

    def _load(self, found: _Experiment) -> None:
        self._found = found
        self.id = found.id
        self.name = found.name
        self.state = ExperimentState(found.state)
        self.config: Mapping[str, Any] = found.config

    def reload(self) -> None:
        self._load(_client().get_experiment(self.id))

    def wait(self, interval: float = 5.0) -> ExperimentState:
        """Block until the experiment ends; returns its terminal state."""
        while True:
            self.reload()
            if self.state in TERMINAL_STATES:
                return self.state
            time.sleep(interval)

    def list_trials(self) -> list[Trial]:
        return [Trial(t) for t in _client().list_trials(self.id)]

    get_trials = list_trials

    def list_checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint of its trials, oldest first."""
        return [Checkpoint(c) for c in _client().list_checkpoints(self.id)]

    def top_checkpoint(self, sort_by: str | None = None, smaller_is_better: bool | None = None) -> Checkpoint:
        """The best checkpoint of any trial by the searcher metric (``smaller_is_better`` as configured)."""
        return _top(_client().list_checkpoints(self.id), self._found, sort_by, smaller_is_better)

    def activate(self) -> None:
        _client().activate_experiment(self.id)

    def pause(self) -> None:
        _client().pause_experiment(self.id)

    def cancel(self) -> None:
        _client().cancel_experiment(self.id)

    def kill(self) -> None:
        _client().kill_experiment(self.id)

    def archive(self) -> None:
        _client().archive_experiment(self.id)

    def unarchive(self) -> None:
        _client().unarchive_experiment(self.id)

    def delete(self) -> None:
        _client().delete_experiment(self.id)


class Model:
    """A registered model (Determined's ``Model``): ``register_version()``, ``get_versions()``."""

    def __init__(self, found: _Model) -> None:
        self.name = found.name
        self.description = found.description
        self.metadata: Mapping[str, Any] = found.metadata

    def register_version(self, checkpoint_uuid: str) -> ModelVersion:
        return _client().register_model_version(self.name, checkpoint_uuid)

    def get_versions(self) -> list[ModelVersion]:
        return list(_client().list_model_versions(self.name).items)


def create_experiment(
    config: str | os.PathLike[str] | Mapping[str, Any],
    model_dir: str | os.PathLike[str],
    includes: list[str] | None = None,
    parent_id: int | None = None,
    project_id: int | None = None,
    template: str | None = None,
) -> Experiment:
    """Upload ``model_dir`` and submit ``config`` (a YAML file's path or a mapping), as Determined's."""
    from stalwart.context import build_context

    if includes or template:
        raise ValueError(
            "includes/template are not supported: put the files in model_dir, merge configs yourself"
        )
    text = config if isinstance(config, Mapping) else Path(config).read_text()
    session = _client()
    uploaded = session.upload_context(build_context(Path(model_dir)))
    created = session.create_experiment(
        text, context=uploaded.sha256, parent_id=parent_id, project_id=project_id
    )
    return Experiment(created)


def get_experiment(experiment_id: int) -> Experiment:
    return Experiment(_client().get_experiment(experiment_id))


def list_experiments(name: str | None = None, states: list[str] | None = None) -> list[Experiment]:
    return [Experiment(e) for e in _client().iter_experiments(name=name, states=states)]


def get_trial(trial_id: int) -> Trial:
    return Trial(_client().get_trial(trial_id))


def get_checkpoint(uuid: str) -> Checkpoint:
    return Checkpoint(_client().get_checkpoint(uuid))


def create_model(
    name: str,
    description: str = "",
    metadata: Mapping[str, Any] | None = None,
    labels: list[str] | None = None,
) -> Model:
    return Model(
        _client().create_model(name, description=description, metadata=metadata, labels=labels or ())
    )


def get_model(identifier: str) -> Model:
    return Model(_client().get_model(identifier))
