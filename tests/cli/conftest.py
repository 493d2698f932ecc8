"""Fixtures shared by the CLI tests, which all run against the suite's live master."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stalwart.client import Client


@pytest.fixture
def sdk(live_master: Any) -> Iterator[Client]:
    """The SDK logged in as the live master's admin (for setting up what a CLI test then reads)."""
    with Client(live_master.url) as client:
        client.login(live_master.admin_username, live_master.admin_password)
        yield client
