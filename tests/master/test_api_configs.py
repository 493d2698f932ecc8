"""Bad experiment configs over HTTP: a precise 4xx naming the field path, and nothing stored."""

from __future__ import annotations

import pytest

from expconf_cases import INVALID_CONFIGS, VALID_CONFIG

pytestmark = pytest.mark.integration


def _count(client) -> int:  # type: ignore[no-untyped-def]
    return int(client.get("/api/v1/experiments", params={"limit": 1}).json()["total"])


def test_the_table_is_big_enough() -> None:
    assert len(INVALID_CONFIGS) >= 30
    assert len({case for case, _, _ in INVALID_CONFIGS}) == len(INVALID_CONFIGS)


@pytest.mark.parametrize(("case", "config", "path"), INVALID_CONFIGS, ids=[c[0] for c in INVALID_CONFIGS])
def test_invalid_config_is_refused_with_its_field_path(admin, case: str, config: str, path: str) -> None:  # type: ignore[no-untyped-def]
    before = _count(admin)
    response = admin.post("/api/v1/experiments", json={"config": config})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:stalwart:problem:invalid"
    assert path in [e["path"] for e in body["errors"]], body
    assert path in body["detail"]
    assert _count(admin) == before


MINIO = "  endpoint_url: http://minio.local:9000\n"
ASHA_PART = """  name: adaptive_asha
  metric: val_loss
  smaller_is_better: true
  max_trials: 16
  max_concurrent_trials: 4
  time_metric: batches
  max_time: 1000
  mode: standard
  divisor: 4
  max_rungs: 3
"""


def test_valid_config_from_the_table_is_accepted(admin) -> None:  # type: ignore[no-untyped-def]
    assert ASHA_PART in VALID_CONFIG and MINIO in VALID_CONFIG
    # Without the endpoint: this cluster allows none (tests/security/test_storage_trust.py).
    config = VALID_CONFIG.replace(MINIO, "")
    response = admin.post("/api/v1/experiments", json={"config": config, "paused": True})
    assert response.status_code == 201, response.text
    random = config.replace(ASHA_PART, "  name: random\n  metric: val_loss\n  max_trials: 16\n")
    assert admin.post("/api/v1/experiments", json={"config": random, "paused": True}).status_code == 201


def test_yaml_syntax_error_names_line_and_column(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.post("/api/v1/experiments", json={"config": "name: x\nsearcher: [unclosed\n"})
    assert response.status_code == 400
    assert "line" in response.json()["detail"] and "column" in response.json()["detail"]


def test_alias_bomb_is_refused(admin) -> None:  # type: ignore[no-untyped-def]
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
    response = admin.post("/api/v1/experiments", json={"config": bomb})
    assert response.status_code == 400, response.text


def test_oversized_config_is_413(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.post(
        "/api/v1/experiments", json={"config": "data:\n  blob: " + "x" * (1024 * 1024 + 10)}
    )
    assert response.status_code == 413


def test_the_json_schema_is_published(admin) -> None:  # type: ignore[no-untyped-def]
    schema = admin.get("/api/v1/schemas/experiment").json()
    assert "searcher" in schema["properties"] and "hyperparameters" in schema["properties"]


@pytest.mark.parametrize(
    ("searcher", "hyperparameters", "path"),
    [
        (
            "{name: random, metric: loss, max_trials: 100000000, max_concurrent_trials: 0}",
            "{}",
            "searcher.max_trials",
        ),
        (
            "{name: adaptive_asha, metric: loss, max_trials: 20000, time_metric: batches, max_time: 100}",
            "{}",
            "searcher.max_trials",
        ),
        (
            "{name: grid, metric: loss}",
            "{a: {type: int, minval: 1, maxval: 200, count: 200},"
            " b: {type: int, minval: 1, maxval: 51, count: 51}}",
            "hyperparameters",
        ),
        (
            "{name: grid, metric: loss}",
            "{a: {type: double, minval: 0, maxval: 1, count: 1000000000}}",
            "hyperparameters.a.count",
        ),
    ],
    ids=["random", "adaptive_asha", "grid", "grid-count"],
)
def test_a_search_of_more_trials_than_the_master_allows_is_refused_at_once(  # type: ignore[no-untyped-def]
    admin, searcher: str, hyperparameters: str, path: str
) -> None:
    before = _count(admin)
    config = f"entrypoint: python3 train.py\nhyperparameters: {hyperparameters}\nsearcher: {searcher}\n"
    response = admin.post("/api/v1/experiments", json={"config": config})
    assert response.status_code == 422, response.text
    assert path in [e["path"] for e in response.json()["errors"]], response.json()
    assert _count(admin) == before
