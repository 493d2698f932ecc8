"""Starting and stopping real processes for tests, with deadlines instead of sleeps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from typer.testing import Result

from stalwart_master.local.process import free_port  # noqa: F401 (tests import it from here)

# The pool in which the session's live master preempts lower-priority trials (STALWART_POOL_PREEMPTION).
PREEMPTIVE_POOL = "preemptive"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll until ``predicate`` holds or fail with ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ManagedProcess:
    process: subprocess.Popen[bytes]
    log_file: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(grace)


def spawn(args: list[str], log_file: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so stop() takes its children too
        )
    return ManagedProcess(process, log_file)


def mint_agent_token(api: httpx.Client, agent_id: str) -> str:
    """A token for ``agent_id`` alone (``stalwart agent token create AGENT_ID``); ``api`` is an admin's."""
    response = api.post("/api/v1/agents/tokens", json={"agent_id": agent_id})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def agent_argv(master: str, token: str, agent_id: str, slots: int, pool: str, work_dir: Path) -> list[str]:
    """``stalwart-agent`` with artificial slots, as every test cluster starts one; add flags after."""
    return [
        sys.executable,
        "-m",
        "stalwart_agent",
        "--master",
        master,
        "--token",
        token,
        "--agent-id",
        agent_id,
        "--artificial-slots",
        str(slots),
        "--resource-pool",
        pool,
        "--work-dir",
        str(work_dir),
    ]


def start_master(
    port: int,
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
    https_ca: Path | None = None,
) -> ManagedProcess:
    """``stalwart-master serve`` on ``port``; with ``https_ca``, it serves HTTPS (give ``--tls-cert``
    and ``--tls-key`` in ``extra_args``) and its health is checked against that CA."""
    data_dir.mkdir(parents=True, exist_ok=True)
    managed = spawn(
        [sys.executable, "-m", "stalwart_master", "serve", "--port", str(port), *extra_args],
        data_dir / "master.log",
        {"STALWART_DATA_DIR": str(data_dir), **(env or {})},
    )
    scheme = "https" if https_ca else "http"
    verify = ssl.create_default_context(cafile=https_ca) if https_ca else True

    def healthy() -> bool:
        if not managed.alive():
            raise RuntimeError(f"master exited with {managed.process.returncode}:\n{managed.log_tail()}")
        try:
            response = httpx.get(f"{scheme}://127.0.0.1:{port}/health", timeout=1, verify=verify)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, f"the master on port {port}")
    except BaseException:
        managed.stop()
        raise
    return managed


def start_worker(data_dir: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    managed = spawn(
        [sys.executable, "-m", "stalwart_master", "worker"],
        data_dir / "worker.log",
        {"STALWART_DATA_DIR": str(data_dir), **(env or {})},
    )

    def ready() -> bool:
        if not managed.alive():
            raise RuntimeError(f"worker exited with {managed.process.returncode}:\n{managed.log_tail()}")
        return " ready." in managed.log_tail(200)

    try:
        wait_for(ready, 60, "the Celery worker")
    except BaseException:
        managed.stop()
        raise
    return managed


def recreate_database(name: str) -> str:
    admin = os.environ["STALWART_TEST_PG_ADMIN_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin.rsplit('/', 1)[0]}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(os.environ["STALWART_TEST_PG_ADMIN_URL"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def process_gone(pid: int) -> bool:
    """Gone or a zombie: this machine's init is slow to reap, and a zombie holds nothing."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(root: Path) -> None:
    """Last resort after a failed test: kill anything running from, or with data under, ``root``."""
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = proc.info
        text = " ".join(info.get("cmdline") or []) + " " + (info.get("cwd") or "")
        if str(root) in text and proc.pid != psutil.Process().pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


SIMPLE_CONFIG = """\
name: {name}
description: {description}
labels: [{label}]
entrypoint: python3 train.py
hyperparameters:
  learning_rate: 0.05
searcher:
  name: single
  metric: validation_loss
  smaller_is_better: true
"""


def start_trial_run(database_url: str, trial_id: int) -> tuple[str, str]:
    """Stand in for an agent: give the trial a RUNNING allocation; returns (allocation id, its token)."""
    from sqlalchemy import create_engine, select, update
    from sqlalchemy.orm import Session

    from stalwart_master.db.orm import Allocation, Experiment, Token, Trial, User
    from stalwart_master.services import users as users_service

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with Session(engine) as session, session.begin():
            trial = session.get(Trial, trial_id, with_for_update=True)
            assert trial is not None, f"trial {trial_id} not found"
            experiment = session.get(Experiment, trial.experiment_id)
            assert experiment is not None
            trial.run_id += 1
            allocation = Allocation(
                trial_id=trial.id,
                run_id=trial.run_id,
                resource_pool="test-no-agents",
                slots_needed=0,
                priority=42,
                state="RUNNING",
                delivered=True,
            )
            session.add(allocation)
            session.flush()
            owner = session.scalar(select(User).where(User.id == experiment.owner_id))
            assert owner is not None
            secret = users_service.issue_token(session, owner, 1, kind="allocation")
            session.execute(
                update(Token)
                .where(Token.token_hash == users_service.hash_token(secret))
                .values(allocation_id=allocation.id)
            )
            return str(allocation.id), secret
    finally:
        engine.dispose()


def one_error_line(result: Result, *fragments: str) -> str:
    """A CLI failure as users must see it: exit 1, one ``Error:`` line naming the problem, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def redis_server_argv(port: int) -> list[str]:
    """A private redis-server without persistence: stopping it loses its queue, as an outage of an
    in-memory broker would."""
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


# Routes that change who may do what (tokens, users, roles, workspaces, projects, moves). The
# shared fuzz run skips them, since random small ids would revoke or demote what other tests of its
# worker hold; tests/security/test_api_fuzz_identity.py fuzzes them on a database of their own.
IDENTITY_ROUTES = {
    ("DELETE", "/api/v1/tokens/{token_id}"),
    ("DELETE", "/api/v1/agents/tokens/{token_id}"),
    ("PATCH", "/api/v1/users/{username}"),
    ("POST", "/api/v1/me/password"),
    ("PATCH", "/api/v1/workspaces/{workspace_id}"),
    ("DELETE", "/api/v1/workspaces/{workspace_id}"),
    ("PUT", "/api/v1/workspaces/{workspace_id}/members/{username}"),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/members/{username}"),
    ("PATCH", "/api/v1/projects/{project_id}"),
    ("DELETE", "/api/v1/projects/{project_id}"),
    ("POST", "/api/v1/experiments/{experiment_id}/move"),
}
