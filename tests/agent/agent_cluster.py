"""Real ``stalwart-agent`` processes that a test can SIGKILL, SIGTERM and restart on one work directory."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support import ManagedProcess, agent_argv, kill_leftovers, spawn, wait_for


def login(url: str, password: str) -> httpx.Client:
    token = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": password}).json()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token['token']}"}, timeout=30)


@dataclass
class Agents:
    """Agent processes by id; each keeps its work directory (and so its trials) across restarts.

    ``mint_token`` gives the token bound to an agent id (a credential acts for one agent only);
    it is asked once per id, and a restarted agent comes back with the token it had.
    """

    master_url: str
    mint_token: Callable[[str], str]
    root: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, agent_id: str) -> str:
        if agent_id not in self.tokens:
            self.tokens[agent_id] = self.mint_token(agent_id)
        return self.tokens[agent_id]

    def work_dir(self, agent_id: str) -> Path:
        return self.root / agent_id / "work"

    def log(self, agent_id: str) -> Path:
        return self.root / agent_id / "agent.log"

    def registrations(self, agent_id: str) -> int:
        try:
            return self.log(agent_id).read_text(errors="replace").count(": registered with ")
        except FileNotFoundError:
            return 0

    def start(self, agent_id: str, slots: int, pool: str, *extra: str, wait: bool = True) -> ManagedProcess:
        """Start (or restart) an agent; with ``wait``, return once the master accepted it."""
        before = self.registrations(agent_id)
        token = self.token(agent_id)
        process = spawn(
            [
                *agent_argv(self.master_url, token, agent_id, slots, pool, self.work_dir(agent_id)),
                "--max-retry-delay",
                "1",
                *extra,
            ],
            self.log(agent_id),
        )
        self.processes[agent_id] = process
        if wait:

            def registered() -> bool:
                if not process.alive():
                    raise RuntimeError(f"agent {agent_id} exited:\n{process.log_tail()}")
                return self.registrations(agent_id) > before

            wait_for(registered, 30, f"agent {agent_id} to register")
        return process

    def sigkill(self, agent_id: str) -> None:
        """The agent alone, not its trials (they run in sessions of their own)."""
        process = self.processes[agent_id].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.alive():
                process.process.send_signal(signal.SIGTERM)  # drains
                try:
                    process.process.wait(5)
                except subprocess.TimeoutExpired:
                    process.process.send_signal(signal.SIGTERM)  # a second one stops the trials now
                    try:
                        process.process.wait(20)
                    except subprocess.TimeoutExpired:
                        process.process.kill()
                        process.process.wait(10)
        kill_leftovers(self.root)  # trials of a failed test
