"""`stalwart experiment set gc-policy` and `stalwart checkpoint delete`, with their SDK calls, against a
real master and Celery worker; checkpoints are written with the engine and registered as a trial does.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from stalwart.checkpoint import CheckpointWriter, open_storage, read_manifest
from stalwart.cli.main import app
from stalwart.client import Client, ConflictError

from support import start_trial_run, wait_for

pytestmark = pytest.mark.e2e

Cli = Callable[..., Result]
CONFIG = """\
name: cli-gc-{label}
entrypoint: python3 train.py
searcher: {{name: single, metric: loss}}
resources: {{resource_pool: no-agents-here}}
checkpoint_storage: {storage}
"""


@pytest.fixture
def cli(live_master: Any, sdk: Client, tmp_path: Path) -> Cli:
    runner = CliRunner()
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(tmp_path / "config"),
        "STALWART_TOKEN": sdk.token,
        "COLUMNS": "250",
    }

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=input)

    return run


def one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def checkpointed_experiment(
    live_master: Any, sdk: Client, root: Path, steps: list[int]
) -> tuple[int, list[str]]:
    """A paused experiment whose one trial registered a checkpoint at each of ``steps``."""
    storage = {"type": "shared_fs", "host_path": str(root), "save_trial_latest": len(steps)}
    exp = sdk.create_experiment(
        CONFIG.format(label=uuid.uuid4().hex[:8], storage=json.dumps(storage)), paused=True
    )
    (trial,) = sdk.list_trials(exp.id)
    _, token = start_trial_run(os.environ["STALWART_DATABASE_URL"], trial.id)
    backend = open_storage(storage)
    uuids = []
    for step in steps:
        writer = CheckpointWriter(backend, chunk_size=64 * 1024)
        ckpt = writer.save_state({"w": np.full(10_000, step, dtype=np.float32)}, steps_completed=step)
        writer.close()
        manifest = read_manifest(backend, ckpt)
        body = {
            "uuid": ckpt,
            "trial_id": trial.id,
            "steps_completed": step,
            "storage": storage,
            "manifest": manifest,
        }
        response = httpx.post(
            f"{live_master.url}/api/v1/checkpoints", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
        uuids.append(ckpt)
    backend.close()
    return exp.id, uuids


def test_gc_policy_is_set_from_the_cli_and_the_sdk(
    cli: Cli, live_master: Any, sdk: Client, tmp_path: Path
) -> None:
    exp_id, _ = checkpointed_experiment(live_master, sdk, tmp_path / "ckpt", [100])
    shown = cli(
        "experiment",
        "set",
        "gc-policy",
        str(exp_id),
        "--save-experiment-best",
        "2",
        "--save-trial-latest",
        "3",
    )
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.strip() == (
        f"Experiment {exp_id} GC policy: save_experiment_best=2, save_trial_best=1, save_trial_latest=3"
    )
    data = json.loads(cli("e", "set", "gc-policy", str(exp_id), "--save-trial-best", "0", "--json").stdout)
    storage = data["config"]["checkpoint_storage"]
    assert (storage["save_experiment_best"], storage["save_trial_best"], storage["save_trial_latest"]) == (
        2,
        0,
        3,
    )

    updated = sdk.set_gc_policy(exp_id, save_trial_latest=1)
    assert updated.config["checkpoint_storage"]["save_trial_latest"] == 1
    assert sdk.get_experiment(exp_id).config["checkpoint_storage"]["save_experiment_best"] == 2

    negative = cli("e", "set", "gc-policy", str(exp_id), "--save-trial-best", "-1")
    assert negative.exit_code == 2 and "save-trial-best" in negative.stderr
    one_error_line(cli("e", "set", "gc-policy", str(exp_id)), "at least one of")
    one_error_line(cli("e", "set", "gc-policy", "2000000000", "--save-trial-best", "1"), "not found")


def test_checkpoint_delete_asks_first_then_gc_deletes_it(
    cli: Cli, live_master: Any, sdk: Client, tmp_path: Path
) -> None:
    root = tmp_path / "ckpt"
    exp_id, (older, newer) = checkpointed_experiment(live_master, sdk, root, [100, 200])

    declined = cli("checkpoint", "delete", older, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.stderr + declined.stdout
    assert sdk.get_checkpoint(older).state == "COMPLETED"

    accepted = cli("c", "delete", older, "--yes")
    assert (accepted.exit_code, accepted.stdout.strip()) == (0, f"Checkpoint {older} will be deleted")
    wait_for(lambda: sdk.get_checkpoint(older).state == "DELETED", 60, "GC to delete the checkpoint")
    assert not (root / "manifests" / f"{older}.json").exists()
    assert (root / "manifests" / f"{newer}.json").exists()
    gone = sdk.get_checkpoint(older)
    assert gone.deleted_at is not None and gone.experiment_id == exp_id
    assert cli("c", "delete", older, "-y").stdout.strip() == f"Checkpoint {older} is already deleted"
    assert sdk.delete_checkpoint(older).state == "DELETED"
    described = cli("c", "describe", older)
    assert described.exit_code == 0 and "DELETED" in described.stdout
    listed = {c["uuid"]: c["state"] for c in json.loads(cli("c", "list", str(exp_id), "--json").stdout)}
    assert listed == {older: "DELETED", newer: "COMPLETED"}

    # A model version keeps its checkpoint: refused with one line naming it, by the CLI and the SDK.
    model = f"cli-gc-{uuid.uuid4().hex[:8]}"
    sdk.create_model(model)
    sdk.register_model_version(model, newer)
    one_error_line(cli("c", "delete", newer, "-y"), newer, f"{model}:1")
    with pytest.raises(ConflictError):
        sdk.delete_checkpoint(newer)
    assert sdk.get_checkpoint(newer).model_versions == (f"{model}:1",)
    one_error_line(cli("c", "delete", str(uuid.uuid4()), "-y"), "not found")
