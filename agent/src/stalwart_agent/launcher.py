"""Starting, adopting and stopping trial runners: one process session and one directory each.

Every trial runner is detached from the agent so that it survives the agent: it leads its own
session and process group, has no parent-death signal, writes its stdout and stderr to files and
its exit code to ``$STALWART_EXIT_FILE``. Each allocation's directory,
``<work dir>/allocations/<allocation id>/``, holds::

    state.json     {allocation_id, pid, start_ticks, started_at, trial_id, experiment_id, slot_uuids}
    stdout.log     the runner's stdout (and its children's), appended
    stderr.log     the same for stderr
    exit           the runner's exit code, written atomically just before it exits
    logs.json      how far the log shipper got (see logs.py)
    scratch/       the runner's working directory

With a trial user (``--trial-user``, for an agent running as root) the runner runs as that user,
so trial code cannot read the agent's token or anything else of root's. The user owns only
``scratch/`` (0700; also its ``$HOME``, and where it writes ``exit``); the allocation directory
and the work directory above it are root's, 0711: the user may pass through to its scratch
directory but can neither list nor change what the agent reads back (``state.json`` names the
pids a restarted agent will signal, the logs are shipped as the trial's output).

A restarted agent reads every ``state.json`` and adopts the runners still alive (``recover``); the
pid is trusted only if the process's start time (``/proc/<pid>/stat``) matches the recorded one, so
a reused pid is never mistaken for the trial. SIGTERM goes to the runner's group, SIGKILL to every
process in its session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from stalwart.client._http import CA_CERT_ENV
from stalwart_agent.errors import AgentError
from stalwart_agent.master import StartAction
from stalwart_agent.slots import Slot

log = logging.getLogger(__name__)

RUNNER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "stalwart.exec.run")
ALLOCATIONS_DIR = "allocations"
# How often the agent looks whether a runner it adopted (not its child, so it cannot wait) is gone.
_ADOPTED_POLL_SECONDS = 0.2


class LaunchError(Exception):
    """The trial runner could not be started; the allocation ends at once with this reason."""


@dataclass(frozen=True)
class TrialUser:
    """Who trial runners run as instead of the agent (root): its ids and its groups (initgroups)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_trial_user(name: str | None, python: str | None = RUNNER_COMMAND[0]) -> TrialUser | None:
    """``--trial-user`` checked at start; None when trials run as the agent's own user.

    Refused: an unknown user, a user other than our own when we are not root, and one that cannot
    run the trial runner with ``python`` (installed where only root may enter, say), all before the
    agent registers rather than on every trial. Root without a trial user is allowed, loudly.
    """
    if name is None:
        if os.geteuid() == 0:
            log.warning(
                "the agent runs as root and so will every trial: trial code can read this agent's "
                "token and every file on this machine; run trials as an unprivileged user with "
                "--trial-user USER (STALWART_AGENT_TRIAL_USER)"
            )
        return None
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise AgentError(f"--trial-user {name}: no such user") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise AgentError(f"--trial-user {name}: only an agent running as root can run trials as another user")
    user = TrialUser(
        entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    )
    if python is not None:
        _check_runner_runs_as(user, python)
    return user


def _check_runner_runs_as(user: TrialUser, python: str) -> None:
    argv = [python, "-c", "import stalwart.exec.run"]
    try:
        result = subprocess.run(
            argv,
            user=user.uid,
            group=user.gid,
            extra_groups=list(user.groups),
            cwd="/",
            env={"PATH": os.defpath, "HOME": "/"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise AgentError(f"--trial-user {user.name} cannot run {argv[0]}: {exc}") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise AgentError(f"--trial-user {user.name} cannot run the trial runner with {argv[0]}: {reason}")


def trial_env(
    base_env: Mapping[str, str],
    *,
    master_url: str,
    action: StartAction,
    slots: Mapping[str, Slot],
) -> dict[str, str]:
    """The runner's environment: the agent's own, minus every ``STALWART_*`` variable (the agent
    token must never reach user code), plus how to reach the master and the visible devices."""
    env = {key: value for key, value in base_env.items() if not key.startswith("STALWART_")}
    env["STALWART_MASTER"] = master_url
    env["STALWART_ALLOCATION_ID"] = action.allocation_id
    env["STALWART_ALLOCATION_TOKEN"] = action.allocation_token
    if base_env.get(CA_CERT_ENV):  # the trial verifies the master's certificate as the agent does
        env[CA_CERT_ENV] = base_env[CA_CERT_ENV]
    if action.trial_id is not None:
        env["STALWART_TRIAL_ID"] = str(action.trial_id)
    if action.experiment_id is not None:
        env["STALWART_EXPERIMENT_ID"] = str(action.experiment_id)
    env["CUDA_VISIBLE_DEVICES"] = visible_devices(action.slot_uuids, slots)
    # Logs reach the master line by line instead of when a 4 KiB stdio buffer happens to fill.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def visible_devices(slot_uuids: Sequence[str], slots: Mapping[str, Slot]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for the assigned slots: their GPU uuids, or ``""`` to hide every GPU."""
    unknown = [uuid for uuid in slot_uuids if uuid not in slots]
    if unknown:
        raise LaunchError(f"assigned slots not on this agent: {', '.join(unknown)}")
    return ",".join(uuid for uuid in slot_uuids if slots[uuid].type == "cuda")


@dataclass(frozen=True)
class AllocationDir:
    """The files of one allocation under the agent's work directory."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.log"

    @property
    def exit_file(self) -> Path:
        return self.root / "exit"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def trial_user_exit_file(self) -> Path:
        """Where a runner running as a trial user writes its exit code: in the one place it may."""
        return self.scratch / "exit"

    def read_exit_code(self) -> int | None:
        """The exit code the agent recorded, else the one the runner wrote, else None."""
        for path in (self.exit_file, self.trial_user_exit_file):
            code = _read_small_int(path)
            if code is not None:
                return code
        return None

    def write_exit_code(self, code: int) -> None:
        write_atomically(self.exit_file, f"{code}\n")


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old content or the new one, never half of it, even if we are killed midway."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_small_int(path: Path) -> int | None:
    """An integer from a file that trial code may have replaced: never follow a link or block on a
    FIFO, and read a regular file's first bytes only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return int(os.read(fd, 32).decode("ascii").strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _open_private(path: Path) -> int:
    """Append to ``path``, readable by the agent alone (a trial's output is no one else's business)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def allocations_root(work_dir: Path) -> Path:
    return work_dir / ALLOCATIONS_DIR


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot on Linux); None if it is gone or a zombie.

    A (pid, start time) pair names one process for good: the kernel may reuse the pid, never both.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name is in parentheses and may contain anything; fields follow the last ')'.
            fields = stat.read().rsplit(b")", 1)[1].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        pass
    try:  # not Linux: psutil's creation time, in hundredths of a second
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        created: float = process.create_time()
        return round(created * 100)
    except psutil.Error:
        return None


class TrialProcess:
    """One trial runner and its session: either the agent's own child or one it adopted."""

    def __init__(
        self,
        allocation_id: str,
        directory: AllocationDir,
        pid: int,
        start_ticks: int | None,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.allocation_id = allocation_id
        self.directory = directory
        self.pid = pid
        self.pgid = pid  # leader of its own session, so pgid == sid == pid
        self.start_ticks = start_ticks
        self.process = process
        self.kill_requested = False
        self._force_killed = False
        self._lock = threading.Lock()
        self._gone = False
        self._timers: list[threading.Timer] = []

    @property
    def adopted(self) -> bool:
        """Started by an earlier agent: not our child, so it is watched through /proc, not waited on."""
        return self.process is None

    @property
    def work_dir(self) -> Path:
        return self.directory.root

    def _alive_locked(self) -> bool:
        if self._gone:
            return False
        if self.process is not None:
            return True  # our child: its pid stays ours until we reap it
        return self.start_ticks is not None and process_start_ticks(self.pid) == self.start_ticks

    def alive(self) -> bool:
        with self._lock:
            return self._alive_locked()

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the runner's group while the runner is ours; False once it is gone.

        Our child's pid (= the pgid) cannot be reused until we reap it. An adopted runner is
        checked by its start time first; its group id stays reserved while any member lives.
        """
        with self._lock:
            if not self._alive_locked():
                return False
            try:
                os.killpg(self.pgid, sig)
            except (ProcessLookupError, PermissionError):
                return False
            return True

    def kill_session(self) -> bool:
        """SIGKILL every process in the runner's session; False once the runner is gone.

        The session, not just the group: the runner puts its entrypoint in a process group of its
        own (to forward SIGTERM once), and everything it starts stays in the session unless it
        calls setsid.
        """
        with self._lock:
            if not self._alive_locked():
                return False
            return self._kill_session_locked()

    def _kill_session_locked(self) -> bool:
        sent = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
            sent = True
        for pid in _session_members(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                sent = True
        return sent

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM the group now and SIGKILL the session if the runner is still there after the grace."""
        if not self.signal_group(signal.SIGTERM):
            log.info(
                "allocation %s: asked to kill a trial runner that has already exited", self.allocation_id
            )
            return
        self.kill_requested = True
        log.info(
            "allocation %s: sent SIGTERM to process group %d (SIGKILL in %gs)",
            self.allocation_id,
            self.pgid,
            grace_seconds,
        )
        timer = threading.Timer(max(grace_seconds, 0.0), self._force_kill)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _force_kill(self) -> None:
        if self.kill_session():
            self._force_killed = True
            log.warning(
                "allocation %s: session %d outlived its grace; sent SIGKILL to all of it",
                self.allocation_id,
                self.pgid,
            )

    def wait(self) -> int | None:
        """Block until the runner exits, kill whatever it left in its session; its exit code.

        A negative code is the number of the signal that killed our child, as ``subprocess``
        reports it. For an adopted runner the code comes from its exit file: None when it
        vanished without writing one (SIGKILLed while the agent was away, for instance).
        """
        if self.process is not None:
            return self._wait_child(self.process)
        while self.alive():
            time.sleep(_ADOPTED_POLL_SECONDS)
        with self._lock:
            # Whatever the runner left behind (dataloader workers, a stray shell); the session id
            # stays reserved while any of them lives, so these are the trial's own processes.
            if not self._gone:
                for pid in _session_members(self.pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            self._gone = True
            self._cancel_timers_locked()
        code = self.directory.read_exit_code()
        if code is None and self._force_killed:
            code = -int(signal.SIGKILL)
        return code

    def _wait_child(self, process: subprocess.Popen[bytes]) -> int:
        # Wait without reaping, so the session id stays ours while we sweep the session.
        while True:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                break
            except ChildProcessError:
                break  # already reaped (cannot happen unless someone else waited)
            except InterruptedError:
                continue
        with self._lock:
            self._kill_session_locked()
            code = process.wait()
            self._gone = True
            self._cancel_timers_locked()
        if self.directory.read_exit_code() is None:
            # Killed before it could write one: record what we saw, for an agent that restarts
            # before this exit reaches the master.
            with contextlib.suppress(OSError):
                self.directory.write_exit_code(code)
        return code

    def _cancel_timers_locked(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def cleanup(self) -> None:
        """Remove the allocation's directory; call once its exit has reached the master."""
        shutil.rmtree(self.directory.root, ignore_errors=True)


def _session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` (Linux ``/proc``; empty elsewhere, where the group kill must do)."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) == sid:
                members.append(int(name))
        except OSError:
            continue  # gone meanwhile
    return members


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:128] or "allocation"


def _make_allocation_dir(directory: AllocationDir, trial_user: TrialUser | None) -> None:
    directory.scratch.mkdir(parents=True)
    if trial_user is not None:
        # Passable but root's (see the module docstring); the scratch directory alone is the user's.
        directory.root.parent.chmod(0o711)
        directory.root.chmod(0o711)
        os.chown(directory.scratch, trial_user.uid, trial_user.gid)
        directory.scratch.chmod(0o700)


def launch_trial(
    action: StartAction,
    *,
    master_url: str,
    slots: Mapping[str, Slot],
    work_root: Path,
    command: Sequence[str] = RUNNER_COMMAND,
    base_env: Mapping[str, str] | None = None,
    trial_user: TrialUser | None = None,
) -> TrialProcess:
    """Start the trial runner for ``action`` in a fresh allocation directory; raises ``LaunchError``.

    With ``trial_user`` the runner runs as that user (setgid, initgroups, setuid). ``command`` is
    overridden only by tests.
    """
    env = trial_env(
        base_env if base_env is not None else os.environ, master_url=master_url, action=action, slots=slots
    )
    directory = AllocationDir(allocations_root(work_root) / _safe(action.allocation_id))
    env["STALWART_EXIT_FILE"] = str(directory.trial_user_exit_file if trial_user else directory.exit_file)
    if trial_user is not None:
        # The agent's home is neither writable for the trial user nor any of its business.
        env.update(HOME=str(directory.scratch), USER=trial_user.name, LOGNAME=trial_user.name)
    try:
        if directory.root.exists():  # left over from an earlier start of this allocation
            shutil.rmtree(directory.root)
        _make_allocation_dir(directory, trial_user)
        stdout = os.fdopen(_open_private(directory.stdout), "ab")
        stderr = os.fdopen(_open_private(directory.stderr), "ab")
    except OSError as exc:
        shutil.rmtree(directory.root, ignore_errors=True)
        raise LaunchError(f"cannot create the allocation directory {directory.root}: {exc}") from exc
    try:
        # No parent-death signal and a session of its own: the runner outlives the agent, and a
        # restarted agent adopts it. Files instead of pipes, so it never writes to a dead reader.
        process = subprocess.Popen(
            list(command),
            cwd=directory.scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            user=trial_user.uid if trial_user else None,
            group=trial_user.gid if trial_user else None,
            extra_groups=list(trial_user.groups) if trial_user else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(directory.root, ignore_errors=True)
        raise LaunchError(f"cannot start the trial runner {command[0]}: {exc}") from exc
    finally:
        stdout.close()
        stderr.close()
    trial = TrialProcess(
        action.allocation_id, directory, process.pid, process_start_ticks(process.pid), process
    )
    state = {
        "allocation_id": action.allocation_id,
        "pid": process.pid,
        "start_ticks": trial.start_ticks,
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "trial_id": action.trial_id,
        "experiment_id": action.experiment_id,
        "slot_uuids": list(action.slot_uuids),
    }
    try:
        write_atomically(directory.state, json.dumps(state))
    except OSError as exc:
        # Without its record a restarted agent could not adopt it: better not to run it at all.
        trial.kill_session()
        trial.wait()
        trial.cleanup()
        raise LaunchError(f"cannot record the trial runner in {directory.state}: {exc}") from exc
    log.info(
        "allocation %s: started trial runner pid %d in %s as %s (CUDA_VISIBLE_DEVICES=%r)",
        action.allocation_id,
        process.pid,
        directory.root,
        trial_user.name if trial_user else "the agent's user",
        env["CUDA_VISIBLE_DEVICES"],
    )
    return trial


def recover(work_root: Path) -> list[TrialProcess]:
    """The allocations an earlier agent left in ``work_root``, alive or not, to adopt or report.

    A directory without a readable ``state.json`` (the agent died between creating it and
    starting the runner) is removed.
    """
    root = allocations_root(work_root)
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    trials: list[TrialProcess] = []
    for entry in entries:
        if not entry.is_dir():
            continue
        directory = AllocationDir(entry)
        try:
            state: dict[str, Any] = json.loads(directory.state.read_text())
            trial = TrialProcess(
                str(state["allocation_id"]),
                directory,
                int(state["pid"]),
                None if state.get("start_ticks") is None else int(state["start_ticks"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("removing %s: no usable state.json (%s)", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            continue
        log.info(
            "allocation %s: found runner pid %d from an earlier agent (%s)",
            trial.allocation_id,
            trial.pid,
            "still running" if trial.alive() else "ended",
        )
        trials.append(trial)
    return trials
