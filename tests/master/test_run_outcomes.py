"""The outcome table: only a failure of the user's code uses up ``max_restarts``; every other end of a
run resumes its trial, or ends it as the experiment's state says."""

from __future__ import annotations

import pytest

from stalwart_master.services.outcomes import (
    AGENT_LOST,
    DRAINED,
    EXITED,
    KILLED,
    LAUNCH_FAILED,
    PREEMPTED,
    PREEMPTION_TIMEOUT,
    STOPPED_BY_SEARCHER,
    Outcome,
    RunEnd,
    decide,
)
from stalwart_master.services.states import ExperimentState as S

pytestmark = pytest.mark.unit

RESUME = ("ACTIVE", False)
CANCELED = ("CANCELED", True)

CASES: list[tuple[str, RunEnd, tuple[str, bool], str, bool]] = [
    # (case, run end, (trial state, closes trial), exit reason, counts a restart)
    ("code fails", RunEnd(S.ACTIVE, 3), RESUME, EXITED, True),
    ("code fails while paused", RunEnd(S.PAUSED, 1), RESUME, EXITED, True),
    ("code killed by a signal", RunEnd(S.ACTIVE, -9), RESUME, EXITED, True),
    ("runner cannot start", RunEnd(S.ACTIVE, None), RESUME, LAUNCH_FAILED, True),
    ("finished", RunEnd(S.ACTIVE, 0), ("COMPLETED", True), EXITED, False),
    (
        "finished while asked to stop",
        RunEnd(S.ACTIVE, 0, preempt_requested=True),
        ("COMPLETED", True),
        EXITED,
        False,
    ),
    (
        "paused: checkpointed and left",
        RunEnd(S.PAUSED, 0, preempt_requested=True, preempt_acked=True),
        RESUME,
        PREEMPTED,
        False,
    ),
    (
        "priority preemption",
        RunEnd(S.ACTIVE, 0, preempt_requested=True, preempt_acked=True),
        RESUME,
        PREEMPTED,
        False,
    ),
    ("crashed while asked to stop", RunEnd(S.ACTIVE, 1, preempt_requested=True), RESUME, PREEMPTED, False),
    ("agent lost", RunEnd(S.ACTIVE, None, agent_lost=True), RESUME, AGENT_LOST, False),
    ("agent lost while paused", RunEnd(S.PAUSED, None, agent_lost=True), RESUME, AGENT_LOST, False),
    (
        "drained",
        RunEnd(S.ACTIVE, 0, agent_draining=True, preempt_requested=True, preempt_acked=True),
        RESUME,
        DRAINED,
        False,
    ),
    (
        "killed by the drain timeout",
        RunEnd(S.ACTIVE, -9, agent_draining=True, preempt_requested=True),
        RESUME,
        DRAINED,
        False,
    ),
    ("failed on a draining agent", RunEnd(S.ACTIVE, 2, agent_draining=True), RESUME, DRAINED, False),
    (
        "ignored preemption, killed",
        RunEnd(S.PAUSED, -9, kill_requested=True, preempt_requested=True),
        RESUME,
        PREEMPTION_TIMEOUT,
        False,
    ),
    (
        "ignored a cancel, killed",
        RunEnd(S.STOPPING_CANCELED, -9, kill_requested=True, preempt_requested=True),
        CANCELED,
        PREEMPTION_TIMEOUT,
        False,
    ),
    ("user kill", RunEnd(S.STOPPING_KILLED, -15, kill_requested=True), CANCELED, KILLED, False),
    (
        "user kill of a paused run",
        RunEnd(S.STOPPING_KILLED, -9, kill_requested=True, preempt_requested=True),
        CANCELED,
        KILLED,
        False,
    ),
    ("user kill lands as the run finishes", RunEnd(S.STOPPING_KILLED, 0), CANCELED, KILLED, False),
    (
        "canceled: checkpointed and left",
        RunEnd(S.STOPPING_CANCELED, 0, preempt_requested=True, preempt_acked=True),
        CANCELED,
        PREEMPTED,
        False,
    ),
    ("code fails while canceling", RunEnd(S.STOPPING_CANCELED, 3), CANCELED, EXITED, False),
    (
        "agent lost while canceling",
        RunEnd(S.STOPPING_CANCELED, None, agent_lost=True),
        CANCELED,
        AGENT_LOST,
        False,
    ),
    (
        "searcher stop: checkpointed and left",
        RunEnd(S.ACTIVE, 0, preempt_requested=True, preempt_acked=True, searcher_stopped=True),
        ("COMPLETED", True),
        STOPPED_BY_SEARCHER,
        False,
    ),
    (
        "searcher stop ignored, killed after the timeout",
        RunEnd(S.ACTIVE, -9, kill_requested=True, preempt_requested=True, searcher_stopped=True),
        ("COMPLETED", True),
        STOPPED_BY_SEARCHER,
        False,
    ),
    (
        "searcher stop, then the code fails",
        RunEnd(S.ACTIVE, 1, preempt_requested=True, searcher_stopped=True),
        ("COMPLETED", True),
        STOPPED_BY_SEARCHER,
        False,
    ),
    (
        "searcher stop, then the agent is lost",
        RunEnd(S.ACTIVE, None, agent_lost=True, searcher_stopped=True),
        ("COMPLETED", True),
        STOPPED_BY_SEARCHER,
        False,
    ),
    (
        "searcher stop, then a user kill",
        RunEnd(S.STOPPING_KILLED, -9, kill_requested=True, searcher_stopped=True),
        CANCELED,
        KILLED,
        False,
    ),
    (
        "searcher stop, then a cancel",
        RunEnd(S.STOPPING_CANCELED, 0, preempt_requested=True, preempt_acked=True, searcher_stopped=True),
        CANCELED,
        PREEMPTED,
        False,
    ),
]


@pytest.mark.parametrize(("case", "end", "trial", "reason", "counts"), CASES, ids=[c[0] for c in CASES])
def test_each_way_a_run_can_end(
    case: str, end: RunEnd, trial: tuple[str, bool], reason: str, counts: bool
) -> None:
    assert decide(end) == Outcome(trial[0], trial[1], reason, counts_restart=counts), case


def test_only_user_code_failures_count_and_the_budget_allows_max_restarts_plus_one_runs() -> None:
    # max_restarts: 2 with a trial that always fails: runs 1 and 2 are retried, run 3 ends in ERROR.
    restarts, states = 0, []
    for _ in range(3):
        outcome = decide(RunEnd(S.ACTIVE, 1, restarts=restarts, max_restarts=2))
        restarts += outcome.counts_restart
        states.append(outcome.trial_state)
    assert states == ["ACTIVE", "ACTIVE", "ERROR"] and restarts == 3

    # Any number of agent losses, preemptions, drains and timeouts in between changes nothing.
    not_counted = [
        RunEnd(S.ACTIVE, None, agent_lost=True, restarts=2, max_restarts=2),
        RunEnd(S.ACTIVE, 0, preempt_requested=True, preempt_acked=True, restarts=2, max_restarts=2),
        RunEnd(S.ACTIVE, -9, agent_draining=True, restarts=2, max_restarts=2),
        RunEnd(S.ACTIVE, -9, kill_requested=True, preempt_requested=True, restarts=2, max_restarts=2),
    ]
    for end in not_counted * 10:
        assert decide(end).trial_state == "ACTIVE" and not decide(end).counts_restart


def test_max_restarts_zero_ends_the_first_failure_in_error() -> None:
    assert decide(RunEnd(S.ACTIVE, 1, max_restarts=0)) == Outcome("ERROR", True, EXITED, counts_restart=True)
