"""Scheduler placement: who starts, where, and on which slots, from one snapshot of the cluster."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart_master.scheduler import (
    DEFAULT_PRIORITY,
    AgentCapacity,
    Assignment,
    Holder,
    Plan,
    Preemption,
    Request,
    Running,
    SlotRef,
    plan,
    schedule,
)

pytestmark = pytest.mark.unit

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def request(
    n: int,
    *,
    slots: int = 1,
    priority: int | None = None,
    at: int | None = None,
    experiment: int = 1,
    pool: str = "default",
    max_slots: int | None = None,
) -> Request:
    """Request number ``n``: allocation id and trial id derived from n, submitted n seconds in."""
    return Request(
        allocation_id=uuid.UUID(int=n),
        trial_id=n,
        experiment_id=experiment,
        resource_pool=pool,
        slots_needed=slots,
        priority=priority,
        submitted_at=T0 + timedelta(seconds=n if at is None else at),
        max_slots=max_slots,
    )


_slot_ids = iter(range(1, 10**9))


def agent(
    agent_id: str,
    free: int,
    *,
    pool: str = "default",
    enabled: bool = True,
    draining: bool = False,
) -> AgentCapacity:
    slots = [SlotRef(slot_id=next(_slot_ids), index=i, uuid=f"{agent_id}-gpu{i}") for i in range(free)]
    return AgentCapacity(agent_id, pool, enabled, draining, slots)


def started(assignments: list[Assignment]) -> list[int]:
    return [a.trial_id for a in assignments]


def placed(assignments: list[Assignment]) -> dict[int, str]:
    return {a.trial_id: a.agent_id for a in assignments}


# --- queue order ----------------------------------------------------------------------------------


def test_a_later_priority_10_request_starts_before_an_earlier_priority_50_one() -> None:
    result = plan([request(1, priority=50), request(2, priority=10)], [agent("a", 1)], [])
    assert started(result) == [2]


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        (request(1, priority=None), request(2, priority=DEFAULT_PRIORITY), 1),  # unset = 42, then age
        (request(1, priority=50), request(2, priority=None), 2),
        (request(1, priority=None), request(2, priority=10), 2),
        (request(1, priority=30), request(2, priority=30), 1),  # same priority: older first
        (request(2, priority=30, at=5), request(1, priority=30, at=5), 1),  # same time: id breaks the tie
        (request(1, priority=99), request(2, priority=1), 2),
    ],
)
def test_queue_order_is_priority_then_age_then_id(first: Request, second: Request, winner: int) -> None:
    assert started(plan([first, second], [agent("a", 1)], [])) == [winner]
    assert started(plan([second, first], [agent("a", 1)], [])) == [winner]


def test_four_one_slot_requests_on_two_slots_start_the_two_oldest() -> None:
    result = plan([request(n) for n in (4, 2, 3, 1)], [agent("a", 2)], [])
    assert started(result) == [1, 2]
    assert sorted(s.index for a in result for s in a.slots) == [0, 1]


def test_two_agents_share_the_work() -> None:
    result = plan([request(n) for n in range(1, 5)], [agent("a", 2), agent("b", 2)], [])
    assert len(result) == 4
    assert Counter(placed(result).values()) == {"a": 2, "b": 2}


# --- gangs and fitting ----------------------------------------------------------------------------


def test_a_two_slot_request_waits_instead_of_taking_one_slot_on_each_of_two_agents() -> None:
    assert plan([request(1, slots=2)], [agent("a", 1), agent("b", 1)], []) == []
    [assignment] = plan([request(1, slots=2)], [agent("a", 1), agent("b", 2)], [])
    assert assignment.agent_id == "b" and len(assignment.slots) == 2
    assert {s.uuid for s in assignment.slots} == {"b-gpu0", "b-gpu1"}


def test_best_fit_takes_the_smallest_hole_that_fits() -> None:
    agents = [agent("big", 4), agent("small", 2), agent("mid", 3)]
    assert placed(plan([request(1, slots=2)], agents, [])) == {1: "small"}
    assert placed(plan([request(1, slots=3)], agents, [])) == {1: "mid"}
    assert placed(plan([request(1, slots=1)], agents, [])) == {1: "small"}


def test_best_fit_keeps_the_big_hole_for_the_big_gang() -> None:
    # Worst fit would put the 2-slot trial on the 4-slot agent and leave the 4-slot trial waiting.
    result = plan([request(1, slots=2), request(2, slots=4)], [agent("a", 4), agent("b", 2)], [])
    assert placed(result) == {1: "b", 2: "a"}


def test_equal_holes_are_broken_by_agent_id() -> None:
    assert placed(plan([request(1)], [agent("z", 2), agent("m", 2)], [])) == {1: "m"}


def test_slots_are_taken_lowest_index_first() -> None:
    slots = [SlotRef(30, 3, "u3"), SlotRef(10, 1, "u1"), SlotRef(0, 0, "u0"), SlotRef(20, 2, "u2")]
    [first, second] = plan(
        [request(1, slots=2), request(2, slots=2)], [AgentCapacity("a", "default", True, False, slots)], []
    )
    assert [s.index for s in first.slots] == [0, 1]
    assert [s.index for s in second.slots] == [2, 3]


def test_a_request_that_cannot_fit_does_not_block_smaller_later_ones() -> None:
    pending = [request(1, slots=4, priority=1), request(2, slots=1, priority=90)]
    assert started(plan(pending, [agent("a", 2)], [])) == [2]


def test_a_request_bigger_than_every_agent_waits_forever_without_error() -> None:
    assert plan([request(1, slots=9)], [agent("a", 8)], []) == []


# --- max_slots ------------------------------------------------------------------------------------


def test_max_slots_counts_running_and_newly_planned_slots() -> None:
    pending = [request(n, experiment=7, max_slots=4) for n in range(1, 5)]
    running = [Running(7, 1), Running(7, 1)]  # entries for the same experiment are summed
    assert started(plan(pending, [agent("a", 8)], running)) == [1, 2]


def test_max_slots_is_per_experiment() -> None:
    pending = [
        request(1, experiment=1, max_slots=1),
        request(2, experiment=1, max_slots=1),
        request(3, experiment=2, max_slots=1),
        request(4, experiment=3),
    ]
    assert started(plan(pending, [agent("a", 8)], [Running(2, 0)])) == [1, 3, 4]


def test_a_gang_over_max_slots_waits_while_a_smaller_trial_of_the_same_experiment_fits() -> None:
    pending = [request(1, slots=2, max_slots=3), request(2, slots=1, max_slots=3)]
    assert started(plan(pending, [agent("a", 8)], [Running(1, 2)])) == [2]


# --- agents and pools -----------------------------------------------------------------------------


def test_disabled_and_draining_agents_get_nothing() -> None:
    agents = [agent("a", 4, enabled=False), agent("b", 4, draining=True), agent("c", 1)]
    result = plan([request(n) for n in range(1, 4)] + [request(9, slots=0)], agents, [])
    assert placed(result) == {1: "c", 9: "c"}
    assert plan([request(1), request(2, slots=0)], agents[:2], []) == []


def test_resource_pools_are_isolated() -> None:
    agents = [agent("cpu-1", 4, pool="cpu"), agent("gpu-1", 1, pool="gpu")]
    pending = [
        request(1, pool="gpu"),
        request(2, pool="gpu"),  # the gpu pool is full; cpu slots must not be borrowed
        request(3, pool="cpu", priority=99),  # low priority elsewhere does not wait on the gpu queue
        request(4, pool="nowhere"),
    ]
    assert placed(plan(pending, agents, [])) == {1: "gpu-1", 3: "cpu-1"}


# --- zero-slot trials -----------------------------------------------------------------------------


def test_zero_slot_trials_run_without_slots_and_are_spread_over_agents() -> None:
    agents = [agent("a", 0), agent("b", 1)]
    result = plan([request(n, slots=0) for n in range(1, 4)] + [request(9)], agents, [])
    by_trial = {a.trial_id: a for a in result}
    assert all(by_trial[n].slots == () for n in (1, 2, 3))
    assert Counter(by_trial[n].agent_id for n in (1, 2, 3)) == {"a": 1, "b": 2} or Counter(
        by_trial[n].agent_id for n in (1, 2, 3)
    ) == {"a": 2, "b": 1}
    assert by_trial[9].agent_id == "b" and len(by_trial[9].slots) == 1  # zero-slot trials took none


def test_zero_slot_trials_ignore_max_slots() -> None:
    result = plan([request(1, slots=0, max_slots=1)], [agent("a", 0)], [Running(1, 1)])
    assert started(result) == [1]


# --- bad or odd input -----------------------------------------------------------------------------


def test_a_slot_listed_twice_is_assigned_once() -> None:
    shared = SlotRef(5, 0, "dup")
    agents = [
        AgentCapacity("a", "default", True, False, [shared]),
        AgentCapacity("b", "default", True, False, [shared, shared]),
    ]
    result = plan([request(1), request(2), request(3)], agents, [])
    assert started(result) == [1]


def test_an_allocation_listed_twice_is_placed_once() -> None:
    assert started(plan([request(1), request(1)], [agent("a", 2)], [])) == [1]


def test_negative_slot_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="-1 slots"):
        plan([request(1, slots=-1)], [agent("a", 1)], [])


def test_nothing_pending_or_no_agents_plans_nothing() -> None:
    assert plan([], [agent("a", 2)], []) == []
    assert plan([request(1)], [], []) == []


# --- properties under random input ----------------------------------------------------------------

POOLS = ["default", "gpu"]


@st.composite
def cluster(draw: st.DrawFn) -> tuple[list[Request], list[AgentCapacity], list[Running]]:
    caps = {e: draw(st.one_of(st.none(), st.integers(1, 6))) for e in range(1, 4)}
    ids = draw(st.lists(st.integers(1, 1000), unique=True, max_size=25))  # duplicates: a test of their own
    pending = [
        Request(
            allocation_id=uuid.UUID(int=allocation),
            trial_id=n,
            experiment_id=(e := draw(st.integers(1, 3))),
            resource_pool=draw(st.sampled_from(POOLS)),
            slots_needed=draw(st.integers(0, 4)),
            priority=draw(st.one_of(st.none(), st.integers(1, 99))),
            submitted_at=T0 + timedelta(seconds=draw(st.integers(0, 10))),
            max_slots=caps[e],
        )
        for n, allocation in enumerate(ids)
    ]
    slot_id = 0
    agents = []
    for i in range(draw(st.integers(0, 5))):
        free = []
        for index in range(draw(st.integers(0, 8))):
            if draw(st.integers(0, 9)) == 0 and slot_id:
                free.append(SlotRef(draw(st.integers(0, slot_id - 1)), index, "reused"))  # bad input
            else:
                slot_id += 1
                free.append(SlotRef(slot_id, index, f"a{i}-{index}"))
        agents.append(
            AgentCapacity(
                f"a{i}", draw(st.sampled_from(POOLS)), draw(st.booleans()), draw(st.booleans()), free
            )
        )
    running = [Running(e, draw(st.integers(0, 3))) for e in draw(st.lists(st.integers(1, 3), max_size=4))]
    return pending, agents, running


@given(snapshot=cluster(), shuffle_seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_plans_never_double_book_and_never_leave_a_fitting_request_waiting(
    snapshot: tuple[list[Request], list[AgentCapacity], list[Running]], shuffle_seed: int
) -> None:
    pending, agents, running = snapshot
    result = plan(pending, agents, running)

    by_agent = {a.agent_id: a for a in agents}
    requests = {r.allocation_id: r for r in pending}
    slot_ids = [s.slot_id for a in result for s in a.slots]
    assert len(slot_ids) == len(set(slot_ids)), "a slot was booked twice"
    assert len({a.allocation_id for a in result}) == len(result)

    remaining = {a.agent_id: {s.slot_id for s in a.free_slots} for a in agents}
    for assignment in result:
        req = requests[assignment.allocation_id]
        host = by_agent[assignment.agent_id]
        assert host.enabled and not host.draining and host.resource_pool == req.resource_pool
        assert len(assignment.slots) == req.slots_needed
        assert {s.slot_id for s in assignment.slots} <= {s.slot_id for s in host.free_slots}
        for ids in remaining.values():
            ids -= {s.slot_id for s in assignment.slots}

    held = Counter[int]()
    for r in running:
        held[r.experiment_id] += r.slots
    for assignment in result:
        held[assignment.experiment_id] += len(assignment.slots)
    # Every request of an experiment carries the same cap, as in the master.
    caps = {r.experiment_id: r.max_slots for r in pending}
    for experiment in {a.experiment_id for a in result if a.slots}:
        cap = caps[experiment]
        assert cap is None or held[experiment] <= cap, "newly planned slots went over max_slots"

    # Greedy and backfilling: whatever still waits could not have started with what is left. Only
    # for clean input: with a slot listed under two agents, which agent really has it is moot.
    placed_ids = {a.allocation_id for a in result}
    for req in [] if _has_reused_slots(agents) else pending:
        if req.allocation_id in placed_ids:
            continue
        pool_agents = [
            a for a in agents if a.resource_pool == req.resource_pool and a.enabled and not a.draining
        ]
        if req.slots_needed == 0:
            assert not pool_agents
            continue
        over_cap = req.max_slots is not None and held[req.experiment_id] + req.slots_needed > req.max_slots
        fits = any(len(remaining[a.agent_id]) >= req.slots_needed for a in pool_agents)
        assert over_cap or not fits, f"{req} could have started"

    # The inputs' order does not matter.
    rng = random.Random(shuffle_seed)
    shuffled_agents = [
        AgentCapacity(
            a.agent_id, a.resource_pool, a.enabled, a.draining, rng.sample(a.free_slots, len(a.free_slots))
        )
        for a in rng.sample(agents, len(agents))
    ]
    again = plan(rng.sample(pending, len(pending)), shuffled_agents, rng.sample(running, len(running)))
    if not _has_reused_slots(agents):
        assert again == result


def _has_reused_slots(agents: list[AgentCapacity]) -> bool:
    ids = [s.slot_id for a in agents for s in a.free_slots]
    return len(ids) != len(set(ids))


@given(snapshot=cluster())
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_a_started_request_is_never_behind_a_waiting_one_that_needs_no_more(
    snapshot: tuple[list[Request], list[AgentCapacity], list[Running]],
) -> None:
    """Priority order: if a request waits, no later request of its pool with the same needs started."""
    pending, agents, running = snapshot
    pending = [r for r in pending if r.max_slots is None]  # caps are the one legal reason to skip ahead
    result = plan(pending, agents, running)
    placed_ids = {a.allocation_id for a in result}
    for waiting in pending:
        if waiting.allocation_id in placed_ids:
            continue
        for other in pending:
            if (
                other.allocation_id in placed_ids
                and other.resource_pool == waiting.resource_pool
                and other.slots_needed >= waiting.slots_needed
            ):
                key_w = (waiting.priority or DEFAULT_PRIORITY, waiting.submitted_at, waiting.allocation_id)
                key_o = (other.priority or DEFAULT_PRIORITY, other.submitted_at, other.allocation_id)
                assert key_o < key_w, f"{other} jumped ahead of {waiting}"


# --- priority preemption ----------------------------------------------------------------------------


def holder(
    n: int,
    agent_id: str,
    *,
    slots: int = 1,
    priority: int | None = None,
    at: int = 0,
    preempting: bool = False,
) -> Holder:
    """Running allocation number ``n`` (ids far from the requests'), started ``at`` seconds in."""
    return Holder(uuid.UUID(int=1000 + n), agent_id, slots, priority, T0 + timedelta(seconds=at), preempting)


def victims(result: Plan) -> list[int]:
    return sorted(p.allocation_id.int - 1000 for p in result.preemptions)


def preempt(pending: list[Request], agents: list[AgentCapacity], holders: list[Holder]) -> Plan:
    return schedule(pending, agents, [], holders, preemptive_pools={"default"})


def test_a_waiting_priority_10_request_preempts_the_least_important_youngest_holder_only() -> None:
    busy = [
        holder(1, "a", priority=42, at=1),
        holder(2, "a", priority=60, at=2),
        holder(3, "a", priority=60, at=3),  # least important and youngest
    ]
    result = preempt([request(1, priority=10)], [agent("a", 0)], busy)
    assert result.assignments == [] and victims(result) == [3]
    assert result.preemptions == [Preemption(uuid.UUID(int=1003), uuid.UUID(int=1), "a")]
    # Two slots: just enough victims, still the least important ones first.
    assert victims(preempt([request(1, slots=2, priority=10)], [agent("a", 0)], busy)) == [2, 3]


def test_equal_or_more_important_holders_are_never_preempted() -> None:
    busy = [holder(1, "a", priority=42), holder(2, "a", priority=10)]
    assert preempt([request(1, priority=42)], [agent("a", 0)], busy) == Plan([], [])
    assert preempt([request(1)], [agent("a", 0)], busy) == Plan([], [])  # unset priority is 42


def test_without_preemption_in_the_pool_a_waiting_request_only_waits() -> None:
    busy = [holder(1, "a", priority=60)]
    assert schedule([request(1, priority=10)], [agent("a", 0)], [], busy) == Plan([], [])
    other_pool = schedule([request(1, priority=10)], [agent("a", 0)], [], busy, preemptive_pools={"gpu"})
    assert other_pool == Plan([], [])


def test_a_run_already_asked_to_stop_is_not_asked_again_and_its_slots_are_counted() -> None:
    # The pass after the preemption: the victim is leaving, so nobody else is preempted (no flapping).
    busy = [holder(1, "a", priority=60, at=1), holder(2, "a", priority=60, at=2, preempting=True)]
    assert preempt([request(1, priority=10)], [agent("a", 0)], busy) == Plan([], [])
    # Once it has gone, its slot goes to the request that preempted it.
    [assignment] = preempt([request(1, priority=10)], [agent("a", 1)], busy[:1]).assignments
    assert assignment.allocation_id == uuid.UUID(int=1)


def test_slots_freed_for_a_waiting_request_are_reserved_for_it() -> None:
    # Request 1 needs both slots of "a": one is free, the other is being freed. The preempted trial's
    # own new run (priority 60) and a priority-50 request must not take the free one meanwhile...
    busy = [holder(1, "a", priority=60, preempting=True)]
    pending = [request(1, slots=2, priority=10), request(2, priority=60), request(3, priority=50)]
    result = preempt(pending, [agent("a", 1)], busy)
    assert result == Plan([], [])
    # ... but they may still start on another agent.
    result = preempt(pending, [agent("a", 1), agent("b", 1)], busy)
    assert started(result.assignments) == [3] and placed(result.assignments) == {3: "b"}
    # Outside preemptive pools, backfill stays as it was: the free slot is taken.
    assert started(schedule(pending, [agent("a", 1)], [], busy).assignments) == [3]


def test_the_agent_needing_the_fewest_preempted_slots_is_chosen() -> None:
    busy = [
        holder(1, "a", slots=2, priority=60),
        holder(2, "b", slots=1, priority=60, at=2),
        holder(3, "b", slots=1, priority=60, at=1),
    ]
    agents = [agent("a", 0), agent("b", 1)]
    assert victims(preempt([request(1, slots=2, priority=10)], agents, busy)) == [2]
    # A surplus freed by one victim is counted for the next request of the same pass.
    busy = [holder(1, "a", slots=2, priority=60)]
    two = [request(1, priority=10), request(2, priority=20)]
    assert victims(preempt(two, [agent("a", 0)], busy)) == [1]


def test_preemption_honours_max_slots_and_disabled_agents() -> None:
    busy = [holder(1, "a", priority=60)]
    capped = request(1, priority=10, max_slots=1)
    assert victims(preempt([capped], [agent("a", 0)], busy)) == [1]
    over_cap = schedule([capped], [agent("a", 0)], [Running(1, 1)], busy, {"default"})
    assert over_cap == Plan([], [])
    assert preempt([request(1, priority=10)], [agent("a", 0, enabled=False)], busy) == Plan([], [])


@st.composite
def contended(draw: st.DrawFn) -> tuple[list[Request], list[AgentCapacity], list[Holder]]:
    agents = [agent(f"a{i}", draw(st.integers(0, 2))) for i in range(draw(st.integers(1, 3)))]
    holders = [
        holder(
            n,
            draw(st.sampled_from([a.agent_id for a in agents])),
            slots=draw(st.integers(0, 3)),
            priority=draw(st.integers(1, 99)),
            at=draw(st.integers(0, 5)),
            preempting=draw(st.integers(0, 4)) == 0,
        )
        for n in range(draw(st.integers(0, 8)))
    ]
    pending = [
        request(n, slots=draw(st.integers(0, 4)), priority=draw(st.integers(1, 99)))
        for n in range(1, draw(st.integers(1, 6)))
    ]
    return pending, agents, holders


@given(snapshot=contended())
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_preemption_only_stops_less_important_runs_once_and_only_when_needed(
    snapshot: tuple[list[Request], list[AgentCapacity], list[Holder]],
) -> None:
    pending, agents, holders = snapshot
    result = preempt(pending, agents, holders)
    by_id = {h.allocation_id: h for h in holders}
    requests = {r.allocation_id: r for r in pending}
    placed_ids = {a.allocation_id for a in result.assignments}
    chosen = [p.allocation_id for p in result.preemptions]
    assert len(chosen) == len(set(chosen)), "a run was preempted twice in one pass"
    for p in result.preemptions:
        victim, waiting = by_id[p.allocation_id], requests[p.for_allocation_id]
        assert not victim.preempting and victim.slots > 0 and victim.agent_id == p.agent_id
        assert victim.effective_priority > waiting.effective_priority
        assert waiting.allocation_id not in placed_ids, "preempted for a request that started anyway"
    # Just enough: without its last victim, a lone waiting request would not fit on that agent.
    free = {a.agent_id: len(a.free_slots) for a in agents}
    for waiting_id in {p.for_allocation_id for p in result.preemptions} if len(pending) == 1 else ():
        mine = [by_id[p.allocation_id] for p in result.preemptions if p.for_allocation_id == waiting_id]
        agent_id = mine[0].agent_id
        leaving = sum(h.slots for h in holders if h.preempting and h.agent_id == agent_id)
        assert free[agent_id] + leaving + sum(h.slots for h in mine[:-1]) < requests[waiting_id].slots_needed
    # Without preemption the same snapshot starts the same runs or more (reservations only hold back).
    assert len(schedule(pending, agents, [], holders).assignments) >= len(result.assignments)
    assert preempt(list(reversed(pending)), list(reversed(agents)), list(reversed(holders))) == result
