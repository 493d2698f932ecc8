"""The experiments table of the dashboard: text search, every sort key, and what each row adds up
from its trials (progress, count, best searcher metric), only for experiments the caller may see."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from stalwart_master.db.orm import Experiment, Trial

pytestmark = pytest.mark.integration
PASSWORD = "dashboard-password-1"


def _config(name: str, tag: str, *, smaller: bool = True, trials: int = 1, description: str = "") -> str:
    values = ", ".join(str(i) for i in range(trials))
    return (
        f"name: {name}\ndescription: '{description}'\nlabels: [{tag}]\nentrypoint: python3 train.py\n"
        f"searcher: {{name: grid, metric: val_loss, smaller_is_better: {str(smaller).lower()}}}\n"
        f"hyperparameters: {{x: {{type: categorical, vals: [{values}]}}}}\n"
    )


def _create(admin: Any, config: str, **extra: Any) -> dict[str, Any]:
    response = admin.post("/api/v1/experiments", json={"config": config, "paused": True, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _set_trials(admin: Any, experiment_id: int, rows: list[tuple[float, float | None]]) -> None:
    """(progress, best_validation) for the experiment's trials, first trial first."""
    with admin.app_ref.state.sessions.begin() as session:
        ids = session.scalars(select(Trial.id).where(Trial.experiment_id == experiment_id)).all()
        for trial_id, (progress, best) in zip(sorted(ids), rows, strict=True):
            session.execute(
                update(Trial).where(Trial.id == trial_id).values(progress=progress, best_validation=best)
            )


def _list(admin: Any, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    response = admin.get("/api/v1/experiments", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_each_row_adds_up_its_trials_and_names_its_project_and_workspace(admin) -> None:  # type: ignore[no-untyped-def]
    tag = f"sum-{uuid.uuid4().hex[:8]}"
    smaller = _create(admin, _config("smaller", tag, trials=3))
    larger = _create(admin, _config("larger", tag, smaller=False, trials=2))
    _set_trials(admin, smaller["id"], [(0.0, 0.5), (0.5, 0.25), (1.0, None)])
    _set_trials(admin, larger["id"], [(0.25, 0.5), (0.75, 0.9)])
    with admin.app_ref.state.sessions.begin() as session:
        ended = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # any fixed end: duration is end - start
        session.execute(update(Experiment).where(Experiment.id == larger["id"]).values(ended_at=ended))
    rows = {row["id"]: row for row in _list(admin, label=tag)["items"]}
    first, second = rows[smaller["id"]], rows[larger["id"]]
    assert (first["trial_count"], first["progress"], first["best_metric"]) == (3, 0.5, 0.25)
    assert (second["trial_count"], second["progress"], second["best_metric"]) == (2, 0.5, 0.9)
    assert first["searcher_metric"] == "val_loss"
    assert (first["project_name"], first["workspace_id"], first["workspace_name"]) == (
        "Uncategorized",
        1,
        "Uncategorized",
    )
    assert first["started_at"] == first["created_at"] and first["duration_seconds"] >= 0
    started = dt.datetime.fromisoformat(second["started_at"])
    assert second["duration_seconds"] == pytest.approx((ended - started).total_seconds(), abs=0.01)
    # The existing fields are still there, secrets still masked.
    assert {"config", "owner", "labels", "state"} <= set(first)


def test_an_experiment_without_trial_results_has_no_progress_or_best_metric(admin) -> None:  # type: ignore[no-untyped-def]
    tag = f"none-{uuid.uuid4().hex[:8]}"
    created = _create(admin, _config("bare", tag))
    with admin.app_ref.state.sessions.begin() as session:
        session.execute(delete(Trial).where(Trial.experiment_id == created["id"]))
    (row,) = _list(admin, label=tag)["items"]
    assert (row["trial_count"], row["progress"], row["best_metric"]) == (0, None, None)


def test_q_searches_name_and_description_in_any_case_and_digits_match_the_id(admin) -> None:  # type: ignore[no-untyped-def]
    tag = f"q-{uuid.uuid4().hex[:8]}"
    word = uuid.uuid4().hex[:10].translate(str.maketrans("0123456789", "ghijklmnop"))  # no digits
    by_name = _create(admin, _config(f"Net-{word.upper()}-a", tag))
    by_description = _create(admin, _config("plain", tag, description=f"tries {word} again"))
    other = _create(admin, _config("unrelated", tag))
    found = {row["id"] for row in _list(admin, label=tag, q=word)["items"]}
    assert found == {by_name["id"], by_description["id"]}
    assert [row["id"] for row in _list(admin, label=tag, q=str(other["id"]))["items"]] == [other["id"]]
    assert _list(admin, label=tag, q="100%_")["total"] == 0  # LIKE wildcards are plain text


@pytest.mark.parametrize(
    "sort",
    ["id", "name", "state", "owner", "created_at", "ended_at", "progress", "best_metric", "trial_count"],
)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_sort_key_orders_the_rows_with_the_id_breaking_ties(admin, sort: str, order: str) -> None:  # type: ignore[no-untyped-def]
    tag = f"sort-{uuid.uuid4().hex[:8]}"
    made = [_create(admin, _config(f"{tag}-{n}", tag, trials=t)) for n, t in (("b", 2), ("a", 1), ("c", 2))]
    _set_trials(admin, made[0]["id"], [(0.2, 0.3), (0.4, 0.1)])
    _set_trials(admin, made[1]["id"], [(0.3, 0.2)])
    _set_trials(admin, made[2]["id"], [(0.6, None), (0.0, None)])
    admin.post(f"/api/v1/experiments/{made[1]['id']}/cancel")  # one ended, one state apart
    items = _list(admin, label=tag, sort=sort, order=order)["items"]
    assert len(items) == 3

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        value = row[sort]
        return (value is None, value, row["id"])  # nulls last, then the id

    expected = sorted(items, key=key, reverse=order == "desc")
    if order == "desc":  # NULLS LAST in both directions
        expected = [r for r in expected if r[sort] is not None] + [r for r in expected if r[sort] is None]
    assert [r["id"] for r in items] == [r["id"] for r in expected], [(r["id"], r[sort]) for r in items]


def test_pages_are_stable_and_the_older_order_by_still_works(admin) -> None:  # type: ignore[no-untyped-def]
    tag = f"page-{uuid.uuid4().hex[:8]}"
    ids = [_create(admin, _config(f"{tag}-same", tag))["id"] for _ in range(5)]
    pages = [
        _list(admin, label=tag, sort="name", order="asc", limit=2, offset=offset)["items"]
        for offset in (0, 2, 4)
    ]
    assert [row["id"] for page in pages for row in page] == sorted(ids)
    older = _list(admin, label=tag, order_by="id", order="asc")
    assert [row["id"] for row in older["items"]] == sorted(ids) and older["total"] == 5


@pytest.mark.parametrize(
    ("params", "path"), [({"sort": "password"}, "query.sort"), ({"q": "x" * 257}, "query.q")]
)
def test_bad_sort_or_q_is_a_422_at_its_field(admin, params: dict[str, Any], path: str) -> None:  # type: ignore[no-untyped-def]
    response = admin.get("/api/v1/experiments", params=params)
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == [path]


def _login(admin: Any, role: str | None, workspace: int) -> dict[str, str]:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    assert admin.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code == 201
    if role:
        granted = admin.put(f"/api/v1/workspaces/{workspace}/members/{name}", json={"role": role})
        assert granted.status_code == 200, granted.text
    token = admin.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_rows_come_only_from_workspaces_the_caller_has_a_role_in(admin) -> None:  # type: ignore[no-untyped-def]
    tag = f"authz-{uuid.uuid4().hex[:8]}"
    workspace = admin.post("/api/v1/workspaces", json={"name": f"ws-{tag}"}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "team"}).json()["id"]
    hidden = _create(admin, _config(f"secret-{tag}", tag), project_id=project)
    viewer, outsider = _login(admin, "viewer", workspace), _login(admin, None, workspace)
    (row,) = _list(admin, viewer, label=tag)["items"]
    assert (row["id"], row["project_name"], row["workspace_id"], row["workspace_name"]) == (
        hidden["id"],
        "team",
        workspace,
        f"ws-{tag}",
    )
    for params in ({"label": tag}, {"q": str(hidden["id"])}, {"q": f"secret-{tag}"}, {"sort": "best_metric"}):
        seen = _list(admin, outsider, limit=1000, **params)
        assert hidden["id"] not in {r["id"] for r in seen["items"]}, params
    assert _list(admin, outsider, label=tag)["total"] == 0
