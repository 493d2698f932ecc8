"""``python -m stalwart.exec.run``: the one way a trial starts, on an agent or in a pod.

It reads its allocation from the master with the allocation token, downloads and safely extracts
the experiment's context into a fresh work directory, exports the ``STALWART_*`` variables the
Core API reads, runs the entrypoint as a child, forwards SIGTERM/SIGINT to it and exits with the
child's exit code. Exit codes of its own follow the shell's conventions: 125 when the runner
itself failed (master unreachable, bad context), 126 when the entrypoint cannot be executed, 127
when it is not found.

Just before exiting it writes its exit code to ``$STALWART_EXIT_FILE`` when that is set (the agent
sets it): the runner is detached from the agent, so an agent restarted meanwhile learns the exit
code from this file, not by waiting for its child.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from stalwart.core._errors import MasterError
from stalwart.core._http import AllocationSession
from stalwart.exec._extract import UnsafeContext, extract_context

EXIT_RUNNER_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1
MAX_ENV_VALUE = 100_000  # characters; the kernel's limit for one variable is 128 KiB

logger = logging.getLogger("stalwart.exec")


class RunnerError(Exception):
    """The trial cannot be started; the message says why."""


def _get(session: AllocationSession, path: str, *, attempts: int = 6) -> Any:
    """GETs are safe to repeat: ride out a master restart for a little while."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            return session.request("GET", path)
        except MasterError as exc:
            if not exc.retryable or attempt + 1 == attempts:
                raise RunnerError(str(exc)) from exc
            logger.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def entrypoint_argv(entrypoint: str | list[str]) -> list[str]:
    """A string is split like a shell would; ``python3``/``python`` become this interpreter."""
    if isinstance(entrypoint, str):
        argv = shlex.split(entrypoint)
    elif isinstance(entrypoint, list) and all(isinstance(part, str) for part in entrypoint):
        argv = list(entrypoint)
    else:
        raise RunnerError(f"entrypoint must be a string or a list of strings, got {entrypoint!r}")
    if not argv:
        raise RunnerError("entrypoint is empty")
    if argv[0] in ("python3", "python"):
        # The trial must run in the environment the harness is installed in, not whatever is on PATH.
        argv[0] = sys.executable
    return argv


def trial_env(info: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: the runner's own, the config's ``environment_variables``, then the
    ``STALWART_*`` trial variables (which the config cannot override)."""
    config = info.get("config") or {}
    storage = info.get("checkpoint_storage") or (config.get("checkpoint_storage") if config else None)
    config_json = json.dumps(config) if config else ""
    if len(config_json) > MAX_ENV_VALUE:
        # Linux refuses to start a process with one variable over 128 KiB; a trial without the
        # config (trainers fall back to their defaults) beats a trial that cannot start.
        logger.warning(
            "experiment config is %d bytes of JSON, over %d: STALWART_EXPERIMENT_CONFIG is left empty",
            len(config_json),
            MAX_ENV_VALUE,
        )
        config_json = ""
    env = dict(base)
    for name, value in (info.get("environment_variables") or {}).items():
        if name.startswith("STALWART_") or name == "PYTHONUNBUFFERED":
            # The trial's identity and credentials come from the master alone.
            logger.warning("environment_variables: %s is set by Stalwart and cannot be overridden", name)
            continue
        env[str(name)] = str(value)
    env.update(
        {
            "STALWART_TRIAL_ID": str(info["trial_id"]),
            "STALWART_EXPERIMENT_ID": str(info["experiment_id"]),
            "STALWART_TRIAL_RUN_ID": str(info.get("run_id") or 0),
            "STALWART_TRIAL_SEED": str(info.get("trial_seed") or 0),
            "STALWART_HPARAMS": json.dumps(info.get("hparams") or {}),
            "STALWART_LATEST_CHECKPOINT": str(info.get("latest_checkpoint") or ""),
            "STALWART_CHECKPOINT_STORAGE": json.dumps(storage) if storage else "",
            "STALWART_EXPERIMENT_CONFIG": config_json,
            "STALWART_SLOT_UUIDS": ",".join(str(uuid) for uuid in info.get("slot_uuids") or []),
            # Log lines must reach the agent as they are written, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def prepare(session: AllocationSession, allocation_id: str, parent: Path) -> tuple[dict[str, Any], Path]:
    """Fetch the allocation's info and context; return the info and the extracted work directory."""
    info = _get(session, f"/allocations/{allocation_id}/info").json()
    if not isinstance(info, dict) or "context_sha256" not in info or "entrypoint" not in info:
        raise RunnerError(f"unexpected allocation info: {str(info)[:300]}")
    sha256 = str(info["context_sha256"])
    data = _get(session, f"/contexts/{sha256}").content
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RunnerError(f"context {sha256} arrived with different bytes (corrupted in transit?)")
    parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"trial-{info.get('trial_id')}-", dir=parent))
    try:
        files = extract_context(data, work_dir)
    except (UnsafeContext, tarfile.TarError, OSError) as exc:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise RunnerError(f"cannot extract context {sha256}: {exc}") from exc
    logger.info("context %s extracted into %s (%d files)", sha256[:12], work_dir, len(files))
    return info, work_dir


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux the child gets SIGKILL if the runner dies, so a killed runner leaves no orphan."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to import in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(EXIT_RUNNER_FAILED)

    return preexec


def run_child(argv: list[str], cwd: Path, env: Mapping[str, str]) -> int:
    """Run the entrypoint in its own process group and forward SIGTERM/SIGINT to that group once.

    Its own group, so a signal the agent sends to the runner's group is not delivered twice;
    forwarding covers both that case and a signal sent to the runner alone (PID 1 in a pod).
    """
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child is None:
            pending.append(signum)
            return
        logger.info("forwarding %s to the trial", signal.Signals(signum).name)
        with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        try:
            child = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), process_group=0, preexec_fn=_die_with_parent()
            )
        except FileNotFoundError as exc:
            logger.error("entrypoint not found: %s", exc)
            return EXIT_NOT_FOUND
        except PermissionError as exc:
            logger.error("entrypoint cannot be executed: %s", exc)
            return EXIT_CANNOT_EXECUTE
        logger.info("started entrypoint (pid %d): %s", child.pid, shlex.join(argv))
        for signum in pending:
            forward(signum, None)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0:
        logger.info("entrypoint killed by %s", signal.Signals(-code).name)
        return 128 - code
    logger.info("entrypoint exited with code %d", code)
    return code


def write_exit_file(code: int, path: str | None = None) -> None:
    """Record ``code`` in ``$STALWART_EXIT_FILE`` atomically (a temporary file renamed over it), so
    a reader sees a whole code or none."""
    target = path if path is not None else os.environ.get("STALWART_EXIT_FILE")
    if not target:
        return
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as file:
            file.write(f"{code}\n")
        os.replace(tmp, target)
    except OSError as exc:
        logger.warning("cannot write the exit code to %s: %s", target, exc)


def main(argv: list[str] | None = None) -> int:
    """Start the allocation's trial; return the exit code to report (also to ``$STALWART_EXIT_FILE``)."""
    code = EXIT_RUNNER_FAILED
    try:
        code = _main(argv)
    except SystemExit as exc:  # argparse: --help, bad arguments
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        raise
    finally:
        write_exit_file(code)
    return code


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stalwart.exec.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("STALWART_WORK_DIR") or tempfile.gettempdir()),
        help="parent of the fresh directory the context is extracted into",
    )
    parser.add_argument("--keep-work-dir", action="store_true", help="leave the work directory behind")
    args = parser.parse_args(argv)

    allocation_id = os.environ.get("STALWART_ALLOCATION_ID", "")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [stalwart.exec allocation {allocation_id or '?'}] %(message)s",
    )
    missing = [
        name
        for name in ("STALWART_MASTER", "STALWART_ALLOCATION_ID", "STALWART_ALLOCATION_TOKEN")
        if not os.environ.get(name)
    ]
    if missing:
        logger.error("missing environment: %s (the agent sets these)", ", ".join(missing))
        return EXIT_RUNNER_FAILED
    session = AllocationSession(
        os.environ["STALWART_MASTER"], os.environ["STALWART_ALLOCATION_TOKEN"], timeout=120
    )
    try:
        info, work_dir = prepare(session, allocation_id, args.work_dir)
        command = entrypoint_argv(info["entrypoint"])
    except RunnerError as exc:
        logger.error("cannot start the trial: %s", exc)
        return EXIT_RUNNER_FAILED
    finally:
        session.close()
    try:
        return run_child(command, work_dir, trial_env(info, os.environ))
    finally:
        if not args.keep_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
