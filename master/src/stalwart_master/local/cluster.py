"""The supervisor behind ``stalwart deploy local up|down|status``.

Each component runs as a background process in its own session, with a pid file in
``<data_dir>/run/`` and a log in ``<data_dir>/logs/``. Pid files are the only record of what ``up``
started, and every one is verified (create time) before it is trusted, so ``down`` never signals a
process that merely inherited a recycled pid.

The data dir is private: mode 0700 (0711 as root, so that the PostgreSQL and trial users can pass
through to their own subdirectories), ``run/`` and ``logs/`` 0700, every log and every secret
(``admin-password``, ``agent-tokens/*``, ``postgres/password``, ``redis/password``) 0600. As root,
trials run as an unprivileged user (``--trial-user``, default TRIAL_SYSTEM_USER) that owns
``checkpoints/`` and can read none of those.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

from stalwart_master.local.embedded import (
    ensure_system_user,
    is_postmaster_for,
    is_redis_server,
    start_postgres,
    start_redis,
)
from stalwart_master.local.process import (
    LocalClusterError,
    PidCheck,
    check_pid_file,
    cmdline_has,
    exit_code,
    file_lock,
    is_alive,
    log_tail,
    owner_only_dir,
    port_is_free,
    read_secret,
    spawn,
    stop_process,
    wait_until,
    write_secret,
)

log = logging.getLogger(__name__)

COMPONENTS = ("postgres", "redis", "master", "worker")
ADMIN_USERNAME = "admin"
MASTER_START_TIMEOUT_S = 120.0
# Celery logs "celery@<host> ready." once it consumes; if that line never shows we still go on.
WORKER_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = {"worker": 60.0, "master": 30.0, "redis": 30.0, "postgres": 60.0}
AGENT_STOP_TIMEOUT_S = 30.0
# As root, trials run as this system user (created like the PostgreSQL one) unless told otherwise.
TRIAL_SYSTEM_USER = "stalwart-trial"
# Run as the trial user: it must import the trial runner and write checkpoints (argv[1]).
_TRIAL_USER_PROBE = (
    "import os, sys, stalwart.exec.run; sys.exit(0 if os.access(sys.argv[1], os.W_OK | os.X_OK) else 3)"
)


# A server an earlier version started with no password, found still running.
_NO_PASSWORD = "{}: accepts connections without a password until it is restarted (down, then up)"


def agent_names(count: int) -> list[str]:
    return [f"agent-{i}" for i in range(count)]


def agent_id(name: str) -> str:
    """The id a local agent registers with, and the one its token is bound to."""
    return f"local-{name}"


ComponentState = Literal["running", "stopped", "stale", "external"]


@dataclass
class ComponentStatus:
    name: str
    state: ComponentState
    pid: int | None = None
    url: str | None = None
    log_file: Path | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "url": self.url,
            "log_file": str(self.log_file) if self.log_file else None,
            "detail": self.detail,
        }


@dataclass
class ClusterStatus:
    """What ``up``/``down``/``status`` report: each component, the master URL and admin login.

    ``admin_password`` is set only by the ``up`` whose master created the admin: it is shown
    that once, and afterwards only ``admin_password_file`` (0600) has it.
    """

    data_dir: Path
    components: list[ComponentStatus]
    master_url: str | None
    admin_username: str = ADMIN_USERNAME
    admin_password: str | None = None
    admin_password_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def component(self, name: str) -> ComponentStatus:
        return next(c for c in self.components if c.name == name)

    @property
    def running(self) -> bool:
        return all(c.state in ("running", "external") for c in self.components)

    @property
    def stopped(self) -> bool:
        return all(c.state in ("stopped", "external") for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "master_url": self.master_url,
            "admin": {
                "username": self.admin_username,
                "password": self.admin_password,
                "password_file": str(self.admin_password_file) if self.admin_password_file else None,
            },
            "components": [c.to_dict() for c in self.components],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Layout:
    data_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "cluster.json"

    @property
    def admin_password_file(self) -> Path:
        return self.data_dir / "admin-password"

    @property
    def checkpoints_dir(self) -> Path:
        """Where the master puts checkpoints by default (``Settings.effective_experiment_defaults``)."""
        return self.data_dir / "checkpoints"

    @property
    def agent_tokens_dir(self) -> Path:
        return self.data_dir / "agent-tokens"

    def agent_token_file(self, name: str) -> Path:
        return self.agent_tokens_dir / name

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def check(self, name: str) -> PidCheck:
        if name.startswith("agent-"):
            return check_pid_file(self.pid_file(name), cmdline_has("stalwart_agent", agent_id(name)))
        matchers = {
            "postgres": is_postmaster_for(self.data_dir / "postgres" / "pgdata"),
            "redis": is_redis_server,
            "master": cmdline_has("stalwart_master", "serve"),
            "worker": cmdline_has("stalwart_master", "worker"),
        }
        return check_pid_file(self.pid_file(name), matchers[name])

    def components(self) -> list[str]:
        """The fixed services, then the agents the last ``up`` asked for."""
        return [*COMPONENTS, *agent_names(int(_read_state(self).get("agents", 0)))]


def up(
    data_dir: Path,
    port: int = 8080,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = MASTER_START_TIMEOUT_S,
    agents: int = 1,
    artificial_slots: int | None = None,
    trial_user: str | None = None,
) -> ClusterStatus:
    """Start whatever is not already running; running components are kept as they are.

    ``agents`` agent daemons run the trials; on one machine more than one would all claim the same
    GPUs, so several agents need ``artificial_slots``. ``trial_user`` is who they run trials as
    (see ``_trial_user`` for the default).

    PostgreSQL and Redis are embedded unless ``database_url`` / ``redis_url`` (or
    ``STALWART_DATABASE_URL`` / ``STALWART_REDIS_URL``) name servers to use instead.
    """
    if agents < 0 or (agents > 1 and artificial_slots is None):
        raise LocalClusterError(
            "several agents on one machine would all claim the same GPUs; pass --artificial-slots K"
        )
    layout = _layout(data_dir)
    _make_private(layout)
    notes: list[str] = []
    actions: dict[str, str] = {}
    with file_lock(layout.run_dir / ".lock"):
        # Fail before starting anything when the master could not bind anyway.
        if layout.check("master").state != "running":
            _require_free_port(host, port)
        database_url = database_url or os.environ.get("STALWART_DATABASE_URL") or None
        redis_url = redis_url or os.environ.get("STALWART_REDIS_URL") or None
        state: dict[str, Any] = {
            "database_external": database_url is not None,
            "redis_external": redis_url is not None,
        }
        if database_url is None:
            before = _note_stale(layout, "postgres", notes)
            pg = start_postgres(
                layout.data_dir / "postgres",
                log_file=layout.log_file("postgres"),
                pid_file=layout.pid_file("postgres"),
            )
            database_url = pg.url
            actions["postgres"] = "already running" if before == pg.pid else "started"
            if not pg.requires_password:
                notes.append(_NO_PASSWORD.format("postgres"))
        if redis_url is None:
            before = _note_stale(layout, "redis", notes)
            rd = start_redis(
                layout.data_dir / "redis",
                log_file=layout.log_file("redis"),
                pid_file=layout.pid_file("redis"),
            )
            redis_url = rd.url
            actions["redis"] = "already running" if before == rd.pid else "started"
            if not rd.requires_password:
                notes.append(_NO_PASSWORD.format("redis"))
        # For `status` to show; the passwords stay in the servers' own files.
        state.update(database_url=_redact(database_url), redis_url=_redact(redis_url))
        env = {
            **os.environ,
            "STALWART_DATABASE_URL": database_url,
            "STALWART_REDIS_URL": redis_url,
            "STALWART_DATA_DIR": str(layout.data_dir),
            "PYTHONUNBUFFERED": "1",
        }
        previous_url = _read_state(layout).get("master_url")
        # Recorded before the master starts, so `status` can describe a cluster whose master failed.
        _write_state(layout, {**state, "master_url": previous_url})
        had_admin_password = layout.admin_password_file.exists()
        state["master_url"], actions["master"] = _ensure_master(
            layout, host, port, env, timeout, notes, previous_url
        )
        # The master writes the file when it creates the admin; that start alone shows the password.
        new_admin_password = None if had_admin_password else read_secret(layout.admin_password_file)
        previous_agents = int(_read_state(layout).get("agents", 0))
        for name in agent_names(previous_agents)[agents:]:  # fewer agents asked for than before
            _stop_component(layout, name, actions, notes)
        state["agents"] = agents
        _write_state(layout, state)
        actions["worker"] = _ensure_worker(layout, env, notes)
        if agents:
            run_as = _trial_user(layout, trial_user, notes)
            for name in agent_names(agents):
                token = _agent_token(layout, database_url, name)
                actions[name] = _ensure_agent(
                    layout, name, state["master_url"], token, artificial_slots, run_as, env, notes
                )
    result = _status(layout, notes, actions)
    result.admin_password = new_admin_password
    return result


def _make_private(layout: _Layout) -> None:
    """Owner-only modes for the data dir, its logs and its secrets, also in data dirs made by
    earlier versions (which left logs 0644)."""
    owner_only_dir(layout.data_dir, 0o711 if os.geteuid() == 0 else 0o700)
    owner_only_dir(layout.run_dir)
    owner_only_dir(layout.logs_dir)
    owner_only_dir(layout.agent_tokens_dir)
    # The one token of all agents that versions before agent-bound tokens kept: the migration to
    # them revoked it, so it is only a stale secret lying around.
    (layout.data_dir / "agent-token").unlink(missing_ok=True)
    for path in [layout.admin_password_file, *layout.logs_dir.glob("*.log")]:
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def _trial_user(
    layout: _Layout, requested: str | None, notes: list[str], python: str = sys.executable
) -> str | None:
    """The user the local agents run trials as (their ``--trial-user``); None: the one running ``up``.

    Trial code must not read the agent tokens, the admin password or the servers' passwords, so
    as root trials run as ``requested`` or else TRIAL_SYSTEM_USER, which gets ``checkpoints/``.
    Only that default gives way: when the user cannot run ``python`` (installed where only root
    may enter, say), trials run as root, with a note saying so and how to change it.
    """
    if requested is None and os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(requested) if requested else ensure_system_user(TRIAL_SYSTEM_USER)
    except KeyError:
        raise LocalClusterError(f"--trial-user {requested}: no such user") from None
    except LocalClusterError as exc:
        notes.append(f"trials run as root, so trial code can read this cluster's secrets: {exc}")
        return None
    if entry.pw_uid == os.geteuid():
        return requested
    if os.geteuid() != 0:
        raise LocalClusterError(f"--trial-user {requested} needs `stalwart deploy local up` to run as root")
    _hand_over(layout.checkpoints_dir, entry)
    problem = _cannot_run_trials(entry, layout.checkpoints_dir, python)
    if problem is None:
        return entry.pw_name
    if requested:
        raise LocalClusterError(f"--trial-user {requested}: {problem}")
    notes.append(
        f"trials run as root, so trial code can read this cluster's secrets: {problem}. "
        "Install Stalwart where that user can run it, or pass --trial-user (docs/deploy.md)"
    )
    return None


def _hand_over(checkpoints: Path, entry: pwd.struct_passwd) -> None:
    """Trials write checkpoints as the trial user; the master (root) only deletes them."""
    owner_only_dir(checkpoints)
    if checkpoints.stat().st_uid == entry.pw_uid:
        return
    for dirpath, dirnames, filenames in os.walk(checkpoints):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in [*dirnames, *filenames]:
            os.chown(Path(dirpath) / name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _cannot_run_trials(entry: pwd.struct_passwd, checkpoints: Path, python: str) -> str | None:
    """Why ``entry`` could not run a trial of this cluster, or None when it can."""
    try:
        result = subprocess.run(
            [python, "-c", _TRIAL_USER_PROBE, str(checkpoints)],
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
            cwd="/",
            env={"PATH": os.defpath, "HOME": "/"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"user {entry.pw_name} cannot run {python} ({exc})"
    if result.returncode == 3:
        return f"user {entry.pw_name} cannot write to {checkpoints}"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return f"user {entry.pw_name} cannot run {python} ({reason})"
    return None


def _agent_token(layout: _Layout, database_url: str, name: str) -> str:
    """The token of one local agent, bound to its agent id and minted straight in the database
    for the first admin."""
    path = layout.agent_token_file(name)
    token = read_secret(path)
    if token is not None:
        return token
    from sqlalchemy import select

    from stalwart_master.db.orm import User
    from stalwart_master.db.session import unit_of_work
    from stalwart_master.services.agents import create_agent_token

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    with unit_of_work(url) as session:
        admin = session.scalars(select(User).where(User.admin.is_(True)).order_by(User.id)).first()
        if admin is None:
            raise LocalClusterError("the master created no admin user; see its log")
        token, _token_id = create_agent_token(session, admin, agent_id(name))
    write_secret(path, token)
    return token


def _ensure_agent(
    layout: _Layout,
    name: str,
    master_url: str,
    token: str,
    artificial_slots: int | None,
    trial_user: str | None,
    env: dict[str, str],
    notes: list[str],
) -> str:
    check = layout.check(name)
    if check.state == "running":
        return "already running"
    if check.state == "stale":
        notes.append(f"{name}: replaced stale pid file ({check.reason})")
        layout.pid_file(name).unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "stalwart_agent",
        "--master",
        master_url,
        "--agent-id",
        agent_id(name),
        "--work-dir",
        str(layout.data_dir / "agents" / name),
        # `down` sends SIGTERM, which drains the agent: its trials checkpoint and stop. Trials that
        # ignore preemption are stopped after this, inside the AGENT_STOP_TIMEOUT_S `down` waits.
        "--drain-timeout",
        str(int(AGENT_STOP_TIMEOUT_S * 2 / 3)),
    ]
    if artificial_slots is not None:
        argv += ["--artificial-slots", str(artificial_slots)]
    if trial_user is not None:
        argv += ["--trial-user", trial_user]
    # The token travels in the environment, not argv, so `ps` does not show it.
    agent_env = {k: v for k, v in env.items() if not k.startswith("STALWART_")}
    agent_env["STALWART_AGENT_TOKEN"] = token
    proc = spawn(
        argv,
        log_file=layout.log_file(name),
        pid_file=layout.pid_file(name),
        env=agent_env,
        cwd=layout.data_dir,
    )

    def registered() -> bool:
        return b"registered with" in layout.log_file(name).read_bytes()

    def alive() -> None:
        if not is_alive(proc):
            layout.pid_file(name).unlink(missing_ok=True)
            log_file = layout.log_file(name)
            tail = log_tail(log_file)
            raise LocalClusterError(f"{name} exited during startup; last lines of {log_file}:\n{tail}")

    if not wait_until(registered, timeout=30.0, interval=0.2, alive=alive):
        notes.append(f"{name}: started but not registered after 30s; see {layout.log_file(name)}")
    return "started"


def _stop_component(layout: _Layout, name: str, actions: dict[str, str], notes: list[str]) -> None:
    check = layout.check(name)
    if check.state == "running":
        assert check.process is not None
        sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
        log.info("stopping %s (pid %d)", name, check.process.pid)
        stop_process(check.process, sig=sig, timeout=_STOP_TIMEOUT_S.get(name, AGENT_STOP_TIMEOUT_S))
        actions[name] = f"stopped pid {check.pid}"
    elif check.state == "stale":
        notes.append(f"{name}: removed stale pid file ({check.reason})")
    layout.pid_file(name).unlink(missing_ok=True)


def down(data_dir: Path) -> ClusterStatus:
    """Stop, in reverse start order, exactly the processes named by verified pid files; keep data."""
    layout = _layout(data_dir)
    notes: list[str] = []
    actions: dict[str, str] = {}
    if not layout.run_dir.is_dir():
        return _status(layout, notes, actions)
    with file_lock(layout.run_dir / ".lock"):
        for name in reversed(layout.components()):
            _stop_component(layout, name, actions, notes)
    return _status(layout, notes, actions)


def status(data_dir: Path) -> ClusterStatus:
    """Report each component without changing anything (stale pid files are left for ``up``)."""
    return _status(_layout(data_dir), [], {})


def _layout(data_dir: Path) -> _Layout:
    return _Layout(Path(data_dir).expanduser().resolve())


def _note_stale(layout: _Layout, name: str, notes: list[str]) -> int | None:
    """The pid already running for ``name`` (if any); a stale pid file is reported and removed."""
    check = layout.check(name)
    if check.state == "stale":
        notes.append(f"{name}: replaced stale pid file ({check.reason})")
        log.warning("%s: replacing stale pid file %s: %s", name, layout.pid_file(name), check.reason)
        layout.pid_file(name).unlink(missing_ok=True)
    return check.pid if check.state == "running" else None


def _ensure_master(
    layout: _Layout,
    host: str,
    port: int,
    env: dict[str, str],
    timeout: float,
    notes: list[str],
    previous_url: str | None,
) -> tuple[str, str]:
    url = f"http://{_client_host(host)}:{port}"
    log_file = layout.log_file("master")
    check = layout.check("master")
    if check.state == "running":
        assert check.process is not None
        if previous_url and previous_url != url:
            notes.append(f"master was already running at {previous_url}; the requested port was not used")
            url = previous_url
        _wait_for_health(check.process, url, log_file, timeout)
        return url, "already running"
    if check.state == "stale":
        notes.append(f"master: replaced stale pid file ({check.reason})")
        layout.pid_file("master").unlink(missing_ok=True)
    _require_free_port(host, port)
    proc = spawn(
        [sys.executable, "-m", "stalwart_master", "serve", "--host", host, "--port", str(port)],
        log_file=log_file,
        pid_file=layout.pid_file("master"),
        env=env,
        cwd=layout.data_dir,
    )
    try:
        _wait_for_health(proc, url, log_file, timeout)
    except LocalClusterError:
        # Leave nothing half-started behind: the next `up` should start a fresh master.
        if is_alive(proc):
            stop_process(proc, timeout=10.0)
        layout.pid_file("master").unlink(missing_ok=True)
        raise
    return url, "started"


def _require_free_port(host: str, port: int) -> None:
    if not port_is_free(port, host):
        raise LocalClusterError(f"port {port} on {host} is already in use; choose another with --port")


def _wait_for_health(proc: psutil.Process, url: str, log_file: Path, timeout: float) -> None:
    def alive() -> None:
        code = exit_code(proc)
        if code is not None or not proc.is_running():
            raise LocalClusterError(
                f"the master exited (code {code}) before answering {url}/health; "
                f"last lines of {log_file}:\n{log_tail(log_file)}"
            )

    if not wait_until(lambda: _healthy(url), timeout=timeout, interval=0.2, alive=alive):
        raise LocalClusterError(
            f"the master (pid {proc.pid}) did not answer {url}/health within {timeout:.0f}s; "
            f"last lines of {log_file}:\n{log_tail(log_file)}"
        )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _ensure_worker(layout: _Layout, env: dict[str, str], notes: list[str]) -> str:
    check = layout.check("worker")
    if check.state == "running":
        return "already running"
    if check.state == "stale":
        notes.append(f"worker: replaced stale pid file ({check.reason})")
        layout.pid_file("worker").unlink(missing_ok=True)
    log_file = layout.log_file("worker")
    offset = log_file.stat().st_size if log_file.exists() else 0
    proc = spawn(
        [sys.executable, "-m", "stalwart_master", "worker"],
        log_file=log_file,
        pid_file=layout.pid_file("worker"),
        env=env,
        cwd=layout.data_dir,
    )

    def alive() -> None:
        if not is_alive(proc):
            layout.pid_file("worker").unlink(missing_ok=True)
            raise LocalClusterError(
                f"the Celery worker exited during startup; last lines of {log_file}:\n{log_tail(log_file)}"
            )

    def ready() -> bool:
        with open(log_file, "rb") as f:
            f.seek(offset)
            return b" ready." in f.read()

    if not wait_until(ready, timeout=WORKER_READY_TIMEOUT_S, interval=0.2, alive=alive):
        notes.append(f"worker: started but not yet ready after {WORKER_READY_TIMEOUT_S:.0f}s; see {log_file}")
    return "started"


def _status(layout: _Layout, notes: list[str], actions: dict[str, str]) -> ClusterStatus:
    state = _read_state(layout)
    urls = {
        "postgres": state.get("database_url"),
        "redis": state.get("redis_url"),
        "master": state.get("master_url"),
    }
    components = []
    for name in layout.components():
        check = layout.check(name)
        component_state: ComponentState = check.state
        if check.state == "stopped" and state.get(f"{_EXTERNAL_KEY.get(name, name)}_external"):
            component_state = "external"
        url = urls.get(name)
        detail = actions.get(name, check.reason)
        if name == "master" and check.state == "running" and url and not _healthy(url):
            detail = "running but not answering /health"
        components.append(
            ComponentStatus(
                name=name,
                state=component_state,
                pid=check.pid if check.state == "running" else None,
                url=_redact(url) if url else None,
                log_file=layout.log_file(name) if component_state != "external" else None,
                detail=detail,
            )
        )
    return ClusterStatus(
        data_dir=layout.data_dir,
        components=components,
        master_url=urls["master"],
        admin_password_file=layout.admin_password_file if layout.admin_password_file.exists() else None,
        notes=notes,
    )


_EXTERNAL_KEY = {"postgres": "database"}


def _read_state(layout: _Layout) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(layout.state_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def _write_state(layout: _Layout, state: dict[str, Any]) -> None:
    # External URLs may carry passwords, hence owner-only.
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(layout.state_file)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
