"""Steering one experiment or trial while it runs: ``trial kill`` and ``experiment set priority|
weight|max-slots``, with Determined's meaning.

Killing a trial ends only that trial (CANCELED); the searcher hears of it as of any trial that
ended, so the experiment carries on with its other trials. Resources are stored in the
experiment's config, which the scheduler reads on every pass.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Allocation, Experiment, Trial, User
from stalwart_master.errors import InvalidTransition
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import authz, outcomes
from stalwart_master.services import experiments as experiments_service
from stalwart_master.services.states import LIVE_ALLOCATION, TERMINAL, ExperimentState

log = logging.getLogger(__name__)

TRIAL_TERMINAL = {str(state) for state in TERMINAL}


def kill_trial(session: Session, actor: User, trial_id: int) -> Trial:
    """Stop the trial's run at once (no checkpoint); the trial ends CANCELED, the rest go on.

    A run an agent holds is killed there and ends the trial when the agent reports it gone; a run
    no agent has started, or a trial without a run (a paused experiment), ends here and now.
    Killing a trial that already ended changes nothing.
    """
    authz.trial_for(session, actor, trial_id)
    # Lock order as a run's end takes them: trial, then experiment.
    trial = session.scalars(select(Trial).where(Trial.id == trial_id).with_for_update()).one()
    experiment = experiments_service.get_experiment(session, trial.experiment_id, for_update=True)
    experiments_service.require_change(session, actor, experiment)
    if trial.state in TRIAL_TERMINAL:
        return trial
    if experiment.state in (ExperimentState.DELETING, ExperimentState.DELETE_FAILED):
        raise InvalidTransition(f"experiment {experiment.id} is being deleted")
    trial.end_reason = f"killed by {actor.username}"
    live = session.scalars(
        select(Allocation)
        .where(Allocation.trial_id == trial.id, Allocation.state.in_(LIVE_ALLOCATION))
        .with_for_update()
    ).all()
    for allocation in live:
        allocation.kill_requested = True
        if not allocations_service.handed_over(allocation):
            # Nothing runs anywhere yet: the run ends here, and with it the trial (outcomes.decide).
            allocations_service.finish_allocation(session, allocation, None, outcomes.KILLED)
    if not live:
        trial.state = "CANCELED"
        allocations_service.close_trial(session, experiment, trial)
        session.flush()
        allocations_service.settle_experiment(session, experiment)
    log.info("trial %s of experiment %s killed by %s", trial.id, experiment.id, actor.username)
    session.flush()
    return trial


def set_resources(
    session: Session,
    actor: User,
    experiment_id: int,
    *,
    priority: int | None = None,
    weight: float | None = None,
    max_slots: int | None = None,
) -> Experiment:
    """Store new ``resources`` values; a new priority also applies to the runs already queued or
    running, so the next scheduler pass orders (and preempts) by it."""
    authz.experiment_for(session, actor, experiment_id)
    experiment = experiments_service.get_experiment(session, experiment_id, for_update=True)
    experiments_service.require_change(session, actor, experiment)
    if experiment.state in (ExperimentState.DELETING, ExperimentState.DELETE_FAILED):
        raise InvalidTransition(f"experiment {experiment.id} is being deleted")
    changes = {"priority": priority, "weight": weight, "max_slots": max_slots}
    resources = dict(experiment.config.get("resources") or {})
    resources.update({key: value for key, value in changes.items() if value is not None})
    experiment.config = {**experiment.config, "resources": resources}
    if priority is not None:
        trials = select(Trial.id).where(Trial.experiment_id == experiment.id)
        session.execute(
            update(Allocation)
            .where(Allocation.trial_id.in_(trials), Allocation.state.in_(LIVE_ALLOCATION))
            .values(priority=priority)
        )
    log.info(
        "experiment %s: resources %s set by %s",
        experiment.id,
        {key: value for key, value in changes.items() if value is not None},
        actor.username,
    )
    session.flush()
    return experiment
