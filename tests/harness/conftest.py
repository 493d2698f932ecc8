"""SDK tests: each gets its own token cache, no ambient master or token, and an admin client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stalwart.client import Client


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("STALWART_TOKEN", raising=False)
    monkeypatch.delenv("STALWART_MASTER", raising=False)


@pytest.fixture
def admin(live_master: Any) -> Iterator[Client]:
    """An SDK client logged in as admin on the live master (shadows the in-process one here)."""
    with Client(live_master.url) as client:
        client.login(live_master.admin_username, live_master.admin_password)
        yield client


@pytest.fixture
def off_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``STALWART_*`` variable from the outside: the Core API runs off-cluster in ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith("STALWART_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STALWART_LOCAL_DIR", str(tmp_path / "local"))
    return tmp_path / "local"
