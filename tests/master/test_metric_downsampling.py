"""Charts of long runs: the master downsamples a series (min/max buckets) and spikes survive it;
the trials table reads each trial's latest metrics without a query per trial."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from metric_support import paused_trial, seed_sql
from registry_support import start_trial

pytestmark = pytest.mark.integration
CONFIG = "name: charts\nentrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


SERIES = """
INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values, archived)
SELECT :trial, 1, 'training', s,
       jsonb_build_object('loss', CASE WHEN s = 777 THEN 1000.0 ELSE 1.0 / (1 + s) END, 'lr', 0.1), false
FROM generate_series(1, :n) s
"""


def _metrics(admin: Any, trial_id: int, **params: Any) -> dict[str, Any]:
    response = admin.get(f"/api/v1/trials/{trial_id}/metrics", params=params)
    assert response.status_code == 200, response.text
    return dict(json.loads(response.text))  # Python's json reads the NaN/Infinity tokens


def test_a_single_spike_survives_downsampling_with_the_first_and_last_steps(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=20_000)
    answer = _metrics(admin, trial_id, max_points=100, metric="loss")
    steps = [row["steps_completed"] for row in answer["items"]]
    assert answer["downsampled"] is True and answer["total"] == 20_000
    assert 777 in steps and steps[0] == 1 and steps[-1] == 20_000
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert 50 <= len(steps) <= 2 * 100 + 2
    spike = next(row for row in answer["items"] if row["steps_completed"] == 777)
    assert spike["values"] == {"loss": 1000.0}  # restricted to the asked-for metric
    assert {row["group"] for row in answer["items"]} == {"training"}


def test_without_a_metric_filter_every_metric_keeps_its_extremes_even_one_only_mid_series(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=20_000)
    # A metric that only some rows in the middle report, with its own spike.
    seed_sql(
        admin,
        trial_id,
        """UPDATE metrics SET values = values || jsonb_build_object('grad', CASE WHEN steps_completed = 10005
           THEN -50.0 ELSE 1.0 END) WHERE trial_id = :trial AND steps_completed BETWEEN 10000 AND 10010""",
    )
    answer = _metrics(admin, trial_id, max_points=100)
    rows = {row["steps_completed"]: row for row in answer["items"]}
    assert 777 in rows and 10005 in rows and rows[10005]["values"]["grad"] == -50.0
    assert rows[1]["values"] == {"loss": 0.5, "lr": 0.1}  # every value of a kept row
    # Per metric at most two rows a bucket, plus the ends: three metrics here.
    assert len(rows) <= 3 * 100 + 2


def test_groups_are_downsampled_apart_and_sorted_by_group_then_steps(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=5_000)
    seed_sql(
        admin,
        trial_id,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values)
           SELECT :trial, 1, 'validation', s * 100, jsonb_build_object('loss', 1.0 / s)
           FROM generate_series(1, 30) s""",
    )
    answer = _metrics(admin, trial_id, max_points=40)
    keys = [(row["group"], row["steps_completed"]) for row in answer["items"]]
    assert keys == sorted(keys) and answer["total"] == 5_030
    validation = [s for g, s in keys if g == "validation"]
    assert validation == [s * 100 for s in range(1, 31)]  # 30 rows fit in 40 points: all kept
    only_validation = _metrics(admin, trial_id, max_points=40, group="validation")
    assert only_validation["downsampled"] is False and only_validation["total"] == 30


def test_archived_rows_are_never_drawn_and_non_finite_values_are_kept_as_extremes(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES.replace("1, 'training'", "2, 'training'"), n=20_000)
    # An earlier run's rows past a restored checkpoint: archived, with values that would stand out.
    seed_sql(
        admin,
        trial_id,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values, archived)
           SELECT :trial, 1, 'training', s, jsonb_build_object('loss', 1e9), true
           FROM generate_series(15000, 15100) s""",
    )
    seed_sql(
        admin,
        trial_id,
        """UPDATE metrics SET values = jsonb_build_object('loss', CASE steps_completed WHEN 3000 THEN 'NaN'
           WHEN 6000 THEN 'Infinity' ELSE '-Infinity' END, 'lr', 0.1)
           WHERE trial_id = :trial AND NOT archived AND steps_completed IN (3000, 6000, 9000)""",
    )
    answer = _metrics(admin, trial_id, max_points=100, metric="loss")
    rows = {row["steps_completed"]: row["values"]["loss"] for row in answer["items"]}
    assert answer["total"] == 20_000
    assert all(not row["archived"] and row["run_id"] == 2 for row in answer["items"])
    assert 1e9 not in rows.values()
    assert math.isnan(rows[3000]) and rows[6000] == math.inf and rows[9000] == -math.inf


def test_max_points_is_bounded_and_not_combined_with_archived_rows(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    for params in ({"max_points": 5}, {"max_points": 10_001}, {"max_points": 100, "include_archived": True}):
        response = admin.get(f"/api/v1/trials/{trial_id}/metrics", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_without_max_points_the_rows_are_as_before_and_the_metric_filter_applies(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=30)
    seed_sql(
        admin,
        trial_id,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values)
           VALUES (:trial, 1, 'validation', 30, '{"accuracy": 0.9}')""",
    )
    answer = _metrics(admin, trial_id, limit=10)
    assert answer["downsampled"] is False and answer["total"] == 31 and len(answer["items"]) == 10
    assert answer["items"][0]["values"] == {"loss": 0.5, "lr": 0.1}
    accuracy = _metrics(admin, trial_id, metric="accuracy")
    assert [(r["group"], r["values"]) for r in accuracy["items"]] == [("validation", {"accuracy": 0.9})]
    small = _metrics(admin, trial_id, max_points=100, metric=["lr", "accuracy"])
    assert small["downsampled"] is False and len(small["items"]) == 31
    assert small["items"][0]["values"] == {"lr": 0.1}


def test_the_trials_table_gets_latest_live_metrics_and_the_best_searcher_metric(admin) -> None:  # type: ignore[no-untyped-def]
    created = admin.post(
        "/api/v1/experiments",
        json={
            "config": CONFIG.replace("single", "grid")
            + "hyperparameters: {x: {type: categorical, vals: [1, 2]}}\n",
            "paused": True,
        },
    )
    assert created.status_code == 201, created.text
    trials = admin.get(f"/api/v1/experiments/{created.json()['id']}/trials").json()
    first, second = (t["id"] for t in trials)
    seed_sql(admin, first, SERIES, n=10)
    seed_sql(
        admin,
        first,
        """INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values, archived) VALUES
           (:trial, 1, 'validation', 5, '{"loss": 0.25, "acc": "NaN"}', false),
           (:trial, 1, 'validation', 8, '{"loss": 0.5, "acc": 0.7}', true)""",
    )
    seed_sql(admin, first, "UPDATE trials SET best_validation = 0.25 WHERE id = :trial")
    by_id = {t["id"]: t for t in admin.get(f"/api/v1/experiments/{created.json()['id']}/trials").json()}
    assert by_id[first]["latest_training"] == {"loss": 1 / 11, "lr": 0.1}
    assert by_id[first]["latest_validation"] == {"loss": 0.25, "acc": None}  # archived row skipped
    assert by_id[first]["searcher_metric_value"] == 0.25
    assert by_id[second]["latest_training"] is None and by_id[second]["searcher_metric_value"] is None
    assert admin.get(f"/api/v1/trials/{first}").json()["latest_validation"] == {"loss": 0.25, "acc": None}


def test_a_metric_value_beyond_the_float_range_is_refused(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG, "paused": True}).json()
    run = start_trial(admin.app_ref.state.sessions, experiment["id"])
    body = {
        "run_id": 1,
        "batch_id": str(uuid.uuid4()),
        "metrics": [{"group": "training", "steps_completed": 1, "values": {"loss": 10**400}}],
    }
    response = admin.post(
        f"/api/v1/trials/{run.trial_id}/metrics",
        content=json.dumps(body),
        headers={**run.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "metrics.0.values.loss" in response.text


def test_a_long_series_pages_by_step_range_and_a_range_is_not_combined_with_max_points(admin) -> None:  # type: ignore[no-untyped-def]
    trial_id = paused_trial(admin, CONFIG)
    seed_sql(admin, trial_id, SERIES, n=250)
    seen: list[int] = []
    start = 0
    while True:
        page = _metrics(admin, trial_id, group="training", limit=100, start_batches=start)
        seen += [row["steps_completed"] for row in page["items"]]
        assert page["total"] == 250
        if len(page["items"]) < 100:
            break
        start = page["items"][-1]["steps_completed"] + 1
    assert seen == list(range(1, 251))
    window = _metrics(admin, trial_id, start_batches=10, end_batches=20)
    assert [row["steps_completed"] for row in window["items"]] == list(range(10, 20))
    refused = admin.get(f"/api/v1/trials/{trial_id}/metrics", params={"max_points": 100, "start_batches": 5})
    assert refused.status_code == 422 and "start_batches" in refused.text
