"""Determined's CLI habits against a real master: DET_MASTER / -u, `version`, `e create --config`,
`e list --all/--csv`, `e lt/lc/download-model-def`, `e set priority|weight|max-slots`, `t kill`,
`t logs` filters, `c download` into checkpoints/UUID and `c rm`.

No agent process: agents register by hand, runs are stood in for (support.start_trial_run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from stalwart.checkpoint import CheckpointWriter, open_storage, read_manifest
from stalwart.cli.main import app
from stalwart.client import Client
from stalwart_master.db.session import get_engine
from stalwart_master.services import trials as trials_service
from stalwart_master.settings import get_settings

from support import SIMPLE_CONFIG, as_json, one_error_line, start_trial_run, wait_for

pytestmark = pytest.mark.e2e

Cli = Callable[..., Result]
MISSING = "2000000000"
NO_AGENTS = "resources: {resource_pool: no-agents-here}\n"


@pytest.fixture
def cli(live_master: Any, sdk: Client, tmp_path: Path) -> Cli:
    runner = CliRunner()
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(tmp_path / "config"),
        "STALWART_TOKEN": sdk.token,
        "STALWART_USER": None,
        "STALWART_PASSWORD": None,
        "DET_MASTER": None,
        "DET_USER": None,
        "DET_PASS": None,
        "COLUMNS": "250",
    }

    def run(*args: str, input: str | None = None, **extra_env: str | None) -> Result:
        return runner.invoke(app, list(args), input=input, env={**env, **extra_env})

    return run


@pytest.fixture(scope="module")
def sessions(live_master: Any) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(get_settings().database.sqlalchemy_url), expire_on_commit=False)


def model_dir(root: Path, config: str) -> tuple[Path, Path]:
    directory = root / "model"
    directory.mkdir(parents=True)
    (directory / "train.py").write_text("print('hello')\n")
    path = root / "const.yaml"
    path.write_text(config)
    return path, directory


def simple_config(label: str, extra: str = NO_AGENTS) -> str:
    text = SIMPLE_CONFIG.format(name=f"habits-{label}", description="test_cli_determined_habits", label=label)
    return f"{text}{extra}"


def test_det_master_top_level_user_and_version(cli: Cli, live_master: Any, tmp_path: Path) -> None:
    det_env: dict[str, str | None] = {
        "STALWART_MASTER": None,
        "STALWART_TOKEN": None,
        "DET_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(tmp_path / "det-config"),
    }
    # No token cached: -u logs in with $DET_PASS and caches the token, as `det -u` does.
    listed = cli(
        "-u",
        live_master.admin_username,
        "e",
        "list",
        "--json",
        DET_PASS=live_master.admin_password,
        **det_env,
    )
    assert as_json(listed)["items"] is not None
    assert cli("user", "whoami", **det_env).stdout.strip() == f"admin (admin) on {live_master.url}"
    # $DET_USER names the same user: the cached token serves, no password needed.
    assert cli("e", "list", "--limit", "1", DET_USER="admin", **det_env).exit_code == 0

    refused = cli(
        "-m", live_master.url, "-u", "admin", "e", "list",
        STALWART_TOKEN=None, STALWART_CONFIG_DIR=str(tmp_path / "other"), DET_PASS="not-the-password",
    )  # fmt: skip
    one_error_line(refused)
    prompted = cli(
        "-u", "admin", "e", "list", "--json",
        STALWART_TOKEN=None, STALWART_CONFIG_DIR=str(tmp_path / "third"),
        input=f"{live_master.admin_password}\n",
    )  # fmt: skip
    assert prompted.exit_code == 0 and "Password for admin" in prompted.stderr

    shown = cli("version")
    info = Client(live_master.url).master_info()
    assert shown.exit_code == 0 and "Client" in shown.stdout and info.version in shown.stdout
    data = as_json(cli("version", "--json"))
    assert data["master"]["version"] == info.version and data["client"]["version"]
    dead = cli("-m", "http://127.0.0.1:9", "version")
    assert "Client" in dead.stdout
    one_error_line(dead, "cannot reach")


def test_create_with_config_overrides_then_list_all_and_csv(cli: Cli, tmp_path: Path) -> None:
    label = f"h-{uuid.uuid4().hex[:10]}"
    config, directory = model_dir(tmp_path, simple_config(label))
    created = as_json(
        cli(
            "e", "create", str(config), str(directory), "--json",
            "--config", "hyperparameters.learning_rate=1e-3",
            "--config", "hyperparameters.layers=[64, 32]",
            "--config", "description=set from the command line",
        )
    )  # fmt: skip
    assert created["description"] == "set from the command line"
    submitted = cli("e", "config", str(created["id"])).stdout
    assert "learning_rate: 0.001" in submitted and "- 64" in submitted

    one_error_line(cli("e", "create", str(config), str(directory), "--config", "no-equals"), "KEY=VALUE")
    one_error_line(
        cli("e", "create", str(config), str(directory), "--config", "name.first=x"), "not a mapping"
    )
    # A value the config rules refuse is refused by the master, with its field path.
    negative = cli("e", "create", str(config), str(directory), "--config", "resources.slots_per_trial=-1")
    one_error_line(negative, "slots_per_trial")
    assert as_json(cli("e", "list", "--label", label, "--all", "--json"))["total"] == 1

    exp = str(created["id"])
    assert cli("e", "kill", exp).exit_code == 0
    wait_for(lambda: as_json(cli("e", "describe", exp, "--json"))["state"] == "CANCELED", 30, "the kill")
    assert cli("e", "archive", exp).exit_code == 0
    assert as_json(cli("e", "list", "--label", label, "--json"))["total"] == 0  # archived: hidden
    assert as_json(cli("e", "list", "--label", label, "--archived", "--json"))["total"] == 1
    assert [e["id"] for e in as_json(cli("e", "ls", "--label", label, "-a", "--json"))["items"]] == [int(exp)]
    csv_lines = cli("e", "list", "--label", label, "--all", "--csv").stdout.splitlines()
    assert csv_lines[0] == "ID,Name,State,Owner,Labels,Archived,Created,Ended"
    assert (
        csv_lines[1].startswith(f"{exp},habits-{label},CANCELED,admin,{label},yes,") and len(csv_lines) == 2
    )


def _register_checkpoints(
    live_master: Any, sdk: Client, trial_id: int, storage: dict[str, Any], losses: dict[int, float]
) -> list[str]:
    """Checkpoints written by the engine at each step of ``losses``, each with its validation."""
    _, token = start_trial_run(os.environ["STALWART_DATABASE_URL"], trial_id)
    headers = {"Authorization": f"Bearer {token}"}
    run_id = sdk.get_trial(trial_id).run_id
    backend = open_storage(storage)
    uuids = []
    for step, loss in losses.items():
        writer = CheckpointWriter(backend, chunk_size=64 * 1024)
        ckpt = writer.save_state({"w": np.full(1000, step, dtype=np.float32)}, steps_completed=step)
        writer.close()
        body = {
            "uuid": ckpt,
            "trial_id": trial_id,
            "steps_completed": step,
            "storage": storage,
            "manifest": read_manifest(backend, ckpt),
        }
        answer = httpx.post(f"{live_master.url}/api/v1/checkpoints", json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        metrics = {
            "run_id": run_id,
            "batch_id": str(uuid.uuid4()),
            "metrics": [
                {"group": "validation", "steps_completed": step, "values": {"validation_loss": loss}}
            ],
        }
        answer = httpx.post(
            f"{live_master.url}/api/v1/trials/{trial_id}/metrics", json=metrics, headers=headers
        )
        assert answer.status_code == 204, answer.text
        uuids.append(ckpt)
    backend.close()
    return uuids


def test_list_trials_checkpoints_download_model_def_and_checkpoints(
    cli: Cli, live_master: Any, sdk: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = {"type": "shared_fs", "host_path": str(tmp_path / "ckpt"), "save_trial_latest": 5}
    label = f"h-{uuid.uuid4().hex[:10]}"
    config, directory = model_dir(
        tmp_path, simple_config(label, NO_AGENTS + f"checkpoint_storage: {json.dumps(storage)}\n")
    )
    exp = str(as_json(cli("e", "create", str(config), str(directory), "--paused", "--json"))["id"])
    (trial,) = as_json(cli("e", "lt", exp, "--json"))
    assert cli("e", "list-trials", exp, "--csv").stdout.splitlines()[0].startswith("Trial,State,Restarts")
    first, second, third = _register_checkpoints(
        live_master, sdk, trial["id"], storage, {10: 0.3, 20: 0.1, 30: 0.2}
    )

    assert [c["uuid"] for c in as_json(cli("e", "lc", exp, "--best", "2", "--json"))] == [second, third]
    rows = cli("e", "list-checkpoints", exp, "--csv").stdout.splitlines()
    assert rows[0] == "Trial,Steps,State,Validation validation_loss,UUID,Size,Created" and len(rows) == 4
    assert rows[1].startswith(f"{trial['id']},10,COMPLETED,0.3,{first},")
    assert second in cli("e", "lc", exp, "--best", "1").stdout
    assert cli("e", "lc", exp, "--best", "0").exit_code == 2

    out = tmp_path / "out"
    out.mkdir()
    saved = cli("e", "download-model-def", exp, "-o", str(out))
    assert saved.exit_code == 0, saved.stderr
    with tarfile.open(out / f"experiment_{exp}_model_def.tgz") as archive:
        assert "train.py" in [Path(name).name for name in archive.getnames()]
    one_error_line(cli("e", "download-model-def", exp, "-o", str(tmp_path / "nowhere")), "does not exist")
    one_error_line(cli("e", "download-model-def", MISSING), "not found")

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    fetched = cli("c", "download", first)
    assert fetched.exit_code == 0, fetched.stderr
    assert (work / "checkpoints" / first / "state").exists()
    quiet = cli("checkpoint", "download", second, "--output-dir", str(tmp_path / "mine"), "-q")
    assert quiet.stdout.strip() == str(tmp_path / "mine") and (tmp_path / "mine" / "state").exists()

    # Determined's `t download --latest|--best|--uuid` and `e download --top-n`.
    latest = cli("t", "download", str(trial["id"]), "--latest", "-q")
    assert latest.stdout.strip() == str(Path("checkpoints") / third), latest.stderr
    assert (work / "checkpoints" / third / "state").exists()
    best = cli("t", "download", str(trial["id"]), "--best", "-o", str(tmp_path / "best"))
    assert best.exit_code == 0 and second in best.stdout, best.stderr
    by_uuid = cli("t", "download", str(trial["id"]), "--uuid", first, "-o", str(tmp_path / "first"))
    assert by_uuid.exit_code == 0 and first in by_uuid.stdout, by_uuid.stderr
    one_error_line(cli("t", "download", str(trial["id"])), "exactly one of")
    one_error_line(cli("t", "download", str(trial["id"]), "--uuid", str(uuid.uuid4())), "no completed")
    top = cli("e", "download", exp, "--top-n", "2", "-o", str(tmp_path / "top"), "-q")
    assert top.stdout.split() == [str(tmp_path / "top" / second), str(tmp_path / "top" / third)], top.stderr
    assert (tmp_path / "top" / second / "state").exists()

    removed = cli("c", "rm", f"{first},{second}", "--yes")
    assert removed.stdout.splitlines() == [
        f"Checkpoint {first} will be deleted",
        f"Checkpoint {second} will be deleted",
    ]
    one_error_line(cli("c", "rm", str(uuid.uuid4()), "-y"), "not found")
    assert cli("c", "delete", third, input="n\n").exit_code == 1  # still asks first
    assert cli("e", "kill", exp).exit_code == 0


def test_trial_kill_ends_one_trial_and_logs_filter_on_the_master(
    cli: Cli, sdk: Client, sessions: sessionmaker[Session]
) -> None:
    config = (
        "name: habits-grid\nentrypoint: python3 train.py\n" + NO_AGENTS
        + "hyperparameters:\n  lr: {type: categorical, vals: [0.1, 0.2]}\n"
        + "searcher: {name: grid, metric: loss, max_length: {batches: 10}}\n"
    )  # fmt: skip
    exp = sdk.create_experiment(config)
    wait_for(lambda: len(sdk.list_trials(exp.id)) == 2, 30, "both grid trials")
    killed, kept = (t.id for t in sdk.list_trials(exp.id))

    shown = cli("t", "kill", str(killed))
    assert (shown.exit_code, shown.stdout.strip()) == (0, f"Trial {killed} is CANCELED"), shown.stderr
    trial = as_json(cli("t", "describe", str(killed), "--json"))
    assert (trial["state"], trial["end_reason"]) == ("CANCELED", "killed by admin")
    described = as_json(cli("e", "describe", str(exp.id), "--json"))
    assert described["state"] == "ACTIVE"
    assert {t["id"]: t["state"] for t in described["trials"]} == {killed: "CANCELED", kept: "ACTIVE"}
    assert cli("t", "kill", str(killed)).stdout.strip() == f"Trial {killed} is CANCELED"  # harmless again
    one_error_line(cli("trial", "kill", MISSING), "not found")

    lines = [
        (0, "stdout", "INFO: one"),
        (1, "stdout", "WARNING: two"),
        (0, "stderr", "plain three"),
        (1, "stdout", "DEBUG: four"),
        (0, "stdout", "ERROR: five"),
    ]
    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        trials_service.append_logs(
            session,
            kept,
            uuid.uuid4(),
            [
                trials_service.LogLine(now + dt.timedelta(seconds=i), rank, stream, text)
                for i, (rank, stream, text) in enumerate(lines)
            ],
        )

    def logs(*flags: str) -> list[str]:
        result = cli("t", "logs", str(kept), "--json", *flags)
        assert result.exit_code == 0, result.stderr
        return [json.loads(line)["message"] for line in result.stdout.splitlines()]

    assert logs("--head", "2") == ["INFO: one", "WARNING: two"]
    assert logs("--level", "WARNING") == ["WARNING: two", "ERROR: five"]
    assert logs("--level", "info") == ["INFO: one", "WARNING: two", "plain three", "ERROR: five"]
    assert logs("--level", "TRACE") == [text for _, _, text in lines]
    assert logs("--rank-id", "1") == ["WARNING: two", "DEBUG: four"]
    assert logs("--rank-id", "0", "--rank-id", "1", "--stdtype", "stderr") == ["plain three"]
    assert logs("--tail", "1", "--level", "WARNING") == ["WARNING: two", "ERROR: five"][-1:]
    assert logs("--tail", "2", "--rank-id", "0") == ["plain three", "ERROR: five"]
    assert logs("--head", "1", "--level", "ERROR") == ["ERROR: five"]
    # Lines are one second apart; a time without a zone is UTC, as the master shows times.
    naive_middle = (now + dt.timedelta(seconds=2)).replace(tzinfo=None).isoformat()
    assert logs("--timestamp-after", naive_middle) == ["DEBUG: four", "ERROR: five"]
    before = (now + dt.timedelta(seconds=1.5)).isoformat()
    assert logs("--timestamp-before", before) == ["INFO: one", "WARNING: two"]
    one_error_line(cli("t", "logs", str(kept), "--timestamp-after", "yesterday"), "not an ISO time")
    one_error_line(cli("t", "logs", str(kept), "--head", "1", "--tail", "1"), "--head or --tail")
    assert cli("t", "logs", str(kept), "--level", "LOUD").exit_code == 2
    sdk.kill_experiment(exp.id)


def test_set_priority_reorders_the_queue_weight_and_max_slots_are_stored(
    cli: Cli, live_master: Any, sdk: Client
) -> None:
    pool = f"habits-{uuid.uuid4().hex[:8]}"
    config = "name: habits-NAME\nentrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"
    config += f"resources: {{resource_pool: {pool}}}\n"
    older = sdk.create_experiment(config.replace("NAME", "older"))
    newer = sdk.create_experiment(config.replace("NAME", "newer"))

    def runs(exp_id: int) -> list[dict[str, Any]]:
        (trial,) = sdk.list_trials(exp_id)
        return [dict(r.raw) for r in sdk.list_trial_runs(trial.id)]

    wait_for(lambda: all(runs(e.id) for e in (older, newer)), 30, "both runs to be queued")
    shown = cli("e", "set", "priority", str(newer.id), "1")
    assert (shown.exit_code, shown.stdout.strip()) == (0, f"Experiment {newer.id} priority is now 1"), (
        shown.stderr
    )

    # One slot appears: without the new priority the older experiment's run would get it.
    agent_id = f"habits-agent-{uuid.uuid4().hex[:8]}"
    token = sdk.issue_agent_token(agent_id).token
    body = {
        "agent_id": agent_id,
        "resource_pool": pool,
        "version": "test",
        "slots": [{"index": 0, "type": "artificial", "uuid": f"{agent_id}-0"}],
        "running": [],
    }
    registered = httpx.post(
        f"{live_master.url}/api/v1/agents/register", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert registered.status_code == 200, registered.text
    wait_for(lambda: runs(newer.id)[-1]["agent_id"] == agent_id, 30, "the prioritised run to be placed")
    assert runs(older.id)[-1]["state"] == "PENDING"

    weight = as_json(cli("e", "set", "weight", str(older.id), "2.5", "--json"))
    assert weight["config"]["resources"]["weight"] == 2.5
    assert cli("e", "set", "max-slots", str(older.id), "3").stdout.strip() == (
        f"Experiment {older.id} max_slots is now 3"
    )
    resources = sdk.get_experiment(older.id).config["resources"]
    assert (resources["weight"], resources["max_slots"], resources["resource_pool"]) == (2.5, 3, pool)
    one_error_line(cli("e", "set", "weight", str(older.id), "0"), "above 0")
    assert cli("e", "set", "priority", str(older.id), "100").exit_code == 2
    one_error_line(cli("e", "set", "max-slots", MISSING, "1"), "not found")
    for exp in (older, newer):
        sdk.kill_experiment(exp.id)


def test_determined_sdk_script_runs_with_stalwart_experimental_client(
    live_master: Any, sdk: Client, tmp_path: Path
) -> None:
    """A script on ``determined.experimental.client`` with only its import changed."""
    from stalwart.experimental import client

    client.login(live_master.url, live_master.admin_username, live_master.admin_password)
    storage = {"type": "shared_fs", "host_path": str(tmp_path / "ckpt"), "save_trial_latest": 5}
    label = f"sdk-{uuid.uuid4().hex[:10]}"
    config, directory = model_dir(
        tmp_path, simple_config(label, NO_AGENTS + f"checkpoint_storage: {json.dumps(storage)}\n")
    )
    exp = client.create_experiment(config=str(config), model_dir=str(directory))
    assert exp.state == client.ExperimentState.ACTIVE and exp.name == f"habits-{label}"
    (trial,) = exp.get_trials()
    first, second = _register_checkpoints(live_master, sdk, trial.id, storage, {10: 0.3, 20: 0.1})

    top = exp.top_checkpoint()
    assert top.uuid == second and trial.top_checkpoint().uuid == second
    assert exp.top_checkpoint(smaller_is_better=False).uuid == first
    with pytest.raises(ValueError, match="searcher metric"):
        exp.top_checkpoint(sort_by="accuracy")
    written = Path(top.download(tmp_path / "best"))
    assert (written / "state").exists()
    assert [c.uuid for c in trial.list_checkpoints()] == [first, second]
    assert client.get_checkpoint(first).steps_completed == 10
    assert client.get_trial(trial.id).hparams == trial.hparams

    model = client.create_model(f"model-{label}", description="from the SDK")
    version = model.register_version(second)
    assert version.checkpoint_uuid == second and len(client.get_model(model.name).get_versions()) == 1

    exp.kill()  # its stand-in run has no agent to report it gone: it stays STOPPING_KILLED

    # wait() on an experiment whose trial never got a run: the kill ends it at once.
    other = client.create_experiment(config=str(config), model_dir=str(directory))
    other.kill()
    assert other.wait(interval=0.2) == client.ExperimentState.CANCELED
    assert client.get_experiment(other.id).state == "CANCELED"
    with pytest.raises(ValueError, match="template"):
        client.create_experiment(str(config), str(directory), template="shared")
