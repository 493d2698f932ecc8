"""A PostgreSQL restart under a running master: requests during the outage get 503 with a retry hint,
the master serves again within seconds of PostgreSQL returning, the SDK waits the outage out, and
nothing stored before is lost. Its own PostgreSQL (never the machine's) is the one restarted."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stalwart.client import Client
from stalwart_master.local.embedded import start_postgres, stop

from support import SIMPLE_CONFIG, free_port, kill_leftovers, start_master, wait_for

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "test-admin-password"  # what tests/conftest.py gives every master


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside pytest's tmp_path: as root, PostgreSQL runs as a user that must traverse every parent.
    path = Path(tempfile.mkdtemp(prefix="stalwart-test-outage-"))
    try:
        yield path
    finally:
        stop(path / "pg", timeout=10.0)
        kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


def config(name: str) -> str:
    return SIMPLE_CONFIG.format(name=name, description="outage", label="outage")


def test_a_postgresql_restart_gets_503_with_retry_after_and_the_master_recovers(root: Path) -> None:
    pg = start_postgres(root / "pg", port=free_port(), database="stalwart")
    port = free_port()
    master = start_master(port, root / "master", {"STALWART_DATABASE_URL": pg.url})
    try:
        url = f"http://127.0.0.1:{port}"
        login = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        token = login.json()["token"]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        created = api.post("/api/v1/experiments", json={"config": config("before"), "paused": True})
        assert created.status_code == 201, created.text
        before = created.json()["id"]

        stop(pg)
        for response in (
            api.get(f"/api/v1/experiments/{before}"),
            api.post("/api/v1/experiments", json={"config": config("during"), "paused": True}),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "2"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:stalwart:problem:service-unavailable"

        # A client call made during the outage retries on the hint until PostgreSQL is back.
        seen: dict[str, Any] = {}

        def read_during_outage() -> None:
            with Client(url, token=token, retries=8) as client:
                seen["experiment"] = client.get_experiment(before)

        reader = threading.Thread(target=read_during_outage)
        reader.start()
        start_postgres(root / "pg", database="stalwart")  # same data, same port
        back = time.monotonic()
        wait_for(lambda: api.get("/api/v1/experiments").status_code == 200, 10, "the master to serve again")
        assert time.monotonic() - back < 10
        reader.join(30)
        assert seen["experiment"].id == before

        again = api.post("/api/v1/experiments", json={"config": config("after"), "paused": True})
        assert again.status_code == 201, again.text
        names = {e["name"] for e in api.get("/api/v1/experiments").json()["items"]}
        assert {"before", "after"} <= names and "during" not in names
        assert api.get("/health").json() == {"status": "ok", "database": "ok"}
        assert master.alive()
        assert '" 500' not in master.log_file.read_text(), "an outage must never look like a master bug"
    finally:
        master.stop()
