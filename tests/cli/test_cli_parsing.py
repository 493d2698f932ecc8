"""Determined's CLI habits that need no master: `--config KEY=VALUE`, `--best N`, DET_* variables."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stalwart.cli._errors import CliError
from stalwart.cli._overrides import apply_overrides, parse_override
from stalwart.client import Checkpoint, auth
from stalwart.client._ranking import best_checkpoints

pytestmark = pytest.mark.unit

CONFIG = "# my experiment\nname: x\nsearcher:\n  name: single\n  metric: loss\nhyperparameters:\n"


def test_overrides_set_dotted_keys_with_yaml_values_and_create_sections() -> None:
    text = apply_overrides(
        CONFIG,
        [
            "searcher.max_length.batches=100",
            "hyperparameters.lr=1e-3",
            "hyperparameters.layers=[64, 32]",
            "resources.slots_per_trial=2",
            "name=renamed",
            "description=",
            "name=last one wins",
        ],
    )
    config = yaml.safe_load(text)
    assert config["searcher"] == {"name": "single", "metric": "loss", "max_length": {"batches": 100}}
    assert config["hyperparameters"] == {"lr": 1e-3, "layers": [64, 32]}
    assert config["resources"] == {"slots_per_trial": 2}
    assert (config["name"], config["description"]) == ("last one wins", "")
    assert apply_overrides(CONFIG, []) == CONFIG  # untouched, comments kept


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("novalue", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("a..b=1", "bad part ''"),
        ("a b=1", "not a dotted config key"),
        ("name.first=1", "name is str, not a mapping"),
        ("searcher.name.x=1", "searcher.name is str"),
        ("hyperparameters.lr=[1, 2", "not valid YAML"),
    ],
)
def test_bad_overrides_are_one_line_errors(override: str, fragment: str) -> None:
    with pytest.raises(CliError) as caught:
        apply_overrides(CONFIG, [override])
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_overrides_refuse_a_config_that_is_not_a_mapping() -> None:
    with pytest.raises(CliError, match="not a mapping"):
        apply_overrides("- a\n- b\n", ["name=x"])
    assert parse_override("a.b= true ") == (["a", "b"], True)


def _ckpt(name: str, metric: float | None, steps: int, state: str = "COMPLETED") -> Checkpoint:
    data: dict[str, Any] = {
        "uuid": name,
        "trial_id": 1,
        "steps_completed": steps,
        "state": state,
        "searcher_metric": metric,
    }
    return Checkpoint.from_json(data)


def test_best_checkpoints_follow_smaller_is_better_and_skip_deleted_or_unmeasured() -> None:
    ckpts = [
        _ckpt("a", 0.5, 10),
        _ckpt("b", 0.1, 20),
        _ckpt("c", None, 30),
        _ckpt("d", 0.05, 40, state="DELETED"),
        _ckpt("e", 0.9, 50),
    ]
    smaller = {"searcher": {"metric": "loss", "smaller_is_better": True}}
    assert [c.uuid for c in best_checkpoints(ckpts, smaller, 2)] == ["b", "a"]
    larger = {"searcher": {"metric": "acc", "smaller_is_better": False}}
    assert [c.uuid for c in best_checkpoints(ckpts, larger, 5)] == ["e", "a", "b"]
    assert [c.uuid for c in best_checkpoints(ckpts, {}, 1)] == ["b"]  # Determined's default: smaller


def test_det_variables_apply_only_when_ours_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "STALWART_MASTER",
        "STALWART_USER",
        "STALWART_PASSWORD",
        "DET_MASTER",
        "DET_USER",
        "DET_PASS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert auth.resolve_master(None) == auth.DEFAULT_MASTER
    assert auth.resolve_user(None) is None and auth.env_password() is None
    monkeypatch.setenv("DET_MASTER", "det-host:8080")
    monkeypatch.setenv("DET_USER", "det-user")
    monkeypatch.setenv("DET_PASS", "det-pass")
    assert auth.resolve_master(None) == "http://det-host:8080"
    assert (auth.resolve_user(None), auth.env_password()) == ("det-user", "det-pass")
    monkeypatch.setenv("STALWART_MASTER", "http://ours:1")
    monkeypatch.setenv("STALWART_USER", "ours")
    monkeypatch.setenv("STALWART_PASSWORD", "our-pass")
    assert auth.resolve_master(None) == "http://ours:1"
    assert (auth.resolve_user(None), auth.env_password()) == ("ours", "our-pass")
    assert (auth.resolve_master("http://flag:2"), auth.resolve_user("flag")) == ("http://flag:2", "flag")
