"""Runs a real ``Agent`` in this process against an ``httpx.MockTransport``, for the signal tests.

The mock only hands out one ``start`` action and records what the agent sends, one JSON line per
request in ``requests.jsonl`` as it arrives (so a SIGKILLed agent leaves its record too); it says
nothing about how the real master behaves. The trial is the fake runner, so the tests can check
which processes outlive the agent.

Usage: ``agent_with_fake_master.py ROOT [SHUTDOWN_GRACE [DRAIN_TIMEOUT]]``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import httpx

from stalwart_agent.daemon import Agent, AgentConfig
from stalwart_agent.slots import artificial_slots

FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")


def main() -> None:
    root = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    slots = artificial_slots(2, "agent-under-test")
    lock = threading.Lock()
    polls = 0
    record = (root / "requests.jsonl").open("a")

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        entry = {
            "method": request.method,
            "path": request.url.path,
            "params": dict(request.url.params),
            "body": json.loads(request.content) if request.content else None,
        }
        with lock:
            record.write(json.dumps(entry) + "\n")
            record.flush()
        path = request.url.path
        if path.endswith("/register"):
            return httpx.Response(200, json={"agent_id": "agent-under-test", "poll_timeout_seconds": 20})
        if path.endswith("/work"):
            with lock:
                polls += 1
                first = polls == 1
            if first:
                action = {
                    "type": "start",
                    "allocation_id": "alloc-1",
                    "allocation_token": "alloc-token",
                    "trial_id": 7,
                    "experiment_id": 3,
                    "slot_uuids": [slots[0].uuid],
                    "slot_indexes": [0],
                }
                return httpx.Response(200, json={"actions": [action]})
            time.sleep(0.05)  # a long poll that ends without work, shortened
            return httpx.Response(200, json={"actions": []})
        return httpx.Response(204)

    config = AgentConfig(
        master_url="http://master.invalid",
        token="agent-token",
        agent_id="agent-under-test",
        slots=slots,
        work_dir=root / "work",
        shutdown_grace=float(sys.argv[2]) if len(sys.argv) > 2 else 5.0,
        drain_timeout=float(sys.argv[3]) if len(sys.argv) > 3 else 600.0,
        runner_command=[
            sys.executable,
            str(FAKE_RUNNER),
            "--stdout-lines",
            "1",
            "--child-pidfile",
            str(root / "child.pid"),
            "--pidfile",
            str(root / "runner.pid"),
            "--ticks",
            "100000",
            "--tick-every",
            "0.02",
        ],
    )
    Agent(config, transport=httpx.MockTransport(handler)).run()


if __name__ == "__main__":
    main()
