"""Embedded PostgreSQL and Redis really serve, restart idempotently, stop, never trust a stale pid,
and require the password they keep owner-only."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from stalwart_master.local import cluster
from stalwart_master.local.embedded import EmbeddedServer, start_postgres, start_redis, stop
from stalwart_master.local.process import LocalClusterError, check_pid_file, cmdline_has, read_pid_file

from support import kill_leftovers, process_gone

pytestmark = pytest.mark.integration


@pytest.fixture
def root() -> Iterator[Path]:
    """A data root outside pytest's tmp_path: as root, PostgreSQL runs as an unprivileged user that
    must traverse every parent, and each new pytest session chmods /tmp/pytest-of-<user> to 0700."""
    path = Path(tempfile.mkdtemp(prefix="stalwart-test-local-"))
    try:
        yield path
    finally:
        kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers(root: Path) -> Iterator[list[EmbeddedServer]]:
    started: list[EmbeddedServer] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            stop(server, timeout=10.0)


@pytest.fixture
def bystander() -> Iterator[psutil.Process]:
    """An unrelated live process whose pid we plant in pid files; it must survive every test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield psutil.Process(child.pid)
    finally:
        child.kill()
        child.wait()


def test_start_postgres_accepts_connections_is_idempotent_and_stops(
    root: Path, servers: list[EmbeddedServer]
) -> None:
    pg = start_postgres(root / "pg")
    servers.append(pg)

    with psycopg.connect(pg.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("stalwart",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)

    again = start_postgres(root / "pg")
    assert (again.pid, again.url) == (pg.pid, pg.url)

    stop(pg)
    assert process_gone(pg.pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.url, connect_timeout=2)


def test_start_postgres_restart_keeps_port_and_data(root: Path, servers: list[EmbeddedServer]) -> None:
    pg = start_postgres(root / "pg", database="keep")
    servers.append(pg)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (v int)")
        conn.execute("INSERT INTO marker VALUES (42)")
    stop(root / "pg")
    assert process_gone(pg.pid)

    restarted = start_postgres(root / "pg", database="keep")
    servers.append(restarted)
    assert restarted.pid != pg.pid
    assert restarted.url == pg.url
    with psycopg.connect(restarted.url) as conn:
        assert conn.execute("SELECT v FROM marker").fetchone() == (42,)


def test_start_postgres_replaces_stale_postmaster_pid(
    root: Path, servers: list[EmbeddedServer], bystander: psutil.Process
) -> None:
    pg = start_postgres(root / "pg")
    servers.append(pg)
    stop(pg)
    # As after a crash with the pid since reused: postmaster.pid names a live, unrelated process.
    postmaster_pid = root / "pg" / "pgdata" / "postmaster.pid"
    postmaster_pid.write_text(f"{bystander.pid}\n{root / 'pg' / 'pgdata'}\n0\n0\n\n\n\nready\n")

    restarted = start_postgres(root / "pg")
    servers.append(restarted)

    assert restarted.pid != bystander.pid
    assert bystander.is_running()
    with psycopg.connect(restarted.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_start_redis_answers_ping_is_idempotent_and_stops(root: Path, servers: list[EmbeddedServer]) -> None:
    server = start_redis(root / "redis")
    servers.append(server)

    client = redis.Redis.from_url(server.url)
    assert client.ping() is True
    client.set("k", "v")
    client.close()
    assert start_redis(root / "redis").pid == server.pid

    stop(server)
    assert process_gone(server.pid)
    assert not (root / "redis" / "redis.pid").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()


def test_start_redis_persists_across_restart(root: Path, servers: list[EmbeddedServer]) -> None:
    server = start_redis(root / "redis")
    servers.append(server)
    redis.Redis.from_url(server.url).set("survives", "yes")
    stop(server)

    restarted = start_redis(root / "redis")
    servers.append(restarted)
    assert restarted.url == server.url
    assert redis.Redis.from_url(restarted.url).get("survives") == b"yes"


def test_stale_pid_file_is_detected_replaced_and_its_pid_left_alone(
    root: Path, servers: list[EmbeddedServer], bystander: psutil.Process
) -> None:
    pid_file = root / "redis" / "redis.pid"
    pid_file.parent.mkdir(parents=True)
    # The bystander's pid with a create time from before it started: a reused pid.
    pid_file.write_text(f"{bystander.pid}\n{bystander.create_time() - 3600:.3f}\n")
    check = check_pid_file(pid_file, cmdline_has("redis-server"))
    assert check.state == "stale"
    assert "another process" in check.reason

    stop(pid_file)
    assert bystander.is_running()

    pid_file.write_text(f"{bystander.pid}\n{bystander.create_time() - 3600:.3f}\n")
    server = start_redis(root / "redis")
    servers.append(server)
    assert server.pid != bystander.pid
    assert bystander.is_running()
    record = read_pid_file(pid_file)
    assert record is not None and record.pid == server.pid


def test_pid_file_of_exited_process_is_stale(tmp_path: Path) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{done.pid}\n")
    assert check_pid_file(pid_file, cmdline_has("anything")).state == "stale"


def test_cluster_reports_stale_pid_files_and_down_leaves_their_pids_alone(
    tmp_path: Path, bystander: psutil.Process
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "worker.pid").write_text(f"{bystander.pid}\n{bystander.create_time() - 60:.3f}\n")
    (run / "redis.pid").write_text(f"{bystander.pid}\n")  # no create time: cmdline must say redis-server

    report = cluster.status(tmp_path)
    states = {c.name: c.state for c in report.components}
    assert states == {"postgres": "stopped", "redis": "stale", "master": "stopped", "worker": "stale"}

    after = cluster.down(tmp_path)
    assert bystander.is_running()
    assert after.stopped
    assert not any(run.glob("*.pid"))
    assert {n.split(":")[0] for n in after.notes} == {"redis", "worker"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_start_postgres_requires_the_password_it_keeps_owner_only(
    root: Path, servers: list[EmbeddedServer]
) -> None:
    pg = start_postgres(root / "pg")
    servers.append(pg)

    password = (root / "pg" / "password").read_text().strip()
    assert _mode(root / "pg" / "password") == 0o600
    assert f"postgres:{password}@" in pg.url
    assert pg.requires_password
    rules = [line.split("#")[0].split() for line in (root / "pg" / "pgdata" / "pg_hba.conf").open()]
    assert {rule[-1] for rule in rules if rule} == {"scram-sha-256"}
    port = pg.url.rsplit(":", 1)[1].split("/")[0]
    for wrong in ("", "not-the-password"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=stalwart password='{wrong}'")
    assert not (root / "pg" / ".initdb-password").exists()


def test_start_postgres_takes_a_password_of_its_own_and_refuses_another_later(
    root: Path, servers: list[EmbeddedServer]
) -> None:
    pg = start_postgres(root / "pg", password="chosen-by-the-caller")
    servers.append(pg)
    assert ":chosen-by-the-caller@" in pg.url
    stop(pg)

    servers.append(start_postgres(root / "pg", password="chosen-by-the-caller"))
    with pytest.raises(LocalClusterError, match="another password"):
        start_postgres(root / "pg", password="a-different-one")


def test_a_trust_data_dir_of_an_earlier_version_gets_a_password_when_it_starts_again(
    root: Path, servers: list[EmbeddedServer]
) -> None:
    pg = start_postgres(root / "pg", database="keep")
    servers.append(pg)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (v int)")
        conn.execute("INSERT INTO marker VALUES (7)")
    stop(pg)
    # What `initdb --auth=trust` left before passwords, and no password file.
    hba = root / "pg" / "pgdata" / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
    (root / "pg" / "password").unlink()

    upgraded = start_postgres(root / "pg", database="keep")
    servers.append(upgraded)

    assert upgraded.requires_password
    password = (root / "pg" / "password").read_text().strip()
    assert password and password in upgraded.url and upgraded.url != pg.url
    with psycopg.connect(upgraded.url) as conn:
        assert conn.execute("SELECT v FROM marker").fetchone() == (7,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(upgraded.url.replace(password, "not-the-password"), connect_timeout=5)
    # The password never reached the server's log, not even in the statement that set it.
    assert password not in upgraded.log_file.read_text()


def test_start_redis_requires_the_password_it_keeps_owner_only(
    root: Path, servers: list[EmbeddedServer]
) -> None:
    server = start_redis(root / "redis")
    servers.append(server)

    password = (root / "redis" / "password").read_text().strip()
    assert server.url.startswith(f"redis://:{password}@127.0.0.1:")
    assert {_mode(root / "redis" / name) for name in ("password", "redis.conf")} == {0o600}
    assert _mode(root / "redis") == 0o700
    assert password not in " ".join(psutil.Process(server.pid).cmdline())
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2).ping()
    assert redis.Redis.from_url(server.url).ping() is True
