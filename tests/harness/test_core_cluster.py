"""The on-cluster Core API pieces against httpx's MockTransport standing in for the master's network.

Covers what the off-cluster tests cannot: the preemption long-poll and its ack, the checkpoint
registration body, restore against the master's manifest, and searcher operations.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid as uuid_lib
from pathlib import Path

import httpx
import pytest

from stalwart.core import CheckpointCorrupted, DistributedContext, PreemptMode
from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._http import AllocationSession
from stalwart.core._preempt import PreemptContext
from stalwart.core._searcher import SearcherContext
from stalwart.core._train import TrainContext

pytestmark = pytest.mark.unit
log = logging.getLogger("test")


def _session(handler: object) -> AllocationSession:
    return AllocationSession(
        "http://master.test:8080",
        "alloc-token",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_preemption_flag_is_set_by_the_long_poll_and_the_first_true_is_acked() -> None:
    polls: list[str] = []
    acks: list[str] = []
    signal = threading.Event()

    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/allocations/a-1/signals/preemption":
            polls.append(request.url.params["timeout_seconds"])
            # A long poll: the answer comes when the signal does, or after the timeout.
            return httpx.Response(200, json={"preempt": signal.wait(0.2)})
        if request.url.path == "/api/v1/allocations/a-1/signals/ack_preemption":
            acks.append(request.method)
            return httpx.Response(204)
        return httpx.Response(404)

    preempt = PreemptContext(
        session=_session(master), allocation_id="a-1", is_chief=True, log=log, poll_timeout=1
    )
    _wait_for(lambda: len(polls) >= 2)
    assert preempt.should_preempt() is False
    assert acks == []
    signal.set()
    _wait_for(preempt.should_preempt)
    assert preempt.should_preempt() is True
    assert acks == ["POST"]  # acknowledged once, on the first True
    assert polls[0] == "1"
    preempt.close()


def test_chief_only_mode_never_polls_on_other_ranks() -> None:
    calls: list[str] = []

    def master(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"preempt": True})

    preempt = PreemptContext(
        session=_session(master), allocation_id="a-1", is_chief=False, mode=PreemptMode.ChiefOnly, log=log
    )
    assert preempt.should_preempt() is False
    assert calls == []


def test_polling_stops_when_the_allocation_is_gone() -> None:
    polls: list[int] = []

    def master(request: httpx.Request) -> httpx.Response:
        polls.append(1)
        return httpx.Response(404, json={"title": "Not Found"})

    preempt = PreemptContext(
        session=_session(master), allocation_id="a-1", is_chief=True, log=log, poll_timeout=1
    )
    assert preempt._thread is not None
    preempt._thread.join(timeout=10)
    assert not preempt._thread.is_alive()
    assert polls == [1]


def _checkpoints(tmp_path: Path, handler: object, parent: str | None = None) -> CheckpointContext:
    return CheckpointContext(
        storage={"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpts"},
        session=_session(handler),
        trial_id=7,
        allocation_id="a-1",
        parent_uuid=parent,
        is_chief=True,
        log=log,
    )


def test_a_checkpoint_is_registered_only_after_its_manifest_exists(tmp_path: Path) -> None:
    registered: list[dict[str, object]] = []
    parent = str(uuid_lib.uuid4())

    def master(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/allocations/a-1/checkpoints"
        body = json.loads(request.content)
        # The manifest must already be committed when the master hears of the checkpoint.
        assert (tmp_path / "ckpts" / "manifests" / f"{body['uuid']}.json").is_file()
        registered.append(body)
        return httpx.Response(201, json=body)

    checkpoints = _checkpoints(tmp_path, master, parent)
    with checkpoints.store_path({"steps_completed": 40, "epoch": 2}) as (path, uuid):
        (path / "model.pt").write_bytes(b"weights")
    (body,) = registered
    assert body["uuid"] == uuid and body["trial_id"] == 7 and body["allocation_id"] == "a-1"
    assert body["steps_completed"] == 40 and body["parent_uuid"] == parent
    assert body["metadata"] == {"steps_completed": 40, "epoch": 2}
    assert body["storage"] == {"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpts"}
    manifest = body["manifest"]
    assert isinstance(manifest, dict) and manifest["uuid"] == uuid and manifest["kind"] == "directory"
    files = {entry["path"]: entry for entry in manifest["files"]}
    assert set(files) == {"metadata.json", "model.pt"} and files["model.pt"]["size"] == 7
    checkpoints.close()


def test_an_exception_inside_store_path_registers_nothing(tmp_path: Path) -> None:
    calls: list[str] = []

    def master(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(201, json={})

    checkpoints = _checkpoints(tmp_path, master)
    with pytest.raises(KeyboardInterrupt), checkpoints.store_path({"steps_completed": 1}) as (path, _uuid):
        (path / "half").write_bytes(b"x")
        raise KeyboardInterrupt
    assert calls == []
    assert not list(tmp_path.glob("ckpts/manifests/*"))
    checkpoints.close()


def test_restore_verifies_against_the_masters_manifest(tmp_path: Path) -> None:
    records: dict[str, dict[str, object]] = {}

    def master(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            records[body["uuid"]] = body
            return httpx.Response(201, json=body)
        uuid = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json=records[uuid]) if uuid in records else httpx.Response(404)

    checkpoints = _checkpoints(tmp_path, master)
    with checkpoints.store_path({"steps_completed": 3}) as (path, good):
        (path / "model.pt").write_bytes(b"good weights")
    with checkpoints.store_path({"steps_completed": 4}) as (path, evil):
        (path / "model.pt").write_bytes(b"evil weights")
    with checkpoints.restore_path(good) as restored:
        assert (restored / "model.pt").read_bytes() == b"good weights"
    assert checkpoints.get_metadata(good) == {"steps_completed": 3}
    # Pointing the stored manifest at other chunks does not fool a restore: the master's copy rules.
    manifests = tmp_path / "ckpts" / "manifests"
    evil_manifest = json.loads((manifests / f"{evil}.json").read_text())
    (manifests / f"{good}.json").write_text(json.dumps({**evil_manifest, "uuid": good}))
    with checkpoints.restore_path(good) as restored:
        assert (restored / "model.pt").read_bytes() == b"good weights"
    files = records[good]["manifest"]["files"]  # type: ignore[index]
    digest = next(entry for entry in files if entry["path"] == "model.pt")["chunks"][0]["digest"]
    (tmp_path / "ckpts" / "chunks" / digest[:2] / digest).write_bytes(b"evil weights")
    with pytest.raises(CheckpointCorrupted, match=r"model\.pt"), checkpoints.restore_path(good):
        pass
    checkpoints.close()


def _searcher(info: dict[str, object], completed: list[dict[str, object]]) -> SearcherContext:
    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/allocations/a-1/info":
            return httpx.Response(200, json=info)
        if request.url.path == "/api/v1/trials/7/searcher/completed":
            completed.append(json.loads(request.content))
            return httpx.Response(204)
        return httpx.Response(404)

    return SearcherContext(
        session=_session(master),
        allocation_id="a-1",
        trial_id=7,
        run_id=3,
        train=TrainContext(None, log=log),
        is_chief=True,
        log=log,
    )


def test_searcher_with_max_length_yields_one_operation_and_reports_completion() -> None:
    completed: list[dict[str, object]] = []
    searcher = _searcher({"searcher": {"max_length": {"batches": 500}}}, completed)
    (op,) = list(searcher.operations())
    assert op.length == 500 and op.unit == "batches"
    op.report_progress(250)
    op.report_completed(0.125)
    assert completed == [{"run_id": 3, "metric": 0.125}]


def test_searcher_without_max_length_yields_nothing_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    searcher = _searcher({"searcher": {"max_length": None}}, [])
    with caplog.at_level(logging.INFO, logger="test"):
        assert list(searcher.operations()) == []
    assert "max_length" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "3", "WORLD_SIZE": "8"}, (3, 8, 3, 8, 0, 1)),
        (
            {
                "RANK": "5",
                "WORLD_SIZE": "8",
                "LOCAL_RANK": "1",
                "LOCAL_WORLD_SIZE": "4",
                "GROUP_RANK": "1",
                "GROUP_WORLD_SIZE": "2",
            },
            (5, 8, 1, 4, 1, 2),
        ),
    ],
)
def test_distributed_context_reads_torchrun_environment(
    env: dict[str, str], expected: tuple[int, ...]
) -> None:
    dist = DistributedContext.from_torch_distributed(env)
    got = (dist.rank, dist.size, dist.local_rank, dist.local_size, dist.cross_rank, dist.cross_size)
    assert got == expected
    assert dist.is_chief is (expected[0] == 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "RANK and WORLD_SIZE"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "not in"),
    ],
)
def test_distributed_context_refuses_bad_environment(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistributedContext.from_torch_distributed(env)


def test_default_distributed_context_is_a_single_chief_process() -> None:
    dist = DistributedContext()
    assert (dist.rank, dist.size, dist.is_chief) == (0, 1, True)
