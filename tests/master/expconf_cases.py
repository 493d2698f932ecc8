"""Experiment configs for tests: one complete valid config and a table of invalid ones.

Every invalid case is a whole config that would be accepted but for one mistake, and the table
names the exact field path that mistake must be reported at. The API tests reuse the table, so a
case must fail at that path and nowhere else, also when cluster defaults are merged under it.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

VALID_CONFIG = """\
name: mnist-cnn
description: Small CNN on MNIST with an ASHA search
labels: [vision, tutorial]
entrypoint: python3 train.py --epochs 3
hyperparameters:
  global_batch_size: 64
  lr:
    type: log
    minval: -4
    maxval: -1
    base: 10
  dropout: {type: double, minval: 0.1, maxval: 0.5}
  layers: {type: int, minval: 1, maxval: 4}
  activation: {type: categorical, vals: [relu, gelu]}
  optimizer:
    name: {type: const, val: adam}
    betas: [0.9, 0.999]
    momentum: {type: double, minval: 0.8, maxval: 0.99}
searcher:
  name: adaptive_asha
  metric: val_loss
  smaller_is_better: true
  max_trials: 16
  max_concurrent_trials: 4
  time_metric: batches
  max_time: 1000
  mode: standard
  divisor: 4
  max_rungs: 3
resources:
  slots_per_trial: 1
  resource_pool: default
  priority: 40
  max_slots: 8
  weight: 2
  shm_size: 2G
checkpoint_storage:
  type: s3
  bucket: experiments
  prefix: mnist
  endpoint_url: http://minio.local:9000
  save_experiment_best: 2
  save_trial_best: 1
  save_trial_latest: 1
checkpoint_policy: best
min_validation_period: {batches: 200}
min_checkpoint_period: {epochs: 1}
records_per_epoch: 60000
max_restarts: 2
environment:
  image: {cpu: python:3.11-slim, cuda: nvcr.io/nvidia/pytorch:24.05-py3}
  environment_variables:
    cpu: [OMP_NUM_THREADS=4]
    cuda: {NCCL_DEBUG: INFO}
  pod_spec: {metadata: {labels: {team: vision}}}
reproducibility:
  experiment_seed: 1234
data:
  url: https://example.com/mnist.tar.gz
"""

# The starting point of every invalid case: valid, small, and using each section once.
_BASE_YAML = """\
name: base
entrypoint: python3 train.py
hyperparameters:
  lr: {type: log, minval: -4, maxval: -1}
  layers: {type: int, minval: 1, maxval: 4}
searcher: {name: random, metric: val_loss, max_trials: 4}
checkpoint_storage: {type: shared_fs, host_path: /mnt/checkpoints}
"""
_BASE: dict[str, Any] = yaml.safe_load(_BASE_YAML)
_DROP = object()


def config_with(**sections: Any) -> str:
    """The base config as YAML with whole top-level sections replaced (or dropped with ``_DROP``)."""
    config = copy.deepcopy(_BASE)
    for key, value in sections.items():
        if value is _DROP:
            config.pop(key, None)
        else:
            config[key] = value
    return str(yaml.safe_dump(config, sort_keys=False))


def _searcher(**fields: Any) -> dict[str, Any]:
    return {"metric": "val_loss", **fields}


def _asha(**fields: Any) -> dict[str, Any]:
    return _searcher(name="adaptive_asha", max_trials=8, time_metric="batches", max_time=100, **fields)


def _hps(**specs: Any) -> dict[str, Any]:
    return {**_BASE["hyperparameters"], **specs}


def _s3(**fields: Any) -> dict[str, Any]:
    return {"type": "s3", "bucket": "ckpts", **fields}


_UUID = "0b7a6c1e-6d7c-4a8e-9a4c-2f1d3e5b7a90"
_GRID = {"name": "grid", "metric": "val_loss"}
_CONST_HPS = {"lr": 0.01, "layers": 2}

INVALID_CONFIGS: list[tuple[str, str, str]] = [
    # top level
    ("unknown_top_level_field", config_with(bind_mount=[]), "bind_mount"),
    ("missing_entrypoint", config_with(entrypoint=_DROP), "entrypoint"),
    ("blank_entrypoint", config_with(entrypoint="  "), "entrypoint"),
    ("empty_entrypoint_list", config_with(entrypoint=[]), "entrypoint"),
    ("entrypoint_not_a_command", config_with(entrypoint=42), "entrypoint"),
    ("entrypoint_list_with_empty_arg", config_with(entrypoint=["python3", ""]), "entrypoint.1"),
    ("empty_name", config_with(name=""), "name"),
    ("name_too_long", config_with(name="x" * 256), "name"),
    ("description_not_text", config_with(description={"a": 1}), "description"),
    ("labels_not_a_list", config_with(labels="vision"), "labels"),
    ("label_not_a_string", config_with(labels=["vision", 3]), "labels.1"),
    ("duplicate_label", config_with(labels=["a", "b", "a"]), "labels.2"),
    ("unknown_checkpoint_policy", config_with(checkpoint_policy="sometimes"), "checkpoint_policy"),
    ("negative_max_restarts", config_with(max_restarts=-1), "max_restarts"),
    ("max_restarts_as_text", config_with(max_restarts="5"), "max_restarts"),
    ("negative_records_per_epoch", config_with(records_per_epoch=-10), "records_per_epoch"),
    ("data_not_a_mapping", config_with(data=[1, 2]), "data"),
    ("data_with_nan", config_with(data={"scale": float("nan")}), "data.scale"),
    # periods
    (
        "period_with_two_units",
        config_with(min_validation_period={"batches": 10, "records": 5}),
        "min_validation_period",
    ),
    ("period_unknown_unit", config_with(min_checkpoint_period={"steps": 5}), "min_checkpoint_period.steps"),
    ("period_negative", config_with(min_checkpoint_period={"batches": -1}), "min_checkpoint_period.batches"),
    (
        "period_in_epochs_without_records_per_epoch",
        config_with(min_validation_period={"epochs": 1}),
        "min_validation_period.epochs",
    ),
    # searcher
    ("missing_searcher", config_with(searcher=_DROP), "searcher"),
    ("searcher_not_a_mapping", config_with(searcher="random"), "searcher"),
    ("searcher_without_name", config_with(searcher=_searcher(max_trials=4)), "searcher.name"),
    ("unknown_searcher", config_with(searcher=_searcher(name="pbt")), "searcher.name"),
    ("searcher_without_metric", config_with(searcher={"name": "random", "max_trials": 4}), "searcher.metric"),
    ("random_without_max_trials", config_with(searcher=_searcher(name="random")), "searcher.max_trials"),
    (
        "random_with_zero_trials",
        config_with(searcher=_searcher(name="random", max_trials=0)),
        "searcher.max_trials",
    ),
    (
        "negative_max_concurrent_trials",
        config_with(searcher=_searcher(name="random", max_trials=4, max_concurrent_trials=-1)),
        "searcher.max_concurrent_trials",
    ),
    (
        "smaller_is_better_not_bool",
        config_with(searcher=_searcher(name="random", max_trials=4, smaller_is_better="yes")),
        "searcher.smaller_is_better",
    ),
    (
        "two_warm_start_sources",
        config_with(
            searcher=_searcher(name="random", max_trials=4, source_trial_id=3, source_checkpoint_uuid=_UUID)
        ),
        "searcher.source_checkpoint_uuid",
    ),
    (
        "warm_start_checkpoint_not_a_uuid",
        config_with(searcher=_searcher(name="random", max_trials=4, source_checkpoint_uuid="latest")),
        "searcher.source_checkpoint_uuid",
    ),
    (
        "max_length_in_epochs_without_records_per_epoch",
        config_with(searcher=_searcher(name="random", max_trials=4, max_length={"epochs": 2})),
        "searcher.max_length.epochs",
    ),
    (
        "single_with_max_trials",
        config_with(searcher=_searcher(name="single", max_trials=4), hyperparameters=_CONST_HPS),
        "searcher.max_trials",
    ),
    (
        "grid_without_count",
        config_with(searcher=_GRID, hyperparameters={"lr": {"type": "double", "minval": 0.1, "maxval": 0.5}}),
        "hyperparameters.lr.count",
    ),
    (
        "grid_without_count_in_group",
        config_with(
            searcher=_GRID, hyperparameters={"opt": {"lr": {"type": "log", "minval": -3, "maxval": -1}}}
        ),
        "hyperparameters.opt.lr.count",
    ),
    (
        "asha_without_time_metric",
        config_with(searcher=_searcher(name="adaptive_asha", max_trials=8, max_time=100)),
        "searcher.time_metric",
    ),
    (
        "asha_without_max_time",
        config_with(searcher=_searcher(name="adaptive_asha", max_trials=8, time_metric="batches")),
        "searcher.max_time",
    ),
    ("asha_zero_max_time", config_with(searcher=_asha() | {"max_time": 0}), "searcher.max_time"),
    ("asha_unknown_mode", config_with(searcher=_asha(mode="greedy")), "searcher.mode"),
    ("asha_divisor_one", config_with(searcher=_asha(divisor=1)), "searcher.divisor"),
    ("asha_zero_rungs", config_with(searcher=_asha(max_rungs=0)), "searcher.max_rungs"),
    ("asha_bad_bracket_rung", config_with(searcher=_asha(bracket_rungs=[2, 0])), "searcher.bracket_rungs.1"),
    # hyperparameters
    (
        "hp_minval_not_below_maxval",
        config_with(hyperparameters=_hps(lr={"type": "double", "minval": 0.5, "maxval": 0.1})),
        "hyperparameters.lr.minval",
    ),
    (
        "hp_unknown_type",
        config_with(hyperparameters=_hps(lr={"type": "uniform", "minval": 0, "maxval": 1})),
        "hyperparameters.lr.type",
    ),
    (
        "int_hp_with_float_bound",
        config_with(hyperparameters=_hps(layers={"type": "int", "minval": 1.5, "maxval": 4})),
        "hyperparameters.layers.minval",
    ),
    (
        "int_hp_without_maxval",
        config_with(hyperparameters=_hps(layers={"type": "int", "minval": 1})),
        "hyperparameters.layers.maxval",
    ),
    (
        "hp_zero_count",
        config_with(hyperparameters=_hps(layers={"type": "int", "minval": 1, "maxval": 4, "count": 0})),
        "hyperparameters.layers.count",
    ),
    (
        "log_hp_base_one",
        config_with(hyperparameters=_hps(lr={"type": "log", "minval": -4, "maxval": -1, "base": 1})),
        "hyperparameters.lr.base",
    ),
    (
        "log_hp_negative_base",
        config_with(hyperparameters=_hps(lr={"type": "log", "minval": -4, "maxval": -1, "base": -2})),
        "hyperparameters.lr.base",
    ),
    (
        "categorical_without_vals",
        config_with(hyperparameters=_hps(act={"type": "categorical", "vals": []})),
        "hyperparameters.act.vals",
    ),
    (
        "hp_spec_unknown_field",
        config_with(hyperparameters=_hps(lr={"type": "double", "minval": 0, "maxval": 1, "step": 0.1})),
        "hyperparameters.lr.step",
    ),
    (
        "const_hp_without_val",
        config_with(hyperparameters=_hps(seed={"type": "const"})),
        "hyperparameters.seed.val",
    ),
    (
        "nested_hp_error",
        config_with(
            hyperparameters=_hps(optimizer={"momentum": {"type": "double", "minval": 0.9, "maxval": 0.9}})
        ),
        "hyperparameters.optimizer.momentum.minval",
    ),
    # resources
    ("negative_slots_per_trial", config_with(resources={"slots_per_trial": -1}), "resources.slots_per_trial"),
    ("priority_above_99", config_with(resources={"priority": 100}), "resources.priority"),
    ("zero_max_slots", config_with(resources={"max_slots": 0}), "resources.max_slots"),
    ("zero_weight", config_with(resources={"weight": 0}), "resources.weight"),
    ("unreadable_shm_size", config_with(resources={"shm_size": "lots"}), "resources.shm_size"),
    ("empty_resource_pool", config_with(resources={"resource_pool": ""}), "resources.resource_pool"),
    ("unknown_resources_field", config_with(resources={"gpus": 2}), "resources.gpus"),
    # checkpoint storage
    (
        "unknown_storage_type",
        config_with(checkpoint_storage={"type": "gcs", "bucket": "b"}),
        "checkpoint_storage.type",
    ),
    (
        "shared_fs_relative_host_path",
        config_with(checkpoint_storage={"type": "shared_fs", "host_path": "mnt/ckpt"}),
        "checkpoint_storage.host_path",
    ),
    (
        "shared_fs_storage_path_escapes",
        config_with(checkpoint_storage={"type": "shared_fs", "host_path": "/mnt", "storage_path": "../etc"}),
        "checkpoint_storage.storage_path",
    ),
    (
        "s3_without_bucket",
        config_with(checkpoint_storage={"type": "s3", "prefix": "runs"}),
        "checkpoint_storage.bucket",
    ),
    (
        "s3_prefix_escapes",
        config_with(checkpoint_storage=_s3(prefix="runs/../other")),
        "checkpoint_storage.prefix",
    ),
    (
        "s3_endpoint_not_http",
        config_with(checkpoint_storage=_s3(endpoint_url="ftp://minio")),
        "checkpoint_storage.endpoint_url",
    ),
    (
        "s3_with_shared_fs_field",
        config_with(checkpoint_storage=_s3(host_path="/mnt")),
        "checkpoint_storage.host_path",
    ),
    (
        "directory_relative_path",
        config_with(checkpoint_storage={"type": "directory", "container_path": "ckpts"}),
        "checkpoint_storage.container_path",
    ),
    (
        "negative_save_trial_best",
        config_with(checkpoint_storage=_s3(save_trial_best=-1)),
        "checkpoint_storage.save_trial_best",
    ),
    # environment
    (
        "env_entry_without_equals",
        config_with(environment={"environment_variables": ["DEBUG"]}),
        "environment.environment_variables.0",
    ),
    (
        "env_map_bad_name",
        config_with(environment={"environment_variables": {"1BAD": "x"}}),
        "environment.environment_variables.1BAD",
    ),
    (
        "env_map_value_not_text",
        config_with(environment={"environment_variables": {"PORT": 8080}}),
        "environment.environment_variables.PORT",
    ),
    (
        "env_per_device_bad_entry",
        config_with(environment={"environment_variables": {"cuda": ["=x"]}}),
        "environment.environment_variables.cuda.0",
    ),
    (
        "env_variables_wrong_type",
        config_with(environment={"environment_variables": "A=1"}),
        "environment.environment_variables",
    ),
    ("image_wrong_type", config_with(environment={"image": 42}), "environment.image"),
    (
        "image_unknown_device",
        config_with(environment={"image": {"tpu": "tpu/pytorch"}}),
        "environment.image.tpu",
    ),
    ("pod_spec_not_a_mapping", config_with(environment={"pod_spec": ["a"]}), "environment.pod_spec"),
    (
        "unknown_environment_field",
        config_with(environment={"force_pull": True}),
        "environment.force_pull",
    ),
    # reproducibility
    (
        "seed_too_large",
        config_with(reproducibility={"experiment_seed": 2**31}),
        "reproducibility.experiment_seed",
    ),
    (
        "negative_seed",
        config_with(reproducibility={"experiment_seed": -1}),
        "reproducibility.experiment_seed",
    ),
    (
        "seed_not_an_integer",
        config_with(reproducibility={"experiment_seed": 1.5}),
        "reproducibility.experiment_seed",
    ),
]
