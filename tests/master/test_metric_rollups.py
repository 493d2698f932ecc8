"""Charts of long series read per-bucket rollups kept exact as rows arrive, arrive late, or are
archived by a restart: the points kept are the ones a pass over every row would keep."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from metric_support import paused_trial, seed_sql
from registry_support import start_trial
from sqlalchemy import select

from stalwart_master.db.orm import Metric, MetricRollup, MetricRollupMark
from stalwart_master.services import metric_series
from stalwart_master.services import trials as trials_service
from stalwart_master.services.metric_rollups import BUCKET_STEPS

pytestmark = pytest.mark.integration
CONFIG = "name: rollups\nentrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


def _ingest(admin: Any, trial_id: int, run_id: int, reports: Iterable[tuple[int, dict[str, Any]]]) -> None:
    """Through the ingestion service, 100 rows a batch, as the metrics route stores them."""
    rows = [trials_service.MetricReport("training", step, values) for step, values in reports]
    for i in range(0, len(rows), 100):
        with admin.app_ref.state.sessions.begin() as session:
            trial = trials_service.get_trial(session, trial_id, for_update=True)
            trials_service.ingest_metrics(session, trial, run_id, uuid.uuid4(), rows[i : i + 100])


def _metrics(admin: Any, trial_id: int, **params: Any) -> dict[str, Any]:
    response = admin.get(f"/api/v1/trials/{trial_id}/metrics", params=params)
    assert response.status_code == 200, response.text
    return dict(json.loads(response.text))


def _expected(admin: Any, trial_id: int, max_points: int, names: list[str]) -> tuple[set[int], int]:
    """Brute force over every live row: per range of whole rollup buckets and per name, the step of
    the least value (first such step) and of the greatest (last such step), and both ends."""
    with admin.app_ref.state.sessions() as session:
        live = session.execute(
            select(Metric.steps_completed, Metric.values)
            .where(Metric.trial_id == trial_id, Metric.group == "training", Metric.archived.is_(False))
            .order_by(Metric.steps_completed)
        ).all()
    first, last = live[0][0] // BUCKET_STEPS, live[-1][0] // BUCKET_STEPS
    per_range = math.ceil((last - first + 1) / (max_points // 2))
    lows: dict[tuple[int, str], tuple[float, int]] = {}
    highs: dict[tuple[int, str], tuple[float, int]] = {}
    for step, values in live:
        for name in names:
            if name not in values:
                continue
            key, point = ((step // BUCKET_STEPS - first) // per_range, name), (float(values[name]), step)
            lows[key] = min(lows.get(key, point), point)
            highs[key] = max(highs.get(key, point), point)
    kept = {step for _, step in (*lows.values(), *highs.values())} | {live[0][0], live[-1][0]}
    return kept, len(live)


def _drawn(admin: Any, trial_id: int, max_points: int) -> tuple[set[int], int, dict[int, dict[str, Any]]]:
    answer = _metrics(admin, trial_id, max_points=max_points, group="training")
    assert answer["downsampled"] is True
    rows = {row["steps_completed"]: row["values"] for row in answer["items"]}
    return set(rows), int(answer["total"]), rows


def _rolled_buckets(admin: Any, trial_id: int) -> tuple[int, int, int]:
    """(rollup rows, the mark's bucket, the mark's live row count) of the training group."""
    with admin.app_ref.state.sessions() as session:
        count = len(session.scalars(select(MetricRollup).where(MetricRollup.trial_id == trial_id)).all())
        mark = session.get(MetricRollupMark, (trial_id, "training"))
        return count, (mark.upto_bucket if mark else -1), (mark.rows if mark else -1)


SERIES = """
INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values, archived)
SELECT :trial, 1, 'training', s,
       jsonb_build_object('loss', CASE WHEN s = 777 THEN 1000.0 ELSE 1.0 / (1 + s) END, 'lr', 0.1), false
FROM generate_series(1, :n) s
"""


def test_a_long_series_drawn_from_rollups_keeps_its_spike_and_ends_as_a_full_pass_would(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=200_000)
    answer = _metrics(admin, trial_id, max_points=1000, metric="loss")
    steps = [row["steps_completed"] for row in answer["items"]]
    assert answer["downsampled"] is True and answer["total"] == 200_000
    assert 777 in steps and steps[0] == 1 and steps[-1] == 200_000 and steps == sorted(steps)
    assert 500 <= len(steps) <= 1000 + 2
    assert next(r for r in answer["items"] if r["steps_completed"] == 777)["values"] == {"loss": 1000.0}
    rollups, upto, rows = _rolled_buckets(admin, trial_id)
    assert upto == 200_000 // BUCKET_STEPS and rows == upto * BUCKET_STEPS - 1  # step 0 never reported
    assert rollups == 2 * upto  # loss and lr per bucket
    assert set(steps) == _expected(admin, trial_id, 1000, ["loss"])[0]
    everything = _metrics(admin, trial_id, max_points=1000)
    assert {r["steps_completed"] for r in everything["items"]} == _expected(
        admin, trial_id, 1000, ["loss", "lr"]
    )[0]


def test_rollups_kept_through_ingestion_and_late_rows_equal_a_brute_force_pass(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    # Even steps first, straight into the table with random values; the first chart read rolls them up.
    seed_sql(
        admin,
        trial_id,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values)
           SELECT :trial, 1, 'training', s, CASE WHEN s % 10 = 0 THEN jsonb_build_object('loss', random())
                  ELSE jsonb_build_object('loss', random(), 'grad', random() * 10 - 5) END
           FROM generate_series(0, 60000, 2) s""",
    )
    drawn, total, _ = _drawn(admin, trial_id, 200)
    assert (drawn, total) == _expected(admin, trial_id, 200, ["loss", "grad"])
    # Then rows through ingestion: new steps past the end, and late odd steps inside rolled-up
    # buckets, some of them new extremes.
    rolled_before = _rolled_buckets(admin, trial_id)[1]
    _ingest(
        admin,
        trial_id,
        1,
        [(s, {"loss": (s * 7919 % 1000) / 1000, "grad": -9.0}) for s in range(60001, 90000)],
    )
    _ingest(admin, trial_id, 1, [(s, {"loss": 5.0 if s == 3001 else 0.5}) for s in range(1, 8001, 200)])
    assert _rolled_buckets(admin, trial_id)[1] == 89999 // BUCKET_STEPS > rolled_before
    drawn, total, rows = _drawn(admin, trial_id, 200)
    assert (drawn, total) == _expected(admin, trial_id, 200, ["loss", "grad"])
    assert rows[3001]["loss"] == 5.0 and total == 30001 + 29999 + 40


def test_a_restart_drops_the_rollups_of_archived_rows_so_the_chart_shows_the_new_run(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(
        admin,
        trial_id,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values)
           SELECT :trial, 1, 'training', s, jsonb_build_object('loss', CASE WHEN s = 90000 THEN 1000.0
                  ELSE 1.0 END) FROM generate_series(1, 100000) s""",
    )
    drawn, _, rows = _drawn(admin, trial_id, 100)
    assert rows[90000]["loss"] == 1000.0  # the spike, read from rollups
    # Run 2 restored the checkpoint of step 50000 and reports again from there.
    with admin.app_ref.state.sessions.begin() as session:
        trial = trials_service.get_trial(session, trial_id, for_update=True)
        assert trials_service.archive_metrics_after(session, trial, run_id=2, steps=50_000) == 50_000
    assert _rolled_buckets(admin, trial_id)[1:] == (
        50_001 // BUCKET_STEPS,
        50_001 // BUCKET_STEPS * BUCKET_STEPS - 1,
    )
    _ingest(admin, trial_id, 2, [(s, {"loss": 2.0}) for s in range(50_001, 80_001)])
    drawn, total, rows = _drawn(admin, trial_id, 100)
    assert total == 80_000 and max(drawn) == 80_000 and 90000 not in drawn
    assert {v["loss"] for s, v in rows.items() if s > 50_000} == {2.0}
    assert (drawn, total) == _expected(admin, trial_id, 100, ["loss"])


def test_metrics_posted_to_the_route_are_rolled_up_as_their_buckets_complete(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG, "paused": True}).json()
    run = start_trial(admin.app_ref.state.sessions, experiment["id"])

    def post(batch_id: str, steps: range) -> None:
        body = {
            "run_id": 1,
            "batch_id": batch_id,
            "metrics": [
                {"group": "training", "steps_completed": s, "values": {"loss": 1.0 / s}} for s in steps
            ],
        }
        response = admin.post(
            f"/api/v1/trials/{run.trial_id}/metrics",
            content=json.dumps(body),
            headers={**run.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 204, response.text

    batches = [(str(uuid.uuid4()), range(start, start + 100)) for start in range(1, 601, 100)]
    for batch_id, steps in batches:
        post(batch_id, steps)
    post(*batches[3])  # a retried batch changes nothing
    assert _rolled_buckets(admin, run.trial_id) == (2, 2, 2 * BUCKET_STEPS - 1)
    with admin.app_ref.state.sessions() as session:
        second = session.get(MetricRollup, (run.trial_id, "training", "loss", 1))
        assert second is not None
        assert (second.min_value, second.min_step) == (1.0 / 511, 511)
        assert (second.max_value, second.max_step, second.rows) == (1.0 / 256, 256, 256)
        # Two ranges of whole buckets: buckets 0-1 read from rollups, the tail (steps 512-600) raw.
        series = metric_series.downsample(session, run.trial_id, max_points=4, metrics=["loss"])
        assert series.total == 600 and {1, 600} <= {m.steps_completed for m in series.rows}
