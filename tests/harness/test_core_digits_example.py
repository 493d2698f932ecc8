"""The digits example (stalwart.pytorch.Trainer) trains off-cluster and resumes from its own checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _train(tmp_path: Path, hparams: dict[str, object], latest: str = "") -> subprocess.CompletedProcess[str]:
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (requirements-examples.txt)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    env.update(
        STALWART_LOCAL_DIR=str(tmp_path / "local"),
        STALWART_HPARAMS=json.dumps(hparams),
        STALWART_LATEST_CHECKPOINT=latest,
    )
    return subprocess.run(
        [sys.executable, "train.py"], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300
    )


def _checkpoints(tmp_path: Path) -> list[dict[str, object]]:
    manifests = (tmp_path / "local" / "checkpoints" / "manifests").glob("*.json")
    return sorted((json.loads(m.read_text()) for m in manifests), key=lambda m: m["steps_completed"])


def test_digits_example_trains_off_cluster_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    first = _train(tmp_path, {"epochs": 15})  # the const config's length
    assert first.returncode == 0, first.stderr
    accuracy = float(re.findall(r"final validation accuracy: ([0-9.]+)", first.stderr)[-1])
    assert accuracy >= 0.95
    (metrics_file,) = (tmp_path / "local").glob("run-*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    validation = [row for row in rows if row["group"] == "validation"]
    # Off-cluster the Trainer validates every epoch (45 batches of 32 images).
    assert [row["steps_completed"] for row in validation] == [45 * e for e in range(1, 16)]
    assert all("validation_accuracy" in row["values"] for row in validation)
    training = [row["steps_completed"] for row in rows if row["group"] == "training"]
    assert training[:3] == [10, 20, 30]  # report_every: 10
    checkpoints = _checkpoints(tmp_path)
    assert all(c["kind"] == "state" for c in checkpoints)
    # Policy "best": a checkpoint after each validation that beat the best so far, and one at the end.
    best, expected = -1.0, []
    for row in validation:
        if row["values"]["validation_accuracy"] > best:
            best = row["values"]["validation_accuracy"]
            expected.append(row["steps_completed"])
    assert [c["steps_completed"] for c in checkpoints] == sorted({*expected, 675})
    latest = checkpoints[-1]["uuid"]

    second = _train(tmp_path, {"epochs": 16}, latest=str(latest))
    assert second.returncode == 0, second.stderr
    assert f"resumed from checkpoint {latest} at batch 675 (epoch 15 + 0 batches)" in second.stderr
    assert "validation after 720 steps" in second.stderr
    assert "validation after 675 steps" not in second.stderr  # nothing trained twice
    assert _checkpoints(tmp_path)[-1]["parent_uuid"] == latest
