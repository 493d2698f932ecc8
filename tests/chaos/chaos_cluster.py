"""``ChaosCluster``: a private Stalwart cluster of real processes that a test may kill and restart.

Each cluster has its own database (a copy of a migrated template on the test PostgreSQL, or an
embedded PostgreSQL of its own when the scenario restarts it), its own redis-server, a master
(``stalwart-master serve``), a Celery worker and agents with artificial slots. Every process can be
SIGKILLed, SIGTERMed and started again with the same command line, port and data (see
``chaos_services``). Timeouts are short (reconnect window, scheduler tick, GC grace, preemption
timeout) so a scenario takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from chaos_services import MARKER, Api, Postgres, Redis, Service, kill_marked, marked_processes

from stalwart.context import build_context

from support import agent_argv, free_port, wait_for

TRIAL_DIR = Path(__file__).parent / "trial"
TERMINAL = frozenset({"COMPLETED", "CANCELED", "ERROR"})
# Log lines left out of a failed scenario's report: successful requests, Celery's banner.
_NOISE = re.compile(r'INFO: +127\.0\.0\.1:\d+ - ".*" 2\d\d |^[- *.>\[\]]*$|^ *[-*]{2,}')


# --- the cluster ----------------------------------------------------------------------------------


@dataclass
class Settings:
    """The short timeouts every scenario runs with; a scenario may change any of them."""

    reconnect_wait: float = 4.0
    scheduler_tick: float = 0.2
    gc_grace: float = 1.0
    preemption_timeout: float = 4.0
    scheduler_preemption: bool = False
    drain_timeout: float = 60.0
    # The agents' longest back-off between tries to reach the master; with the window above it keeps
    # production's proportions (10 s against 25 s).
    agent_max_retry_delay: float = 2.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Experiment:
    id: int
    trial_ids: list[int]


class ChaosCluster:
    """One private cluster; ``start()`` brings it up, ``close()`` takes everything down.

    Processes: ``postgres`` (``stop``/``start`` when embedded), ``redis`` (``stop``/``start``),
    ``master``, ``worker`` and ``agents[id]`` (``Service``: ``kill``, ``signal``, ``start``,
    ``restart(downtime)``, ``wait_exit``), ``add_agent``. Work: ``submit`` (a scripted experiment),
    ``verb``, ``wait_state``, ``runs``, ``checkpoints``, ``slots``, ``sql``. The trial's own record:
    ``journal``, ``wait_event``, ``wait_step``, ``open_gate``. Its processes: ``trial_processes``,
    ``allocation_processes``.
    """

    def __init__(
        self, root: Path, label: str, *, template: str | None, embedded_postgres: bool, settings: Settings
    ) -> None:
        self.id = f"{label}-{uuid.uuid4().hex[:8]}"
        self.root = root
        self.settings = settings
        self.journal_dir = root / "journal"
        self.storage_dir = root / "checkpoints"
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = {MARKER: self.id, "STALWART_DEBUG": "1"}
        self.postgres = Postgres(root, label.replace("-", "_"), template=template, embedded=embedded_postgres)
        self.redis = Redis(root, self.base_env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_env = {
            **self.base_env,
            "STALWART_DATABASE_URL": self.postgres.url,
            "STALWART_REDIS_URL": self.redis.url,
            "STALWART_AGENT_RECONNECT_WAIT_SECONDS": str(settings.reconnect_wait),
            "STALWART_SCHEDULER_TICK_SECONDS": str(settings.scheduler_tick),
            "STALWART_GC_CHUNK_GRACE_SECONDS": str(settings.gc_grace),
            "STALWART_GC_REPUBLISH_INTERVAL_SECONDS": "1",
            "STALWART_GC_BUSY_RETRY_SECONDS": "1",
            "STALWART_PREEMPTION_TIMEOUT_SECONDS": str(int(settings.preemption_timeout)),
            "STALWART_SCHEDULER_PREEMPTION": "true" if settings.scheduler_preemption else "false",
            **settings.env,
        }
        self.master = Service(
            "master",
            [sys.executable, "-m", "stalwart_master", "serve", "--port", str(self.port)],
            root / "master" / "master.log",
            {**self.server_env, "STALWART_DATA_DIR": str(root / "master")},
            lambda _s, _o: self._healthy(),
        )
        self.worker = Service(
            "worker",
            [sys.executable, "-m", "stalwart_master", "worker"],
            root / "worker" / "worker.log",
            {**self.server_env, "STALWART_DATA_DIR": str(root / "worker")},
            lambda service, offset: " ready." in service.log_since(offset),
            kill_group=True,
        )
        self.agents: dict[str, Service] = {}
        self.api = Api(self.url, "admin", os.environ["STALWART_ADMIN_PASSWORD"])
        self.experiments: list[int] = []
        self._context = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, agents: dict[str, int], pool: str = "default") -> None:
        self.postgres.start()
        self.redis.start()
        self.master.start(120)
        self.api.login()
        self.worker.start(60)
        response = self.api.post(
            "/api/v1/contexts", content=build_context(TRIAL_DIR), headers={"Content-Type": "application/gzip"}
        )
        self._context = str(response.json()["sha256"])
        for agent_id, slots in agents.items():
            self.add_agent(agent_id, slots, pool=pool)

    def add_agent(self, agent_id: str, slots: int, pool: str = "default") -> Service:
        """A new agent with a token of its own (restarts reuse it: the argv is the service's)."""
        created = self.api.post("/api/v1/agents/tokens", expect=(201,), json={"agent_id": agent_id})
        token = str(created.json()["token"])
        argv = [
            *agent_argv(self.url, token, agent_id, slots, pool, self.root / "agents" / agent_id),
            "--shutdown-grace",
            "5",
            "--drain-timeout",
            str(self.settings.drain_timeout),
            "--max-retry-delay",
            str(self.settings.agent_max_retry_delay),
        ]
        agent = Service(
            agent_id, argv, self.root / "agents" / f"{agent_id}.log", self.base_env, self._registered
        )
        self.agents[agent_id] = agent
        agent.start(60)
        return agent

    def _registered(self, agent: Service, offset: int) -> bool:
        return "registered with" in agent.log_since(offset)

    def close(self) -> None:
        """Take everything down with SIGKILL: a drain or a graceful shutdown would only slow it."""
        for service in (*self.agents.values(), self.worker, self.master, self.redis.service):
            service.kill()
        self.kill_trial_processes()
        self.api.close()
        kill_marked(self.id)
        self.postgres.drop()

    def logs(self) -> str:
        parts = []
        for service in self.services():
            lines = [line for line in service.log_tail(400).splitlines() if not _NOISE.search(line)]
            parts.append(f"--- {service.name} ({service.log_file}) ---\n" + "\n".join(lines[-80:]))
        for trial_file in sorted(self.journal_dir.glob("trial-*.jsonl")):
            parts.append(f"--- journal {trial_file.name} ---\n{trial_file.read_text()[-6000:]}")
        return "\n".join(parts)

    def services(self) -> list[Service]:
        return [self.master, self.worker, *self.agents.values()]

    # -- experiments -------------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        actions: list[dict[str, Any]],
        *,
        max_restarts: int = 0,
        priority: int | None = None,
        pool: str = "default",
        storage: dict[str, Any] | None = None,
        searcher: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Experiment:
        """Trials running the scripted ``actions``: one (single searcher) unless ``searcher`` says
        otherwise; ``hyperparameters`` are added to the actions. Returns the ids."""
        resources: dict[str, Any] = {"resource_pool": pool, "slots_per_trial": 1}
        if priority is not None:
            resources["priority"] = priority
        config = {
            "name": name,
            "entrypoint": "python3 train.py",
            "hyperparameters": {
                "actions": {"type": "const", "val": actions},
                "journal": str(self.journal_dir),
                **(hyperparameters or {}),
            },
            "searcher": searcher or {"name": "single", "metric": "loss", "smaller_is_better": True},
            "max_restarts": max_restarts,
            "resources": resources,
            "checkpoint_storage": {
                "type": "shared_fs",
                "host_path": str(self.storage_dir),
                "chunk_size": 1024 * 1024,
                **(storage or {}),
            },
            **extra,
        }
        # JSON is YAML: the config goes as text, as the CLI sends it.
        response = self.api.post(
            "/api/v1/experiments", json={"config": json.dumps(config), "context": self._context}
        )
        experiment_id = int(response.json()["id"])
        self.experiments.append(experiment_id)
        trials = self.api.get(f"/api/v1/experiments/{experiment_id}/trials")
        return Experiment(experiment_id, [int(t["id"]) for t in trials])

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        return dict(self.api.get(f"/api/v1/experiments/{experiment_id}"))

    def trial(self, trial_id: int) -> dict[str, Any]:
        return dict(self.api.get(f"/api/v1/trials/{trial_id}"))

    def verb(self, experiment_id: int, verb: str) -> None:
        self.api.post(f"/api/v1/experiments/{experiment_id}/{verb}")

    def wait_state(self, experiment_id: int, states: set[str] | frozenset[str], timeout: float = 90.0) -> str:
        try:
            wait_for(
                lambda: self.experiment(experiment_id)["state"] in states,
                timeout,
                f"experiment {experiment_id} to reach {sorted(states)}",
                interval=0.2,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (it is {self.experiment(experiment_id)['state']})") from None
        return str(self.experiment(experiment_id)["state"])

    def checkpoints(self, experiment_id: int) -> list[dict[str, Any]]:
        return list(self.api.get(f"/api/v1/experiments/{experiment_id}/checkpoints"))

    def slots(self) -> list[dict[str, Any]]:
        return [s for s in self.api.get("/api/v1/slots") if s["agent_id"] in self.agents]

    def runs(self, trial_id: int) -> list[dict[str, Any]]:
        """The trial's runs from ``GET /trials/{id}/runs``; read from the database where the master
        has no such route yet."""
        response = self.api.request("GET", f"/api/v1/trials/{trial_id}/runs")
        if response.status_code == 200:
            return sorted(response.json(), key=lambda r: r["run_id"])
        assert response.status_code in (404, 405), response.text
        keys = (
            "run_id",
            "allocation_id",
            "agent_id",
            "state",
            "started_at",
            "ended_at",
            "exit_code",
            "exit_reason",
        )
        with psycopg.connect(self.postgres.url) as conn:
            rows = conn.execute(
                "SELECT run_id, id::text, agent_id, state, started_at, ended_at, exit_code, exit_reason"
                " FROM allocations WHERE trial_id = %s ORDER BY run_id",
                (trial_id,),
            ).fetchall()
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Straight from the database, for what no route shows (the GC outbox)."""
        with psycopg.connect(self.postgres.url) as conn:
            return conn.execute(query, params).fetchall()

    # -- the trial's own record --------------------------------------------------------------------

    def journal(self, trial_id: int) -> list[dict[str, Any]]:
        path = self.journal_dir / f"trial-{trial_id}.jsonl"
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def wait_event(self, trial_id: int, event: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """The first journal event of this kind whose fields include ``match`` (``step`` means at least)."""

        def matches(record: dict[str, Any]) -> bool:
            if record["event"] != event:
                return False
            for key, value in match.items():
                if key == "step" and record.get("step", -1) < value:
                    return False
                if key != "step" and record.get(key) != value:
                    return False
            return True

        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [r for r in self.journal(trial_id) if matches(r)]
            return bool(found)

        wait_for(seen, timeout, f"trial {trial_id}: journal event {event} {match}", interval=0.1)
        return found[0]

    def wait_step(self, trial_id: int, step: int, timeout: float = 60.0) -> None:
        """Until the master has a training metric row at ``step`` or later."""

        def reached() -> bool:
            rows = self.api.get(f"/api/v1/trials/{trial_id}/metrics", params={"group": "training"})["items"]
            return any(r["steps_completed"] >= step for r in rows)

        wait_for(reached, timeout, f"trial {trial_id} to report step {step}", interval=0.2)

    def open_gate(self, name: str) -> None:
        (self.journal_dir / name).touch()

    # -- processes ---------------------------------------------------------------------------------

    def trial_processes(self, trial_id: int | None = None) -> list[psutil.Process]:
        """The user code (``train.py``) of this cluster's trials, optionally of one trial."""
        found = []
        for proc in marked_processes(self.id):
            try:
                env = proc.environ()
                if "train.py" not in " ".join(proc.cmdline()):
                    continue
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if trial_id is None or env.get("STALWART_TRIAL_ID") == str(trial_id):
                found.append(proc)
        return found

    def allocation_processes(self) -> list[psutil.Process]:
        """Trial runners and trials of this cluster: anything with an allocation in its environment."""
        found = []
        for proc in marked_processes(self.id):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                env = proc.environ()
                if env.get("STALWART_ALLOCATION_ID") and env.get("STALWART_MASTER") == self.url:
                    found.append(proc)
        return found

    def kill_trial_processes(self) -> None:
        for proc in self.allocation_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
