"""The experiment config: what is accepted, what is refused, and how the refusal reads."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stalwart_master.errors import BadRequest, Invalid, PayloadTooLarge
from stalwart_master.expconf import (
    ExperimentConfig,
    experiment_config_json_schema,
    load_yaml,
    merge_defaults,
    parse_experiment_config,
)
from stalwart_master.expconf import loader as loader_module

from expconf_cases import INVALID_CONFIGS, VALID_CONFIG, config_with

pytestmark = pytest.mark.unit

# What a cluster typically lays under every config; the invalid cases must fail the same way on top.
CLUSTER_DEFAULTS: dict[str, Any] = {
    "checkpoint_storage": {"type": "shared_fs", "host_path": "/srv/checkpoints", "save_trial_best": 2},
    "resources": {"resource_pool": "gpu", "slots_per_trial": 1},
    "environment": {"image": "stalwart/torch:2.3", "environment_variables": ["HF_HOME=/cache"]},
    "max_restarts": 3,
}

MINIMAL = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


def errors_of(text: str, defaults: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as info:
        parse_experiment_config(text, defaults)
    assert info.value.title == "Invalid experiment config"
    return [(e.path, e.message) for e in info.value.errors]


@pytest.fixture(params=["libyaml", "pure-python"])
def each_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with the libyaml-fed loader and with the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(loader_module, "_Loader", loader_module._PyLoader)
    elif not loader_module.USING_LIBYAML:
        pytest.skip("PyYAML was built without libyaml")
    yield request.param


# --- the table of invalid configs ----------------------------------------------------------------


def test_invalid_table_is_large_and_ids_are_unique() -> None:
    ids = [case_id for case_id, _, _ in INVALID_CONFIGS]
    assert len(ids) >= 35
    assert len(set(ids)) == len(ids)
    sections = {path.split(".")[0] for _, _, path in INVALID_CONFIGS}
    assert {"searcher", "hyperparameters", "resources", "checkpoint_storage", "environment"} <= sections
    assert {"min_validation_period", "reproducibility", "entrypoint", "labels"} <= sections


@pytest.mark.parametrize(("case_id", "text", "path"), INVALID_CONFIGS, ids=[c[0] for c in INVALID_CONFIGS])
@pytest.mark.parametrize("defaults", [None, CLUSTER_DEFAULTS], ids=["no-defaults", "cluster-defaults"])
def test_invalid_config_is_refused_at_exactly_its_path(
    case_id: str, text: str, path: str, defaults: dict[str, Any] | None
) -> None:
    errors = errors_of(text, defaults)
    assert [p for p, _ in errors] == [path], errors


@pytest.mark.parametrize(("case_id", "text", "path"), INVALID_CONFIGS, ids=[c[0] for c in INVALID_CONFIGS])
def test_error_messages_are_short_and_free_of_pydantic_wording(case_id: str, text: str, path: str) -> None:
    for _, message in errors_of(text):
        assert message and message[0].islower() and len(message) < 120, message
        assert not re.search(r"Input should|Field required|Extra inputs|Value error|pydantic", message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            config_with(searcher={"name": "random", "metric": "m"}),
            ("searcher.max_trials", "required for random"),
        ),
        (
            config_with(searcher={"name": "sobol", "metric": "m"}),
            ("searcher.name", "must be one of single, grid, random, adaptive_asha, async_halving, bayesian"),
        ),
        (
            config_with(hyperparameters={"lr": {"type": "double", "minval": 1, "maxval": 0.5}}),
            ("hyperparameters.lr.minval", "must be less than maxval"),
        ),
        (
            config_with(
                searcher={"name": "grid", "metric": "m"},
                hyperparameters={"lr": {"type": "int", "minval": 1, "maxval": 3}},
            ),
            ("hyperparameters.lr.count", "required for grid search"),
        ),
        (config_with(resources={"gpus": 1}), ("resources.gpus", "unknown field")),
    ],
)
def test_messages_say_what_to_fix(text: str, expected: tuple[str, str]) -> None:
    assert errors_of(text) == [expected]


def test_every_failing_field_is_reported_at_once() -> None:
    text = """
entrypoint: 7
labels: [a, a]
searcher: {name: grid, metric: loss}
hyperparameters:
  lr: {type: double, minval: 0.1, maxval: 0.5}
  opt: {momentum: {type: int, minval: 5, maxval: 1, count: 2}}
resources: {priority: 0, colour: red}
min_checkpoint_period: {epochs: 1}
max_restarts: -2
"""
    paths = {path for path, _ in errors_of(text)}
    assert paths == {
        "entrypoint",
        "labels.1",
        "hyperparameters.lr.count",
        "hyperparameters.opt.momentum.minval",
        "resources.priority",
        "resources.colour",
        "min_checkpoint_period.epochs",
        "max_restarts",
    }


def test_hyperparameter_named_like_a_union_tag_keeps_its_path() -> None:
    # Tags are removed by position, so a hyperparameter called "spec" or "random" is still named.
    hps = {"spec": {"type": "int", "minval": 3, "maxval": 1}, "random": {"group": {"type": "categorical"}}}
    assert sorted(p for p, _ in errors_of(config_with(hyperparameters=hps))) == [
        "hyperparameters.random.group.vals",
        "hyperparameters.spec.minval",
    ]


def test_non_string_keys_are_named() -> None:
    assert errors_of(config_with(data={1: "x"})) == [("data.1", "keys must be strings")]


# --- valid configs ----------------------------------------------------------------------------------


def test_the_complete_valid_config_passes_and_round_trips() -> None:
    parsed = parse_experiment_config(VALID_CONFIG)
    assert parsed.original == VALID_CONFIG
    assert parsed.config.name == "mnist-cnn"
    assert parsed.data["resources"]["shm_size"] == 2 * 2**30
    assert parsed.data["min_checkpoint_period"] == {"epochs": 1}
    assert parsed.data["reproducibility"] == {"experiment_seed": 1234}
    # What is stored can be read back as the same config and dumped to the same JSON.
    json.dumps(parsed.data)
    assert ExperimentConfig.model_validate(parsed.data) == parsed.config
    assert ExperimentConfig.model_validate(parsed.data).model_dump(mode="json") == parsed.data


def test_minimal_config_gets_every_default() -> None:
    data = parse_experiment_config(MINIMAL).data
    assert data["name"] is None
    assert data["labels"] == [] and data["hyperparameters"] == {} and data["data"] == {}
    assert data["searcher"] == {
        "name": "single",
        "metric": "loss",
        "smaller_is_better": True,
        "max_concurrent_trials": 16,
        "source_trial_id": None,
        "source_checkpoint_uuid": None,
        "max_length": None,
    }
    assert data["resources"] == {
        "slots_per_trial": 1,
        "resource_pool": "default",
        "priority": None,
        "max_slots": None,
        "weight": 1.0,
        "shm_size": None,
    }
    assert data["checkpoint_storage"] is None
    assert data["checkpoint_policy"] == "best"
    assert data["min_validation_period"] == {"batches": 0}
    assert data["min_checkpoint_period"] == {"batches": 0}
    assert data["max_restarts"] == 5
    assert data["records_per_epoch"] == 0
    assert data["environment"] == {"image": None, "environment_variables": [], "pod_spec": None}


def test_a_missing_seed_is_generated_and_a_given_seed_is_kept() -> None:
    seeds = {parse_experiment_config(MINIMAL).data["reproducibility"]["experiment_seed"] for _ in range(5)}
    assert all(0 <= s <= 2**31 - 1 for s in seeds)
    assert len(seeds) > 1
    given = parse_experiment_config(MINIMAL + "reproducibility: {experiment_seed: 0}\n")
    assert given.data["reproducibility"]["experiment_seed"] == 0
    assert given.config.reproducibility.experiment_seed == 0


def test_single_searcher_with_constants_only() -> None:
    text = MINIMAL + "hyperparameters: {lr: 0.01, sizes: [1, 2], opt: {name: {type: const, val: adam}}}\n"
    hps = parse_experiment_config(text).data["hyperparameters"]
    assert hps == {"lr": 0.01, "sizes": [1, 2], "opt": {"name": {"type": "const", "val": "adam"}}}


def test_grid_searcher_with_counts() -> None:
    hps = {
        "lr": {"type": "log", "minval": -4, "maxval": -2, "count": 3},
        "layers": {"type": "int", "minval": 1, "maxval": 3, "count": 3},
        "act": {"type": "categorical", "vals": ["relu", "tanh"]},
        "bs": 32,
    }
    parsed = parse_experiment_config(
        config_with(searcher={"name": "grid", "metric": "acc"}, hyperparameters=hps)
    )
    assert parsed.data["hyperparameters"]["lr"] == {
        "type": "log",
        "minval": -4.0,
        "maxval": -2.0,
        "base": 10.0,
        "count": 3,
    }


def test_random_searcher() -> None:
    parsed = parse_experiment_config(config_with())
    assert parsed.config.searcher.name == "random"
    assert parsed.data["searcher"]["max_trials"] == 4


def test_adaptive_asha_defaults() -> None:
    searcher = {
        "name": "adaptive_asha",
        "metric": "acc",
        "max_trials": 20,
        "time_metric": "batches",
        "max_time": 900,
    }
    data = parse_experiment_config(config_with(searcher=searcher)).data["searcher"]
    assert (data["mode"], data["divisor"], data["max_rungs"], data["bracket_rungs"]) == (
        "standard",
        4.0,
        5,
        [],
    )


def test_nested_hyperparameter_groups() -> None:
    hps = {"optimizer": {"adam": {"beta1": {"type": "double", "minval": 0.8, "maxval": 0.99}, "eps": 1e-8}}}
    config = parse_experiment_config(config_with(hyperparameters=hps)).config
    assert config.hyperparameters["optimizer"]["adam"]["eps"] == 1e-8
    assert config.hyperparameters["optimizer"]["adam"]["beta1"].maxval == 0.99


@pytest.mark.parametrize(
    "storage",
    [
        {
            "type": "s3",
            "bucket": "b",
            "prefix": "runs/a",
            "endpoint_url": "https://s3.local",
            "access_key": "k",
        },
        {"type": "directory", "container_path": "/ckpt"},
        {"type": "shared_fs", "host_path": "/mnt/nfs", "storage_path": "team/a"},
    ],
)
def test_each_checkpoint_storage_type(storage: dict[str, Any]) -> None:
    data = parse_experiment_config(config_with(checkpoint_storage=storage)).data["checkpoint_storage"]
    assert data.items() >= storage.items()
    assert (data["save_experiment_best"], data["save_trial_best"], data["save_trial_latest"]) == (0, 1, 1)


def test_environment_forms_and_helpers() -> None:
    as_list = parse_experiment_config(
        MINIMAL + "environment: {environment_variables: [A=1, B=x=y], image: img}\n"
    )
    assert as_list.config.environment.variables_for("cuda") == {"A": "1", "B": "x=y"}
    assert as_list.config.environment.image_for("cpu") == "img"
    by_device = parse_experiment_config(
        MINIMAL
        + "environment: {environment_variables: {cpu: [A=1], cuda: {A: '2'}}, image: {cuda: gpu-img}}\n"
    )
    assert by_device.config.environment.variables_for("cpu") == {"A": "1"}
    assert by_device.config.environment.variables_for("cuda") == {"A": "2"}
    assert by_device.config.environment.image_for("cpu") is None


def test_size_strings_and_bare_max_length() -> None:
    text = MINIMAL + "resources: {shm_size: 512Mi}\nlabels: [x]\n"
    assert parse_experiment_config(text).data["resources"]["shm_size"] == 512 * 2**20
    text = config_with(searcher={"name": "random", "metric": "m", "max_trials": 2, "max_length": 100})
    assert parse_experiment_config(text).data["searcher"]["max_length"] == {"batches": 100}


def test_checkpoint_period_in_minutes_is_optional_and_must_be_positive() -> None:
    assert parse_experiment_config(MINIMAL).data["checkpoint_period"] is None
    data = parse_experiment_config(MINIMAL + "checkpoint_period: {minutes: 30}\n").data
    assert data["checkpoint_period"] == {"minutes": 30.0}
    assert parse_experiment_config(MINIMAL + "checkpoint_period: {minutes: 0.25}\n").data[
        "checkpoint_period"
    ] == {"minutes": 0.25}
    assert errors_of(MINIMAL + "checkpoint_period: {minutes: 0}\n") == [
        ("checkpoint_period.minutes", "must be greater than 0")
    ]
    assert [p for p, _ in errors_of(MINIMAL + "checkpoint_period: {minutes: '5'}\n")] == [
        "checkpoint_period.minutes"
    ]
    assert [p for p, _ in errors_of(MINIMAL + "checkpoint_period: {batches: 5}\n")] == [
        "checkpoint_period.minutes",
        "checkpoint_period.batches",
    ]


def test_dates_stay_text() -> None:
    data = parse_experiment_config(MINIMAL + "data: {since: 2024-01-31}\n").data
    assert data["data"] == {"since": "2024-01-31"}


# --- cluster defaults -------------------------------------------------------------------------------


def test_defaults_fill_in_and_the_user_wins() -> None:
    text = MINIMAL + "resources: {slots_per_trial: 4}\nenvironment: {image: mine}\n"
    data = parse_experiment_config(text, CLUSTER_DEFAULTS).data
    assert data["resources"]["slots_per_trial"] == 4
    assert data["resources"]["resource_pool"] == "gpu"
    assert data["environment"]["image"] == "mine"
    assert data["environment"]["environment_variables"] == ["HF_HOME=/cache"]
    assert data["max_restarts"] == 3
    assert data["checkpoint_storage"]["host_path"] == "/srv/checkpoints"


def test_storage_of_another_type_replaces_the_default_wholesale() -> None:
    text = MINIMAL + "checkpoint_storage: {type: s3, bucket: mine}\n"
    storage = parse_experiment_config(text, CLUSTER_DEFAULTS).data["checkpoint_storage"]
    assert storage["type"] == "s3" and storage["bucket"] == "mine"
    assert "host_path" not in storage
    assert storage["save_trial_best"] == 1  # the model's default, not the shared_fs default's 2


def test_storage_of_the_same_type_merges_with_the_default() -> None:
    text = MINIMAL + "checkpoint_storage: {type: shared_fs, storage_path: team}\n"
    storage = parse_experiment_config(text, CLUSTER_DEFAULTS).data["checkpoint_storage"]
    assert storage["host_path"] == "/srv/checkpoints"
    assert storage["storage_path"] == "team"
    assert storage["save_trial_best"] == 2


def test_a_named_storage_keeps_the_defaults_policy_but_never_its_location() -> None:
    text = MINIMAL + "checkpoint_storage: {name: team}\n"
    storage = parse_experiment_config(text, CLUSTER_DEFAULTS).data["checkpoint_storage"]
    assert storage["type"] == "named" and storage["name"] == "team"
    assert "host_path" not in storage and storage["save_trial_best"] == 2  # the default's GC policy


def test_a_location_given_beside_a_storage_name_is_refused_not_dropped() -> None:
    text = MINIMAL + "checkpoint_storage: {name: team, host_path: /mine, type: s3}\n"
    errors = dict(errors_of(text, CLUSTER_DEFAULTS))
    beside = "cannot be set together with name: its location is the cluster's"
    assert errors == {"checkpoint_storage.host_path": beside, "checkpoint_storage.type": beside}


def test_merge_rules() -> None:
    defaults = {"a": {"b": 1, "c": {"d": 2}}, "l": [1], "searcher": {"name": "random", "max_trials": 9}}
    merged = merge_defaults(
        defaults, {"a": {"c": {"e": 3}}, "l": [2], "n": None, "searcher": {"name": "grid"}}
    )
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [2], "n": None, "searcher": {"name": "grid"}}
    assert merge_defaults({"x": 1}, {"x": None}) == {"x": 1}  # an empty YAML value keeps the default
    assert defaults["a"] == {"b": 1, "c": {"d": 2}}  # the caller's defaults are never modified


# --- YAML the master must refuse --------------------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column(each_loader: str) -> None:
    text = "entrypoint: python3 train.py\nsearcher:\n  name: single\n   metric: loss\n"
    with pytest.raises(BadRequest) as info:
        parse_experiment_config(text)
    assert info.value.title == "Invalid YAML"
    assert "line 4, column 10" in info.value.detail
    assert info.value.extra == {"line": 4, "column": 10}


def test_control_character_names_line_and_column(each_loader: str) -> None:
    with pytest.raises(BadRequest) as info:
        load_yaml("a: 1\nb: \x07\n")
    assert "line 2, column 4" in info.value.detail


BILLION_LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def test_alias_bomb_is_refused_without_expanding_it(each_loader: str) -> None:
    started = time.perf_counter()
    with pytest.raises(BadRequest) as info:
        parse_experiment_config(
            MINIMAL + "data:\n" + "".join(f"  {line}\n" for line in BILLION_LAUGHS.splitlines())
        )
    assert time.perf_counter() - started < 2  # a safety net only: expanding would take hours
    assert "aliases are expanded" in info.value.detail


def test_aliases_within_the_budget_are_fine(each_loader: str) -> None:
    loaded = load_yaml("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\nsame: *b\n")
    assert loaded == {"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3}, "same": {"x": 1, "y": 2}}


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_ten_thousand_levels_of_nesting_are_refused(each_loader: str, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(BadRequest):
        load_yaml("x: " + opener * 10_000 + "1" + closer * 10_000)


def test_deeply_nested_block_mappings_are_refused(each_loader: str) -> None:
    text = "".join(" " * depth + f"k{depth}:\n" for depth in range(100)) + " " * 100 + "v\n"
    with pytest.raises(BadRequest) as info:
        load_yaml(text)
    assert "nested deeper than" in info.value.detail


def test_too_many_values_are_refused(each_loader: str) -> None:
    with pytest.raises(BadRequest):
        load_yaml("[" + ", ".join(["1"] * 25_000) + "]")


def test_self_referencing_alias_is_refused(each_loader: str) -> None:
    with pytest.raises(BadRequest):
        load_yaml("a: &x [1, *x]\n")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("searcher: 1\nsearcher: 2\n", "duplicate key 'searcher'"),
        ("a: !!binary aGVsbG8=\n", "not allowed"),
        ("a: 1\n---\nb: 2\n", "document"),
        ("a: *nope\n", "undefined alias"),
        ("!!python/object:os.system {}\n", "python/object"),
    ],
)
def test_unsafe_or_ambiguous_yaml_is_refused(each_loader: str, text: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        load_yaml(text)
    assert fragment in info.value.detail


def test_oversize_config_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_experiment_config(MINIMAL + "data: {blob: '" + "x" * (1024 * 1024) + "'}\n")
    with pytest.raises(PayloadTooLarge):
        parse_experiment_config(MINIMAL, max_bytes=10)
    # Bytes, not characters, are what is limited.
    assert parse_experiment_config(MINIMAL + "description: é\n", max_bytes=len(MINIMAL) + 16)


@pytest.mark.parametrize("text", ["- entrypoint: x\n", "just a string\n", "42\n", "", "# only a comment\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_experiment_config(text)
    assert not isinstance(info.value, Invalid)


# --- schema -----------------------------------------------------------------------------------------


def test_json_schema_describes_the_config() -> None:
    schema = experiment_config_json_schema()
    assert isinstance(schema, dict)
    assert {"searcher", "hyperparameters", "checkpoint_storage", "entrypoint"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert "searcher" in schema["required"] and "entrypoint" in schema["required"]
    json.dumps(schema)
    schema["properties"].clear()  # callers get their own copy
    assert experiment_config_json_schema()["properties"]


def test_checkpoint_storage_compression_and_chunk_size() -> None:
    storage = "checkpoint_storage: {{type: shared_fs, host_path: /mnt/ckpt{extra}}}\n"
    data = parse_experiment_config(MINIMAL + storage.format(extra="")).data["checkpoint_storage"]
    assert (data["compression"], data["chunk_size"]) == ("none", 8 * 2**20)
    tuned = storage.format(extra=", compression: zstd, chunk_size: 65536")
    data = parse_experiment_config(MINIMAL + tuned).data["checkpoint_storage"]
    assert (data["compression"], data["chunk_size"]) == ("zstd", 65536)
    bad = storage.format(extra=", compression: gzip, chunk_size: 65535")
    assert [path for path, _ in errors_of(MINIMAL + bad)] == [
        "checkpoint_storage.compression",
        "checkpoint_storage.chunk_size",
    ]


def test_preemption_timeout_is_optional_whole_seconds_above_zero() -> None:
    assert parse_experiment_config(MINIMAL).data["preemption_timeout"] is None  # the cluster's default
    assert parse_experiment_config(MINIMAL + "preemption_timeout: 30\n").data["preemption_timeout"] == 30
    assert errors_of(MINIMAL + "preemption_timeout: 0\n") == [
        ("preemption_timeout", "must be greater than 0")
    ]
    for bad in ("'30'", "2.5", "true"):
        assert [p for p, _ in errors_of(MINIMAL + f"preemption_timeout: {bad}\n")] == ["preemption_timeout"]
