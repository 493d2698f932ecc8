"""Off-cluster Core API end to end: metrics file, checkpoints in the local chunk store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import stalwart.core

pytestmark = pytest.mark.unit


def _metrics_lines(root: Path) -> list[dict[str, object]]:
    (path,) = root.glob("run-*/metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_off_cluster_metrics_are_written_as_json_lines_with_nan_and_infinity(off_cluster: Path) -> None:
    assert stalwart.core.get_cluster_info() is None
    with stalwart.core.init() as core_context:
        assert core_context.info.trial_id is None
        assert core_context.info.hparams == {}
        for step in range(1, 4):
            core_context.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
        core_context.train.report_validation_metrics(
            steps_completed=3, metrics={"nan": float("nan"), "inf": float("inf"), "ninf": -math.inf}
        )
        core_context.train.report_metrics("inference", steps_completed=3, metrics={"latency_ms": 4})
        core_context.train.report_progress(0.5)
    lines = _metrics_lines(off_cluster)
    assert [(line["group"], line["steps_completed"]) for line in lines] == [
        ("training", 1),
        ("training", 2),
        ("training", 3),
        ("validation", 3),
        ("inference", 3),
    ]
    assert lines[1]["values"] == {"loss": 0.5}
    values = lines[3]["values"]
    assert isinstance(values, dict)
    assert math.isnan(values["nan"]) and values["inf"] == math.inf and values["ninf"] == -math.inf


def test_report_copies_the_metrics_dict_so_later_changes_do_not_leak(off_cluster: Path) -> None:
    metrics = {"loss": 1.0}
    with stalwart.core.init() as core_context:
        core_context.train.report_training_metrics(steps_completed=1, metrics=metrics)
        metrics["loss"] = 99.0
    assert _metrics_lines(off_cluster)[0]["values"] == {"loss": 1.0}


@pytest.mark.parametrize(
    ("steps", "metrics", "error"),
    [
        (-1, {"loss": 1.0}, ValueError),
        ("3", {"loss": 1.0}, TypeError),
        (1, {"loss": "high"}, TypeError),
        (1, {"flag": True}, TypeError),
        (1, [("loss", 1.0)], TypeError),
    ],
)
def test_bad_reports_are_refused_on_the_calling_thread(
    off_cluster: Path, steps: object, metrics: object, error: type[Exception]
) -> None:
    with stalwart.core.init() as core_context, pytest.raises(error):
        core_context.train.report_training_metrics(steps_completed=steps, metrics=metrics)  # type: ignore[arg-type]


def test_report_metrics_refuses_a_group_with_a_dot_and_progress_outside_0_1(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with pytest.raises(ValueError, match="group"):
            core_context.train.report_metrics("a.b", steps_completed=1, metrics={"x": 1})
        with pytest.raises(ValueError, match="progress"):
            core_context.train.report_progress(1.5)


def _manifest(root: Path, uuid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "checkpoints" / "manifests" / f"{uuid}.json").read_text())
    return data


def _chunk_file(root: Path, manifest: dict[str, Any], path: str) -> Path:
    (entry,) = [entry for entry in manifest["files"] if entry["path"] == path]
    digest = entry["chunks"][0]["digest"]
    return root / "checkpoints" / "chunks" / digest[:2] / digest


def test_store_path_commits_with_a_manifest_and_restore_verifies_it(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with core_context.checkpoint.store_path({"steps_completed": 7, "note": "x"}) as (path, uuid):
            (path / "weights.bin").write_bytes(b"\x00\x01" * 1000)
            (path / "sub").mkdir()
            (path / "sub" / "opt.json").write_text("{}")
        assert not path.exists()  # the staging directory is gone once the files are chunked
        manifest = _manifest(off_cluster, uuid)
        assert manifest["steps_completed"] == 7 and manifest["kind"] == "directory"
        assert manifest["metadata"] == {"steps_completed": 7, "note": "x"}
        assert sorted(entry["path"] for entry in manifest["files"]) == [
            "metadata.json",
            "sub/opt.json",
            "weights.bin",
        ]
        with core_context.checkpoint.restore_path(uuid) as restored:
            assert (restored / "weights.bin").read_bytes() == b"\x00\x01" * 1000
            assert json.loads((restored / "metadata.json").read_text()) == {"steps_completed": 7, "note": "x"}
        assert not restored.exists()
        assert core_context.checkpoint.get_metadata(uuid)["steps_completed"] == 7


def test_restore_detects_a_flipped_byte_and_names_the_file(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with core_context.checkpoint.store_path({"steps_completed": 3}) as (path, uuid):
            (path / "model.pt").write_bytes(bytes(range(256)) * 4)
        chunk = _chunk_file(off_cluster, _manifest(off_cluster, uuid), "model.pt")
        data = bytearray(chunk.read_bytes())
        data[100] ^= 0x01
        chunk.write_bytes(bytes(data))
        with (
            pytest.raises(stalwart.core.CheckpointCorrupted, match=r"'model\.pt' chunk 0"),
            core_context.checkpoint.restore_path(uuid),
        ):
            pytest.fail("restore_path yielded a corrupted checkpoint")


def test_restore_detects_a_missing_chunk(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with core_context.checkpoint.store_path({"steps_completed": 3}) as (path, uuid):
            (path / "model.pt").write_bytes(b"weights")
        _chunk_file(off_cluster, _manifest(off_cluster, uuid), "model.pt").unlink()
        with (
            pytest.raises(stalwart.core.CheckpointCorrupted, match="missing"),
            core_context.checkpoint.restore_path(uuid),
        ):
            pass


def test_exception_inside_store_path_leaves_no_checkpoint(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with (
            pytest.raises(RuntimeError, match="disk on fire"),
            core_context.checkpoint.store_path({"steps_completed": 2}) as (path, uuid),
        ):
            (path / "half.bin").write_bytes(b"half")
            raise RuntimeError("disk on fire")
        assert not path.exists()
        assert not list((off_cluster / "checkpoints").glob("manifests/*.json"))
        with pytest.raises(stalwart.core.CheckpointNotFound), core_context.checkpoint.restore_path(uuid):
            pass


def test_chunks_without_a_manifest_are_not_a_checkpoint(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with core_context.checkpoint.store_path({"steps_completed": 2}) as (path, uuid):
            (path / "x").write_text("x")
        (off_cluster / "checkpoints" / "manifests" / f"{uuid}.json").unlink()
        with (
            pytest.raises(stalwart.core.CheckpointNotFound, match="never committed"),
            core_context.checkpoint.restore_path(uuid),
        ):
            pass


def test_store_path_requires_steps_completed_and_restore_refuses_a_non_uuid(off_cluster: Path) -> None:
    with stalwart.core.init() as core_context:
        with (
            pytest.raises(stalwart.core.CheckpointError, match="steps_completed"),
            core_context.checkpoint.store_path({"epoch": 1}),
        ):
            pass
        with (
            pytest.raises(stalwart.core.CheckpointNotFound),
            core_context.checkpoint.restore_path("../../etc"),
        ):
            pass


def test_off_cluster_reads_hparams_and_latest_checkpoint_from_the_environment(
    off_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STALWART_HPARAMS", '{"lr": 0.5}')
    with (
        stalwart.core.init() as core_context,
        core_context.checkpoint.store_path({"steps_completed": 1}) as (_path, uuid),
    ):
        pass
    monkeypatch.setenv("STALWART_LATEST_CHECKPOINT", uuid)
    with stalwart.core.init() as core_context:
        assert core_context.info.hparams == {"lr": 0.5}
        assert core_context.info.latest_checkpoint == uuid
        assert core_context.checkpoint.get_metadata(uuid) == {"steps_completed": 1}
        assert list(core_context.searcher.operations()) == []
        assert core_context.preempt.should_preempt() is False


def test_malformed_hparams_name_the_variable(off_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_HPARAMS", "[1, 2]")
    with pytest.raises(stalwart.core.ClusterInfoError, match="STALWART_HPARAMS"):
        stalwart.core.init()


def test_non_chief_ranks_report_nothing(off_cluster: Path) -> None:
    dist = stalwart.core.DistributedContext(rank=1, size=2)
    with stalwart.core.init(distributed=dist) as core_context:
        core_context.train.report_training_metrics(steps_completed=1, metrics={"loss": 1.0})
        with (
            pytest.raises(stalwart.core.CheckpointError, match="chief"),
            core_context.checkpoint.store_path({"steps_completed": 1}),
        ):
            pass
    assert not list(off_cluster.glob("run-*/metrics.jsonl"))


def test_checkpoint_storage_argument_overrides_the_local_directory(off_cluster: Path, tmp_path: Path) -> None:
    with stalwart.core.init(checkpoint_storage=tmp_path / "mine") as core_context:
        core_context.train.report_training_metrics(steps_completed=1, metrics={"loss": 1.0})
        with core_context.checkpoint.store_path({"steps_completed": 1}) as (_path, uuid):
            pass
    assert (tmp_path / "mine" / "checkpoints" / "manifests" / f"{uuid}.json").is_file()
    assert list((tmp_path / "mine").glob("run-*/metrics.jsonl"))
