"""`stalwart deploy local up|down|status` runs a real cluster in the background and stops exactly it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stalwart.cli import deploy
from stalwart_master.local import cluster
from stalwart_master.local.process import free_port

from support import kill_leftovers, process_gone

CLI = [sys.executable, "-c", "from stalwart.cli.main import main; main()", "deploy", "local"]
COMPONENTS = {"postgres", "redis", "master", "worker", "agent-0"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's tmp_path, whose parent every new pytest session chmods to 0700: as root,
    PostgreSQL runs as an unprivileged user that must traverse every parent of its data."""
    root = Path(tempfile.mkdtemp(prefix="stalwart-test-deploy-"))
    try:
        yield root
    finally:
        with contextlib.suppress(Exception):
            cluster.down(root)
        kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cli_env(data_dir: Path) -> dict[str, str]:
    """The test session points the master at shared test servers; here everything must be embedded."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STALWART_DATABASE_URL", "STALWART_REDIS_URL", "STALWART_ADMIN_PASSWORD")
    }
    env["STALWART_DATA_DIR"] = str(data_dir)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _pids(report: dict[str, Any]) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in report["components"]}


def _login(master_url: str, password: str) -> int:
    response = httpx.post(
        f"{master_url}/api/v1/auth/login", json={"username": "admin", "password": password}, timeout=10
    )
    return response.status_code


@pytest.mark.e2e
def test_up_status_down_runs_and_stops_exactly_the_local_cluster(
    data_dir: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    first = _json(_cli(cli_env, "up", "--data-dir", str(data_dir), "--port", str(port), "--json"))
    assert {c["name"]: c["state"] for c in first["components"]} == dict.fromkeys(COMPONENTS, "running")
    pids = _pids(first)
    assert all(not process_gone(pid) for pid in pids.values())
    assert first["master_url"] == f"http://127.0.0.1:{port}"
    assert httpx.get(f"{first['master_url']}/health", timeout=10).status_code == 200
    # Shown by the start that created it, and kept in the file only from then on.
    password = first["admin"]["password"]
    assert password
    password_file = data_dir / "admin-password"
    assert first["admin"]["password_file"] == str(password_file)
    assert password_file.read_text().strip() == password
    assert _login(first["master_url"], password) == 200
    assert _login(first["master_url"], password + "-wrong") == 401

    again = _json(_cli(cli_env, "up", "--data-dir", str(data_dir), "--port", str(port), "--json"))
    assert _pids(again) == pids
    assert {c["detail"] for c in again["components"]} == {"already running"}
    assert again["admin"]["password"] is None

    # STALWART_DATA_DIR alone selects the cluster.
    status = _json(_cli(cli_env, "status", "--json"))
    assert {c["name"]: c["state"] for c in status["components"]} == dict.fromkeys(COMPONENTS, "running")
    assert _pids(status) == pids
    table = _cli(cli_env, "status")
    assert table.returncode == 0
    assert first["master_url"] in table.stdout and str(password_file) in table.stdout
    assert password not in table.stdout + table.stderr

    down = _json(_cli(cli_env, "down", "--json"))
    assert {c["name"]: c["state"] for c in down["components"]} == dict.fromkeys(COMPONENTS, "stopped")
    assert [pid for pid in pids.values() if not process_gone(pid)] == []
    after = _json(_cli(cli_env, "status", "--json"))
    assert {c["state"] for c in after["components"]} == {"stopped"}
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()

    # Data survives: the same admin password still logs in after a fresh start.
    restarted = _json(_cli(cli_env, "up", "--port", str(port), "--json"))
    assert set(_pids(restarted).values()).isdisjoint(pids.values())
    assert restarted["admin"]["password"] is None
    assert password_file.read_text().strip() == password
    assert _login(restarted["master_url"], password) == 200
    assert _cli(cli_env, "down").returncode == 0
    assert all(process_gone(pid) for pid in _pids(restarted).values())


@pytest.mark.e2e
def test_up_reports_a_master_that_dies_in_one_error_and_leaves_no_master(
    data_dir: Path, cli_env: dict[str, str]
) -> None:
    # External servers that do not exist: nothing embedded starts, and the master fails at startup.
    env = {
        **cli_env,
        "STALWART_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        "STALWART_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = _cli(env, "up", "--port", str(free_port()))

    assert result.returncode == 1
    first, *rest = result.stderr.splitlines()
    assert first.startswith("Error: the master exited"), result.stderr
    # Everything after the one error line is the quoted master log, not a traceback of our own.
    assert all(line.startswith("    ") or not line.strip() for line in rest)
    assert not (data_dir / "run" / "master.pid").exists()
    report = cluster.status(data_dir)
    assert {c.name: c.state for c in report.components} == {
        "postgres": "external",
        "redis": "external",
        "master": "stopped",
        "worker": "stopped",
    }


@pytest.mark.integration
def test_up_on_a_busy_port_fails_before_starting_anything(data_dir: Path, cli_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli(cli_env, "up", "--port", str(port))

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is already in use; choose another with --port"
    )
    assert not any((data_dir / "run").glob("*.pid"))


@pytest.mark.unit
def test_deploy_local_without_the_master_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "stalwart_master", None)
    for command in ("up", "down", "status"):
        result = CliRunner().invoke(deploy.app, ["local", command, "--data-dir", str(tmp_path)])
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            "Error: stalwart deploy local needs the stalwart-master package: pip install stalwart-master"
        ]
