"""`stalwart checkpoint verify|download` against a real master: a checkpoint saved through the Core
API (registered with the allocation's token, as a trial does), then checked and fetched by the CLI."""

from __future__ import annotations

import json
import logging
import uuid as uuid_lib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from stalwart.cli.main import app
from stalwart.client import Client
from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._http import AllocationSession

from support import one_error_line, start_trial_run

pytestmark = pytest.mark.e2e

CONFIG = """\
name: ckpt-cli-{label}
entrypoint: python3 train.py
hyperparameters: {{lr: 0.1}}
searcher: {{name: single, metric: loss, smaller_is_better: true}}
resources: {{resource_pool: no-agents-here, slots_per_trial: 0}}
checkpoint_storage: {storage}
"""


def test_verify_and_download_a_registered_checkpoint(
    admin: Client, live_master: Any, database_url: str, tmp_path: Path
) -> None:
    storage = {"type": "shared_fs", "host_path": str(tmp_path / "storage")}
    config = CONFIG.format(label=uuid_lib.uuid4().hex[:8], storage=json.dumps(storage))
    created = admin._json("POST", "/api/v1/experiments", json={"config": config, "paused": True})
    (trial,) = admin._json("GET", f"/api/v1/experiments/{created['id']}/trials")
    allocation_id, token = start_trial_run(database_url, trial["id"])

    checkpoints = CheckpointContext(
        storage=storage,
        session=AllocationSession(live_master.url, token),
        trial_id=trial["id"],
        allocation_id=allocation_id,
        parent_uuid=None,
        is_chief=True,
        log=logging.getLogger("test"),
    )
    weights = torch.randn(300_000)
    uuid = checkpoints.save_state({"model": {"w": weights, "b": torch.ones(3)}, "step": 5}, steps_completed=5)
    checkpoints.close()
    manifest = admin._json("GET", f"/api/v1/checkpoints/{uuid}")["manifest"]
    assert manifest["uuid"] == uuid and manifest["format"] == "stalwart-checkpoint/1"

    runner = CliRunner()
    env = {"STALWART_MASTER": live_master.url, "STALWART_CONFIG_DIR": str(tmp_path / "config")}

    def cli(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    login = cli("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    assert login.exit_code == 0, login.stderr

    ok = cli("checkpoint", "verify", uuid)
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith(f"OK {uuid}: 3 files, ") and "chunks" in ok.stdout

    safetensors = cli("checkpoint", "download", uuid, "-o", str(tmp_path / "st"), "--format", "safetensors")
    assert safetensors.exit_code == 0, safetensors.stderr
    tensors = load_file(tmp_path / "st" / "model.safetensors")
    assert set(tensors) == {"model.w", "model.b"} and torch.equal(tensors["model.w"], weights)

    files = cli("checkpoint", "download", uuid, "-o", str(tmp_path / "files"))
    assert files.exit_code == 0, files.stderr
    assert (tmp_path / "files" / "state" / "model" / "w").read_bytes() == weights.numpy().tobytes()

    entry = next(e for e in manifest["files"] if e["path"] == "state/model/w")
    digest = entry["chunks"][0]["digest"]
    chunk = tmp_path / "storage" / "chunks" / digest[:2] / digest
    data = bytearray(chunk.read_bytes())
    data[1000] ^= 0xFF
    chunk.write_bytes(bytes(data))
    bad = cli("checkpoint", "verify", uuid)
    one_error_line(bad, "'state/model/w' chunk 0", digest)
    one_error_line(cli("checkpoint", "download", uuid, "-o", str(tmp_path / "again")), "state/model/w")
    one_error_line(cli("checkpoint", "verify", str(uuid_lib.uuid4())), "not found")
