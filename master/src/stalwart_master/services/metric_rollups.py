"""Rollups of metric series: per fixed step bucket and metric name, the least and greatest value
with their steps, so a chart of a million steps reads a few thousand rollups, not a million rows.

A group's steps fall into buckets of ``BUCKET_STEPS``. A bucket is complete once the group has a
live row in a later bucket; the mark row of a (trial, group) says how many buckets from 0 are rolled
up (``upto_bucket``) and how many live rows they hold. Rows at or past the mark (the tail: the
last, still open bucket) are read raw. Ingestion rolls up buckets as they complete; a late row in
a rolled-up bucket has that bucket rolled up again; archiving rows (a restart from an earlier
checkpoint) drops the rollups from the first archived step's bucket on. Everyone who changes
rollups first locks the mark row (``_lock``), so a rollup is always computed from a snapshot that
includes every committed row.

Rows written straight into ``metrics`` with SQL are seen only in buckets not yet rolled up.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

# 256 steps a bucket: a chart of max_points over a shorter series reads the raw rows instead
# (metric_series), so this bounds that read to 128 * max_points rows.
BUCKET_STEPS = 256

# Values stored as numbers, or as the spellings JSONB keeps NaN and the infinities in; anything else
# (another string, a bool, a nested value, only ever written straight into the table) is skipped.
NUMERIC = """(jsonb_typeof(e.value) = 'number'
              OR e.value IN ('"NaN"'::jsonb, '"Infinity"'::jsonb, '"-Infinity"'::jsonb))"""

_LOCK = text(
    """
    INSERT INTO metric_rollup_marks (trial_id, "group", upto_bucket, rows)
    VALUES (:trial, :group, 0, 0)
    ON CONFLICT (trial_id, "group") DO UPDATE SET upto_bucket = metric_rollup_marks.upto_bucket
    RETURNING upto_bucket, rows
    """
)
_SET = text(
    """UPDATE metric_rollup_marks SET upto_bucket = :upto, rows = :rows
       WHERE trial_id = :trial AND "group" = :group"""
)
_READ = text("""SELECT upto_bucket FROM metric_rollup_marks WHERE trial_id = :trial AND "group" = :group""")
_DROP = text(
    """DELETE FROM metric_rollups WHERE trial_id = :trial AND "group" = :group
       AND bucket >= :lo AND bucket < :hi"""
)
# Arrays compare element by element: the least [value, step] is the least value at its first step,
# the greatest the greatest value at its last, and float8 orders NaN above +Infinity. A bucket rolled
# up again (a late row) only gains rows, so overwriting its rollups leaves none stale. The statement
# returns the buckets' live row count, counted on the live-rows index alone.
_ROLL = text(
    f"""
    WITH rolled AS (
        INSERT INTO metric_rollups
            (trial_id, "group", name, bucket, min_value, min_step, max_value, max_step, rows)
        SELECT :trial, :group, name, bucket, lo[1], lo[2]::bigint, hi[1], hi[2]::bigint, n
        FROM (
            SELECT e.key AS name, m.steps_completed / {BUCKET_STEPS} AS bucket,
                   min(ARRAY[(e.value #>> '{{}}')::float8, m.steps_completed::float8]) AS lo,
                   max(ARRAY[(e.value #>> '{{}}')::float8, m.steps_completed::float8]) AS hi,
                   count(*) AS n
            FROM metrics m CROSS JOIN LATERAL jsonb_each(m.values) e
            WHERE m.trial_id = :trial AND m."group" = :group AND NOT m.archived
              AND m.steps_completed >= :lo * {BUCKET_STEPS} AND m.steps_completed < :hi * {BUCKET_STEPS}
              AND {NUMERIC}
            GROUP BY 1, 2
        ) found
        ON CONFLICT (trial_id, "group", name, bucket) DO UPDATE SET
            min_value = excluded.min_value, min_step = excluded.min_step,
            max_value = excluded.max_value, max_step = excluded.max_step, rows = excluded.rows
    )
    SELECT count(*) FROM metrics
    WHERE trial_id = :trial AND "group" = :group AND NOT archived
      AND steps_completed >= :lo * {BUCKET_STEPS} AND steps_completed < :hi * {BUCKET_STEPS}
    """
)
_LIVE_BETWEEN = text(
    """SELECT count(*) FROM metrics WHERE trial_id = :trial AND "group" = :group AND NOT archived
       AND steps_completed >= :lo AND steps_completed < :hi"""
)


def _lock(session: Session, trial_id: int, group: str) -> tuple[int, int]:
    """The group's mark, created at 0 if missing, locked until the transaction ends."""
    upto, rows = session.execute(_LOCK, {"trial": trial_id, "group": group}).one()
    return int(upto), int(rows)


def _set(session: Session, trial_id: int, group: str, upto: int, rows: int) -> None:
    session.execute(_SET, {"trial": trial_id, "group": group, "upto": upto, "rows": rows})


def _roll(session: Session, trial_id: int, group: str, lo: int, hi: int) -> int:
    """Rolls buckets ``[lo, hi)`` up from the live rows; returns how many live rows they hold."""
    params = {"trial": trial_id, "group": group, "lo": lo, "hi": hi}
    return int(session.execute(_ROLL, params).scalar_one())


def _live_between(session: Session, trial_id: int, group: str, lo: int, hi: int) -> int:
    """Live rows with steps in ``[lo, hi)``: an index-only range of the live-rows index."""
    params = {"trial": trial_id, "group": group, "lo": lo, "hi": hi}
    return int(session.execute(_LIVE_BETWEEN, params).scalar_one())


def _by_group(rows: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = defaultdict(list)
    for group, step in rows:
        steps[group].append(int(step))
    return steps


def after_ingest(session: Session, trial_id: int, stored: Iterable[tuple[str, int]]) -> None:
    """Keeps the rollups exact after new live rows (group, step): buckets they complete are rolled
    up, and a bucket already rolled up that got a row is rolled up again (a retried or late batch)."""
    for group, steps in sorted(_by_group(stored).items()):  # one lock order for every writer
        upto, rows = _lock(session, trial_id, group)
        late = Counter(step // BUCKET_STEPS for step in steps if step // BUCKET_STEPS < upto)
        for bucket, added in sorted(late.items()):
            _roll(session, trial_id, group, bucket, bucket + 1)
            rows += added
        top = max(steps) // BUCKET_STEPS
        if top > upto:
            rows += _roll(session, trial_id, group, upto, top)
        if late or top > upto:
            _set(session, trial_id, group, max(upto, top), rows)


def catch_up(session: Session, trial_id: int, group: str, last_step: int) -> None:
    """Rolls up every complete bucket before ``last_step``'s: series stored before rollups existed,
    or written straight into the table. Takes the lock only when something is missing."""
    top = last_step // BUCKET_STEPS
    upto = session.scalar(_READ, {"trial": trial_id, "group": group})
    if upto is not None and int(upto) >= top:
        return
    upto, rows = _lock(session, trial_id, group)
    if upto < top:
        rows += _roll(session, trial_id, group, upto, top)
        _set(session, trial_id, group, top, rows)


def forget(session: Session, trial_id: int, archived: Iterable[tuple[str, int]]) -> None:
    """After rows (group, step) were archived: the rollups from the bucket of each group's first
    archived step on are dropped and the mark lowered to it, in the archiving transaction."""
    for group, steps in sorted(_by_group(archived).items()):
        upto, rows = _lock(session, trial_id, group)
        lo = min(steps) // BUCKET_STEPS
        if lo >= upto:
            continue
        end = upto * BUCKET_STEPS
        # The mark counted the archived rows below it, and the live rows left in the dropped buckets.
        gone = sum(step < end for step in steps)
        gone += _live_between(session, trial_id, group, lo * BUCKET_STEPS, end)
        session.execute(_DROP, {"trial": trial_id, "group": group, "lo": lo, "hi": upto})
        _set(session, trial_id, group, lo, rows - gone)
