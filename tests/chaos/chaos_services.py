"""The processes of a chaos cluster, each killable and restartable, and the admin's HTTP client.

Every process carries ``CHAOS_CLUSTER=<id>`` in its environment, and so does every trial its agents
launch (agents pass non-``STALWART_*`` variables on): ``marked_processes`` finds them, and nothing
else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis as redis_lib

from support import ManagedProcess, drop_database, free_port, redis_server_argv, spawn, wait_for

MARKER = "CHAOS_CLUSTER"
# Answers that mean "the master (or its database) is away for now": retried by the admin client.
RETRYABLE = frozenset({502, 503, 504})


# --- processes ------------------------------------------------------------------------------------


class Service:
    """One process of the cluster, started again with the same command line after a kill."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_file: Path,
        env: dict[str, str],
        ready: Callable[[Service, int], bool],
        *,
        kill_group: bool = False,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_file = log_file
        self.env = env
        self._ready = ready
        self._kill_group = kill_group  # Celery's prefork children die with their parent only this way
        self.managed: ManagedProcess | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.managed is not None, f"{self.name} was never started"
        return self.managed.process.pid

    def alive(self) -> bool:
        return self.managed is not None and self.managed.alive()

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return self.managed.log_tail(lines) if self.managed else "(never started)"

    def start(self, timeout: float = 60.0) -> None:
        assert not self.alive(), f"{self.name} is already running"
        offset = self.log_size()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as log:
            log.write(f"\n=== chaos: start #{self.starts + 1} of {self.name} at {time.time():.3f} ===\n")
        self.managed = spawn(self.argv, self.log_file, self.env)
        self.starts += 1

        def ready() -> bool:
            if not self.alive():
                assert self.managed is not None
                raise RuntimeError(
                    f"{self.name} exited with {self.managed.process.returncode}:\n{self.log_tail()}"
                )
            return self._ready(self, offset)

        wait_for(ready, timeout, f"{self.name} to be ready", interval=0.1)

    def signal(self, sig: signal.Signals) -> None:
        assert self.managed is not None
        with contextlib.suppress(ProcessLookupError):
            if self._kill_group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone (reaped)."""
        if not self.alive():
            return
        self.signal(signal.SIGKILL)
        assert self.managed is not None
        self.managed.process.wait(30)

    def wait_exit(self, timeout: float) -> int:
        """Its exit status, once it has exited by itself within ``timeout`` seconds."""
        assert self.managed is not None
        return self.managed.process.wait(timeout)

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(grace=10)

    def restart(self, downtime: float = 0.0, timeout: float = 60.0) -> None:
        """SIGKILL it, keep it down ``downtime`` seconds, start it again."""
        self.kill()
        if downtime:
            time.sleep(downtime)  # the outage itself is what the scenario is about
        self.start(timeout)


class Redis:
    """A redis-server without persistence on a fixed port; stopping it loses the queue, as an
    outage of an in-memory broker would."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = redis_server_argv(self.port)
        self.service = Service("redis", argv, root / "redis.log", env, lambda _s, _o: self.answers())

    def answers(self) -> bool:
        client = redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis_lib.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        self.service.start(30)

    def stop(self) -> None:
        self.service.stop()
        wait_for(lambda: not self.answers(), 30, "redis-server to stop")


class Postgres:
    """The cluster's database: a fresh copy of the migrated template on the test server, or an
    embedded PostgreSQL of its own (``embedded=True``) that the scenario may stop and start."""

    def __init__(self, root: Path, label: str, *, template: str | None, embedded: bool) -> None:
        self.embedded = embedded
        self._root = root / "postgres"
        self._server: Any = None
        self.port: int | None = None
        if embedded:
            self.port = free_port()
            self.name = "stalwart"
            # The embedded server asks for a password (SCRAM), as a local cluster's does.
            self._password = secrets.token_urlsafe(16)
            self.url = f"postgresql://postgres:{self._password}@127.0.0.1:{self.port}/{self.name}"
        else:
            admin = os.environ["STALWART_TEST_PG_ADMIN_URL"]
            worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
            self.name = f"stalwart_chaos_{label}_{os.environ['STALWART_TEST_RUN']}_{worker}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                clause = f' TEMPLATE "{template}"' if template else ""
                conn.execute(f'CREATE DATABASE "{self.name}"{clause}')
            self.url = f"{admin.rsplit('/', 1)[0]}/{self.name}"

    def start(self) -> None:
        if self.embedded:
            from stalwart_master.local import embedded

            self._server = embedded.start_postgres(
                self._root, port=self.port, database=self.name, password=self._password
            )

    def stop(self) -> None:
        """A fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends): connections are cut."""
        if self.embedded and self._server is not None:
            from stalwart_master.local import embedded

            embedded.stop(self._server)
            self._server = None

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def drop(self) -> None:
        if self.embedded:
            self.stop()
        else:
            drop_database(self.name)


# --- the admin client -----------------------------------------------------------------------------


class Api:
    """The admin's HTTP client; while the master is down or restarting it retries for a while."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self._credentials = {"username": username, "password": password}
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def login(self) -> None:
        response = self.request("POST", "/api/v1/auth/login", json=self._credentials)
        assert response.status_code == 200, response.text
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def request(self, method: str, path: str, *, retry_for: float = 90.0, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
                if response.status_code not in RETRYABLE:
                    return response
                failure = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} kept failing for {retry_for:.0f}s: {failure}")
            time.sleep(0.2)

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.request("GET", path, **kwargs)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:300]}"
        return response.json()

    def post(
        self, path: str, expect: tuple[int, ...] = (200, 201, 202, 204), **kwargs: Any
    ) -> httpx.Response:
        response = self.request("POST", path, **kwargs)
        assert response.status_code in expect, f"POST {path}: {response.status_code} {response.text[:300]}"
        return response

    def close(self) -> None:
        self.http.close()


def marked_processes(cluster_id: str) -> Iterator[psutil.Process]:
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or proc.environ().get(MARKER) != cluster_id:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        yield proc


def kill_marked(cluster_id: str) -> None:
    """Last resort after a scenario: SIGKILL whatever this cluster started and left behind."""
    for proc in list(marked_processes(cluster_id)):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
