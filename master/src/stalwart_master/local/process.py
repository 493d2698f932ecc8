"""Pid files, process identity and detached children for the local cluster.

A pid file holds the pid and the process create time. Checking both is what tells "our server is
still running" apart from "the pid was reused by something unrelated", so nothing ever signals a
process it did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

log = logging.getLogger(__name__)

ProcessState = Literal["running", "stopped", "stale"]

# Create times read back from /proc are exact to a clock tick; a second of slack absorbs rounding
# in the pid file while a reused pid (necessarily started later) still falls outside it.
_CREATE_TIME_SLACK_S = 1.0

# Popen objects for children this process started, so stopping one also reaps it instead of
# leaving a zombie that psutil would still call running.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LocalClusterError(RuntimeError):
    """A local server or cluster process could not be started, checked or stopped."""


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float | None


@dataclass(frozen=True)
class PidCheck:
    """What a pid file says about its process: running (verified), stopped (no file) or stale."""

    state: ProcessState
    pid: int | None = None
    process: psutil.Process | None = None
    reason: str = ""


def write_pid_file(path: Path, process: psutil.Process) -> None:
    """Atomically record pid and create time (rename, so a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{process.pid}\n{process.create_time():.3f}\n")
    tmp.replace(path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The pid file's record, or None when it is missing or unreadable."""
    try:
        lines = path.read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(lines[0])
        create_time = float(lines[1]) if len(lines) > 1 else None
    except (IndexError, ValueError):
        return PidRecord(pid=0, create_time=None)
    return PidRecord(pid=pid, create_time=create_time)


def identify(record: PidRecord, matches: Callable[[psutil.Process], bool]) -> PidCheck:
    """Check that the recorded pid is still the recorded process (create time, else command line)."""
    if record.pid <= 0:
        return PidCheck("stale", reason="pid file is unreadable")
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(record.pid)
            return PidCheck("stale", record.pid, reason=f"pid {record.pid} has exited")
        if record.create_time is not None:
            same = abs(proc.create_time() - record.create_time) <= _CREATE_TIME_SLACK_S
        else:
            same = matches(proc)
        if not same:
            return PidCheck(
                "stale", record.pid, reason=f"pid {record.pid} now belongs to another process ({proc.name()})"
            )
        return PidCheck("running", record.pid, proc)
    except psutil.NoSuchProcess:
        return PidCheck("stale", record.pid, reason=f"pid {record.pid} is gone")
    except psutil.AccessDenied:
        return PidCheck("stale", record.pid, reason=f"pid {record.pid} belongs to another user")


def check_pid_file(path: Path, matches: Callable[[psutil.Process], bool]) -> PidCheck:
    record = read_pid_file(path)
    if record is None:
        return PidCheck("stopped")
    return identify(record, matches)


def cmdline_has(*needles: str) -> Callable[[psutil.Process], bool]:
    """A matcher for pid files without a create time: every needle appears in the command line."""

    def matches(proc: psutil.Process) -> bool:
        try:
            line = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return all(needle in line for needle in needles)

    return matches


def owner_only_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) and set its mode exactly, also when it existed looser."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        if path.stat().st_mode & 0o7777 != mode:
            path.chmod(mode)
    except OSError as exc:
        raise LocalClusterError(f"cannot make {path} private (mode {mode:o}): {exc.strerror or exc}") from exc
    return path


def write_secret(path: Path, text: str) -> None:
    """Write a credential readable by this user only, atomically (renamed into place, never followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    tmp.replace(path)


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def open_log(path: Path) -> int:
    """An append-only descriptor on ``path``, which is (made) readable by its owner only: server
    logs quote requests, errors and values a local user must not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o600)
    return fd


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> psutil.Process:
    """Start a background process in its own session, output appended to ``log_file`` (0600).

    Its own session keeps it alive when the terminal that ran ``stalwart deploy local up`` closes.
    Credentials go in ``env``, never ``argv``: every local user can read a command line (``ps``).
    """
    log.info("starting %s (log %s)", " ".join(argv), log_file)
    with os.fdopen(open_log(log_file), "ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    _children[child.pid] = child
    proc = psutil.Process(child.pid)
    if pid_file is not None:
        write_pid_file(pid_file, proc)
    return proc


def exit_code(proc: psutil.Process) -> int | None:
    """The exit code if the process has ended (reaping our own children), else None."""
    child = _children.get(proc.pid)
    if child is not None:
        return child.poll()
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return -1
    return -1


def is_alive(proc: psutil.Process) -> bool:
    return exit_code(proc) is None and proc.is_running()


def stop_process(proc: psutil.Process, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Ask politely with ``sig``, SIGKILL after ``timeout``, then kill any descendants left behind."""
    try:
        descendants = proc.children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
    if not _wait(proc, timeout):
        log.warning("pid %d did not stop within %.0fs of %s; sending SIGKILL", proc.pid, timeout, sig)
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
        if not _wait(proc, 10.0):
            raise LocalClusterError(f"pid {proc.pid} survived SIGKILL")
    wait_until(lambda: not any(_exists(p) for p in descendants), timeout=5.0, interval=0.05)
    for leftover in descendants:
        if _exists(leftover):
            log.warning("killing pid %d, left behind by pid %d", leftover.pid, proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()


def _wait(proc: psutil.Process, timeout: float) -> bool:
    child = _children.get(proc.pid)
    if child is None:
        # Not ours to reap: done once it is a zombie, however long init takes to collect it.
        return wait_until(lambda: not _exists(proc), timeout=timeout, interval=0.05)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    _children.pop(proc.pid, None)
    return True


def _exists(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        child.poll()


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> bool:
    """Poll ``ready`` until it is true or ``timeout`` passes; ``alive`` raises to give up early."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR, so a port lingering in TIME_WAIT still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def remembered_port(port_file: Path, requested: int | None) -> int:
    """The requested port, else the one used last time if still free, else a fresh free port."""
    if requested is not None:
        port = requested
    else:
        try:
            port = int(port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            port = 0
        if not port or not port_is_free(port):
            port = free_port()
    port_file.write_text(f"{port}\n")
    return port


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent starts on one data dir (two `up`s, or parallel test workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
