"""Fixtures of the chaos suite: a migrated template database and the ``chaos_cluster`` factory."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_cluster import ChaosCluster, Settings

from support import drop_database


@pytest.fixture(scope="session")
def chaos_template() -> Iterator[str]:
    """A database migrated once; each cluster's database is a copy (much faster than migrating)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    name = f"stalwart_chaos_template_{os.environ['STALWART_TEST_RUN']}_{worker}"
    admin = os.environ["STALWART_TEST_PG_ADMIN_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    from stalwart_master.db.migrate import upgrade
    from stalwart_master.db.session import get_engine

    engine = get_engine(f"postgresql+psycopg://{admin.split('://', 1)[1].rsplit('/', 1)[0]}/{name}")
    upgrade(engine)
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
    yield name
    drop_database(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"chaos_{report.when}", report)
    return report


@pytest.fixture
def chaos_cluster(
    request: pytest.FixtureRequest, chaos_template: str, tmp_path: Path
) -> Iterator[Callable[..., ChaosCluster]]:
    """Starts one cluster for the test: ``chaos_cluster({"agent-a": 1}, reconnect_wait=15)``.

    Keyword arguments are ``Settings`` fields; ``embedded_postgres=True`` gives the cluster a
    PostgreSQL server of its own. On failure the logs and journals are printed.
    """
    started: list[ChaosCluster] = []

    def start(
        agents: dict[str, int], *, embedded_postgres: bool = False, pool: str = "default", **settings: Any
    ) -> ChaosCluster:
        # Short enough for a database name (63 bytes), unique per test through the digest.
        tail = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[-20:].strip("_")
        label = f"{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}_{tail}"
        cluster = ChaosCluster(
            tmp_path / f"cluster{len(started)}",
            label,
            template=None if embedded_postgres else chaos_template,
            embedded_postgres=embedded_postgres,
            settings=Settings(**settings),
        )
        started.append(cluster)
        cluster.start(agents, pool=pool)
        return cluster

    yield start
    failed = any(
        getattr(request.node, f"chaos_{when}", None) is not None
        and getattr(request.node, f"chaos_{when}").failed
        for when in ("setup", "call")
    )
    for cluster in started:
        if failed:
            print(f"\n===== chaos cluster {cluster.id} =====\n{cluster.logs()}")
        cluster.close()
