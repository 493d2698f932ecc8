"""The agent's main loop: adopt, register, long-poll the master for actions, run and stop trials.

Trial runners are detached (launcher.py), so they survive the agent: a restarted agent adopts the
ones still running from its work directory, reports them in its registration and carries on
shipping their logs and reporting their exit. Each trial has a supervisor thread that reports
RUNNING, follows its output files, waits for its exit and reports TERMINATED; the master being
away delays those reports but never stops a trial.

Stopping: the first SIGTERM or SIGINT drains (the master preempts this agent's trials, which
checkpoint and exit, and schedules nothing new here; the agent exits 0 once they are gone). A
second signal, the drain timeout or ``stop()`` stops the remaining trials (SIGTERM, then SIGKILL
after the shutdown grace) and reports them before exiting. SIGKILL leaves them running for the
next agent to adopt.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from stalwart.client.errors import APIError, MasterUnreachable, NotFoundError, UnauthorizedError
from stalwart_agent.errors import AgentError, RegistrationRefused
from stalwart_agent.launcher import (
    RUNNER_COMMAND,
    LaunchError,
    TrialProcess,
    TrialUser,
    launch_trial,
    recover,
)
from stalwart_agent.logs import LogLine, LogTail, rfc3339_now
from stalwart_agent.master import (
    Backoff,
    KillAction,
    MasterClient,
    Registration,
    StartAction,
    UnknownAction,
    parse_action,
)
from stalwart_agent.slots import Slot

log = logging.getLogger(__name__)

# Statuses worth retrying: the master or a proxy in front of it is overloaded or restarting.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# A log batch answered with 5xx this many times in a row is dropped (about half a minute of backoff).
_MAX_LOG_SERVER_ERRORS = 6
# While draining, polls are this short, so the agent exits soon after its last trial.
_DRAIN_POLL_SECONDS = 1.0
# The TERMINATED reason of a runner that vanished without an exit code (docs/protocols.md).
AGENT_LOST = "agent lost"


@dataclass
class AgentConfig:
    """Everything the daemon needs; the CLI fills it from options and the environment."""

    master_url: str
    token: str
    agent_id: str
    slots: list[Slot]
    work_dir: Path
    resource_pool: str = "default"
    poll_timeout: float = 20.0
    shutdown_grace: float = 10.0
    drain_timeout: float = 600.0
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    # Overridden only by tests, to stand in a small script for the trial runner.
    runner_command: Sequence[str] = RUNNER_COMMAND
    # Who trials run as, when not the agent's own user (``--trial-user``).
    trial_user: TrialUser | None = None


class _Interrupted(BaseException):
    """Raised by the signal handler to cut a long poll short; BaseException so no one swallows it."""


def _is_retryable(exc: APIError) -> bool:
    return exc.status >= 500 or exc.status in _RETRYABLE_STATUSES


@contextlib.contextmanager
def _work_dir_lock(work_dir: Path, mode: int) -> Iterator[None]:
    """One agent per work directory: two would adopt the same trials. The kernel drops the lock
    when its holder dies, however it dies. ``mode``: the agent's alone (0700), or passable (0711)
    for a trial user to reach its scratch directory (launcher.py)."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True, mode=mode)
        work_dir.chmod(mode)
        fd = os.open(work_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AgentError(f"cannot use the work directory {work_dir}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError(f"another agent is running with the work directory {work_dir}") from None
        yield
    finally:
        os.close(fd)


class Agent:
    """One agent daemon. ``run()`` blocks until it has drained, or ``stop()``, or a second signal."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.config = config
        self.client = MasterClient(
            config.master_url,
            config.token,
            config.agent_id,
            poll_timeout=config.poll_timeout,
            transport=transport,
        )
        self._slots_by_uuid = {slot.uuid: slot for slot in config.slots}
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._drain_deadline = float("inf")
        self._drain_requested = False
        self._needs_registration = True
        self._registered_once = False
        # Wakes the main loop from a backoff wait: a signal, or a trial that ended while draining.
        self._wake = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._pause = sleep or self._wait_for_wake
        self._trials: dict[str, _Supervisor] = {}
        self._lock = threading.Lock()
        self._in_poll = False
        self._report_deadline = float("inf")

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Adopt what an earlier agent left running, register and serve until drained or stopped.

        Raises ``RegistrationRefused`` when the master rejects the first registration of an agent
        with nothing to look after, and ``AgentError`` when another agent uses the work directory.
        """
        with _work_dir_lock(self.config.work_dir, 0o711 if self.config.trial_user else 0o700):
            restore = self._install_signal_handlers()
            try:
                self._adopt()
                self._serve()
            except _Interrupted:
                pass
            finally:
                self._shutdown()
                restore()

    def stop(self) -> None:
        """Stop now: the trials are stopped and reported, then ``run()`` returns; safe from any thread."""
        self._stop.set()
        self._wake.set()

    def drain(self) -> None:
        """What SIGTERM does: ask the master to move the trials away, return once they are gone."""
        if not self._draining.is_set():
            self._drain_deadline = time.monotonic() + self.config.drain_timeout
            self._draining.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def running_allocations(self) -> list[str]:
        with self._lock:
            return sorted(self._trials)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._draining.is_set():
                if not self._stop.is_set():
                    log.info(
                        "agent %s: got %s while draining; stopping trials now", self.config.agent_id, name
                    )
                self.stop()
            else:
                log.info(
                    "agent %s: got %s; draining (%d trial(s) to move, at most %gs; %s again stops them now)",
                    self.config.agent_id,
                    name,
                    len(self.running_allocations()),
                    self.config.drain_timeout,
                    name,
                )
                self.drain()
            if self._in_poll:
                raise _Interrupted

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _wait_for_wake(self, delay: float) -> None:
        self._wake.wait(delay)
        self._wake.clear()

    # -- talking to the master -----------------------------------------------------------------

    def _register(self) -> Registration | None:
        """Register until the master accepts; None if the agent stops first.

        Only an agent with no trial to look after gives up, on a 4xx to its first registration:
        the token or the request is wrong and retrying will not help.
        """
        backoff = self._backoff()
        first = not self.running_allocations() and not self._registered_once
        while not self._stop.is_set():
            if self._drain_over():  # the master is away, but there is nothing left to wait for
                return None
            draining = self._draining.is_set()
            try:
                registration = self.client.register(
                    self.config.resource_pool,
                    self.config.slots,
                    self.running_allocations(),
                    draining=draining,
                )
            except MasterUnreachable as exc:
                self._wait_after_failure(backoff, f"cannot register ({exc})")
                continue
            except APIError as exc:
                if _is_retryable(exc):
                    self._wait_after_failure(backoff, f"registration failed ({exc})")
                    continue
                if first:
                    raise RegistrationRefused(
                        f"the master at {self.config.master_url} refused agent {self.config.agent_id}: {exc}"
                    ) from exc
                self._wait_after_failure(backoff, f"registration refused ({exc})")
                continue
            self._registered_once = True
            self._needs_registration = False
            log.info(
                "agent %s: registered with %d %s slot(s) in pool %r, %d allocation(s) running%s",
                self.config.agent_id,
                len(self.config.slots),
                "/".join(sorted({slot.type for slot in self.config.slots})) or "no",
                self.config.resource_pool,
                len(self.running_allocations()),
                " (draining)" if draining else "",
            )
            self._start_adopted()
            for raw in registration.actions:
                self._handle(raw)
            return registration
        return None

    def _serve(self) -> None:
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                if not self._serve_once(backoff):
                    return
            except _Interrupted:
                # The signal may have cut a poll short after the master handed out actions: a fresh
                # registration lets it end whatever start we never saw ("agent lost", resumed).
                self.client.reset_poll()
                self._needs_registration = True

    def _serve_once(self, backoff: Backoff) -> bool:
        """One turn of the loop; False when the agent is done (drained, or its drain timed out)."""
        if self._drain_over():
            return False
        if self._needs_registration:
            return self._register() is not None
        if self._draining.is_set() and not self._drain_requested and not self._request_drain(backoff):
            return True
        timeout = _DRAIN_POLL_SECONDS if self._draining.is_set() else None
        try:
            try:
                self._in_poll = True
                if self._stop.is_set():
                    return False
                actions = self.client.poll(timeout)
            finally:
                self._in_poll = False
        except (NotFoundError, UnauthorizedError) as exc:
            log.warning(
                "agent %s: the master does not know this agent (%s); registering again",
                self.config.agent_id,
                exc,
            )
            self._needs_registration = True
            return True
        except MasterUnreachable as exc:
            self._wait_after_failure(backoff, f"lost the master ({exc})")
            self._needs_registration = True  # it may have restarted: tell it what still runs here
            return True
        except APIError as exc:
            self._wait_after_failure(backoff, f"poll failed ({exc})")
            if _is_retryable(exc):
                self._needs_registration = True
            return True
        backoff.reset()
        for raw in actions:
            self._handle(raw)
        return True

    def _drain_over(self) -> bool:
        """Draining, and no trial is left or the drain timeout has passed (then they are stopped)."""
        if not self._draining.is_set():
            return False
        left = self.running_allocations()
        if not left:
            if not self._drain_requested and self._registered_once:
                # Nothing to move, but the master should stop scheduling here until the
                # reconnect window declares this agent lost; one try is enough.
                with contextlib.suppress(APIError, MasterUnreachable):
                    self.client.drain()
            log.info("agent %s: drained; no trial left", self.config.agent_id)
            return True
        if time.monotonic() >= self._drain_deadline:
            log.warning(
                "agent %s: drain timeout (%gs) with %d trial(s) still running; stopping them",
                self.config.agent_id,
                self.config.drain_timeout,
                len(left),
            )
            return True
        return False

    def _request_drain(self, backoff: Backoff) -> bool:
        """Ask the master to drain this agent; False when it should be asked again later."""
        try:
            self.client.drain()
        except (NotFoundError, UnauthorizedError):
            self._needs_registration = True  # then ask again
            return False
        except MasterUnreachable as exc:
            self._wait_after_failure(backoff, f"cannot ask the master to drain ({exc})")
            return False
        except APIError as exc:
            if _is_retryable(exc):
                self._wait_after_failure(backoff, f"cannot ask the master to drain ({exc})")
                return False
            log.error(
                "agent %s: the master refused to drain it (%s); waiting for the trials to end",
                self.config.agent_id,
                exc,
            )
        else:
            log.info(
                "agent %s: the master is moving %d trial(s) away",
                self.config.agent_id,
                len(self.running_allocations()),
            )
        backoff.reset()
        self._drain_requested = True
        return True

    def _wait_after_failure(self, backoff: Backoff, what: str) -> None:
        delay = backoff.next_delay()
        if self._draining.is_set():
            delay = min(delay, max(0.0, self._drain_deadline - time.monotonic()))
        log.warning(
            "agent %s: %s; retrying in %.1fs (attempt %d)",
            self.config.agent_id,
            what,
            delay,
            backoff.failures,
        )
        self._pause(delay)

    def _backoff(self) -> Backoff:
        return Backoff(self.config.backoff_base, self.config.backoff_cap)

    def send_report(
        self,
        allocation_id: str,
        what: str,
        request: Callable[[], None],
        *,
        max_server_errors: int | None = None,
    ) -> bool:
        """Send one report about an allocation, retrying while the master is away; True once sent.

        Gives up on a 4xx (the master will never accept it), after ``max_server_errors`` 5xx
        answers in a row when given (a batch the master chokes on must not hold back the rest),
        and, once the agent is stopping, when the shutdown deadline passes.
        """
        backoff = self._backoff()
        server_errors = 0
        while True:
            try:
                request()
                return True
            except MasterUnreachable as exc:
                reason = str(exc)
            except APIError as exc:
                server_errors += 1
                if not _is_retryable(exc) or (
                    max_server_errors is not None and server_errors >= max_server_errors
                ):
                    log.warning("allocation %s: the master rejected %s: %s", allocation_id, what, exc)
                    return False
                reason = str(exc)
            delay = backoff.next_delay()
            if self._stop.is_set():
                left = self._report_deadline - time.monotonic()
                if left <= 0:
                    log.error(
                        "allocation %s: gave up sending %s at shutdown: %s", allocation_id, what, reason
                    )
                    return False
                time.sleep(min(delay, left))
            else:
                log.warning(
                    "allocation %s: cannot send %s (%s); retrying in %.1fs",
                    allocation_id,
                    what,
                    reason,
                    delay,
                )
                self._sleep(delay)

    # -- actions -------------------------------------------------------------------------------

    def _handle(self, raw: object) -> None:
        try:
            action = parse_action(raw)
        except UnknownAction as exc:
            log.warning("agent %s: skipping action: %s", self.config.agent_id, exc)
            return
        if isinstance(action, StartAction):
            self.start_trial(action)
        elif isinstance(action, KillAction):
            self.kill_trial(action)

    def _adopt(self) -> None:
        """Take over what an earlier agent left in the work directory, running or ended.

        Their supervisors start after the first registration, so the master hears that they still
        run before it hears how each one ended.
        """
        for trial in recover(self.config.work_dir):
            with self._lock:
                self._trials[trial.allocation_id] = _Supervisor(self, trial)

    def _start_adopted(self) -> None:
        with self._lock:
            supervisors = list(self._trials.values())
        for supervisor in supervisors:
            supervisor.start()

    def start_trial(self, action: StartAction) -> None:
        """Launch the trial runner for ``action``; a failure to launch ends the allocation."""
        allocation_id = action.allocation_id
        with self._lock:
            if allocation_id in self._trials:
                log.warning("allocation %s: already running here; ignoring a second start", allocation_id)
                return
        try:
            trial = launch_trial(
                action,
                master_url=self.config.master_url,
                slots=self._slots_by_uuid,
                work_root=self.config.work_dir,
                command=self.config.runner_command,
                trial_user=self.config.trial_user,
            )
        except LaunchError as exc:
            log.error("allocation %s: %s", allocation_id, exc)
            threading.Thread(
                target=self._report_launch_failure, args=(allocation_id, str(exc)), daemon=True
            ).start()
            return
        supervisor = _Supervisor(self, trial)
        with self._lock:
            self._trials[allocation_id] = supervisor
        supervisor.start()

    def kill_trial(self, action: KillAction) -> None:
        with self._lock:
            supervisor = self._trials.get(action.allocation_id)
        if supervisor is None:
            log.info("allocation %s: kill for an allocation not running here; ignoring", action.allocation_id)
            return
        supervisor.trial.kill(action.grace_seconds)

    def _report_launch_failure(self, allocation_id: str, reason: str) -> None:
        line = {"ts": rfc3339_now(), "rank": 0, "stream": "stderr", "message": f"stalwart-agent: {reason}"}
        batch_id = str(uuid.uuid4())
        self.send_report(
            allocation_id, "the launch error", lambda: self.client.ship_logs(allocation_id, [line], batch_id)
        )
        self.send_report(
            allocation_id,
            "TERMINATED",
            lambda: self.client.report_state(allocation_id, "TERMINATED", exit_code=None, reason=reason),
        )

    def _forget(self, allocation_id: str) -> None:
        with self._lock:
            self._trials.pop(allocation_id, None)
        if self._draining.is_set():
            self._wake.set()

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every trial still here (SIGTERM, SIGKILL after the grace) and wait for their reports."""
        self._stop.set()
        grace = self.config.shutdown_grace
        # Reports get a few seconds beyond the grace so a trial that used all of it is still reported.
        self._report_deadline = time.monotonic() + grace + 5.0
        with self._lock:
            supervisors = list(self._trials.values())
        for supervisor in supervisors:
            supervisor.trial.kill(grace)
            supervisor.start()  # an adopted trial when the master never answered
        for supervisor in supervisors:
            supervisor.join(max(0.0, self._report_deadline + 1.0 - time.monotonic()))
        self.client.close()
        log.info("agent %s: stopped", self.config.agent_id)


class _Supervisor:
    """Watches one trial: RUNNING report, log shipping, exit, TERMINATED report, cleanup."""

    def __init__(self, agent: Agent, trial: TrialProcess) -> None:
        self.agent = agent
        self.trial = trial
        self.allocation_id = trial.allocation_id
        self._tail = LogTail(self.allocation_id, trial.directory.root, self._ship)
        self._thread = threading.Thread(target=self._run, name=f"trial-{self.allocation_id}", daemon=True)
        self._start_lock = threading.Lock()
        self._started = False
        # An adopted runner still alive may never have been reported RUNNING by the agent before.
        self._report_running = not trial.adopted or trial.alive()

    def _ship(self, lines: list[LogLine], batch_id: str) -> bool:
        client = self.agent.client
        sent = self.agent.send_report(
            self.allocation_id,
            f"{len(lines)} log lines",
            lambda: client.ship_logs(self.allocation_id, lines, batch_id),
            max_server_errors=_MAX_LOG_SERVER_ERRORS,
        )
        # Not sent because the agent is going away: keep it pending for the next agent.
        return sent or not self.agent.stopping

    def start(self) -> None:
        """Start supervising; a second call does nothing."""
        with self._start_lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        aid = self.allocation_id
        client = self.agent.client
        keep = False
        try:
            self._tail.start()
            if self._report_running:
                self.agent.send_report(aid, "RUNNING", lambda: client.report_state(aid, "RUNNING"))
            exit_code = self.trial.wait()
            reason = self._reason(exit_code)
            log.info("allocation %s: trial runner %s", aid, reason)
            self._tail.finish()
            self._tail.join()
            sent = self.agent.send_report(
                aid,
                "TERMINATED",
                lambda: client.report_state(aid, "TERMINATED", exit_code=exit_code, reason=reason),
            )
            # Unsent only because the agent is going away: the next agent reports it from the files.
            keep = (not sent and self.agent.stopping) or self._tail.abandoned
        except Exception:
            log.exception("allocation %s: supervisor failed", aid)
            keep = True
        finally:
            if not keep:
                self.trial.cleanup()
            self.agent._forget(aid)

    def _reason(self, exit_code: int | None) -> str:
        if exit_code is None and not self.trial.kill_requested:
            # It ended while no agent watched it (SIGKILL, OOM, a reboot) and left no exit code:
            # the master treats this reason like a lost agent, so the trial resumes uncounted.
            log.warning("allocation %s: trial runner vanished without an exit code", self.allocation_id)
            return AGENT_LOST
        if exit_code is None:
            how = "ended without an exit code"
        elif exit_code < 0:
            try:
                how = f"killed by {signal.Signals(-exit_code).name}"
            except ValueError:
                how = f"killed by signal {-exit_code}"
        else:
            how = f"exited with code {exit_code}"
        if self.trial.kill_requested and self.agent.stopping:
            return f"{how} (agent shutting down)"
        if self.trial.kill_requested:
            return f"{how} (killed on request)"
        if self.agent.draining:
            return f"{how} (agent draining)"
        return how


def default_agent_id() -> str:
    """The hostname, as Determined does: one agent per machine."""
    return os.uname().nodename
