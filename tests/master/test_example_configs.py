"""Every example config loads, and its searcher can start: a broken example is a broken quick start."""

from __future__ import annotations

from pathlib import Path

import pytest

from stalwart_master.expconf import parse_experiment_config
from stalwart_master.searcher import make_searcher

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in EXAMPLES])
def test_an_example_config_validates_and_its_searcher_starts(path: Path) -> None:
    config = parse_experiment_config(path.read_text()).config
    assert make_searcher(config).initial_operations()
