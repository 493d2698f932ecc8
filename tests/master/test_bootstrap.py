"""The first start of a master on an empty database creates `admin` with a generated password."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stalwart_master.app import create_app
from stalwart_master.settings import AuthSettings, DatabaseSettings, Settings

pytestmark = pytest.mark.integration


def test_first_start_generates_admin_password_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, scratch_database: Callable[[str], str]
) -> None:
    url = scratch_database("bootstrap")
    settings = Settings(
        data_dir=tmp_path, database=DatabaseSettings(url=url), auth=AuthSettings(admin_password=None)
    )
    with caplog.at_level("DEBUG"), TestClient(create_app(settings)) as client:
        password_file = tmp_path / "admin-password"
        password = password_file.read_text().strip()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert len(password) >= 12
        # Never logged (logs are read by more people than the 0600 file); the log says where it is.
        assert password not in caplog.text
        assert str(password_file) in caplog.text
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200
        cluster_id = client.get("/api/v1/master").json()["cluster_id"]

    caplog.clear()
    with caplog.at_level("WARNING"), TestClient(create_app(settings)) as client:
        assert password not in caplog.text  # a restart neither prints nor changes it
        assert password_file.read_text().strip() == password
        assert client.get("/api/v1/master").json()["cluster_id"] == cluster_id
