"""Settings come from STALWART_* variables and refuse placeholder secrets outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stalwart_master.settings import AuthSettings, DatabaseSettings, Settings

pytestmark = pytest.mark.unit


def test_database_url_becomes_a_psycopg_url() -> None:
    assert DatabaseSettings(url="postgresql://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"
    with pytest.raises(RuntimeError, match="postgresql://"):
        _ = DatabaseSettings(url="sqlite:///x.db").sqlalchemy_url
    with pytest.raises(RuntimeError, match="STALWART_DATABASE_URL"):
        _ = DatabaseSettings(url="").sqlalchemy_url


@pytest.mark.parametrize("password", ["changeme", "admin", "short-pass"])
def test_production_refuses_placeholder_admin_passwords(password: str) -> None:
    with pytest.raises(ValidationError, match="STALWART_ADMIN_PASSWORD"):
        Settings(environment="production", auth=AuthSettings(admin_password=password))
    Settings(environment="development", auth=AuthSettings(admin_password=password))


def test_production_accepts_a_real_or_generated_password() -> None:
    Settings(environment="production", auth=AuthSettings(admin_password="a-long-and-real-secret"))
    Settings(environment="production", auth=AuthSettings(admin_password=None))


def test_cluster_defaults_put_checkpoints_under_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    defaults = Settings(
        data_dir=tmp_path, experiment_defaults={"max_restarts": 1}
    ).effective_experiment_defaults()
    assert defaults["checkpoint_storage"] == {"type": "shared_fs", "host_path": str(tmp_path / "checkpoints")}
    assert defaults["max_restarts"] == 1


def test_preemption_settings_come_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert (Settings().scheduler_preemption, Settings().pool_preemption) == (False, {})
    assert Settings().preemption_timeout_seconds == 300
    monkeypatch.setenv("STALWART_SCHEDULER_PREEMPTION", "true")
    monkeypatch.setenv("STALWART_POOL_PREEMPTION", '{"cpu": false, "gpu": true}')
    monkeypatch.setenv("STALWART_PREEMPTION_TIMEOUT_SECONDS", "2.5")
    settings = Settings()
    assert settings.scheduler_preemption and settings.pool_preemption == {"cpu": False, "gpu": True}
    assert settings.preemption_timeout_seconds == 2.5
