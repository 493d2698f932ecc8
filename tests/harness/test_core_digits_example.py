"""The digits example trains off-cluster (no master) and resumes from its own checkpoint."""

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


def test_digits_example_trains_off_cluster_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    first = _train(tmp_path, {"epochs": 10, "checkpoint_every": 5})
    assert first.returncode == 0, first.stderr
    accuracy = float(re.findall(r"final validation accuracy: ([0-9.]+)", first.stderr)[-1])
    assert accuracy > 0.9
    (metrics_file,) = (tmp_path / "local").glob("run-*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    validation = [row for row in rows if row["group"] == "validation"]
    assert len(validation) == 10 and all("validation_accuracy" in row["values"] for row in validation)
    assert any(row["group"] == "training" for row in rows)
    checkpoints = sorted(
        (json.loads((d / "metadata.json").read_text())["steps_completed"], d.name)
        for d in (tmp_path / "local" / "checkpoints").iterdir()
        if (d / "stalwart-manifest.json").is_file()
    )
    assert [steps for steps, _ in checkpoints] == [225, 450]  # epochs 5 and 10, 45 batches each
    latest = checkpoints[-1][1]

    second = _train(tmp_path, {"epochs": 11, "checkpoint_every": 5}, latest=latest)
    assert second.returncode == 0, second.stderr
    assert f"restored checkpoint {latest} at step 450 (epoch 10)" in second.stderr
    assert "validation after 495 steps" in second.stderr
    assert "validation after 450 steps" not in second.stderr  # nothing trained twice
