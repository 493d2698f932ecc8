"""The SDK's trial, checkpoint, agent and slot calls against a real master (no agent process).

Trials exist as soon as an experiment is created but only run on an agent, so these tests cover
what a master alone shows: waiting trials, empty metrics, logs and checkpoints, and agents
registered by hand through the agent protocol. Parsing of what only a running trial produces
(NaN metrics, log lines) is checked against httpx's MockTransport at the end.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from stalwart.client import Client, ForbiddenError, NotFoundError, UnauthorizedError

from support import SIMPLE_CONFIG

CONFIG = SIMPLE_CONFIG.replace("{description}", "made by test_client_trials")
MISSING = 2_000_000_000


def register_agent(master: str, agent_id: str, token: str, *, slots: int = 2) -> httpx.Response:
    """Register an agent the way the daemon does, in a pool of its own so no trial lands on it."""
    pool = f"pool-{agent_id}"
    body = {
        "agent_id": agent_id,
        "resource_pool": pool,
        "version": "test",
        "slots": [
            {"index": i, "type": "artificial", "uuid": f"{agent_id}-{i}", "name": "fake", "memory_mb": 0}
            for i in range(slots)
        ],
        "running": [],
    }
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{master}/api/v1/agents/register", json=body, headers=headers)


e2e = pytest.mark.e2e


@e2e
def test_a_new_experiment_lists_its_waiting_trial_with_nothing_reported(admin: Client) -> None:
    exp = admin.create_experiment(CONFIG.format(name="trials", label=f"t-{uuid.uuid4().hex[:8]}"))
    trials = admin.list_trials(exp.id)
    assert len(trials) == 1
    trial = trials[0]
    assert (trial.experiment_id, trial.state, trial.terminal) == (exp.id, "ACTIVE", False)
    assert dict(trial.hparams) == {"learning_rate": 0.05}
    assert (trial.steps_completed, trial.restarts, trial.best_validation, trial.latest_checkpoint) == (
        0,
        0,
        None,
        None,
    )
    got = admin.get_trial(trial.id)
    assert (got.id, got.request_id, got.seed, dict(got.hparams)) == (
        trial.id,
        trial.request_id,
        trial.seed,
        dict(trial.hparams),
    )
    assert isinstance(hash(got), int)  # hashable despite the hparams mapping

    assert admin.trial_metrics(trial.id) == []
    assert admin.trial_metrics(trial.id, group="validation") == []
    assert list(admin.iter_trial_logs(trial.id, tail=10)) == []
    assert admin.list_checkpoints(exp.id) == []

    # A trial waiting for slots has a live allocation, so following waits; killing ends it.
    followed: list[Any] = []
    with Client(admin.master, token=admin.token) as other:
        follower = threading.Thread(
            target=lambda: followed.extend(other.iter_trial_logs(trial.id, follow=True))
        )
        follower.start()
        time.sleep(0.5)  # not a wait for state: proves the stream stays open until the kill
        assert follower.is_alive()
        admin.kill_experiment(exp.id)
        follower.join(30)
        assert not follower.is_alive() and followed == []
    ended = admin.wait_for_experiment(exp.id, timeout=30, poll=0.1)
    assert ended.state == "CANCELED"
    assert admin.get_trial(trial.id).terminal


@e2e
def test_missing_trials_checkpoints_and_agents_are_not_found(admin: Client) -> None:
    with pytest.raises(NotFoundError):
        admin.get_trial(MISSING)
    with pytest.raises(NotFoundError):
        admin.list_trials(MISSING)
    with pytest.raises(NotFoundError):
        admin.trial_metrics(MISSING)
    with pytest.raises(NotFoundError):
        list(admin.iter_trial_logs(MISSING, follow=True))
    with pytest.raises(NotFoundError):
        admin.list_checkpoints(MISSING)
    with pytest.raises(NotFoundError):
        admin.get_checkpoint(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        admin.enable_agent("no-such-agent")
    with pytest.raises(NotFoundError):
        admin.disable_agent("no-such-agent", drain=True)


@e2e
def test_an_agent_token_registers_an_agent_that_can_be_drained_and_enabled(
    admin: Client, live_master: Any
) -> None:
    agent_id = f"test-agent-{uuid.uuid4().hex[:8]}"
    pool = f"pool-{agent_id}"
    token = admin.create_agent_token(agent_id)
    assert token and token != admin.token
    registered = register_agent(live_master.url, agent_id, token, slots=2)
    assert registered.status_code == 200, registered.text

    agent = next(a for a in admin.list_agents() if a.id == agent_id)
    assert (agent.resource_pool, agent.version, agent.enabled, agent.draining) == (pool, "test", True, False)
    assert agent.connected and agent.registered_at is not None
    slots = sorted((s for s in admin.list_slots() if s.agent_id == agent_id), key=lambda s: s.index)
    assert [(s.index, s.type, s.uuid) for s in slots] == [
        (0, "artificial", f"{agent_id}-0"),
        (1, "artificial", f"{agent_id}-1"),
    ]
    assert all(s.allocation_id is None and s.trial_id is None for s in slots)

    drained = admin.disable_agent(agent_id, drain=True)
    assert (drained.enabled, drained.draining) == (False, True)
    assert not next(a for a in admin.list_agents() if a.id == agent_id).enabled
    enabled = admin.enable_agent(agent_id)
    assert (enabled.enabled, enabled.draining) == (True, False)

    # The agent's token is for the agent routes only, and for its own agent id only.
    with Client(live_master.url, token=token) as as_agent, pytest.raises(ForbiddenError):
        as_agent.list_agents()
    assert register_agent(live_master.url, f"{agent_id}-other", token).status_code == 403


@e2e
def test_agent_tokens_are_listed_without_secrets_and_a_revoked_one_is_refused(
    admin: Client, live_master: Any
) -> None:
    agent_id = f"test-agent-{uuid.uuid4().hex[:8]}"
    issued = admin.issue_agent_token(agent_id)
    assert (issued.agent_id, issued.id > 0) == (agent_id, True)
    assert issued.token not in repr(issued)
    assert register_agent(live_master.url, agent_id, issued.token).status_code == 200

    (listed,) = [t for t in admin.list_agent_tokens() if t.id == issued.id]
    assert (listed.agent_id, listed.created_by, listed.revoked_at) == (agent_id, "admin", None)
    assert listed.created_at is not None and listed.expires_at is not None
    assert issued.token not in json.dumps(listed.raw)

    assert admin.revoke_agent_token(issued.id) is None
    (revoked,) = [t for t in admin.list_agent_tokens() if t.id == issued.id]
    assert revoked.revoked_at is not None
    assert register_agent(live_master.url, agent_id, issued.token).status_code == 401
    with pytest.raises(NotFoundError):
        admin.revoke_agent_token(MISSING)
    admin.disable_agent(agent_id, drain=True)


@e2e
def test_only_admins_create_agent_tokens_or_control_agents(admin: Client, live_master: Any) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    admin.create_user(name, "a long enough password")
    with Client(live_master.url) as user:
        user.login(name, "a long enough password")
        with pytest.raises(ForbiddenError):
            user.create_agent_token("some-agent")
        with pytest.raises(ForbiddenError):
            user.list_agent_tokens()
        with pytest.raises(ForbiddenError):
            user.revoke_agent_token(1)
        with pytest.raises(ForbiddenError):
            user.disable_agent("whatever-agent")
        assert isinstance(user.list_agents(), list)  # reading is for everyone
    with Client(live_master.url, token="not-a-token") as stranger, pytest.raises(UnauthorizedError):
        stranger.list_slots()


# --- parsing, against MockTransport -------------------------------------------------------------


def _mock(handler: Any) -> Client:
    return Client("http://master.test", token="t", transport=httpx.MockTransport(handler))


@pytest.mark.unit
def test_metrics_keep_nan_and_infinity() -> None:
    body = (
        '{"items": [{"group": "validation", "steps_completed": 10, "run_id": 1, '
        '"values": {"loss": NaN, "top": Infinity, "low": -Infinity, "acc": 0.5}, '
        '"reported_at": "2024-05-01T12:00:00+00:00"}]}'
    )
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    with _mock(handler) as client:
        (metric,) = client.trial_metrics(3, group="validation")
    assert seen[0].path == "/api/v1/trials/3/metrics" and seen[0].params["group"] == "validation"
    assert metric.group == "validation" and metric.steps_completed == 10 and metric.run_id == 1
    assert math.isnan(metric.values["loss"])
    assert metric.values["top"] == math.inf and metric.values["low"] == -math.inf
    assert metric.values["acc"] == 0.5 and metric.reported_at is not None


@pytest.mark.unit
def test_logs_are_parsed_line_by_line_and_follow_and_tail_are_sent() -> None:
    rows = [
        {"id": 7, "ts": "2024-05-01T12:00:00+00:00", "rank": 0, "stream": "stdout", "message": "epoch 1"},
        {"id": 8, "ts": "2024-05-01T12:00:01+00:00", "rank": 1, "stream": "stderr", "message": "warn {x}"},
    ]
    body = "".join(json.dumps(r) + "\n" for r in rows) + "\n"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/x-ndjson"})

    with _mock(handler) as client:
        lines = list(client.iter_trial_logs(5, follow=True, tail=2))
    assert [(x.id, x.rank, x.stream, x.message) for x in lines] == [
        (7, 0, "stdout", "epoch 1"),
        (8, 1, "stderr", "warn {x}"),
    ]
    assert dict(seen[0].url.params) == {"follow": "true", "tail": "2"}
    assert seen[0].headers["Authorization"] == "Bearer t"


@pytest.mark.unit
def test_a_refused_log_stream_raises_the_typed_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        problem = {"type": "urn:stalwart:problem:not-found", "title": "Not Found"}
        return httpx.Response(404, json={**problem, "detail": "trial 9 not found"})

    with _mock(handler) as client, pytest.raises(NotFoundError, match="trial 9 not found"):
        next(client.iter_trial_logs(9))


@pytest.mark.unit
def test_checkpoint_manifest_files_are_exposed() -> None:
    ckpt = {
        "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "trial_id": 4,
        "allocation_id": None,
        "steps_completed": 200,
        "state": "COMPLETED",
        "storage": {"type": "shared_fs"},
        "manifest": {"files": [{"path": "model.pt", "size": 12, "sha256": "ab" * 32}]},
        "metadata": {"epoch": 2},
        "size": 12,
        "parent_uuid": None,
        "created_at": "2024-05-01T12:00:00+00:00",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[ckpt] if request.url.path.endswith("/checkpoints") else ckpt)

    with _mock(handler) as client:
        (listed,) = client.list_checkpoints(1)
        got = client.get_checkpoint(ckpt["uuid"])  # type: ignore[arg-type]
    assert listed == got
    assert [(f.path, f.size, f.sha256) for f in got.files] == [("model.pt", 12, "ab" * 32)]
    assert got.metadata == {"epoch": 2} and got.raw["storage"] == {"type": "shared_fs"}
