"""The experiment state machine: the one place that says which lifecycle verb is legal from where.

States are Determined's. A verb either moves the experiment, leaves it as it is (repeating a verb is
harmless), or is refused with InvalidTransition; nothing else may set ``Experiment.state``.
"""

from __future__ import annotations

from enum import StrEnum

from stalwart_master.errors import InvalidTransition


class ExperimentState(StrEnum):
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


S = ExperimentState

TERMINAL = frozenset({S.COMPLETED, S.CANCELED, S.ERROR})
STOPPING = frozenset({S.STOPPING_CANCELED, S.STOPPING_KILLED, S.STOPPING_COMPLETED, S.STOPPING_ERROR})
# An allocation in one of these is a run queued or going; it holds or awaits slots.
LIVE_ALLOCATION = ("PENDING", "ASSIGNED", "RUNNING")

# What a stopping state settles into once no trial of the experiment is running any more.
SETTLES_TO = {
    S.STOPPING_CANCELED: S.CANCELED,
    S.STOPPING_KILLED: S.CANCELED,
    S.STOPPING_COMPLETED: S.COMPLETED,
    S.STOPPING_ERROR: S.ERROR,
}

# verb -> {from state: to state}; a verb absent for a state is illegal there.
TRANSITIONS: dict[str, dict[ExperimentState, ExperimentState]] = {
    "pause": {S.ACTIVE: S.PAUSED, S.PAUSED: S.PAUSED},
    "activate": {S.PAUSED: S.ACTIVE, S.ACTIVE: S.ACTIVE},
    "cancel": {
        S.ACTIVE: S.STOPPING_CANCELED,
        S.PAUSED: S.STOPPING_CANCELED,
        S.STOPPING_CANCELED: S.STOPPING_CANCELED,
    },
    "kill": {
        S.ACTIVE: S.STOPPING_KILLED,
        S.PAUSED: S.STOPPING_KILLED,
        S.STOPPING_CANCELED: S.STOPPING_KILLED,
        S.STOPPING_COMPLETED: S.STOPPING_KILLED,
        S.STOPPING_KILLED: S.STOPPING_KILLED,
    },
    "delete": {
        S.COMPLETED: S.DELETING,
        S.CANCELED: S.DELETING,
        S.ERROR: S.DELETING,
        S.DELETE_FAILED: S.DELETING,
    },
    # archive and unarchive keep the state; they are legal only where the experiment has ended.
    "archive": {s: s for s in TERMINAL},
    "unarchive": {s: s for s in TERMINAL},
}

VERBS = tuple(TRANSITIONS)


def next_state(verb: str, current: str) -> ExperimentState:
    """The state ``verb`` leads to from ``current``, or InvalidTransition naming both."""
    table = TRANSITIONS.get(verb)
    if table is None:
        raise ValueError(f"unknown verb {verb!r}")
    state = ExperimentState(current)
    try:
        return table[state]
    except KeyError:
        allowed = ", ".join(sorted(table)) or "no state"
        raise InvalidTransition(
            f"cannot {verb} an experiment in state {state.value}; allowed from {allowed}",
            extra={"state": state.value, "verb": verb},
        ) from None
