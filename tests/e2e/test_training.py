"""Experiments train for real: master, agent processes, trial runners and PyTorch, nothing faked."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from stalwart.checkpoint import open_storage, verify_checkpoint
from stalwart.context import build_context

from support import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = Path(__file__).parent / "sleeper"
TERMINAL = {"COMPLETED", "CANCELED", "ERROR"}


def upload(api: httpx.Client, directory: Path) -> str:
    data = build_context(directory)
    response = api.post("/api/v1/contexts", content=data, headers={"Content-Type": "application/gzip"})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["sha256"])


def sleeper_config(name: str, hyperparameters: str, searcher: str = "name: single", **extra: Any) -> str:
    lines = [
        f"name: {name}",
        "entrypoint: python3 train.py",
        f"hyperparameters: {hyperparameters}",
        f"searcher: {{{searcher}, metric: loss}}",
        "max_restarts: 0",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def submit(api: httpx.Client, config: str, context: str) -> int:
    response = api.post("/api/v1/experiments", json={"config": config, "context": context})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def wait_terminal(api: httpx.Client, experiment_id: int, timeout: float = 120) -> dict[str, Any]:
    wait_for(
        lambda: api.get(f"/api/v1/experiments/{experiment_id}").json()["state"] in TERMINAL,
        timeout,
        f"experiment {experiment_id} to end",
        interval=0.2,
    )
    return dict(api.get(f"/api/v1/experiments/{experiment_id}").json())


def allocations(live_master, experiment_id: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Read straight from the database: the run history is what these tests are about."""
    import os

    import psycopg

    with psycopg.connect(os.environ["STALWART_DATABASE_URL"]) as conn:
        rows = conn.execute(
            """SELECT a.id, a.agent_id, a.started_at, a.ended_at, a.slots_needed, a.state
               FROM allocations a JOIN trials t ON t.id = a.trial_id
               WHERE t.experiment_id = %s ORDER BY a.started_at""",
            (experiment_id,),
        ).fetchall()
    keys = ("id", "agent_id", "started_at", "ended_at", "slots_needed", "state")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def max_overlap(runs: list[dict[str, Any]]) -> int:
    events = []
    for run in runs:
        if run["started_at"] is not None:
            events += [(run["started_at"], 1), (run["ended_at"], -1)]
    current = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak


def test_the_digits_example_completes_with_metrics_and_a_verified_checkpoint(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    start_agent(f"digits-{uuid.uuid4().hex[:6]}", 1)
    context = upload(admin_api, ROOT / "examples" / "digits")
    experiment_id = submit(admin_api, (ROOT / "examples" / "digits" / "const.yaml").read_text(), context)
    experiment = wait_terminal(admin_api, experiment_id, timeout=180)
    assert experiment["state"] == "COMPLETED"

    (trial,) = admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    assert trial["state"] == "COMPLETED" and trial["best_validation"] > 0.85
    metrics = admin_api.get(f"/api/v1/trials/{trial['id']}/metrics").json()["items"]
    assert {m["group"] for m in metrics} == {"training", "validation"}
    steps = [m["steps_completed"] for m in metrics if m["group"] == "training"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))

    checkpoint = admin_api.get(f"/api/v1/checkpoints/{trial['latest_checkpoint']}").json()
    # Every chunk re-read from storage and checked against the digests in the master's manifest.
    verify_checkpoint(open_storage(checkpoint["storage"]), checkpoint["manifest"])


def test_a_grid_of_four_on_two_slots_never_runs_more_than_two_at_once(
    live_master, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:  # type: ignore[no-untyped-def]
    start_agent(f"grid-{uuid.uuid4().hex[:6]}", 2)
    config = sleeper_config(
        "grid4",
        "{steps: 4, sleep: {type: categorical, vals: [0.3, 0.4]},"
        " tag: {type: int, minval: 1, maxval: 2, count: 2}}",
        searcher="name: grid",
    )
    experiment_id = submit(admin_api, config, upload(admin_api, SLEEPER))
    assert wait_terminal(admin_api, experiment_id)["state"] == "COMPLETED"
    runs = allocations(live_master, experiment_id)
    assert len(runs) == 4
    assert max_overlap(runs) == 2


def test_two_agents_share_the_work(
    live_master, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:  # type: ignore[no-untyped-def]
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    start_agent(f"{pool}-a", 1, pool=pool)
    start_agent(f"{pool}-b", 1, pool=pool)
    config = sleeper_config(
        "shared",
        "{steps: 3, sleep: 0.5, n: {type: int, minval: 1, maxval: 4, count: 4}}",
        searcher="name: grid",
        resources=f"{{resource_pool: {pool}}}",
    )
    experiment_id = submit(admin_api, config, upload(admin_api, SLEEPER))
    assert wait_terminal(admin_api, experiment_id)["state"] == "COMPLETED"
    assert {run["agent_id"] for run in allocations(live_master, experiment_id)} == {f"{pool}-a", f"{pool}-b"}


def test_a_two_slot_trial_waits_for_one_agent_with_two_free_slots(
    live_master, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:  # type: ignore[no-untyped-def]
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    start_agent(f"{pool}-one-a", 1, pool=pool)
    start_agent(f"{pool}-one-b", 1, pool=pool)
    config = sleeper_config(
        "gang", "{steps: 2, sleep: 0.1}", resources=f"{{resource_pool: {pool}, slots_per_trial: 2}}"
    )
    experiment_id = submit(admin_api, config, upload(admin_api, SLEEPER))
    # Two free slots exist, but on two agents: the trial must not be split across them.
    with pytest.raises(TimeoutError):
        wait_for(
            lambda: any(r["agent_id"] for r in allocations(live_master, experiment_id)), 3, "an assignment"
        )
    start_agent(f"{pool}-two", 2, pool=pool)
    assert wait_terminal(admin_api, experiment_id)["state"] == "COMPLETED"
    (run,) = allocations(live_master, experiment_id)
    assert run["agent_id"] == f"{pool}-two" and run["slots_needed"] == 2


def test_a_queued_priority_10_trial_starts_before_an_earlier_priority_50_one(
    live_master, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:  # type: ignore[no-untyped-def]
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    context = upload(admin_api, SLEEPER)
    resources = f"{{resource_pool: {pool}, priority: %d}}"
    blocker = submit(
        admin_api, sleeper_config("blocker", "{steps: 2, sleep: 0.1}", resources=resources % 42), context
    )
    low = submit(
        admin_api, sleeper_config("p50", "{steps: 1, sleep: 0.1}", resources=resources % 50), context
    )
    high = submit(
        admin_api, sleeper_config("p10", "{steps: 1, sleep: 0.1}", resources=resources % 10), context
    )
    start_agent(f"{pool}-solo", 1, pool=pool)
    for experiment_id in (blocker, low, high):
        assert wait_terminal(admin_api, experiment_id)["state"] == "COMPLETED"
    started = {e: allocations(live_master, e)[0]["started_at"] for e in (low, high)}
    assert started[high] < started[low]


def test_logs_arrive_in_order_and_follow_ends_with_the_trial(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    start_agent(f"logs-{uuid.uuid4().hex[:6]}", 1)
    experiment_id = submit(
        admin_api, sleeper_config("logs", "{steps: 6, sleep: 0.3}"), upload(admin_api, SLEEPER)
    )
    wait_for(
        lambda: bool(admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()), 30, "the trial"
    )
    trial_id = admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()[0]["id"]
    lines = []
    with admin_api.stream(
        "GET", f"/api/v1/trials/{trial_id}/logs", params={"follow": True}, timeout=120
    ) as stream:
        for raw in stream.iter_lines():
            lines.append(json.loads(raw))
    # The stream ended by itself: the trial has stopped running.
    assert admin_api.get(f"/api/v1/trials/{trial_id}").json()["state"] == "COMPLETED"
    ids = [line["id"] for line in lines]
    assert ids == sorted(ids)
    numbered = [line["message"] for line in lines if line["message"].startswith("line ")]
    assert numbered == [f"line {i}" for i in range(1, 7)]


def test_killing_an_experiment_ends_its_processes_and_frees_its_slots(
    live_master, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:  # type: ignore[no-untyped-def]
    agent_id = f"kill-{uuid.uuid4().hex[:6]}"
    agent = start_agent(agent_id, 1)
    experiment_id = submit(
        admin_api, sleeper_config("long", "{steps: 1, sleep: 600}"), upload(admin_api, SLEEPER)
    )

    def trial_processes() -> list[psutil.Process]:
        return [
            p
            for p in psutil.Process(agent.process.pid).children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE
        ]

    wait_for(
        lambda: any("train.py" in " ".join(p.cmdline()) for p in trial_processes()), 60, "the trial to run"
    )
    assert admin_api.post(f"/api/v1/experiments/{experiment_id}/kill").status_code == 200
    wait_for(lambda: not trial_processes(), 15, "the trial processes to be gone")
    assert wait_terminal(admin_api, experiment_id, timeout=30)["state"] == "CANCELED"
    slots = [s for s in admin_api.get("/api/v1/slots").json() if s["agent_id"] == agent_id]
    assert slots and all(s["allocation_id"] is None for s in slots)


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_failing_trial_is_retried_then_ends_in_error(
    admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> None:
    start_agent(f"fail-{uuid.uuid4().hex[:6]}", 1)
    data = _tar({"train.py": b"import sys\nprint('about to fail')\nsys.exit(3)\n"})
    context = admin_api.post("/api/v1/contexts", content=data, headers={"Content-Type": "application/gzip"})
    config = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\nmax_restarts: 1\n"
    experiment_id = submit(admin_api, config, context.json()["sha256"])
    assert wait_terminal(admin_api, experiment_id)["state"] == "ERROR"
    (trial,) = admin_api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    assert trial["state"] == "ERROR" and trial["restarts"] == 2 and trial["run_id"] == 2
