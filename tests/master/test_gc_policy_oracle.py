"""The GC selector against Determined's documented table (experiment-config-reference, "Checkpoint
Garbage Collection"): 10 checkpoints of 2 trials, the saved set for 11 policies."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from stalwart_master.services.gc import Candidate, GCPolicy, select_for_deletion

pytestmark = pytest.mark.unit

# id -> (trial, validation metric); ids are in step order within each trial.
TABLE: dict[int, tuple[int, float | None]] = {
    1: (1, None),
    2: (1, None),
    3: (1, 0.6),
    4: (1, 0.5),
    5: (1, 0.4),
    6: (2, None),
    7: (2, 0.2),
    8: (2, 0.3),
    9: (2, None),
    10: (2, None),
}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def candidates(table: dict[int, tuple[int, float | None]] = TABLE) -> list[Candidate]:
    return [
        Candidate(uuid.UUID(int=i), trial, steps_completed=100 * i, created_at=T0 + dt.timedelta(i), value=v)
        for i, (trial, v) in table.items()
    ]


def saved(policy: GCPolicy, found: list[Candidate], **kwargs: object) -> set[int]:
    deleted = select_for_deletion(found, policy, **kwargs)  # type: ignore[arg-type]
    return {c.uuid.int for c in found} - {u.int for u in deleted}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ((0, 0, 0), set()),
        ((2, 0, 0), {8, 7}),
        ((5, 0, 0), {8, 7, 5, 4, 3}),
        ((0, 1, 0), {7, 5}),
        ((0, 3, 0), {8, 7, 5, 4, 3}),
        ((0, 0, 1), {10, 5}),
        ((0, 0, 3), {10, 9, 8, 5, 4, 3}),
        ((2, 1, 0), {8, 7, 5}),
        ((2, 0, 1), {10, 8, 7, 5}),
        ((0, 1, 1), {10, 7, 5}),
        ((2, 1, 1), {10, 8, 7, 5}),
    ],
)
def test_saved_sets_match_determineds_documented_table(
    policy: tuple[int, int, int], expected: set[int]
) -> None:
    assert saved(GCPolicy(*policy), candidates(), smaller_is_better=True) == expected


def test_bigger_is_better_reverses_the_ranking() -> None:
    flipped = {i: (trial, None if v is None else -v) for i, (trial, v) in TABLE.items()}
    assert saved(GCPolicy(2, 1, 0), candidates(flipped), smaller_is_better=False) == {8, 7, 5}
    # The same values read as bigger-is-better keep the other end.
    assert saved(GCPolicy(2, 0, 0), candidates(), smaller_is_better=False) == {3, 4}


def test_a_running_trial_keeps_its_newest_checkpoint_even_with_nothing_saved() -> None:
    assert saved(GCPolicy(0, 0, 0), candidates(), smaller_is_better=True, live_trials={2}) == {10}
    assert saved(GCPolicy(0, 0, 0), candidates(), smaller_is_better=True, live_trials={1, 2}) == {5, 10}


def test_protected_checkpoints_are_never_selected() -> None:
    keep = {uuid.UUID(int=1), uuid.UUID(int=9)}
    assert saved(GCPolicy(0, 0, 0), candidates(), smaller_is_better=True, keep=keep) == {1, 9}


def test_equal_values_rank_by_step_so_the_earlier_checkpoint_wins() -> None:
    tied = {1: (1, 0.5), 2: (1, 0.5), 3: (1, 0.5)}
    assert saved(GCPolicy(0, 1, 0), candidates(tied), smaller_is_better=True) == {1}
    assert saved(GCPolicy(1, 0, 1), candidates(tied), smaller_is_better=True) == {1, 3}


def test_policy_defaults_are_determineds_and_read_from_the_stored_config() -> None:
    assert GCPolicy.of({}) == GCPolicy(0, 1, 1)
    config = {"checkpoint_storage": {"type": "shared_fs", "save_trial_latest": 3, "save_experiment_best": 2}}
    assert GCPolicy.of(config) == GCPolicy(2, 1, 3)
