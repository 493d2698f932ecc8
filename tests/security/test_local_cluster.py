"""Security finding 8: a local cluster keeps its secrets to the user who started it.

The data dir, its logs and its secrets are owner-only; the admin password is shown once and never
logged; the embedded PostgreSQL and Redis refuse clients without their passwords; trials of a root
agent run as an unprivileged user that can read none of it and still train; and no SQL parameter
(a config's S3 secret_key, say) reaches the master's log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from stalwart.context import build_context
from stalwart_agent.errors import AgentError
from stalwart_agent.launcher import resolve_trial_user
from stalwart_master.api import problems
from stalwart_master.db.session import get_engine
from stalwart_master.local import cluster
from stalwart_master.local.process import LocalClusterError, free_port

from support import kill_leftovers, start_master, wait_for

TRIAL_USER = "nobody"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="switching users needs root")
CLI = ["-c", "from stalwart.cli.main import main; main()", "deploy", "local"]
# Imports what a trial runner and a local cluster run; as the trial user it must succeed.
CHECKOUT_IMPORTS = "import stalwart.exec.run, stalwart_agent.cli, stalwart_master.app"

TRIAL = """\
import os

import stalwart.core

with stalwart.core.init() as core:
    for what, path in sorted(core.info.hparams.items()):
        try:
            with open(path, "rb") as secret:
                secret.read()
        except PermissionError:
            print(f"denied {what}", flush=True)
        else:
            print(f"READ {what}", flush=True)
    print(f"uid {os.getuid()}", flush=True)
    for step in (1, 2):
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
    core.checkpoint.save_state({"step": 2}, steps_completed=2)
    core.train.report_validation_metrics(steps_completed=2, metrics={"loss": 0.5})
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _runs_as(user: str, argv: list[str]) -> bool:
    """Whether ``argv`` succeeds as ``user``, with that user's groups and none of ours."""
    entry = pwd.getpwnam(user)
    try:
        result = subprocess.run(
            argv,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=os.getgrouplist(user, entry.pw_gid),
            cwd="/",
            env={"PATH": os.defpath},
            capture_output=True,
            timeout=120,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0


# Test workers (xdist), and test runs side by side, open the directories together: the last one
# out puts their modes back, from what the first one in recorded here.
_OPENED = Path(tempfile.gettempdir()) / "stalwart-test-searchable-dirs.json"


@contextlib.contextmanager
def _searchable_by_others(directories: list[Path]) -> Iterator[None]:
    """Search permission (x, no listing) for others on ``directories`` while anyone needs it."""
    with open(_OPENED.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        opened: dict[str, int] = json.loads(_OPENED.read_text()) if _OPENED.exists() else {}
        for directory in directories:
            mode = stat.S_IMODE(directory.stat().st_mode)
            if not mode & stat.S_IXOTH:
                opened.setdefault(str(directory), mode)
                directory.chmod(mode | stat.S_IXOTH)
        _OPENED.write_text(json.dumps(opened))
        fcntl.flock(lock, fcntl.LOCK_SH)  # held while in use; the last one out gets LOCK_EX below
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            last = True
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                last = False
            if last:
                opened = json.loads(_OPENED.read_text()) if _OPENED.exists() else {}
                for path, mode in opened.items():
                    Path(path).chmod(mode)
                _OPENED.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def trial_python() -> Iterator[str | None]:
    """This Python, made runnable by TRIAL_USER for the module's tests, or None when it cannot be.

    Running trials as another user needs a Python that user may run, as an installation for trial
    users would be. Ours may live under a home only root may enter (pyenv under /root): its
    directories get search permission for others while the tests run, and their modes back after.
    """
    if not IS_ROOT:
        yield None
        return
    with _searchable_by_others(list(Path(os.path.realpath(sys.executable)).parents)):
        yield sys.executable if _runs_as(TRIAL_USER, [sys.executable, "-c", CHECKOUT_IMPORTS]) else None


@dataclass
class LocalCluster:
    data_dir: Path
    report: dict[str, Any]
    output: str
    trial_user: str | None

    @property
    def admin_password(self) -> str:
        return str(self.report["admin"]["password"])

    def api(self) -> httpx.Client:
        url = str(self.report["master_url"])
        login = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"username": "admin", "password": self.admin_password},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        return httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {login.json()['token']}"}, timeout=30
        )


def _cli_env(data_dir: Path) -> dict[str, str]:
    """Everything embedded, nothing of the test session's shared servers or admin password."""
    dropped = (
        "STALWART_DATABASE_URL",
        "STALWART_REDIS_URL",
        "STALWART_ADMIN_PASSWORD",
        "STALWART_AGENT_TRIAL_USER",
    )
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["STALWART_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="module")
def local_cluster(trial_python: str | None) -> Iterator[LocalCluster]:
    """`stalwart deploy local up` in a data dir that already existed with loose permissions; as
    root, with ``--trial-user nobody``."""
    # Outside pytest's tmp_path, which is 0700: as root the PostgreSQL and trial users pass through.
    data_dir = Path(tempfile.mkdtemp(prefix="stalwart-test-secrets-"))
    data_dir.chmod(0o755)
    trial_user = TRIAL_USER if trial_python else None
    args = ["up", "--data-dir", str(data_dir), "--port", str(free_port()), "--json"]
    if trial_user:
        args += ["--trial-user", trial_user]
    try:
        result = subprocess.run(
            [sys.executable, *CLI, *args],
            env=_cli_env(data_dir),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        yield LocalCluster(data_dir, json.loads(result.stdout), result.stdout + result.stderr, trial_user)
    finally:
        with contextlib.suppress(Exception):
            cluster.down(data_dir)
        kill_leftovers(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the local cluster ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_deploy_local_up_keeps_the_data_dir_its_logs_and_its_secrets_owner_only(
    local_cluster: LocalCluster,
) -> None:
    data_dir = local_cluster.data_dir
    # Root's data dir is passable (0711) for the PostgreSQL and trial users, listable by no one else.
    assert _mode(data_dir) == (0o711 if IS_ROOT else 0o700)
    for directory in ("run", "logs", "agent-tokens", "redis"):
        assert _mode(data_dir / directory) == 0o700, directory
    secrets = [
        data_dir / "admin-password",
        data_dir / "agent-tokens" / "agent-0",
        data_dir / "postgres" / "password",
        data_dir / "redis" / "password",
        data_dir / "redis" / "redis.conf",
    ]
    for secret in secrets:
        assert secret.is_file() and not secret.is_symlink(), secret
        assert (_mode(secret), secret.stat().st_uid) == (0o600, os.geteuid()), secret
    logs = sorted((data_dir / "logs").iterdir())
    assert {p.name for p in logs} >= {"postgres.log", "redis.log", "master.log", "worker.log", "agent-0.log"}
    assert {p.name: _mode(p) for p in logs} == {p.name: 0o600 for p in logs}
    assert _mode(data_dir / "agents" / "agent-0") == (0o711 if local_cluster.trial_user else 0o700)


@pytest.mark.e2e
def test_the_admin_password_is_shown_by_the_first_up_alone_and_never_logged(
    local_cluster: LocalCluster,
) -> None:
    password = local_cluster.admin_password
    data_dir = local_cluster.data_dir
    assert len(password) >= 12
    assert (data_dir / "admin-password").read_text().strip() == password

    leaks = [
        path
        for path in data_dir.rglob("*")
        if path.is_file() and path.name != "admin-password" and password.encode() in path.read_bytes()
    ]
    assert leaks == []
    assert b"created user 'admin'" in (data_dir / "logs" / "master.log").read_bytes()

    status = subprocess.run(
        [sys.executable, *CLI, "status"], env=_cli_env(data_dir), capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert password not in status.stdout + status.stderr
    assert str(data_dir / "admin-password") in status.stdout


@pytest.mark.e2e
def test_embedded_postgres_and_redis_refuse_clients_without_their_passwords(
    local_cluster: LocalCluster,
) -> None:
    data_dir = local_cluster.data_dir
    pg_port = int((data_dir / "postgres" / "port").read_text())
    pg_password = (data_dir / "postgres" / "password").read_text().strip()
    dsn = f"host=127.0.0.1 port={pg_port} user=postgres dbname=stalwart connect_timeout=5"
    for wrong in ("", "not-the-password"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"{dsn} password='{wrong}'")
    with psycopg.connect(f"{dsn} password={pg_password}") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)

    redis_port = int((data_dir / "redis" / "port").read_text())
    redis_password = (data_dir / "redis" / "password").read_text().strip()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_port, socket_connect_timeout=5).ping()
    assert redis.Redis(host="127.0.0.1", port=redis_port, password=redis_password).ping() is True

    # And no password of the cluster is on a command line, where `ps` shows it to everyone.
    secrets = [pg_password, redis_password, local_cluster.admin_password]
    secrets.append((data_dir / "agent-tokens" / "agent-0").read_text().strip())
    pids = [c["pid"] for c in local_cluster.report["components"]]
    assert all(pids)
    command_lines = [" ".join(psutil.Process(pid).cmdline()) for pid in pids]
    assert [s for s in secrets if any(s in line for line in command_lines)] == []


@pytest.mark.e2e
def test_trials_run_as_the_trial_user_cannot_read_the_cluster_secrets_and_still_train(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    if local_cluster.trial_user is None:
        pytest.skip(f"not root, or no Python with our packages that {TRIAL_USER} may run")
    data_dir = local_cluster.data_dir
    agent_pid = int((data_dir / "run" / "agent-0.pid").read_text().split()[0])
    secrets = {
        "admin_password": data_dir / "admin-password",
        "agent_token": data_dir / "agent-tokens" / "agent-0",
        "postgres_password": data_dir / "postgres" / "password",
        "agent_environment": Path(f"/proc/{agent_pid}/environ"),  # the agent's STALWART_AGENT_TOKEN
    }
    (tmp_path / "train.py").write_text(TRIAL)
    config = {
        "name": "trial-user",
        "entrypoint": "python3 train.py",
        "hyperparameters": {name: str(path) for name, path in secrets.items()},
        "searcher": {"name": "single", "metric": "loss"},
        "max_restarts": 0,
    }
    with local_cluster.api() as api:
        context = api.post(
            "/api/v1/contexts", content=build_context(tmp_path), headers={"Content-Type": "application/gzip"}
        )
        assert context.status_code in (200, 201), context.text
        created = api.post(
            "/api/v1/experiments", json={"config": json.dumps(config), "context": context.json()["sha256"]}
        )
        assert created.status_code == 201, created.text
        experiment_id = created.json()["id"]

        def state() -> str:
            return str(api.get(f"/api/v1/experiments/{experiment_id}").json()["state"])

        wait_for(
            lambda: state() in ("COMPLETED", "CANCELED", "ERROR"), 240, "the experiment to end", interval=0.5
        )
        (trial,) = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
        raw = api.get(f"/api/v1/trials/{trial['id']}/logs").text
        lines = [json.loads(line)["message"].strip() for line in raw.splitlines() if line.strip()]
        assert state() == "COMPLETED", "\n".join(lines)

    assert [line for line in lines if line.startswith(("denied ", "READ "))] == [
        f"denied {name}" for name in sorted(secrets)
    ]
    assert f"uid {pwd.getpwnam(TRIAL_USER).pw_uid}" in lines
    # It trained: its checkpoint is on disk, written as the trial user.
    checkpoint_files = [p for p in (data_dir / "checkpoints").rglob("*") if p.is_file()]
    assert checkpoint_files
    assert {p.stat().st_uid for p in checkpoint_files} == {pwd.getpwnam(TRIAL_USER).pw_uid}


# --- choosing the trial user -----------------------------------------------------------------------


@pytest.fixture
def hidden_python() -> Iterator[str]:
    """This Python, behind a directory only root may enter: no other user can run it."""
    root = Path(tempfile.mkdtemp(prefix="stalwart-test-hidden-"))
    (root / "python").symlink_to(sys.executable)
    try:
        yield str(root / "python")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@needs_root
def test_an_agent_refuses_a_trial_user_that_does_not_exist_or_cannot_run_the_trial_runner(
    hidden_python: str, trial_python: str | None
) -> None:
    with pytest.raises(AgentError, match="no such user"):
        resolve_trial_user("no-such-user-stalwart")
    with pytest.raises(AgentError, match=f"--trial-user {TRIAL_USER} cannot run {hidden_python}"):
        resolve_trial_user(TRIAL_USER, hidden_python)
    assert resolve_trial_user("root") is None  # our own user: nothing to switch
    if trial_python is not None:
        user = resolve_trial_user(TRIAL_USER, trial_python)
        assert user is not None and user.uid == pwd.getpwnam(TRIAL_USER).pw_uid


@pytest.mark.integration
@needs_root
def test_a_root_cluster_runs_trials_as_root_with_a_note_only_when_its_trial_user_cannot(
    hidden_python: str, trial_python: str | None, tmp_path: Path
) -> None:
    layout = cluster._layout(tmp_path)
    notes: list[str] = []
    assert cluster._trial_user(layout, None, notes, hidden_python) is None
    assert len(notes) == 1 and f"user {cluster.TRIAL_SYSTEM_USER} cannot run {hidden_python}" in notes[0]

    # Asked for by name, it must work or `up` fails: here the checkpoints are out of its reach
    # (pytest's tmp_path is under a 0700 directory).
    with pytest.raises(LocalClusterError, match=f"--trial-user {TRIAL_USER}: user {TRIAL_USER} cannot run"):
        cluster._trial_user(layout, TRIAL_USER, [], hidden_python)
    if trial_python is not None:
        with pytest.raises(
            LocalClusterError, match=f"user {TRIAL_USER} cannot write to {layout.checkpoints_dir}"
        ):
            cluster._trial_user(layout, TRIAL_USER, [], trial_python)
        reachable = cluster._layout(Path(tempfile.mkdtemp(prefix="stalwart-test-trial-user-")))
        try:
            reachable.data_dir.chmod(0o711)  # as `up` leaves a root data dir
            assert cluster._trial_user(reachable, TRIAL_USER, [], trial_python) == TRIAL_USER
            assert reachable.checkpoints_dir.stat().st_uid == pwd.getpwnam(TRIAL_USER).pw_uid
        finally:
            shutil.rmtree(reachable.data_dir, ignore_errors=True)


# --- no SQL parameter in the master's log ------------------------------------------------------------


@pytest.mark.integration
def test_a_config_with_a_nul_byte_and_an_s3_secret_leaves_no_secret_in_the_master_log(
    scratch_database: Callable[[str], str], tmp_path: Path
) -> None:
    secret = f"s3-secret-{uuid.uuid4().hex}"
    port = free_port()
    master = start_master(port, tmp_path / "master", {"STALWART_DATABASE_URL": scratch_database("nulsecret")})
    try:
        url = f"http://127.0.0.1:{port}"
        login = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"]},
            timeout=30,
        )
        api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {login.json()['token']}"}, timeout=30
        )
        (tmp_path / "context").mkdir()
        (tmp_path / "context" / "train.py").write_text("print('never runs')\n")
        context = api.post(
            "/api/v1/contexts",
            content=build_context(tmp_path / "context"),
            headers={"Content-Type": "application/gzip"},
        )
        assert context.status_code in (200, 201), context.text
        storage = {"type": "s3", "bucket": "b", "access_key": "stalwart-test", "secret_key": secret}
        configs = [
            {"description": "a NUL \u0000 byte"},
            # PostgreSQL quotes the JSON just before a bad character: here, the secret.
            {"hyperparameters": {"after_the_secret": "\u0000"}},
            {"checkpoint_storage": {**storage, "secret_key": secret + "\u0000"}},
        ]
        for extra in configs:
            config = {
                "name": "nul",
                "entrypoint": "python3 train.py",
                "searcher": {"name": "single", "metric": "loss"},
                "checkpoint_storage": storage,
                **extra,
            }
            response = api.post(
                "/api/v1/experiments",
                json={"config": json.dumps(config), "context": context.json()["sha256"]},
            )
            assert response.status_code == 422, response.text
            assert secret not in response.text
        api.close()
    finally:
        master.stop()
    log = master.log_file.read_text()
    assert "POST /api/v1/experiments" in log
    assert secret not in log


@pytest.mark.integration
def test_database_errors_reach_the_log_without_the_values_they_quote(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from stalwart_master.settings import get_settings

    engine = get_engine(get_settings().database.sqlalchemy_url)
    assert engine.hide_parameters
    secret = f"secret-{uuid.uuid4().hex}"
    app = FastAPI()
    problems.install(app)

    @app.post("/refused")
    def refused() -> None:  # DataError: the JSON context before the NUL names the secret
        with engine.connect() as conn:
            conn.execute(
                text("SELECT CAST(:config AS jsonb)"), {"config": json.dumps({"secret_key": secret + "\0"})}
            )

    @app.post("/bug")
    def bug() -> None:  # ProgrammingError, whose message itself quotes the value
        with engine.connect() as conn:
            conn.execute(text("SELECT CAST(:name AS regclass)"), {"name": secret})

    with (
        caplog.at_level("INFO", logger="stalwart_master"),
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        assert client.post("/refused").status_code == 422
        assert client.post("/bug").status_code == 500

    assert "UntranslatableCharacter, SQLSTATE 22P05" in caplog.text
    assert "UndefinedTable, SQLSTATE 42P01" in caplog.text
    assert "in bug" in caplog.text  # the frames of the unexpected one, to find the statement by
    assert secret not in caplog.text
