"""`stalwart preview-search CONFIG` against a real master: what would run, and a bad config's one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from stalwart.cli.main import app

pytestmark = pytest.mark.e2e

ASHA = """\
name: preview
entrypoint: python3 train.py
reproducibility: {experiment_seed: 5}
hyperparameters: {lr: {type: double, minval: 0.001, maxval: 0.1}, layers: 2}
searcher: {name: async_halving, metric: loss, num_rungs: 3, max_trials: 8, time_metric: batches,
           max_time: 16, divisor: 2}
"""


def test_preview_search_prints_rungs_and_trials_and_refuses_a_bad_config(
    live_master: Any, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"STALWART_MASTER": live_master.url, "STALWART_CONFIG_DIR": str(tmp_path / "cfg"), "COLUMNS": "200"}

    def cli(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    login = cli("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    assert login.exit_code == 0, login.stderr
    config = tmp_path / "asha.yaml"
    config.write_text(ASHA)

    shown = cli("preview-search", str(config))
    assert shown.exit_code == 0, shown.stderr
    assert "async_halving" in shown.stdout and "Bracket 0: 8 trials" in shown.stdout
    assert "lr=" in shown.stdout and "layers=2" in shown.stdout

    plan = json.loads(
        cli("preview-search", str(config), "--json", "--config", "searcher.max_trials=4").stdout
    )
    assert plan["total_trials"] == 4 and len(plan["trials"]) == 4
    assert [r["time"] for r in plan["brackets"][0]["rungs"]] == [4.0, 8.0, 16.0]

    config.write_text(ASHA.replace("num_rungs: 3, ", ""))
    bad = cli("preview-search", str(config))
    assert bad.exit_code != 0 and "Traceback" not in bad.stdout + bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "num_rungs" in lines[0], bad.stderr
