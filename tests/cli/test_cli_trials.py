"""`stalwart trial|checkpoint|agent|slot`, `experiment logs|describe` and `create --follow` against a
real master process (no agent process: agents are registered by hand through the agent protocol).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from stalwart.cli.main import app
from stalwart.client import Client

from support import SIMPLE_CONFIG, as_json, one_error_line, wait_for

pytestmark = pytest.mark.e2e

CONFIG = SIMPLE_CONFIG.replace("{description}", "made by test_cli_trials")
STALWART = Path(sys.executable).with_name("stalwart")
MISSING = "2000000000"
Cli = Callable[..., Result]


@pytest.fixture
def cli(live_master: Any, tmp_path: Path) -> Cli:
    runner = CliRunner()
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(tmp_path / "config"),
        "STALWART_TOKEN": None,
        "COLUMNS": "250",
    }

    def run(*args: str, **extra_env: str | None) -> Result:
        return runner.invoke(app, list(args), env={**env, **extra_env})

    login = run("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    assert login.exit_code == 0, login.stderr
    return run


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path, str]:
    label = f"tr-{uuid.uuid4().hex[:10]}"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "train.py").write_text("print('hello')\n")
    config = tmp_path / "const.yaml"
    config.write_text(CONFIG.format(name=f"cli-{label}", label=label))
    return config, model_dir, label


def create(cli: Cli, model: tuple[Path, Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = as_json(cli("experiment", "create", str(model[0]), str(model[1]), "--json"))
    return data


def test_describe_and_trial_commands_show_the_waiting_trial(cli: Cli, model: tuple[Path, Path, str]) -> None:
    exp = str(create(cli, model)["id"])
    described = as_json(cli("e", "describe", exp, "--json"))
    assert described["state"] == "ACTIVE" and len(described["trials"]) == 1
    trial = described["trials"][0]
    assert trial["state"] == "ACTIVE" and trial["experiment_id"] == int(exp)
    assert trial["steps_completed"] == 0 and trial["best_validation"] is None
    tid = str(trial["id"])

    table = cli("e", "describe", exp)
    assert table.exit_code == 0, table.stderr
    assert "Best validation_loss" in table.stdout and "Latest checkpoint" in table.stdout
    assert any(line.split()[:2] == [tid, "ACTIVE"] for line in table.stdout.splitlines())

    listed = as_json(cli("trial", "list", exp, "--json"))
    assert [t["id"] for t in listed] == [trial["id"]]
    assert '{"learning_rate": 0.05}' in cli("t", "list", exp).stdout
    assert as_json(cli("t", "describe", tid, "--json"))["request_id"] == trial["request_id"]
    shown = cli("t", "describe", tid)
    assert shown.exit_code == 0, shown.stderr
    fields = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line.strip()}
    assert fields["Experiment"] == [exp] and fields["State"] == ["ACTIVE"] and fields["Restarts"] == ["0"]


def test_nothing_reported_yet_prints_empty_logs_metrics_and_checkpoints(
    cli: Cli, model: tuple[Path, Path, str], live_master: Any
) -> None:
    exp = str(create(cli, model)["id"])
    tid = str(as_json(cli("t", "list", exp, "--json"))[0]["id"])
    for args in (("t", "logs", tid), ("t", "logs", tid, "--tail", "5", "--json"), ("e", "logs", exp)):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), args
    assert as_json(cli("t", "metrics", tid, "--json")) == {"items": []}
    assert as_json(cli("t", "metrics", tid, "--group", "validation", "--json")) == {"items": []}
    assert as_json(cli("checkpoint", "list", exp, "--json")) == []
    assert "UUID" in cli("c", "list", exp).stdout

    # -f follows while the trial waits for slots and ends once the experiment is killed.
    proc = subprocess.Popen(
        [str(STALWART), "trial", "logs", tid, "-f"],
        env=_script_env(live_master),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # not a wait for state: proves -f does not return while the trial waits
        assert proc.poll() is None
        assert cli("e", "kill", exp).exit_code == 0
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "", "")


def test_missing_ids_are_one_line_errors(cli: Cli) -> None:
    one_error_line(cli("t", "describe", MISSING), "not found")
    one_error_line(cli("t", "logs", MISSING, "-f"), "not found")
    one_error_line(cli("t", "metrics", MISSING), "not found")
    one_error_line(cli("t", "list", MISSING), "not found")
    one_error_line(cli("e", "logs", MISSING), "not found")
    one_error_line(cli("c", "list", MISSING), "not found")
    missing = str(uuid.uuid4())
    one_error_line(cli("c", "describe", missing), missing)
    one_error_line(cli("c", "describe", "not-a-uuid"))
    one_error_line(cli("a", "enable", "no-such-agent"), "no-such-agent")
    one_error_line(cli("agent", "disable", "no-such-agent", "--drain"), "no-such-agent")


def test_agent_token_registers_an_agent_shown_with_its_slots_and_drain_round_trip(
    cli: Cli, live_master: Any
) -> None:
    agent_id = f"cli-agent-{uuid.uuid4().hex[:8]}"
    created = cli("agent", "token", "create", agent_id)
    assert created.exit_code == 0, created.stderr
    token = created.stdout.strip()
    assert token and " " not in token and token not in created.stderr
    token_id = int(created.stderr.strip().rstrip("`").rsplit(" ", 1)[1])  # its id, to revoke it by
    assert f"Agent token {token_id} for agent {agent_id}" in created.stderr
    again = as_json(cli("a", "token", "create", agent_id, "--json"))
    assert again["token"] != token and again["agent_id"] == agent_id and again["id"] != token_id

    body = {
        "agent_id": agent_id,
        "resource_pool": f"pool-{agent_id}",  # a pool of its own: no other test's trial lands here
        "version": "test",
        "slots": [{"index": i, "type": "artificial", "uuid": f"{agent_id}-{i}"} for i in range(2)],
        "running": [],
    }
    registered = httpx.post(
        f"{live_master.url}/api/v1/agents/register", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert registered.status_code == 200, registered.text
    other = httpx.post(
        f"{live_master.url}/api/v1/agents/register",
        json={**body, "agent_id": f"{agent_id}-other"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert other.status_code == 403, other.text  # the token is for agent_id alone

    agents = {a["id"]: a for a in as_json(cli("agent", "list", "--json"))}
    assert agents[agent_id]["enabled"] is True and agents[agent_id]["resource_pool"] == f"pool-{agent_id}"
    assert agent_id in cli("a", "list").stdout
    slots = [s for s in as_json(cli("slot", "list", "--json")) if s["agent_id"] == agent_id]
    assert sorted(s["index"] for s in slots) == [0, 1] and all(s["trial_id"] is None for s in slots)
    assert f"{agent_id}-1" in cli("slot", "list").stdout

    drained = as_json(cli("a", "disable", agent_id, "--drain", "--json"))
    assert (drained["enabled"], drained["draining"]) == (False, True)
    assert "disabled (draining)" in cli("a", "disable", agent_id, "--drain").stdout
    assert cli("a", "enable", agent_id).stdout.strip() == f"Agent {agent_id} is enabled"
    again = {a["id"]: a for a in as_json(cli("agent", "list", "--json"))}[agent_id]
    assert (again["enabled"], again["draining"]) == (True, False)
    assert cli("a", "disable", agent_id).stdout.strip() == f"Agent {agent_id} is disabled"


def test_a_plain_user_cannot_create_agent_tokens(cli: Cli, live_master: Any) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    assert cli("user", "create", name, "--password", "long-enough-password").exit_code == 0
    with Client(live_master.url) as user:
        token = user.login(name, "long-enough-password").token
    one_error_line(cli("agent", "token", "create", "some-agent", STALWART_TOKEN=token), "admin")
    one_error_line(cli("agent", "token", "list", STALWART_TOKEN=token), "admin")
    one_error_line(cli("agent", "token", "revoke", "1", STALWART_TOKEN=token), "admin")


def test_agent_token_list_shows_each_token_s_agent_and_revoke_refuses_it_from_then_on(
    cli: Cli, live_master: Any
) -> None:
    agent_id = f"cli-agent-{uuid.uuid4().hex[:8]}"
    created = as_json(cli("agent", "token", "create", agent_id, "--json"))
    listed = {t["id"]: t for t in as_json(cli("agent", "token", "list", "--json"))}
    assert listed[created["id"]]["agent_id"] == agent_id
    assert listed[created["id"]]["created_by"] == live_master.admin_username
    assert listed[created["id"]]["revoked_at"] is None
    assert all("token" not in t for t in listed.values())  # secrets are shown once, at creation
    table = cli("agent", "token", "list")
    assert table.exit_code == 0, table.stderr
    assert "Created by" in table.stdout and "Revoked" in table.stdout
    row = next(line.split() for line in table.stdout.splitlines() if agent_id in line)
    assert row[:3] == [str(created["id"]), agent_id, live_master.admin_username]
    assert created["token"] not in table.stdout

    revoked = cli("agent", "token", "revoke", str(created["id"]))
    assert (revoked.exit_code, revoked.stdout.strip()) == (0, f"Revoked agent token {created['id']}")
    again = {t["id"]: t for t in as_json(cli("a", "token", "list", "--json"))}[created["id"]]
    assert again["revoked_at"] is not None
    refused = httpx.get(
        f"{live_master.url}/api/v1/agents/{agent_id}/work",
        params={"timeout_seconds": 0},
        headers={"Authorization": f"Bearer {created['token']}"},
    )
    assert refused.status_code == 401, refused.text
    one_error_line(cli("agent", "token", "revoke", MISSING), "not found")
    usage = cli("agent", "token", "create")
    assert usage.exit_code == 2 and "Missing argument" in usage.stderr


def test_ctrl_c_while_following_logs_exits_quietly(cli: Cli, monkeypatch: Any) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt
        yield  # a generator, like the real one

    monkeypatch.setattr(Client, "iter_trial_logs", interrupted)
    result = cli("t", "logs", "1", "-f")
    assert (result.exit_code, result.stdout, result.stderr) == (130, "", "")


def _script_env(live_master: Any) -> dict[str, str]:
    """The environment for the console script run as a real process, logged in as admin."""
    with Client(live_master.url) as admin:
        token = admin.login(live_master.admin_username, live_master.admin_password).token
    return {**os.environ, "STALWART_MASTER": live_master.url, "STALWART_TOKEN": token}


def test_create_follow_reports_progress_and_fails_when_the_experiment_is_canceled(
    cli: Cli, model: tuple[Path, Path, str], live_master: Any
) -> None:
    env = _script_env(live_master)
    proc = subprocess.Popen(
        [str(STALWART), "e", "create", str(model[0]), str(model[1]), "--follow", "--poll", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(live_master.url, token=env["STALWART_TOKEN"]) as admin:
            found: list[int] = []

            def created() -> bool:
                found[:] = [e.id for e in admin.list_experiments(labels=[model[2]]).items]
                return bool(found)

            wait_for(created, 30, "the followed experiment to be created")
            wait_for(lambda: bool(admin.list_trials(found[0])), 30, "its trial")
            admin.cancel_experiment(found[0])
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, (out, err)
    assert f"Created experiment {found[0]}" in out and f"Experiment {found[0]} ended CANCELED" in out
    # Progress goes to stderr, one line per change; which intermediate states show depends on timing.
    assert f"Experiment {found[0]} CANCELED" in err.splitlines() and "Traceback" not in err
    assert any(line.startswith("Trial ") and " CANCELED, 0 steps" in line for line in err.splitlines()), err
