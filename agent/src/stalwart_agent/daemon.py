"""The agent's main loop: register, long-poll the master for actions, run and stop trials.

Trials are launched from the thread that calls ``Agent.run`` (the process's main thread under the
CLI) because the kernel ties ``PR_SET_PDEATHSIG`` to the launching thread. Each trial then gets a
supervisor thread that reports RUNNING, ships its output, waits for its exit and reports
TERMINATED; the master being away delays those reports but never stops a trial.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from stalwart.client.errors import APIError, MasterUnreachable, NotFoundError
from stalwart_agent.errors import RegistrationRefused
from stalwart_agent.launcher import RUNNER_COMMAND, LaunchError, TrialProcess, launch_trial
from stalwart_agent.logs import LogBuffer, LogLine, LogShipper, pump, rfc3339_now
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
# After the trial runner exits, how long its pipes may stay open (a process that escaped its
# group still holding them) before the agent stops waiting for more output.
_PIPE_DRAIN_SECONDS = 5.0
# A log batch answered with 5xx this many times in a row is dropped (about half a minute of backoff).
_MAX_LOG_SERVER_ERRORS = 6


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
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    # Overridden only by tests, to stand in a small script for the trial runner.
    runner_command: Sequence[str] = RUNNER_COMMAND


class _Interrupted(BaseException):
    """Raised by the signal handler to cut a long poll short; BaseException so no one swallows it."""


def _is_retryable(exc: APIError) -> bool:
    return exc.status >= 500 or exc.status in _RETRYABLE_STATUSES


class Agent:
    """One agent daemon. ``run()`` blocks until ``stop()`` or SIGTERM/SIGINT."""

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
        self._sleep = sleep or self._stop.wait
        self._trials: dict[str, _Supervisor] = {}
        self._lock = threading.Lock()
        self._in_poll = False
        self._report_deadline = float("inf")

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Register and serve until stopped; then stop every trial and return.

        Raises ``RegistrationRefused`` when the master rejects the first registration.
        """
        restore = self._install_signal_handlers()
        try:
            self._register(first=True)
            self._serve()
        except _Interrupted:
            pass
        finally:
            self._shutdown()
            restore()

    def stop(self) -> None:
        """Ask ``run()`` to return; safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def running_allocations(self) -> list[str]:
        with self._lock:
            return sorted(self._trials)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if not self._stop.is_set():
                log.info(
                    "agent %s: got %s; stopping trials", self.config.agent_id, signal.Signals(signum).name
                )
            self._stop.set()
            if self._in_poll:
                raise _Interrupted

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # -- talking to the master -----------------------------------------------------------------

    def _register(self, *, first: bool) -> Registration | None:
        """Register until the master accepts; only a first registration may fail for good."""
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                registration = self.client.register(
                    self.config.resource_pool, self.config.slots, self.running_allocations()
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
            log.info(
                "agent %s: registered with %d %s slot(s) in pool %r, %d allocation(s) running",
                self.config.agent_id,
                len(self.config.slots),
                "/".join(sorted({slot.type for slot in self.config.slots})) or "no",
                self.config.resource_pool,
                len(self.running_allocations()),
            )
            return registration
        return None

    def _serve(self) -> None:
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                self._in_poll = True
                try:
                    if self._stop.is_set():
                        break
                    actions = self.client.poll()
                finally:
                    self._in_poll = False
            except NotFoundError:
                log.warning(
                    "agent %s: the master does not know this agent; registering again", self.config.agent_id
                )
                self._register(first=False)
                continue
            except MasterUnreachable as exc:
                self._wait_after_failure(backoff, f"lost the master ({exc})")
                continue
            except APIError as exc:
                self._wait_after_failure(backoff, f"poll failed ({exc})")
                continue
            backoff.reset()
            for raw in actions:
                self._handle(raw)

    def _wait_after_failure(self, backoff: Backoff, what: str) -> None:
        delay = backoff.next_delay()
        log.warning(
            "agent %s: %s; retrying in %.1fs (attempt %d)",
            self.config.agent_id,
            what,
            delay,
            backoff.failures,
        )
        self._sleep(delay)

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
        """Send one report about an allocation, retrying while the master is away.

        Gives up on a 4xx (the master will never accept it), after ``max_server_errors`` 5xx
        answers in a row when given (a batch the master chokes on must not hold back the rest),
        and, once the agent is shutting down, when the shutdown deadline passes.
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

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every trial (SIGTERM, SIGKILL after the grace) and wait for their last reports."""
        self._stop.set()
        grace = self.config.shutdown_grace
        # Reports get a few seconds beyond the grace so a trial that used all of it is still reported.
        self._report_deadline = time.monotonic() + grace + 5.0
        with self._lock:
            supervisors = list(self._trials.values())
        for supervisor in supervisors:
            supervisor.trial.kill(grace)
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
        self.buffer = LogBuffer()
        client = agent.client
        self._readers = [
            threading.Thread(
                target=pump,
                args=(stream, name, self.buffer),
                name=f"{name}-{self.allocation_id}",
                daemon=True,
            )
            for stream, name in ((trial.stdout, "stdout"), (trial.stderr, "stderr"))
        ]
        self._shipper = LogShipper(
            self.allocation_id,
            self.buffer,
            lambda lines: self._ship(client, lines),
        )
        self._thread = threading.Thread(target=self._run, name=f"trial-{self.allocation_id}", daemon=True)

    def _ship(self, client: MasterClient, lines: list[LogLine]) -> None:
        batch_id = str(uuid.uuid4())  # the same on every retry, so the master stores the batch once
        self.agent.send_report(
            self.allocation_id,
            f"{len(lines)} log lines",
            lambda: client.ship_logs(self.allocation_id, lines, batch_id),
            max_server_errors=_MAX_LOG_SERVER_ERRORS,
        )

    def start(self) -> None:
        # Read at once so the runner never blocks on a full pipe, even before RUNNING is reported.
        for reader in self._readers:
            reader.start()
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        aid = self.allocation_id
        client = self.agent.client
        try:
            self.agent.send_report(aid, "RUNNING", lambda: client.report_state(aid, "RUNNING"))
            self._shipper.start()
            exit_code = self.trial.wait()
            reason = self._reason(exit_code)
            log.info("allocation %s: trial runner %s", aid, reason)
            deadline = time.monotonic() + _PIPE_DRAIN_SECONDS
            for reader in self._readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            if any(reader.is_alive() for reader in self._readers):
                log.warning("allocation %s: output pipes still open after exit; not waiting for more", aid)
            self.buffer.close()
            self._shipper.join()
            self.agent.send_report(
                aid,
                "TERMINATED",
                lambda: client.report_state(aid, "TERMINATED", exit_code=exit_code, reason=reason),
            )
        except Exception:
            log.exception("allocation %s: supervisor failed", aid)
        finally:
            self.trial.cleanup()
            self.agent._forget(aid)

    def _reason(self, exit_code: int) -> str:
        if exit_code < 0:
            try:
                how = f"killed by {signal.Signals(-exit_code).name}"
            except ValueError:
                how = f"killed by signal {-exit_code}"
        else:
            how = f"exited with code {exit_code}"
        if self.agent.stopping:
            return f"{how} (agent shutting down)"
        if self.trial.kill_requested:
            return f"{how} (killed on request)"
        return how


def default_agent_id() -> str:
    """The hostname, as Determined does: one agent per machine."""
    return os.uname().nodename
