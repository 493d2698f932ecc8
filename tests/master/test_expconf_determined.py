"""A Determined 0.38 experiment config loads unchanged: every field is honoured, or accepted with one
warning naming it, or (storage we cannot write to) refused at the field; typos stay errors."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
import yaml

from stalwart_master.errors import Invalid
from stalwart_master.expconf import parse_experiment_config

# Every field of Determined's experiment config (schemas/expconf/v0), with valid, non-default values.
FULL: dict[str, Any] = {
    "name": "mnist",
    "description": "every field",
    "labels": ["a", "b"],
    "data": {"url": "https://example.com/mnist"},
    "workspace": "ws",
    "project": "proj",
    "entrypoint": "python3 -m determined.launch.torch_distributed python3 train.py",
    "scheduling_unit": 50,
    "records_per_epoch": 6000,
    "max_restarts": 2,
    "min_validation_period": {"epochs": 1},
    "min_checkpoint_period": {"batches": 500},
    "perform_initial_validation": True,
    "checkpoint_policy": "all",
    "checkpoint_storage": {
        "type": "shared_fs",
        "host_path": "/mnt/checkpoints",
        "storage_path": "runs",
        "propagation": "rprivate",
        "save_experiment_best": 1,
        "save_trial_best": 1,
        "save_trial_latest": 1,
    },
    "hyperparameters": {
        "global_batch_size": 64,
        "lr": {"type": "log", "minval": -4, "maxval": -1, "base": 10},
        "layers": {"type": "int", "minval": 1, "maxval": 4},
    },
    "searcher": {
        "name": "adaptive_asha",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_trials": 16,
        "max_concurrent_trials": 4,
        "time_metric": "batches",
        "max_time": 1000,
        "mode": "standard",
        "divisor": 4,
        "max_rungs": 5,
        "max_length": {"batches": 1000},
    },
    "resources": {
        "slots_per_trial": 1,
        "max_slots": 4,
        "weight": 2.0,
        "priority": 10,
        "resource_pool": "default",
        "shm_size": "4G",
        "is_single_node": False,
        "devices": ["/dev/fuse:/dev/fuse:rwm", {"host_path": "/dev/a", "container_path": "/dev/a"}],
        "agent_label": "gpu",
        "native_parallel": True,
        "slots": 2,
    },
    "environment": {
        "image": {"cpu": "img:cpu", "cuda": "img:cuda", "rocm": "img:rocm"},
        "environment_variables": {"cpu": ["A=1"], "cuda": ["A=2"], "rocm": ["A=3"]},
        "force_pull_image": True,
        "registry_auth": {"username": "u", "password": "hunter2", "serveraddress": "https://r"},
        "pod_spec": {"metadata": {"labels": {"team": "ml"}}},
        "add_capabilities": ["SYS_ADMIN"],
        "drop_capabilities": ["NET_RAW"],
        "proxy_ports": [{"proxy_port": 6006, "proxy_tcp": False}],
        "ports": {"tensorboard": 6006},
    },
    "reproducibility": {"experiment_seed": 42},
    "preemption_timeout": 600,
    "bind_mounts": [{"host_path": "/data", "container_path": "/data", "read_only": True}],
    "profiling": {"enabled": True, "begin_on_batch": 0, "end_after_batch": 100},
    "optimizations": {"aggregation_frequency": 2, "mixed_precision": "O1"},
    "debug": True,
    "integrations": {"webhooks": {"webhook_name": ["slack"]}},
    "security": {"kerberos": {"config_file": "/etc/krb5.conf"}},
    "slurm": {"slots_per_node": 4, "gpu_type": "a100", "sbatch_args": ["--time=1:00:00"]},
    "pbs": {"slots_per_node": 4, "pbsbatch_args": ["-l walltime=1:00:00"]},
    "tensorboard_storage": {"type": "shared_fs", "host_path": "/tb"},
    "data_layer": {"type": "shared_fs"},
    "internal": {"native": None},
    "log_policies": [
        {"name": "oom", "pattern": ".*CUDA out of memory.*", "action": {"type": "cancel_retries"}}
    ],
    "retention_policy": {"log_retention_days": 30},
}

# Accepted, not acted on: each gets exactly one warning.
IGNORED = {
    "bind_mounts",
    "profiling",
    "optimizations",
    "debug",
    "integrations",
    "security",
    "slurm",
    "pbs",
    "tensorboard_storage",
    "data_layer",
    "internal",
    "log_policies",
    "retention_policy",
    "environment.image",
    "environment.image.rocm",
    "environment.environment_variables.rocm",
    "environment.force_pull_image",
    "environment.registry_auth",
    "environment.add_capabilities",
    "environment.drop_capabilities",
    "environment.proxy_ports",
    "environment.ports",
    "environment.pod_spec",
    "resources.shm_size",
    "resources.devices",
    "resources.agent_label",
    "resources.native_parallel",
    "resources.slots",
    "resources.is_single_node",
    "checkpoint_storage.propagation",
}


def parse(config: dict[str, Any]) -> Any:
    return parse_experiment_config(yaml.safe_dump(config))


def errors_of(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(Invalid) as caught:
        parse(config)
    return {e.path: e.message for e in caught.value.errors}


def test_a_full_determined_config_is_accepted_with_one_warning_per_ignored_field() -> None:
    parsed = parse(FULL)
    fields = [w.field for w in parsed.warnings]
    assert sorted(fields) == sorted(IGNORED)  # exactly one each
    assert all(w.message.startswith("ignored: ") for w in parsed.warnings)
    assert not any("hunter2" in w.message for w in parsed.warnings)
    # Honoured fields are kept; ignored ones are not stored (pod_spec, image, shm_size stay for later).
    data = parsed.data
    assert data["scheduling_unit"] == 50 and data["perform_initial_validation"] is True
    assert (data["workspace"], data["project"]) == ("ws", "proj")
    assert data["environment"]["image"] == {"cpu": "img:cpu", "cuda": "img:cuda"}
    assert "registry_auth" not in data["environment"] and "bind_mounts" not in data
    assert "propagation" not in data["checkpoint_storage"]


def test_defaults_of_ignored_fields_are_not_warned_about() -> None:
    config = {k: FULL[k] for k in ("entrypoint", "searcher", "hyperparameters")}
    config |= {"debug": False, "bind_mounts": [], "internal": None, "resources": {"is_single_node": True}}
    assert parse(config).warnings == ()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("bind_mounts",), [{"host_path": "/a"}], "bind_mounts.0.container_path"),
        (("profiling",), {"enabled": "yes"}, "profiling.enabled"),
        (("retention_policy",), {"log_retention_days": 40000}, "retention_policy.log_retention_days"),
        (("environment", "proxy_ports"), [{"proxy_port": 0}], "environment.proxy_ports.0.proxy_port"),
        (("debug",), "true", "debug"),
        (("scheduling_unit",), 0, "scheduling_unit"),
    ],
)
def test_invalid_values_of_determined_fields_are_still_errors_at_their_path(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    config = copy.deepcopy(FULL)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    assert message in errors_of(config)


@pytest.mark.parametrize("kind", ["gcs", "azure"])
def test_storage_we_cannot_write_to_is_refused_at_its_type(kind: str) -> None:
    config = {**FULL, "checkpoint_storage": {"type": kind, "bucket": "b", "container": "c"}}
    errors = errors_of(config)
    assert list(errors) == ["checkpoint_storage.type"]
    assert errors["checkpoint_storage.type"].startswith(f"{kind} storage is not supported")


def test_a_typo_is_an_error_with_a_suggestion() -> None:
    errors = errors_of({**FULL, "schedulng_unit": 5, "environment": {"force_pul_image": True}})
    assert errors["schedulng_unit"] == "unknown field (did you mean 'scheduling_unit'?)"
    assert errors["environment.force_pul_image"] == "unknown field (did you mean 'force_pull_image'?)"


def test_workspace_and_project_come_together() -> None:
    config = {k: v for k, v in FULL.items() if k != "project"}
    assert errors_of(config) == {"project": "required when workspace is set"}


# --- through the API --------------------------------------------------------------------------


BASE = {
    "entrypoint": "python3 train.py",
    "hyperparameters": {"lr": 0.1},
    "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 10}},
}


@pytest.mark.integration
def test_create_returns_the_warnings_and_honours_workspace_and_project(admin) -> None:  # type: ignore[no-untyped-def]
    ws_name = f"ws-{uuid.uuid4().hex[:8]}"
    workspace = admin.post("/api/v1/workspaces", json={"name": ws_name}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "vision"}).json()["id"]
    config = {**BASE, "workspace": ws_name, "project": "vision", "debug": True}
    response = admin.post("/api/v1/experiments", json={"config": yaml.safe_dump(config)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["project_id"] == project
    assert body["warnings"] == [{"field": "debug", "message": body["warnings"][0]["message"]}]

    missing = {**config, "project": "nope"}
    response = admin.post("/api/v1/experiments", json={"config": yaml.safe_dump(missing)})
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["project"]


@pytest.mark.integration
def test_trials_of_a_paused_experiment_are_paused_and_active_again_on_activate(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.post("/api/v1/experiments", json={"config": yaml.safe_dump(BASE), "paused": True})
    assert response.status_code == 201, response.text
    experiment = response.json()["id"]

    def trial_states() -> list[str]:
        return [t["state"] for t in admin.get(f"/api/v1/experiments/{experiment}/trials").json()]

    assert trial_states() == ["PAUSED"]
    assert admin.post(f"/api/v1/experiments/{experiment}/activate").json()["state"] == "ACTIVE"
    assert trial_states() == ["ACTIVE"]
    assert admin.post(f"/api/v1/experiments/{experiment}/pause").json()["state"] == "PAUSED"
    assert trial_states() == ["PAUSED"]
    assert admin.post(f"/api/v1/experiments/{experiment}/kill").status_code == 200
    assert admin.post(f"/api/v1/experiments/{experiment}/activate").status_code == 409
    assert "PAUSED" not in trial_states()
