"""`stalwart model ...` and `stalwart checkpoint lineage` against a real master process; checkpoints
are reported through the allocation routes as a trial would, without storage behind them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_support import RunningTrial, report_checkpoint, start_trial
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from stalwart.cli.main import app
from stalwart.client import Client
from stalwart_master.db.orm import Checkpoint
from stalwart_master.db.session import get_engine
from stalwart_master.settings import get_settings

from support import as_json, one_error_line

pytestmark = pytest.mark.e2e

Cli = Callable[..., Result]


def config(searcher: str = "", lr: float = 0.1) -> str:
    extra = f", {searcher}" if searcher else ""
    return (
        f"name: cli-model-{uuid.uuid4().hex[:8]}\nentrypoint: python3 train.py\n"
        f"hyperparameters: {{lr: {lr}}}\nsearcher: {{name: single, metric: loss{extra}}}\n"
        # Registered checkpoints here have no metrics: keep them all, whatever GC runs meanwhile.
        "checkpoint_storage: {save_trial_latest: 100}\n"
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture
def cli(live_master: Any, tmp_path: Path) -> Cli:
    runner = CliRunner()
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(tmp_path / "config"),
        "STALWART_TOKEN": None,
        "COLUMNS": "250",
    }

    def run(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    login = run("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    assert login.exit_code == 0, login.stderr
    return run


@pytest.fixture
def http(live_master: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_master.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def sessions(live_master: Any) -> sessionmaker[Session]:
    """The live master's database, to give a trial a running allocation as the scheduler would."""
    return sessionmaker(bind=get_engine(get_settings().database.sqlalchemy_url), expire_on_commit=False)


def running(sdk: Client, sessions: sessionmaker[Session], text: str) -> tuple[int, RunningTrial]:
    exp = sdk.create_experiment(text)
    return exp.id, start_trial(sessions, exp.id)


def test_model_create_list_describe_register_and_list_versions(
    cli: Cli, sdk: Client, sessions: sessionmaker[Session], http: httpx.Client
) -> None:
    exp_id, run = running(sdk, sessions, config())
    first, second = (report_checkpoint(http, run, steps=s) for s in (10, 20))
    name, label = f"cli-model-{uuid.uuid4().hex[:8]}", f"l-{uuid.uuid4().hex[:8]}"

    created = as_json(
        cli(
            "model",
            "create",
            name,
            "-d",
            "my classifier",
            "--label",
            label,
            "--metadata",
            '{"a": 1}',
            "--json",
        )
    )
    assert (created["name"], created["description"], created["labels"], created["metadata"]) == (
        name,
        "my classifier",
        [label],
        {"a": 1},
    )
    assert ok(cli("m", "create", f"{name}-2", "--label", label)).strip() == f"Created model '{name}-2'."

    listed = as_json(cli("model", "list", "--label", label, "--json"))
    assert [m["name"] for m in listed["items"]] == [name, f"{name}-2"] and listed["total"] == 2
    table = ok(cli("m", "ls", "--label", label))
    assert "Versions" in table and name in table and f"{name}-2" in table

    version = as_json(cli("model", "register-version", name, first, "--comment", "best so far", "--json"))
    assert (version["model"], version["version"], version["checkpoint_uuid"]) == (name, 1, first)
    assert (version["experiment_id"], version["trial_id"], version["comment"]) == (
        exp_id,
        run.trial_id,
        "best so far",
    )
    said = ok(cli("m", "register-version", name, second, "--label", "prod", "--metadata", '{"acc": 0.9}'))
    assert said.strip() == f"Registered checkpoint {second} as {name}:2."

    versions = as_json(cli("model", "list-versions", name, "--json"))
    assert [(v["version"], v["checkpoint_uuid"]) for v in versions["items"]] == [(1, first), (2, second)]
    assert versions["items"][1]["labels"] == ["prod"] and versions["items"][1]["metadata"] == {"acc": 0.9}
    rows = [line.split() for line in ok(cli("m", "list-versions", name)).splitlines()]
    assert ["1", first, str(exp_id), str(run.trial_id)] == rows[1][:4]
    assert ["2", second, str(exp_id), str(run.trial_id)] == rows[2][:4]

    described = as_json(cli("model", "describe", name, "--json"))
    assert (described["num_versions"], described["latest_version"]) == (2, 2)
    assert [v["version"] for v in described["versions"]] == [1, 2]
    shown = ok(cli("m", "describe", name))
    fields = {line.split()[0]: line.split()[1:] for line in shown.splitlines() if line.strip()}
    assert fields["Name"] == [name] and fields["Versions"] == ["2"] and fields["Owner"] == ["admin"]
    assert first in shown and second in shown

    assert sorted(sdk.get_checkpoint(first).raw["model_versions"]) == [f"{name}:1"]


def test_model_errors_are_one_line(
    cli: Cli, sdk: Client, sessions: sessionmaker[Session], http: httpx.Client
) -> None:
    name = f"cli-err-{uuid.uuid4().hex[:8]}"
    ok(cli("model", "create", name))
    one_error_line(cli("model", "create", name), name, "already exists")
    one_error_line(cli("model", "create", "a/b"), "name", "'/'")
    one_error_line(cli("model", "create", f"{name}-x", "--metadata", "[1]"), "--metadata", "JSON object")
    one_error_line(cli("model", "create", f"{name}-x", "--metadata", "{nope"), "--metadata", "not valid JSON")
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    one_error_line(cli("model", "describe", missing), missing, "not found")
    one_error_line(cli("model", "list-versions", missing), missing, "not found")
    unknown = str(uuid.uuid4())
    one_error_line(cli("model", "register-version", name, unknown), unknown, "not found")

    _, run = running(sdk, sessions, config())
    ckpt = report_checkpoint(http, run, steps=1)
    with sessions.begin() as session:
        session.execute(
            update(Checkpoint).where(Checkpoint.uuid == uuid.UUID(ckpt)).values(state="CORRUPTED")
        )
    one_error_line(cli("model", "register-version", name, ckpt), ckpt, "CORRUPTED", "COMPLETED")
    one_error_line(cli("checkpoint", "lineage", unknown), unknown, "not found")


def test_checkpoint_lineage_prints_the_chain_then_experiments_and_trials(
    cli: Cli, sdk: Client, sessions: sessionmaker[Session], http: httpx.Client
) -> None:
    exp_a, run_a = running(sdk, sessions, config(lr=0.1))
    a1 = report_checkpoint(http, run_a, steps=10)
    exp_b, run_b = running(sdk, sessions, config(f"source_checkpoint_uuid: {a1}", lr=0.2))
    assert sdk.get_trial(run_b.trial_id).warm_start_checkpoint == a1
    b1 = report_checkpoint(http, run_b, steps=5, parent=a1)
    exp_c, run_c = running(sdk, sessions, config(f"source_trial_id: {run_b.trial_id}", lr=0.3))
    c1 = report_checkpoint(http, run_c, steps=7, parent=b1)

    data = as_json(cli("checkpoint", "lineage", c1, "--json"))
    assert data["checkpoint"]["uuid"] == c1 and [c["uuid"] for c in data["chain"]] == [b1, a1]
    assert [e["id"] for e in data["experiments"]] == [exp_c, exp_b, exp_a]

    lineage = sdk.checkpoint_lineage(c1)
    assert [c.uuid for c in lineage.chain] == [b1, a1] and lineage.missing_parent is None
    assert [t.hparams["lr"] for t in lineage.trials] == [0.3, 0.2, 0.1]
    assert [t.warm_start_checkpoint for t in lineage.trials] == [b1, a1, None]

    lines = ok(cli("c", "lineage", c1)).splitlines()
    chain_rows = [line.split() for line in lines[1:4]]
    assert chain_rows[0][:5] == [c1, str(exp_c), str(run_c.trial_id), "7", "COMPLETED"]
    assert chain_rows[1][:6] == ["└", b1, str(exp_b), str(run_b.trial_id), "5", "COMPLETED"]
    assert chain_rows[2][:6] == ["└", a1, str(exp_a), str(run_a.trial_id), "10", "COMPLETED"]
    text = "\n".join(lines)
    assert "Context SHA-256" in text and '{"lr": 0.3}' in text
    for exp_id in (exp_a, exp_b, exp_c):
        assert sdk.get_experiment(exp_id).name in text
