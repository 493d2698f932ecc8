"""The daemon's side of the protocol.

``httpx.MockTransport`` stands in for the master here ONLY to check the shape of the agent's
requests and how it backs off and re-registers; how the real master answers is covered by the
end-to-end tests that start a real master. The trial processes are real (``fake_runner.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stalwart.client.errors import APIError, MasterUnreachable
from stalwart_agent import __version__
from stalwart_agent.daemon import Agent, AgentConfig
from stalwart_agent.errors import RegistrationRefused
from stalwart_agent.master import Backoff, KillAction, StartAction, UnknownAction, parse_action
from stalwart_agent.slots import artificial_slots

from support import process_gone, wait_for

FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")
AGENT_WITH_FAKE_MASTER = Path(__file__).with_name("agent_with_fake_master.py")
SLOTS = artificial_slots(2, "agent-1")

Reply = httpx.Response | Exception


@dataclass
class FakeMaster:
    """Scripted answers per route and a record of every request, shared across threads."""

    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    on_idle_poll: Callable[[], None] = lambda: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            key = f"{request.method} {request.url.path}"
            scripted = self.replies.get(key)
            reply = scripted.pop(0) if scripted else None
        if isinstance(reply, Exception):
            raise reply
        if reply is not None:
            return reply
        if request.url.path.endswith("/register"):
            return httpx.Response(200, json={"agent_id": "agent-1", "poll_timeout_seconds": 20})
        if request.url.path.endswith("/work"):
            self.on_idle_poll()
            return httpx.Response(200, json={"actions": []})
        return httpx.Response(204)

    def bodies(self, method: str, path_suffix: str) -> list[Any]:
        with self.lock:
            return [
                json.loads(r.content) if r.content else None
                for r in self.requests
                if r.method == method and r.url.path.endswith(path_suffix)
            ]


def make_agent(
    master: FakeMaster, tmp_path: Path, *, sleeps: list[float] | None = None, runner: list[str] | None = None
) -> Agent:
    config = AgentConfig(
        master_url="http://master.invalid",
        token="agent-token",
        agent_id="agent-1",
        slots=SLOTS,
        work_dir=tmp_path / "work",
        resource_pool="gpus",
        backoff_base=0.5,
        backoff_cap=4.0,
        shutdown_grace=5.0,
        runner_command=runner or [sys.executable, str(FAKE_RUNNER)],
    )
    recorded = sleeps if sleeps is not None else []
    return Agent(config, transport=httpx.MockTransport(master.handler), sleep=recorded.append)


@contextlib.contextmanager
def running(agent: Agent) -> Iterator[None]:
    """``agent.run()`` on a thread for the duration of the block, then stopped."""
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        agent.stop()
        thread.join(30)
    assert not thread.is_alive()


def short_long_poll() -> None:
    """An idle poll that ends after 50 ms instead of 20 s, so the loop does not spin."""
    threading.Event().wait(0.05)


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


@pytest.mark.unit
def test_registration_carries_token_slots_pool_version_and_running_allocations(tmp_path: Path) -> None:
    master = FakeMaster()
    agent = make_agent(master, tmp_path)
    master.on_idle_poll = agent.stop

    agent.run()

    register = next(r for r in master.requests if r.url.path == "/api/v1/agents/register")
    assert register.method == "POST"
    assert register.headers["Authorization"] == "Bearer agent-token"
    assert json.loads(register.content) == {
        "agent_id": "agent-1",
        "resource_pool": "gpus",
        "version": __version__,
        "slots": [
            {"index": s.index, "type": "artificial", "uuid": s.uuid, "name": "artificial", "memory_mb": 0}
            for s in SLOTS
        ],
        "running": [],
    }
    poll = next(r for r in master.requests if r.url.path == "/api/v1/agents/agent-1/work")
    assert poll.method == "GET"
    assert poll.url.params["timeout_seconds"] == "20"
    assert poll.headers["Authorization"] == "Bearer agent-token"


@pytest.mark.unit
def test_a_refused_first_registration_stops_the_agent(tmp_path: Path) -> None:
    problem = {
        "type": "urn:stalwart:problem:unauthorized",
        "title": "Unauthorized",
        "detail": "bad agent token",
    }
    master = FakeMaster(replies={"POST /api/v1/agents/register": [httpx.Response(401, json=problem)]})

    with pytest.raises(RegistrationRefused, match="refused agent agent-1: Unauthorized: bad agent token"):
        make_agent(master, tmp_path).run()


@pytest.mark.unit
def test_unreachable_master_is_retried_with_capped_jittered_exponential_backoff(tmp_path: Path) -> None:
    failures: list[Reply] = [connect_error() for _ in range(6)]
    master = FakeMaster(
        replies={
            "POST /api/v1/agents/register": [connect_error(), httpx.Response(503), connect_error()],
            "GET /api/v1/agents/agent-1/work": failures,
        }
    )
    sleeps: list[float] = []
    agent = make_agent(master, tmp_path, sleeps=sleeps)
    master.on_idle_poll = agent.stop

    agent.run()

    # Registration: 3 failures; then the poll: 6 failures, each series from the base again.
    registration_ceilings, poll_ceilings = [0.5, 1.0, 2.0], [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    ceilings = [*registration_ceilings, *poll_ceilings]
    assert len(sleeps) == len(ceilings)
    for slept, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling


@pytest.mark.unit
def test_backoff_resets_after_success_and_jitters() -> None:
    low, high = Backoff(1.0, 8.0, rng=lambda: 0.0), Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [high.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    high.reset()
    assert high.next_delay() == 1.0
    many = Backoff(1.0, 8.0)
    many.failures = 10_000  # no overflow after a very long outage
    assert 4.0 <= many.next_delay() <= 8.0


@pytest.mark.unit
def test_an_agent_the_master_forgot_registers_again(tmp_path: Path) -> None:
    gone = httpx.Response(404, json={"title": "Not Found", "detail": "unknown agent agent-1"})
    master = FakeMaster(replies={"GET /api/v1/agents/agent-1/work": [gone]})
    agent = make_agent(master, tmp_path)
    master.on_idle_poll = agent.stop  # the first poll after the 404 answers normally

    agent.run()

    assert len(master.bodies("POST", "/register")) == 2


@pytest.mark.integration
def test_start_reports_running_ships_logs_and_reports_the_exit(tmp_path: Path) -> None:
    start = {
        "type": "start",
        "allocation_id": "alloc-9",
        "allocation_token": "alloc-token",
        "trial_id": 4,
        "experiment_id": 2,
        "slot_uuids": [SLOTS[1].uuid],
        "slot_indexes": [1],
    }
    master = FakeMaster(
        replies={"GET /api/v1/agents/agent-1/work": [httpx.Response(200, json={"actions": [start]})]}
    )
    agent = make_agent(
        master, tmp_path, runner=[sys.executable, str(FAKE_RUNNER), "--stdout-lines", "3", "--exit", "7"]
    )
    master.on_idle_poll = short_long_poll

    with running(agent):
        wait_for(lambda: len(master.bodies("POST", "/allocations/alloc-9/state")) == 2, 30, "TERMINATED")
        wait_for(lambda: not agent.running_allocations(), 10, "the allocation to be forgotten")

    states = master.bodies("POST", "/allocations/alloc-9/state")
    assert states[0] == {"state": "RUNNING", "exit_code": None, "reason": ""}
    assert states[1] == {"state": "TERMINATED", "exit_code": 7, "reason": "exited with code 7"}
    lines = [line for body in master.bodies("POST", "/allocations/alloc-9/logs") for line in body["lines"]]
    assert [(line["stream"], line["message"], line["rank"]) for line in lines] == [
        ("stdout", f"out {i}", 0) for i in range(3)
    ]
    # Logs go out between RUNNING and TERMINATED.
    with master.lock:
        order = [r.url.path.rsplit("/", 1)[1] for r in master.requests if "/allocations/" in r.url.path]
    assert order[0] == "state" and order[-1] == "state" and "logs" in order


@pytest.mark.integration
def test_kill_action_stops_the_trial_and_reports_the_signal(tmp_path: Path) -> None:
    pidfile = tmp_path / "runner.pid"
    start = {"type": "start", "allocation_id": "alloc-k", "allocation_token": "t", "slot_uuids": []}
    kill = {"type": "kill", "allocation_id": "alloc-k", "grace_seconds": 0.5}
    work = "GET /api/v1/agents/agent-1/work"
    master = FakeMaster(replies={work: [httpx.Response(200, json={"actions": [start]})]})
    runner = [sys.executable, str(FAKE_RUNNER), "--ignore-term", "--pidfile", str(pidfile), "--sleep", "600"]
    agent = make_agent(master, tmp_path, runner=runner)
    master.on_idle_poll = short_long_poll

    with running(agent):
        wait_for(pidfile.exists, 30, "the runner to start")
        with master.lock:
            master.replies[work] = [httpx.Response(200, json={"actions": [kill]})]
        wait_for(lambda: len(master.bodies("POST", "/allocations/alloc-k/state")) == 2, 30, "TERMINATED")

    final = master.bodies("POST", "/allocations/alloc-k/state")[1]
    assert final == {
        "state": "TERMINATED",
        "exit_code": -9,
        "reason": "killed by SIGKILL (killed on request)",
    }
    assert process_gone(int(pidfile.read_text()))


@pytest.mark.integration
def test_a_trial_that_cannot_start_is_reported_terminated(tmp_path: Path) -> None:
    start = {"type": "start", "allocation_id": "alloc-x", "allocation_token": "t", "slot_uuids": ["GPU-nope"]}
    master = FakeMaster(
        replies={"GET /api/v1/agents/agent-1/work": [httpx.Response(200, json={"actions": [start]})]}
    )
    agent = make_agent(master, tmp_path)
    master.on_idle_poll = short_long_poll

    with running(agent):
        wait_for(lambda: bool(master.bodies("POST", "/allocations/alloc-x/state")), 30, "TERMINATED")

    [state] = master.bodies("POST", "/allocations/alloc-x/state")
    assert state["state"] == "TERMINATED" and state["exit_code"] is None
    assert "not on this agent: GPU-nope" in state["reason"]
    [logs] = master.bodies("POST", "/allocations/alloc-x/logs")
    assert "GPU-nope" in logs["lines"][0]["message"]


@pytest.mark.integration
def test_sigterm_to_the_agent_stops_its_trials_and_reports_them(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, str(AGENT_WITH_FAKE_MASTER), str(tmp_path), "5"])
    try:
        wait_for(lambda: (tmp_path / "runner.pid").exists(), 30, "the trial to start")
        runner = int((tmp_path / "runner.pid").read_text())
        child = int((tmp_path / "child.pid").read_text())  # ignores SIGTERM: needs the SIGKILL after grace

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    assert process_gone(runner) and process_gone(child)
    requests = json.loads((tmp_path / "requests.json").read_text())
    states = [r["body"] for r in requests if r["path"] == "/api/v1/allocations/alloc-1/state"]
    assert states[-1] == {
        "state": "TERMINATED",
        "exit_code": -15,
        "reason": "killed by SIGTERM (agent shutting down)",
    }
    assert not list((tmp_path / "work").iterdir())


@pytest.mark.integration
def test_sigkill_to_the_agent_takes_its_trial_runner_with_it(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, str(AGENT_WITH_FAKE_MASTER), str(tmp_path)])
    try:
        wait_for(lambda: (tmp_path / "runner.pid").exists(), 30, "the trial to start")
        runner = int((tmp_path / "runner.pid").read_text())
    finally:
        agent.kill()
        agent.wait()
    wait_for(lambda: process_gone(runner), 10, "the trial runner to die with the agent")
    # The runner's own child is the runner's business (docs/agent.md); clean it up here.
    child = int((tmp_path / "child.pid").read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)


@pytest.mark.unit
def test_actions_are_parsed_and_unknown_ones_rejected() -> None:
    assert parse_action(
        {
            "type": "start",
            "allocation_id": "a",
            "allocation_token": "t",
            "slot_uuids": ["u"],
            "slot_indexes": [0],
        }
    ) == StartAction("a", "t", trial_id=None, experiment_id=None, slot_uuids=("u",), slot_indexes=(0,))
    assert parse_action({"type": "kill", "allocation_id": "a", "grace_seconds": 3}) == KillAction("a", 3.0)
    for bad in ({"type": "reboot"}, {"type": "start"}, ["start"]):
        with pytest.raises(UnknownAction):
            parse_action(bad)


@pytest.mark.unit
def test_reports_retry_an_absent_master_but_give_up_on_a_batch_it_keeps_failing(tmp_path: Path) -> None:
    sleeps: list[float] = []
    agent = make_agent(FakeMaster(), tmp_path, sleeps=sleeps)
    attempts = 0

    def unreachable_twice() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise MasterUnreachable("http://master.invalid", "Connection refused")

    assert agent.send_report("alloc-1", "RUNNING", unreachable_twice)
    assert attempts == 3

    def always_500() -> None:
        raise APIError(500, "Internal Server Error")

    assert not agent.send_report("alloc-1", "3 log lines", always_500, max_server_errors=4)
    assert len(sleeps) == 2 + 3


@pytest.mark.unit
def test_a_long_reason_is_truncated_to_what_the_master_accepts(tmp_path: Path) -> None:
    master = FakeMaster()
    agent = make_agent(master, tmp_path)

    agent.client.report_state("alloc-1", "TERMINATED", exit_code=None, reason="x" * 5000)

    [body] = master.bodies("POST", "/allocations/alloc-1/state")
    assert len(body["reason"]) == 1000


@pytest.mark.unit
def test_cli_errors_are_one_line_without_a_traceback() -> None:
    for args, expected in (
        (["--agent-id", "bad id"], "Error: agent id 'bad id' must be"),
        (["--visible-gpus", "GPU-1"], "Error: --visible-gpus takes GPU indexes"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "stalwart_agent", "--master", "http://127.0.0.1:9", "--token", "t", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.strip().startswith(expected)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
