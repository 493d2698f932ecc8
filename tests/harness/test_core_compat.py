"""Determined's Core API names on ``import stalwart as det``: top-level names, ClusterInfo's shape,
InvalidHP, and the checkpoint calls with Determined's keywords (selector, download_mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import stalwart as det
import stalwart.core
from stalwart.core import _context
from stalwart.core._http import AllocationSession
from stalwart.core._info import read_cluster_info

pytestmark = pytest.mark.unit

CLUSTER_ENV = {
    "STALWART_MASTER": "http://master.test:8080",
    "STALWART_ALLOCATION_ID": "a-1",
    "STALWART_ALLOCATION_TOKEN": "alloc-token",
    "STALWART_TRIAL_ID": "7",
    "STALWART_EXPERIMENT_ID": "3",
    "STALWART_TRIAL_RUN_ID": "2",
    "STALWART_TRIAL_SEED": "42",
    "STALWART_HPARAMS": '{"lr": 0.5}',
    "STALWART_LATEST_CHECKPOINT": "",
    "STALWART_EXPERIMENT_CONFIG": json.dumps(
        {"searcher": {"name": "adaptive_asha", "max_time": 4, "time_metric": "epochs"}, "data": {"k": 1}}
    ),
    "STALWART_SLOT_UUIDS": "gpu-a,gpu-b",
}


def test_import_stalwart_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, stalwart\n"
        "heavy = {'torch', 'numpy', 'httpx', 'pydantic', 'yaml', 'blake3', 'typer', 'rich', 'typing'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('stalwart.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_determined_top_level_names_resolve_lazily_to_ours() -> None:
    assert det.core is stalwart.core
    assert det.InvalidHP is stalwart.core.InvalidHP and issubclass(det.InvalidHP, Exception)
    assert det.ClusterInfo is stalwart.core.ClusterInfo and det.TrialInfo is stalwart.core.TrialInfo
    assert det.get_cluster_info is stalwart.core.get_cluster_info
    assert "%(message)s" in det.LOG_FORMAT
    assert {"core", "get_cluster_info", "InvalidHP", "LOG_FORMAT"} <= set(dir(det))
    with pytest.raises(AttributeError, match="no attribute 'keras'"):
        _ = det.keras  # type: ignore[attr-defined]


def test_get_cluster_info_is_none_off_cluster(off_cluster: Path) -> None:
    assert det.get_cluster_info() is None


def test_cluster_info_has_determined_shape_and_keeps_flat_names() -> None:
    info = read_cluster_info(CLUSTER_ENV)
    assert (info.trial.trial_id, info.trial.experiment_id, info.trial.trial_seed) == (7, 3, 42)
    assert info.trial.hparams == {"lr": 0.5} and info.trial.config["searcher"]["max_time"] == 4
    assert info.trial._trial_run_id == 2 and info.trial._config is info.trial.config
    assert (info.task_type, info.allocation_id) == ("TRIAL", "a-1")
    assert info.master_url == "http://master.test:8080"
    assert info.latest_checkpoint is None and info.user_data == {"k": 1}
    assert info.gpu_uuids == ["gpu-a", "gpu-b"] and info.slot_ids == [0, 1]
    # Our own flat names stay.
    assert (info.trial_id, info.experiment_id, info.hparams) == (7, 3, {"lr": 0.5})
    with pytest.raises(RuntimeError, match="only available on a cluster"):
        _ = read_cluster_info({}).trial


Master = Callable[[httpx.Request], httpx.Response]


def _fake_master(early_exit_status: int, seen: list[dict[str, object]]) -> Master:
    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/trials/7/early_exit":
            seen.append(json.loads(request.content))
            return httpx.Response(early_exit_status, json={"detail": "no such route"})
        if request.url.path.endswith("/signals/preemption"):
            return httpx.Response(404)  # the poller stops on a 404
        return httpx.Response(204)

    return master


@pytest.fixture
def on_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[Master], None]:
    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "STALWART_CHECKPOINT_STORAGE", json.dumps({"type": "directory", "container_path": str(tmp_path)})
    )

    def use(master: Master) -> None:
        def session(url: str, token: str) -> AllocationSession:
            return AllocationSession(url, token, transport=httpx.MockTransport(master))

        monkeypatch.setattr(_context, "AllocationSession", session)

    return use


def test_invalid_hp_on_a_cluster_reports_an_early_exit_and_exits_0(
    on_cluster: Callable[[Master], None],
) -> None:
    seen: list[dict[str, object]] = []
    on_cluster(_fake_master(200, seen))
    with pytest.raises(SystemExit) as exited, det.core.init():
        raise det.InvalidHP("too wide")
    assert exited.value.code == 0
    assert seen == [{"reason": "INVALID_HP", "run_id": 2}]


def test_invalid_hp_propagates_when_the_master_refuses_the_report(
    on_cluster: Callable[[Master], None],
) -> None:
    seen: list[dict[str, object]] = []
    on_cluster(_fake_master(404, seen))
    with pytest.raises(det.InvalidHP), det.core.init():
        raise det.InvalidHP()
    assert len(seen) == 1


def test_report_early_exit_sends_the_reason_name(on_cluster: Callable[[Master], None]) -> None:
    seen: list[dict[str, object]] = []
    on_cluster(_fake_master(204, seen))
    with det.core.init(tensorboard_mode=det.core.TensorboardMode.MANUAL) as core_context:
        core_context.train.report_early_exit(det.core.EarlyExitReason.USER_REQUESTED_STOP)
    assert seen == [{"reason": "USER_REQUESTED_STOP", "run_id": 2}]


def test_experiment_best_validation_asks_about_the_trials_own_experiment(
    on_cluster: Callable[[Master], None],
) -> None:
    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/experiments/3/searcher/best_searcher_validation_metric":
            return httpx.Response(200, json={"metric": 0.125})
        return _fake_master(204, [])(request)

    on_cluster(master)
    with det.core.init() as core_context:
        assert core_context.train.get_experiment_best_validation() == 0.125


def test_experiment_best_validation_is_none_off_cluster(off_cluster: Path) -> None:
    with det.core.init() as core_context:
        assert core_context.train.get_experiment_best_validation() is None


def test_invalid_hp_off_cluster_propagates(off_cluster: Path) -> None:
    with pytest.raises(det.InvalidHP), det.core.init() as core_context:
        core_context.train.report_early_exit(det.core.EarlyExitReason.INVALID_HP)  # only logged
        raise det.InvalidHP()


def test_searcher_operation_length_falls_back_to_max_time(on_cluster: Callable[[Master], None]) -> None:
    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/allocations/a-1/info":
            return httpx.Response(200, json={"searcher": {"max_length": None}})
        return _fake_master(204, [])(request)

    on_cluster(master)
    with det.core.init() as core_context:
        (op,) = list(core_context.searcher.operations(det.core.SearcherMode.ChiefOnly))
        assert (op.length, op.unit) == (4, "epochs")
        assert core_context.searcher.get_configured_units() == "epochs"
        op.report_progress(2)
        op.report_completed(0.5)


def test_checkpoint_calls_take_determined_keywords_and_selectors(off_cluster: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.pt").write_bytes(b"weights")
    (source / "sub" / "optimizer.pt").write_bytes(b"moments")
    (source / "notes.txt").write_text("skip me")
    with det.core.init() as core_context:
        checkpoint = core_context.checkpoint
        with checkpoint.store_path({"steps_completed": 1}, False) as (path, first):
            (path / "state").write_text("1")
        pt_only = lambda p: p.endswith(".pt")  # noqa: E731
        uuid = checkpoint.upload(source, {"steps_completed": 2}, shard=False, selector=pt_only)
        assert checkpoint.get_metadata(uuid)["steps_completed"] == 2

        checkpoint.download(uuid, tmp_path / "all", det.core.DownloadMode.NoSharedDownload)
        stored = {p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.*")}
        assert stored == {"model.pt", "sub/optimizer.pt", "metadata.json"}

        checkpoint.download(uuid, tmp_path / "some", selector=lambda p: p.startswith("sub/"))
        assert [p.name for p in (tmp_path / "some").rglob("*") if p.is_file()] == ["optimizer.pt"]

        mode = det.core.DownloadMode.LocalWorkersShareDownload
        with checkpoint.restore_path(first, download_mode=mode, selector=lambda p: p == "state") as path:
            assert [p.name for p in path.iterdir()] == ["state"]

        checkpoint.delete(first)
        with pytest.raises(det.core.CheckpointNotFound), checkpoint.restore_path(first):
            pass
