"""The routes the shared fuzz run skips (they would revoke, demote or archive what other tests
hold) get generated requests of their own, on a master with a database of its own: no 5xx."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from support import IDENTITY_ROUTES

pytestmark = pytest.mark.integration


@pytest.fixture
def private_app(scratch_database: Callable[[str], str]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from stalwart_master.app import create_app
    from stalwart_master.settings import DatabaseSettings, get_settings

    url = scratch_database("fuzz_identity")
    settings = get_settings().model_copy(update={"database": DatabaseSettings(url=url, pool_size=2)})
    application = create_app(settings)
    with TestClient(application, raise_server_exceptions=False) as client:
        yield client
    from stalwart_master.db.session import get_engine

    get_engine(settings.database.sqlalchemy_url).dispose()


def test_identity_routes_never_answer_a_server_error(private_app: Any) -> None:
    admin_password = os.environ["STALWART_ADMIN_PASSWORD"]
    login = private_app.post("/api/v1/auth/login", json={"username": "admin", "password": admin_password})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    # Things for the generated requests to hit: a second user, a workspace with a project.
    headers = {"Authorization": f"Bearer {token}"}
    private_app.post("/api/v1/users", headers=headers, json={"username": "a", "password": "password-1"})
    workspace = private_app.post("/api/v1/workspaces", headers=headers, json={"name": "w"}).json()["id"]
    private_app.post(f"/api/v1/workspaces/{workspace}/projects", headers=headers, json={"name": "p"})

    schema = schemathesis.openapi.from_asgi("/openapi.json", private_app.app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in IDENTITY_ROUTES:
            continue
        checked.append(f"{operation.method.upper()} {operation.path}")

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            # A generated password reset may have ended this session: log in again, as a person would.
            if private_app.get("/api/v1/me", headers=headers).status_code == 401:
                again = private_app.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": admin_password}
                )
                if again.status_code == 200:
                    headers["Authorization"] = f"Bearer {again.json()['token']}"

        call()
    assert len(checked) == len(IDENTITY_ROUTES), checked
