"""Experiment versions: fork (a new experiment from a parent's config and code), continue (a
terminal experiment's unfinished trials resume) and the fork tree.

Determined's semantics: a fork is ``CreateExperiment`` with ``parent_id`` and the parent's model
definition; a continue keeps the experiment and trial ids, and each resumed trial starts a new run
from its latest checkpoint, its earlier runs, metrics and checkpoints kept.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from stalwart._masking import mask_config
from stalwart_master.db.orm import Experiment, Trial, User
from stalwart_master.errors import Conflict, ErrorList, FieldError, Forbidden, Invalid, InvalidTransition
from stalwart_master.expconf import parse_experiment_config
from stalwart_master.expconf.determined import ConfigWarning
from stalwart_master.expconf.loader import load_yaml
from stalwart_master.expconf.parse import INVALID_TITLE
from stalwart_master.searcher import Searcher
from stalwart_master.services import authz
from stalwart_master.services import experiments as experiments_service
from stalwart_master.services.states import TERMINAL, ExperimentState

log = logging.getLogger(__name__)

MAX_OVERRIDE_DEPTH = 32
# A fork tree is a handful of experiments; the cap bounds one answer however a cluster is used.
MAX_VERSIONS = 1000

# What a continue may change, as dotted prefixes: how trials run and are kept, never what they
# train. Everything else (hyperparameters, searcher, entrypoint, data, seed, where checkpoints
# live) would make the resumed runs disagree with their checkpoints: that is a fork.
CONTINUE_FIELDS = (
    "name",
    "description",
    "labels",
    "max_restarts",
    "preemption_timeout",
    "resources",
    "environment",
    "checkpoint_policy",
    "checkpoint_period",
    "min_validation_period",
    "min_checkpoint_period",
    "checkpoint_storage.save_experiment_best",
    "checkpoint_storage.save_trial_best",
    "checkpoint_storage.save_trial_latest",
)
# Training a single trial for longer is what continuing it is for (Determined's use).
SINGLE_TRIAL_FIELDS = ("searcher.max_length",)
RESUMABLE_TRIAL_STATES = ("ERROR", "CANCELED")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any], _depth: int = 0) -> dict[str, Any]:
    """``overrides`` laid over ``base``: mappings merge key by key, anything else replaces."""
    if _depth > MAX_OVERRIDE_DEPTH:
        raise Invalid([FieldError("config_overrides", "nested too deeply")], title=INVALID_TITLE)
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = deep_merge(current, value, _depth + 1)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found += _leaves(value, f"{path}.")
        else:
            found.append((path, value))
    return found


def _at(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


_MISSING = object()


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(f"{p}.") for p in prefixes)


def _original(experiment: Experiment) -> dict[str, Any]:
    loaded = load_yaml(experiment.original_config)
    return loaded if isinstance(loaded, dict) else {}


def _dump(config: dict[str, Any]) -> str:
    text: str = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    return text


# --- fork -------------------------------------------------------------------------------------


def fork_config(parent: Experiment, overrides: dict[str, Any]) -> str:
    """The child's config: the parent's config as submitted, ``overrides`` merged over it.

    The parent's experiment seed is kept unless overridden, so a fork that only changes, say,
    ``max_restarts`` samples the same hyperparameters (Determined copies the seeded config).
    """
    config = deep_merge(_original(parent), overrides)
    seed = (parent.config.get("reproducibility") or {}).get("experiment_seed")
    repro = config.get("reproducibility")
    if seed is not None and (repro is None or (isinstance(repro, dict) and "experiment_seed" not in repro)):
        config["reproducibility"] = {**(repro or {}), "experiment_seed": seed}
    return _dump(config)


def _check_secrets(actor: User, parent: Experiment, child_yaml: str) -> None:
    """Someone else's fork must not run with the parent owner's secrets (storage keys, tokens):
    trials receive their config, so the forker's code could read them."""
    if actor.id == parent.owner_id:
        return
    child = load_yaml(child_yaml)
    original = _original(parent)
    inherited = [
        path
        for path, value in _leaves(mask_config(child))
        if value != _at(child, path) and _at(child, path) == _at(original, path)
    ]
    if inherited:
        raise Forbidden(
            f"experiment {parent.id}'s config holds its owner's secrets ({', '.join(inherited[:5])}); "
            "only its owner can fork it with them: override them with your own"
        )


def fork_experiment(
    session: Session,
    actor: User,
    parent_id: int,
    overrides: dict[str, Any],
    *,
    paused: bool = False,
    defaults: dict[str, Any] | None = None,
    max_config_bytes: int = 1024 * 1024,
    max_trials: int = 10_000,
    warnings: list[ConfigWarning] | None = None,
) -> Experiment:
    """A new experiment with ``parent_id``, the parent's context and project, owned by ``actor``.

    Validated like any create (``Invalid`` naming fields); 404 for a parent ``actor`` cannot see,
    403 without the editor role in the parent's project.
    """
    parent = authz.experiment_for(session, actor, parent_id)
    text = fork_config(parent, overrides)
    _check_secrets(actor, parent, text)
    child = experiments_service.create_experiment(
        session,
        actor,
        text,
        context_sha256=parent.context_sha256,
        paused=paused,
        parent_id=parent.id,
        defaults=defaults,
        max_config_bytes=max_config_bytes,
        max_trials=max_trials,
        project_id=parent.project_id,
        warnings=warnings,
    )
    log.info("experiment %s forked from %s by %s", child.id, parent.id, actor.username)
    return child


# --- continue ---------------------------------------------------------------------------------


def continue_override_errors(config: dict[str, Any], overrides: dict[str, Any]) -> list[FieldError]:
    """The overrides a continue refuses, each at its field path; a value equal to the stored one
    is no change and passes, so resubmitting the whole config works."""
    single = (config.get("searcher") or {}).get("name") == "single"
    allowed = CONTINUE_FIELDS + (SINGLE_TRIAL_FIELDS if single else ())
    errors = []
    for path, value in _leaves(overrides):
        if _under(path, allowed) or value == _at(config, path):
            continue
        why = "cannot change when continuing an experiment; fork it instead"
        if _under(path, SINGLE_TRIAL_FIELDS):
            why = "can change when continuing a single-trial experiment only; fork this one instead"
        errors.append(FieldError(path, why))
    return errors


def continue_experiment(
    session: Session,
    actor: User,
    experiment_id: int,
    overrides: dict[str, Any],
    *,
    max_config_bytes: int = 1024 * 1024,
) -> tuple[Experiment, list[Trial]]:
    """Make a terminal experiment ACTIVE again with its unfinished trials open; same ids.

    ERROR and CANCELED trials resume (a single trial resumes even when COMPLETED), each with its
    restart count reset and, at its next run, from its latest checkpoint. Returns the experiment
    and the trials that resume. 409 unless the experiment is COMPLETED, CANCELED or ERROR.
    """
    experiment = experiments_service.get_experiment(session, experiment_id, for_update=True)
    experiments_service.require_change(session, actor, experiment)
    state = ExperimentState(experiment.state)
    if state not in TERMINAL:
        raise InvalidTransition(
            f"cannot continue experiment {experiment.id} in state {state.value}; "
            "only a COMPLETED, CANCELED or ERROR one",
            extra={"state": state.value, "verb": "continue"},
        )
    if experiment.archived:
        raise Conflict(f"experiment {experiment.id} is archived; unarchive it to continue it")
    errors = ErrorList(continue_override_errors(experiment.config, overrides))
    errors.raise_if_any(title=INVALID_TITLE)
    parsed = parse_experiment_config(
        _dump(deep_merge(experiment.config, overrides)), max_bytes=max_config_bytes
    )

    trials = list(
        session.scalars(
            select(Trial).where(Trial.experiment_id == experiment.id).order_by(Trial.id).with_for_update()
        )
    )
    resumed = [t for t in trials if t.state in RESUMABLE_TRIAL_STATES]
    if not resumed and len(trials) == 1 and trials[0].state == "COMPLETED":
        resumed = trials
    if not resumed:
        raise Conflict(
            f"every trial of experiment {experiment.id} completed: nothing to continue; "
            "fork it to search again"
        )
    try:
        searcher = Searcher.restore(parsed.config, experiment.searcher_state or {})
    except ValueError as exc:  # a state stored by hand or by another version: say so, change nothing
        raise Conflict(f"experiment {experiment.id}'s searcher cannot be resumed: {exc}") from None
    for trial in resumed:
        searcher.reopen(trial.request_id)
        trial.state = "ACTIVE"
        trial.restarts = 0  # the new max_restarts counts from here
        trial.stop_requested = False
        trial.end_reason = ""
        trial.ended_at = None
    experiment.searcher_state = searcher.state()
    experiment.config = {**parsed.data, "name": parsed.data.get("name") or experiment.name}
    experiment.name = experiment.config["name"]
    experiment.description = parsed.data.get("description") or ""
    experiment.labels = list(parsed.data.get("labels") or [])
    if overrides:
        experiment.original_config = _dump(deep_merge(_original(experiment), overrides))
    experiment.state = ExperimentState.ACTIVE
    experiment.ended_at = None
    session.flush()
    log.info(
        "experiment %s continued by %s (was %s): trials %s resume",
        experiment.id,
        actor.username,
        state.value,
        ", ".join(str(t.id) for t in resumed),
    )
    return experiment, resumed


# --- the fork tree ----------------------------------------------------------------------------


def version_tree(session: Session, actor: User, experiment_id: int) -> list[Experiment]:
    """The root ancestor of ``experiment_id`` and all its descendants, by id.

    Only experiments ``actor`` can see are listed; one that is hidden is simply absent, so a
    visible experiment whose parent is hidden appears as a root of its own subtree.
    """
    authz.experiment_for(session, actor, experiment_id)  # 404 for what the caller cannot see
    up = select(Experiment.id, Experiment.parent_id).where(Experiment.id == experiment_id).cte(recursive=True)
    up = up.union(select(Experiment.id, Experiment.parent_id).join(up, Experiment.id == up.c.parent_id))
    # UNION (not ALL) ends even on a cycle written by hand; then the smallest id stands for the root.
    root_id = session.scalar(select(up.c.id).where(up.c.parent_id.is_(None))) or session.scalar(
        select(up.c.id).order_by(up.c.id).limit(1)
    )
    down = select(Experiment.id).where(Experiment.id == root_id).cte(recursive=True)
    down = down.union(select(Experiment.id).join(down, Experiment.parent_id == down.c.id))
    query = select(Experiment).where(Experiment.id.in_(select(down.c.id)))
    query = authz.in_workspaces(
        query, Experiment.project_id, authz.readable_workspace_ids(session, actor), None
    )
    return list(session.scalars(query.order_by(Experiment.id).limit(MAX_VERSIONS)))
