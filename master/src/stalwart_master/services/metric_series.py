"""Metric series as charts read them: downsampled on the server, and the latest row per trial.

A trial may report a million steps; a chart needs a few hundred points that keep the shape,
spikes included. Each series is cut into equal step ranges (buckets) and, per bucket and metric,
the rows holding its smallest and its largest value are kept, with the first and last rows.

A series spanning at least ``max_points / 2`` rollup buckets (services/metric_rollups.py) is cut
into ranges of whole rollup buckets and read from the rollups plus its raw tail: a few thousand
rows whatever its length. A shorter one is bucketed in one aggregate pass over its rows. Either
way no row of the series is loaded into Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    Text,
    cast,
    column,
    func,
    literal,
    select,
    text,
    true,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, array
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Metric
from stalwart_master.services import metric_rollups
from stalwart_master.services.metric_rollups import BUCKET_STEPS, NUMERIC
from stalwart_master.services.trials import decode_value

# Past this many metric names the bucket pass would be one wide row of aggregates per bucket.
MAX_KEYS = 200


@dataclass(frozen=True)
class Series:
    """Rows to draw, sorted by (group, steps); ``total`` counts the live rows of the group(s)."""

    rows: list[Metric]
    total: int
    downsampled: bool


def _live(trial_id: int, group: str) -> list[ColumnElement[bool]]:
    # These three match the partial unique index uq_metrics_live_trial_group_steps.
    return [Metric.trial_id == trial_id, Metric.group == group, Metric.archived.is_(False)]


def live_groups(session: Session, trial_id: int) -> list[str]:
    """The trial's groups, by a skip scan over the live-rows index (a few probes, not a scan)."""
    query = text(
        """
        WITH RECURSIVE g(name) AS (
            SELECT min("group") FROM metrics WHERE trial_id = :trial AND NOT archived
            UNION ALL
            SELECT (SELECT min("group") FROM metrics
                    WHERE trial_id = :trial AND NOT archived AND "group" > g.name)
            FROM g WHERE g.name IS NOT NULL
        )
        SELECT name FROM g WHERE name IS NOT NULL
        """
    )
    return [str(name) for name in session.scalars(query, {"trial": trial_id})]


def _number(key: str) -> ColumnElement[float]:
    # ``->>`` gives the text; float8 input also reads the NaN/Infinity spellings values are stored as.
    return cast(Metric.values[key].astext, Float)


def _present(key: str) -> ColumnElement[bool]:
    return Metric.values.has_key(key)  # type: ignore[no-any-return]


def _keys_of_ends(session: Session, trial_id: int, group: str) -> list[str]:
    """Metric names of the group's first and last rows: nearly always every name it has."""
    names: set[str] = set()
    for order in (Metric.steps_completed.asc(), Metric.steps_completed.desc()):
        row = session.scalar(select(Metric.values).where(*_live(trial_id, group)).order_by(order).limit(1))
        names.update(row or {})
    return sorted(names)


def _all_keys(session: Session, trial_id: int, group: str) -> list[str]:
    keys = func.jsonb_object_keys(Metric.values).alias("key")
    query = select(keys.column).select_from(Metric).join(keys, true()).where(*_live(trial_id, group))
    return sorted(session.scalars(query.distinct()))


@dataclass(frozen=True)
class _Pass:
    count: int
    steps: set[int]
    other_keys: bool  # a row holds a metric name outside the ones bucketed


def _names(keys: Sequence[str]) -> ColumnElement[Any]:
    return cast(array(list(keys)) if keys else text("'{}'"), ARRAY(Text))


def _bucket_pass(
    session: Session,
    trial_id: int,
    group: str,
    keys: Sequence[str],
    ends: tuple[int, int],
    buckets: int,
    *,
    check_other_keys: bool,
) -> _Pass:
    """One aggregate over the group's live rows: per bucket and metric, the (value, step) pairs
    with the least and the greatest value. Arrays compare element by element, so the pair's step
    comes along with its value, and float8 orders NaN above +Infinity: non-finite values count as
    extremes and are kept. A row without the metric has a NULL value and is left out."""
    steps = cast(Metric.steps_completed, Float)
    lo, hi = ends
    inner: list[Any] = [func.width_bucket(steps, float(lo), float(hi) + 1.0, buckets).label("bucket")]
    inner += [array([_number(key), steps]).label(f"p{i}") for i, key in enumerate(keys)]
    if check_other_keys:
        rest = Metric.values.op("-", return_type=JSONB)(_names(keys))
        inner.append((rest != cast(text("'{}'"), JSONB)).label("other"))
    # OFFSET 0 keeps PostgreSQL from inlining the subquery, which would read each value out of
    # the JSON twice (once for min, once for max): that read is most of the cost.
    rows = select(*inner).where(*_live(trial_id, group)).offset(0).subquery("points")
    outer: list[Any] = [func.count()]
    for i in range(len(keys)):
        pair = rows.c[f"p{i}"]
        present = pair[1].isnot(None)
        outer += [func.min(pair).filter(present), func.max(pair).filter(present)]
    outer.append(func.bool_or(rows.c.other) if check_other_keys else literal(False))
    kept: set[int] = set()
    count = 0
    other_keys = False
    for row in session.execute(select(*outer).group_by(rows.c.bucket)):
        count += int(row[0])
        kept.update(int(pair[1]) for pair in row[1:-1] if pair is not None)
        other_keys = other_keys or bool(row[-1])
    return _Pass(count, kept, other_keys)


# One statement, so one snapshot: the mark, the rollups below it and the raw tail past it agree.
# Range r holds the rollup buckets [first + r * k, first + (r + 1) * k); per range and name the
# least and greatest [value, step] over its rollups and its tail rows are the range's own.
_EXTREMES = text(
    f"""
    WITH mark AS (
        SELECT upto_bucket, rows FROM metric_rollup_marks WHERE trial_id = :trial AND "group" = :group
    ), tail AS (
        SELECT steps_completed AS step, values FROM metrics
        WHERE trial_id = :trial AND "group" = :group AND NOT archived
          AND steps_completed >= (SELECT upto_bucket FROM mark) * {BUCKET_STEPS}
    ), points AS (
        SELECT (bucket - :first) / :k AS r, name,
               ARRAY[min_value, min_step::float8] AS lo, ARRAY[max_value, max_step::float8] AS hi
        FROM metric_rollups
        WHERE trial_id = :trial AND "group" = :group AND name = ANY(:names)
          AND bucket >= :first AND bucket < (SELECT upto_bucket FROM mark)
        UNION ALL
        SELECT (t.step / {BUCKET_STEPS} - :first) / :k, e.key, point, point
        FROM tail t CROSS JOIN LATERAL jsonb_each(t.values) e
        CROSS JOIN LATERAL (SELECT ARRAY[(e.value #>> '{{}}')::float8, t.step::float8]) AS v(point)
        WHERE e.key = ANY(:names) AND {NUMERIC}
    ), ranges AS (
        SELECT (min(lo))[2]::bigint AS lo, (max(hi))[2]::bigint AS hi FROM points GROUP BY r, name
    )
    SELECT (SELECT rows FROM mark) + (SELECT count(*) FROM tail),
           ARRAY(SELECT lo FROM ranges), ARRAY(SELECT hi FROM ranges)
    """
)
_ROLLED_NAMES = text(
    """
    WITH RECURSIVE n(name) AS (
        SELECT min(name) FROM metric_rollups WHERE trial_id = :trial AND "group" = :group
        UNION ALL
        SELECT (SELECT min(name) FROM metric_rollups
                WHERE trial_id = :trial AND "group" = :group AND name > n.name)
        FROM n WHERE n.name IS NOT NULL
    )
    SELECT name FROM n WHERE name IS NOT NULL
    UNION
    SELECT jsonb_object_keys(values) FROM metrics
    WHERE trial_id = :trial AND "group" = :group AND NOT archived AND steps_completed >= :tail
    """
)


def _rollup_pass(
    session: Session, trial_id: int, group: str, keys: Sequence[str], ends: tuple[int, int], buckets: int
) -> tuple[int, set[int]]:
    """(live row count, steps to keep) from the rollups and the raw tail. The ranges are whole
    rollup buckets, ``k`` of them each, so each range's extremes are exact."""
    first, last = ends[0] // BUCKET_STEPS, ends[1] // BUCKET_STEPS
    k = -(-(last - first + 1) // buckets)
    params = {"trial": trial_id, "group": group, "names": list(keys), "first": first, "k": k}
    total, lows, highs = session.execute(_EXTREMES, params).one()
    return int(total or 0), {int(step) for step in (*lows, *highs)}


def _rolled_keys(session: Session, trial_id: int, group: str, last_step: int) -> list[str]:
    """Every metric name of the group: the rollups' names (a skip scan) and the raw tail's."""
    tail = last_step // BUCKET_STEPS * BUCKET_STEPS
    found = session.scalars(_ROLLED_NAMES, {"trial": trial_id, "group": group, "tail": tail})
    return sorted(found)[:MAX_KEYS]


def _ends(session: Session, trial_id: int, group: str) -> tuple[int, int] | None:
    found = session.execute(
        select(func.min(Metric.steps_completed), func.max(Metric.steps_completed)).where(
            *_live(trial_id, group)
        )
    ).one()
    return None if found[0] is None else (int(found[0]), int(found[1]))


def _small_count(session: Session, trial_id: int, group: str, cap: int) -> int:
    """The group's live row count, counted only up to ``cap + 1`` (an index-only range)."""
    some = select(Metric.id).where(*_live(trial_id, group)).limit(cap + 1).subquery()
    return int(session.scalar(select(func.count()).select_from(some)) or 0)


def _rows(session: Session, trial_id: int, group: str, steps: Iterable[int] | None = None) -> list[Metric]:
    query = select(Metric).where(*_live(trial_id, group))
    if steps is not None:
        query = query.where(Metric.steps_completed.in_(sorted(steps)))
    return list(session.scalars(query.order_by(Metric.steps_completed)))


def downsample(
    session: Session,
    trial_id: int,
    *,
    max_points: int,
    group: str | None = None,
    metrics: Sequence[str] = (),
) -> Series:
    """Live rows of each group, at most about ``max_points + 2`` per metric name.

    A group with no more than ``max_points`` rows comes back whole. Otherwise its step range is cut
    into ``max_points // 2`` buckets (fewer, of whole rollup buckets, on a long series), and each
    bucket keeps, for every metric (those named in
    ``metrics``, else every name the group holds), the row with the metric's least and the row with
    its greatest value; the group's first and last rows are always kept. With ``metrics`` only rows
    holding at least one of them are candidates, and ``total`` still counts every live row.
    """
    # JIT compiling the aggregate costs more than the aggregate itself on a series this size.
    session.execute(text("SET LOCAL jit = off"))
    buckets = max(1, max_points // 2)
    wanted = list(dict.fromkeys(metrics))
    rows: list[Metric] = []
    total = 0
    downsampled = False
    for name in [group] if group else live_groups(session, trial_id):
        ends = _ends(session, trial_id, name)
        if ends is None:
            continue
        if _small_count(session, trial_id, name, max_points) <= max_points:
            whole = _rows(session, trial_id, name)
            total += len(whole)
            rows += [r for r in whole if not wanted or any(k in r.values for k in wanted)]
            continue
        if ends[1] // BUCKET_STEPS - ends[0] // BUCKET_STEPS + 1 >= buckets:
            # Long enough for every range to be whole rollup buckets: the raw rows are not read.
            metric_rollups.catch_up(session, trial_id, name, ends[1])
            keys = wanted or _rolled_keys(session, trial_id, name, ends[1])
            count, steps = _rollup_pass(session, trial_id, name, keys, ends, buckets)
            total += count
            downsampled = True
            kept = steps | ({*ends} if not wanted else _ends_holding(session, trial_id, name, wanted))
            rows += _rows(session, trial_id, name, kept)
            continue
        keys = wanted or _keys_of_ends(session, trial_id, name)
        found = _bucket_pass(session, trial_id, name, keys, ends, buckets, check_other_keys=not wanted)
        if found.other_keys:
            # Some row names a metric the ends do not: bucket every name the group has.
            keys = _all_keys(session, trial_id, name)[:MAX_KEYS]
            found = _bucket_pass(session, trial_id, name, keys, ends, buckets, check_other_keys=False)
        total += found.count
        downsampled = True
        kept = found.steps | ({*ends} if not wanted else _ends_holding(session, trial_id, name, wanted))
        rows += _rows(session, trial_id, name, kept)
    return Series(rows, total, downsampled)


def _ends_holding(session: Session, trial_id: int, group: str, keys: Sequence[str]) -> set[int]:
    """The first and last steps of the group that hold at least one of ``keys``."""
    holding = [*_live(trial_id, group), func.jsonb_exists_any(Metric.values, _names(keys))]
    found = session.execute(
        select(func.min(Metric.steps_completed), func.max(Metric.steps_completed)).where(*holding)
    ).one()
    return set() if found[0] is None else {int(found[0]), int(found[1])}


def restrict(values: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in keys} if keys else values


def latest_values(
    session: Session, trial_ids: Sequence[int], groups: Sequence[str] = ("training", "validation")
) -> dict[tuple[int, str], dict[str, float | None]]:
    """The values of each trial's latest live row per group, in one statement: a backwards probe
    of the live-rows index per (trial, group), never a scan of a trial's rows. Non-finite values
    come back as None, for JSON."""
    if not trial_ids:
        return {}
    wanted = values(column("trial_id", Integer), column("name", String), name="wanted").data(
        [(t, g) for t in trial_ids for g in groups]
    )
    latest = (
        select(Metric.values.label("found"))
        .where(
            Metric.trial_id == wanted.c.trial_id, Metric.group == wanted.c.name, Metric.archived.is_(False)
        )
        .order_by(Metric.steps_completed.desc())
        .limit(1)
        .lateral("latest")
    )
    query = select(wanted.c.trial_id, wanted.c.name, latest.c.found).select_from(wanted).join(latest, true())
    out: dict[tuple[int, str], dict[str, float | None]] = {}
    for trial_id, name, found in session.execute(query):
        out[(int(trial_id), str(name))] = {k: _finite(decode_value(v)) for k, v in found.items()}
    return out


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
