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
from stalwart_agent.errors import AgentError, RegistrationRefused
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
    master: FakeMaster,
    tmp_path: Path,
    *,
    sleeps: list[float] | None = None,
    runner: list[str] | None = None,
    work_dir: Path | None = None,
) -> Agent:
    config = AgentConfig(
        master_url="http://master.invalid",
        token="agent-token",
        agent_id="agent-1",
        slots=SLOTS,
        work_dir=work_dir or tmp_path / "work",
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


def _requests(root: Path) -> list[dict[str, Any]]:
    lines = (root / "requests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _start_fake_master_agent(root: Path, *args: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """The agent of agent_with_fake_master.py, once its trial runs: (agent, runner pid, child pid)."""
    agent = subprocess.Popen([sys.executable, str(AGENT_WITH_FAKE_MASTER), str(root), *args])
    try:
        wait_for(lambda: (root / "runner.pid").exists(), 30, "the trial to start")
    except BaseException:
        agent.kill()
        agent.wait()
        raise
    return agent, int((root / "runner.pid").read_text()), int((root / "child.pid").read_text())


def _kill_pids(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_sigterm_drains_and_a_second_sigterm_stops_the_trials_and_reports_them(tmp_path: Path) -> None:
    agent, runner, child = _start_fake_master_agent(tmp_path, "5")
    try:
        agent.send_signal(signal.SIGTERM)
        wait_for(
            lambda: any(r["path"].endswith("/agent-under-test/drain") for r in _requests(tmp_path)),
            30,
            "the drain request",
        )
        assert agent.poll() is None  # the trial has not moved away: the agent waits for it
        assert not process_gone(runner)

        agent.send_signal(signal.SIGTERM)  # child ignores SIGTERM: needs the SIGKILL after the grace
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        _kill_pids(runner, child)
    assert process_gone(runner) and process_gone(child)
    requests = _requests(tmp_path)
    drain = next(r for r in requests if r["path"].endswith("/drain"))
    assert drain["method"] == "POST" and drain["path"] == "/api/v1/agents/agent-under-test/drain"
    # While draining it polls briefly, so it can leave soon after its last trial.
    after = requests[requests.index(drain) :]
    assert any(r["path"].endswith("/work") and r["params"]["timeout_seconds"] == "1" for r in after)
    states = [r["body"] for r in requests if r["path"] == "/api/v1/allocations/alloc-1/state"]
    assert states[-1] == {
        "state": "TERMINATED",
        "exit_code": -15,
        "reason": "killed by SIGTERM (agent shutting down)",
    }
    assert not list((tmp_path / "work" / "allocations").iterdir())


@pytest.mark.integration
def test_a_drain_that_times_out_stops_the_trials(tmp_path: Path) -> None:
    agent, runner, child = _start_fake_master_agent(tmp_path, "0.5", "1")
    try:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        _kill_pids(runner, child)
    assert process_gone(runner) and process_gone(child)
    states = [r["body"] for r in _requests(tmp_path) if r["path"] == "/api/v1/allocations/alloc-1/state"]
    assert states[-1]["state"] == "TERMINATED" and "(agent shutting down)" in states[-1]["reason"]


@pytest.mark.integration
def test_a_draining_agent_returns_once_its_trials_have_left(tmp_path: Path) -> None:
    start = {"type": "start", "allocation_id": "alloc-d", "allocation_token": "t", "slot_uuids": []}
    master = FakeMaster(
        replies={"GET /api/v1/agents/agent-1/work": [httpx.Response(200, json={"actions": [start]})]}
    )
    pidfile = tmp_path / "runner.pid"
    # Stands in for a trial that checkpoints and exits 0 once the master preempts it.
    runner = [sys.executable, str(FAKE_RUNNER), "--pidfile", str(pidfile), "--sleep", "1.5"]
    agent = make_agent(master, tmp_path, runner=runner)
    master.on_idle_poll = short_long_poll
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_for(pidfile.exists, 30, "the runner to start")
        agent.drain()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        agent.stop()
        thread.join(30)

    assert master.bodies("POST", "/agents/agent-1/drain") == [None]
    states = master.bodies("POST", "/allocations/alloc-d/state")
    assert states[-1] == {
        "state": "TERMINATED",
        "exit_code": 0,
        "reason": "exited with code 0 (agent draining)",
    }
    assert process_gone(int(pidfile.read_text()))


@pytest.mark.integration
def test_a_sigkilled_agent_leaves_its_trial_running_for_the_next_agent_to_adopt(tmp_path: Path) -> None:
    agent, runner, child = _start_fake_master_agent(tmp_path)
    try:
        wait_for(
            lambda: any(r["path"].endswith("/alloc-1/logs") for r in _requests(tmp_path)), 30, "some logs"
        )
        agent.kill()
        agent.wait()
        first_life = _requests(tmp_path)
        assert not process_gone(runner) and not process_gone(child)
        shipped_first = [m for r in first_life if r["path"].endswith("/logs") for m in r["body"]["lines"]]
        stdout = tmp_path / "work" / "allocations" / "alloc-1" / "stdout.log"
        wait_for(
            lambda: stdout.read_text().count("\n") > len(shipped_first) + 5, 30, "output while no agent runs"
        )
        written = stdout.read_text().count("\n")

        # The next agent: the master remembers the run and wants it killed (as after a cancel).
        kill = {"type": "kill", "allocation_id": "alloc-1", "grace_seconds": 0.5}
        registered = httpx.Response(200, json={"agent_id": "agent-1", "actions": [kill]})
        master = FakeMaster(replies={"POST /api/v1/agents/register": [registered]})
        successor = make_agent(master, tmp_path, work_dir=tmp_path / "work")
        master.on_idle_poll = short_long_poll
        with running(successor):
            wait_for(lambda: len(master.bodies("POST", "/allocations/alloc-1/state")) == 2, 30, "the exit")
    finally:
        agent.kill()
        _kill_pids(runner, child)

    assert master.bodies("POST", "/register")[0]["running"] == ["alloc-1"]
    assert master.bodies("POST", "/allocations/alloc-1/state") == [
        {"state": "RUNNING", "exit_code": None, "reason": ""},
        # The fake runner dies of the SIGTERM, so it leaves no exit code.
        {
            "state": "TERMINATED",
            "exit_code": None,
            "reason": "ended without an exit code (killed on request)",
        },
    ]
    assert process_gone(runner) and process_gone(child)
    # Both agents' batches together, stored once per batch id as the master does: every line once.
    batches: dict[str, list[str]] = {}
    for body in [r["body"] for r in first_life if r["path"].endswith("/alloc-1/logs")] + master.bodies(
        "POST", "/allocations/alloc-1/logs"
    ):
        batches.setdefault(body["batch_id"], [line["message"] for line in body["lines"]])
    messages = [message for lines in batches.values() for message in lines]
    ticks = [m for m in messages if m.startswith("tick ")]
    assert messages[0] == "out 0"
    assert ticks == [f"tick {i}" for i in range(len(ticks))]
    assert len(messages) >= written  # what was written while no agent ran is there too
    assert not (tmp_path / "work" / "allocations" / "alloc-1").exists()


def _ended_allocation(work: Path, allocation_id: str, exit_code: int | None, output: bytes) -> Path:
    """What an agent that died leaves of a runner that has ended since: its files, a dead pid."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    directory = work / "allocations" / allocation_id
    (directory / "scratch").mkdir(parents=True)
    state = {"allocation_id": allocation_id, "pid": gone.pid, "start_ticks": 1, "started_at": "x"}
    (directory / "state.json").write_text(json.dumps(state))
    (directory / "stdout.log").write_bytes(output)
    if exit_code is not None:
        (directory / "exit").write_text(f"{exit_code}\n")
    return directory


@pytest.mark.integration
def test_runs_that_ended_while_no_agent_watched_are_reported_with_their_exit_file(tmp_path: Path) -> None:
    done = _ended_allocation(tmp_path / "work", "alloc-done", 0, b"finished\nlast words")
    vanished = _ended_allocation(tmp_path / "work", "alloc-gone", None, b"")
    master = FakeMaster()
    agent = make_agent(master, tmp_path)
    master.on_idle_poll = short_long_poll

    def reported(allocation_id: str) -> bool:
        return bool(master.bodies("POST", f"/allocations/{allocation_id}/state"))

    with running(agent):
        wait_for(lambda: reported("alloc-done") and reported("alloc-gone"), 30, "both exits")
        wait_for(lambda: not agent.running_allocations(), 10, "both to be forgotten")

    assert master.bodies("POST", "/register")[0]["running"] == ["alloc-done", "alloc-gone"]
    assert master.bodies("POST", "/allocations/alloc-done/state") == [
        {"state": "TERMINATED", "exit_code": 0, "reason": "exited with code 0"}
    ]
    logs = master.bodies("POST", "/allocations/alloc-done/logs")
    assert [line["message"] for body in logs for line in body["lines"]] == ["finished", "last words"]
    # No exit code: the master treats it like a lost agent, so the trial resumes uncounted.
    assert master.bodies("POST", "/allocations/alloc-gone/state") == [
        {"state": "TERMINATED", "exit_code": None, "reason": "agent lost"}
    ]
    assert not done.exists() and not vanished.exists()


@pytest.mark.unit
def test_the_agent_registers_again_when_the_master_comes_back_or_forgets_it(tmp_path: Path) -> None:
    unauthorized = httpx.Response(401, json={"title": "Unauthorized", "detail": "unknown token"})
    master = FakeMaster(
        replies={"GET /api/v1/agents/agent-1/work": [connect_error(), httpx.Response(502), unauthorized]}
    )
    agent = make_agent(master, tmp_path)
    polls = 0

    def stop_after_one_good_poll() -> None:
        nonlocal polls
        polls += 1
        agent.stop()

    master.on_idle_poll = stop_after_one_good_poll
    agent.run()

    with master.lock:
        order = [r.url.path.rsplit("/", 1)[1] for r in master.requests]
    # Every answer after an outage or a refusal is preceded by a registration listing the runs.
    assert order == ["register", "work", "register", "work", "register", "work", "register", "work"]


@pytest.mark.integration
def test_a_second_agent_on_the_same_work_dir_is_refused(tmp_path: Path) -> None:
    master = FakeMaster()
    master.on_idle_poll = short_long_poll
    first = make_agent(master, tmp_path)
    with running(first):
        wait_for(lambda: bool(master.bodies("POST", "/register")), 30, "the first agent")
        with pytest.raises(AgentError, match="another agent is running with the work directory"):
            make_agent(FakeMaster(), tmp_path).run()


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
