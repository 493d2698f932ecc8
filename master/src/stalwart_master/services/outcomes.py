"""What the end of one run means for its trial: the one table that decides restarts and resumes.

Only a failure of the user's code counts against ``max_restarts``: a run that exits non-zero while
the master had not asked it to stop, had not killed it, and whose agent was neither lost nor
draining. A trial the searcher has stopped is COMPLETED whichever way its run ends, and so is one
whose code reported an early exit (Determined's InvalidHP or a user-requested stop) unless the
reason was ERRORED, which ends it in ERROR without retrying. Every other
end either resumes the trial (queued again, from its latest checkpoint) or ends it as the
experiment's state says. Pure: no database, so the table is tested case by case.
"""

from __future__ import annotations

from dataclasses import dataclass

from stalwart_master.services.states import STOPPING, ExperimentState

# Allocation exit reasons: why a run ended, in the master's words.
EXITED = "exited"
LAUNCH_FAILED = "launch failed"
AGENT_LOST = "agent lost"
PREEMPTION_TIMEOUT = "preemption timeout"
KILLED = "killed"
DRAINED = "drained"
PREEMPTED = "preempted"
NOT_STARTED = "not started"
STOPPED_BY_SEARCHER = "stopped by searcher"
INVALID_HP = "invalid hyperparameters"
ERRORED_EARLY = "errored (reported by the trial)"
USER_REQUESTED_STOP = "user requested stop"

# The early-exit reasons a trial may report (``EarlyExit`` values), as the run's exit reason.
EARLY_EXIT_REASONS = {
    "INVALID_HP": INVALID_HP,
    "ERRORED": ERRORED_EARLY,
    "USER_REQUESTED_STOP": USER_REQUESTED_STOP,
}


@dataclass(frozen=True)
class RunEnd:
    """What the master knows when a run ends. ``exit_code`` None: the run never got to exit
    (the agent could not launch it, or the master gave up on it)."""

    experiment_state: ExperimentState
    exit_code: int | None
    agent_lost: bool = False
    agent_draining: bool = False
    kill_requested: bool = False
    preempt_requested: bool = False
    preempt_acked: bool = False
    searcher_stopped: bool = False
    early_exit: str | None = None  # an EarlyExit value the run reported before it ended
    restarts: int = 0
    max_restarts: int = 5


@dataclass(frozen=True)
class Outcome:
    trial_state: str
    closes_trial: bool
    exit_reason: str
    counts_restart: bool = False


def decide(end: RunEnd) -> Outcome:
    """The trial's next state, whether the run used up a restart, and the run's exit reason."""
    stopping = end.experiment_state in STOPPING

    def resume(reason: str) -> Outcome:
        # Not the code's fault: the trial continues from its checkpoint unless the experiment stops.
        return Outcome("CANCELED", True, reason) if stopping else Outcome("ACTIVE", False, reason)

    # A kill without a preemption request is a user's kill; with one, it is the preemption timeout.
    if end.experiment_state == ExperimentState.STOPPING_KILLED or (
        end.kill_requested and not end.preempt_requested
    ):
        return Outcome("CANCELED", True, KILLED)
    if end.searcher_stopped and not stopping:
        # The searcher has what it needs from the trial: however the run ended, there is nothing
        # to resume and no failure to count.
        return Outcome("COMPLETED", True, STOPPED_BY_SEARCHER)
    if end.early_exit is not None:
        # The trial's code said it is done, however the run then ended: never resumed or retried.
        reason = EARLY_EXIT_REASONS[end.early_exit]
        return Outcome("ERROR" if end.early_exit == "ERRORED" else "COMPLETED", True, reason)
    if end.agent_lost:
        return resume(AGENT_LOST)
    if end.kill_requested:
        return resume(PREEMPTION_TIMEOUT)
    if end.exit_code == 0 and not end.preempt_acked:
        return Outcome("COMPLETED", True, EXITED)
    if end.exit_code == 0 or end.preempt_requested or end.agent_draining:
        return resume(DRAINED if end.agent_draining else PREEMPTED)
    reason = EXITED if end.exit_code is not None else LAUNCH_FAILED
    if stopping:
        return Outcome("CANCELED", True, reason)
    if end.restarts + 1 > end.max_restarts:
        return Outcome("ERROR", True, reason, counts_restart=True)
    return Outcome("ACTIVE", False, reason, counts_restart=True)
