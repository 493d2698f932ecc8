"""Starting and stopping one trial runner process group per allocation.

Every trial runner leads its own session and process group (``start_new_session``): SIGTERM goes
to its group, SIGKILL to everything in its session, so a kill reaches the user's code and whatever
it forked. The runner dies with the agent (``PR_SET_PDEATHSIG``) so a SIGKILLed agent leaves no
trial holding a GPU; the runner's own children are its business: it must make them die with it
(see docs/agent.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from stalwart_agent.master import StartAction
from stalwart_agent.slots import Slot

log = logging.getLogger(__name__)

RUNNER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "stalwart.exec.run")
_PR_SET_PDEATHSIG = 1


class LaunchError(Exception):
    """The trial runner could not be started; the allocation ends at once with this reason."""


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


def _die_with_agent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when the agent dies.

    The kernel sends the signal when the *thread* that forked the child exits, so trials must be
    launched from a thread that lives as long as the agent (the daemon's main loop).
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    # Resolved before fork: the child only makes one foreign call, no imports or lookups.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0:
            os._exit(127)
        # The agent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() != parent:
            os._exit(127)

    return preexec


class TrialProcess:
    """One running trial runner and its process group."""

    def __init__(self, allocation_id: str, process: subprocess.Popen[bytes], work_dir: Path) -> None:
        self.allocation_id = allocation_id
        self.process = process
        self.work_dir = work_dir
        self.pgid = process.pid  # leader of its own session, so pgid == pid
        self.kill_requested = False
        self._lock = threading.Lock()
        self._reaped = False
        self._timers: list[threading.Timer] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    @property
    def stderr(self) -> IO[bytes]:
        assert self.process.stderr is not None
        return self.process.stderr

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the whole group while its leader is not reaped; False once it is gone.

        Until the leader is reaped its pid (= the pgid) cannot be reused, so this never signals
        a stranger.
        """
        with self._lock:
            if self._reaped:
                return False
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                return False
            return True

    def kill_session(self) -> bool:
        """SIGKILL every process in the runner's session; False once the runner is reaped.

        The session, not just the group: a runner may put its entrypoint in a process group of
        its own (to forward SIGTERM once), and everything it starts stays in the session unless
        it calls setsid. The session id is the runner's pid, reserved until the runner is reaped.
        """
        with self._lock:
            if self._reaped:
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
        """SIGTERM the group now and SIGKILL it if the runner is still there after the grace."""
        self.kill_requested = True
        log.info(
            "allocation %s: sending SIGTERM to process group %d (SIGKILL in %gs)",
            self.allocation_id,
            self.pgid,
            grace_seconds,
        )
        if not self.signal_group(signal.SIGTERM):
            return
        timer = threading.Timer(max(grace_seconds, 0.0), self._force_kill)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _force_kill(self) -> None:
        if self.kill_session():
            log.warning(
                "allocation %s: session %d outlived its grace; sent SIGKILL to all of it",
                self.allocation_id,
                self.pgid,
            )

    def wait(self) -> int:
        """Block until the runner exits, kill whatever it left in its session, reap it; its exit code.

        A negative code is the number of the signal that killed it, as ``subprocess`` reports it.
        """
        # Wait without reaping, so the session id stays ours while we sweep the session.
        while True:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                break
            except ChildProcessError:
                break  # already reaped (cannot happen unless someone else waited)
        with self._lock:
            # Whatever the runner left behind in its session (dataloader workers, a stray shell).
            self._kill_session_locked()
            code = self.process.wait()
            self._reaped = True
            for timer in self._timers:
                timer.cancel()
        return code

    def cleanup(self) -> None:
        """Remove the trial's scratch directory; nothing in it outlives the allocation."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


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


def launch_trial(
    action: StartAction,
    *,
    master_url: str,
    slots: Mapping[str, Slot],
    work_root: Path,
    command: Sequence[str] = RUNNER_COMMAND,
    base_env: Mapping[str, str] | None = None,
    die_with_agent: bool = True,
) -> TrialProcess:
    """Start the trial runner for ``action`` in a fresh directory; raises ``LaunchError``.

    ``command`` is overridden only by tests; ``die_with_agent=False`` exists only so a test can
    show that the orphan protection is what kills the trial.
    """
    env = trial_env(
        base_env if base_env is not None else os.environ, master_url=master_url, action=action, slots=slots
    )
    try:
        work_root.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix=f"{_safe(action.allocation_id)}-", dir=work_root))
    except OSError as exc:
        raise LaunchError(f"cannot create a work directory under {work_root}: {exc}") from exc
    try:
        process = subprocess.Popen(
            list(command),
            cwd=work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_agent() if die_with_agent else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise LaunchError(f"cannot start the trial runner {command[0]}: {exc}") from exc
    log.info(
        "allocation %s: started trial runner pid %d in %s (CUDA_VISIBLE_DEVICES=%r)",
        action.allocation_id,
        process.pid,
        work_dir,
        env["CUDA_VISIBLE_DEVICES"],
    )
    return TrialProcess(action.allocation_id, process, work_dir)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64] or "allocation"
