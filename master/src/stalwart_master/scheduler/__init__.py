"""Scheduling: which pending allocation gets which slots, as one pure function over a snapshot.

>>> assignments = plan(pending, agents, running)
>>> for a in assignments: ...  # insert allocation_slots rows; the DB's unique index is the last word

Queues per resource pool by priority then submission time, places a whole trial on one agent (best
fit), honours each experiment's ``max_slots`` and backfills around requests that do not fit;
``schedule`` also picks lower-priority runs to preempt where a pool allows it.
"""

from stalwart_master.scheduler.placement import (
    DEFAULT_PRIORITY,
    AgentCapacity,
    Assignment,
    Holder,
    Plan,
    Preemption,
    PreemptionPolicy,
    Request,
    Running,
    SlotRef,
    plan,
    schedule,
)

__all__ = [
    "DEFAULT_PRIORITY",
    "AgentCapacity",
    "Assignment",
    "Holder",
    "Plan",
    "Preemption",
    "PreemptionPolicy",
    "Request",
    "Running",
    "SlotRef",
    "plan",
    "schedule",
]
