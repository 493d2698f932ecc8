"""``--config`` of fork and continue: files and KEY=VALUE pairs become one nested mapping, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from stalwart.cli._errors import CliError
from stalwart.cli.experiment_versions import config_overrides

pytestmark = pytest.mark.unit


def test_files_and_pairs_merge_in_order(tmp_path: Path) -> None:
    first = tmp_path / "more.yaml"
    first.write_text("max_restarts: 1\nresources: {max_slots: 2, priority: 7}\n")
    assert config_overrides(first, ["resources.max_slots=4", "hyperparameters.lr=0.1"]) == {
        "max_restarts": 1,
        "resources": {"max_slots": 4, "priority": 7},
        "hyperparameters": {"lr": 0.1},
    }
    assert config_overrides(None, [str(first), "max_restarts=3"])["max_restarts"] == 3


def test_a_missing_file_or_a_list_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="cannot read config file"):
        config_overrides(None, [str(tmp_path / "nope.yaml")])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(CliError, match="not a mapping"):
        config_overrides(listed, None)
