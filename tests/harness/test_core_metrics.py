"""The metrics shipper over the HTTP session, with httpx's MockTransport standing in for the network."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from stalwart.core import MetricsError
from stalwart.core._http import AllocationSession
from stalwart.core._metrics import MetricsShipper
from stalwart.core._train import TrainContext, http_sinks

pytestmark = pytest.mark.unit

Handler = Callable[[httpx.Request], httpx.Response]


def _train(handler: Handler, **shipper_args: float) -> tuple[TrainContext, MetricsShipper]:
    session = AllocationSession("http://master.test", "alloc-token", transport=httpx.MockTransport(handler))
    send_batch, send_progress = http_sinks(session, trial_id=7, run_id=2)
    shipper_args.setdefault("backoff_initial", 0.01)
    shipper_args.setdefault("flush_interval", 0.05)
    shipper = MetricsShipper(send_batch, progress_sink=send_progress, **shipper_args)  # type: ignore[arg-type]
    return TrainContext(shipper, log=logging.getLogger("test")), shipper


def test_reporting_never_waits_for_a_slow_master() -> None:
    release = threading.Event()
    received: list[dict[str, object]] = []

    def slow_master(request: httpx.Request) -> httpx.Response:
        release.wait(10)  # a master that takes seconds to answer
        received.append(json.loads(request.content))
        return httpx.Response(204)

    train, shipper = _train(slow_master, batch_size=10)
    worst = 0.0
    for step in range(1, 201):
        started = time.perf_counter()
        train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0})
        worst = max(worst, time.perf_counter() - started)
    # The master has not answered anything yet, and no call waited for it.
    assert received == []
    assert worst < 0.05, f"a report call blocked for {worst * 1000:.1f} ms"
    release.set()
    shipper.close(timeout=10)
    steps = [m["steps_completed"] for body in received for m in body["metrics"]]  # type: ignore[union-attr]
    assert steps == list(range(1, 201))


def test_a_failed_batch_is_retried_with_the_same_batch_id() -> None:
    attempts: list[dict[str, object]] = []

    def flaky_master(request: httpx.Request) -> httpx.Response:
        attempts.append(json.loads(request.content))
        if len(attempts) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(attempts) == 2:
            return httpx.Response(503, json={"title": "restarting"})
        return httpx.Response(204)

    train, shipper = _train(flaky_master)
    train.report_validation_metrics(steps_completed=5, metrics={"acc": 0.5, "nan": float("nan")})
    shipper.flush(timeout=10)
    assert len(attempts) == 3
    assert len({body["batch_id"] for body in attempts}) == 1
    body = attempts[-1]
    assert body["run_id"] == 2
    (metric,) = body["metrics"]  # type: ignore[misc]
    assert metric["group"] == "validation" and metric["steps_completed"] == 5
    assert metric["values"]["acc"] == 0.5
    shipper.close(timeout=10)


def test_nan_and_infinity_travel_as_json_tokens() -> None:
    raw: list[bytes] = []

    def master(request: httpx.Request) -> httpx.Response:
        raw.append(request.content)
        return httpx.Response(204)

    train, shipper = _train(master)
    train.report_training_metrics(
        steps_completed=1, metrics={"a": float("nan"), "b": float("inf"), "c": float("-inf")}
    )
    shipper.close(timeout=10)
    assert b'"a": NaN' in raw[0] and b'"b": Infinity' in raw[0] and b'"c": -Infinity' in raw[0]


def test_each_batch_gets_a_fresh_batch_id() -> None:
    ids: list[str] = []

    def master(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)["batch_id"])
        return httpx.Response(204)

    train, shipper = _train(master, batch_size=2)
    for step in range(1, 7):
        train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0})
        shipper.flush(timeout=10)
    shipper.close(timeout=10)
    assert len(ids) == 6 and len(set(ids)) == 6


def test_a_refused_batch_surfaces_on_the_next_report() -> None:
    def refusing_master(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"title": "Forbidden", "detail": "token revoked"})

    train, shipper = _train(refusing_master)
    train.report_training_metrics(steps_completed=1, metrics={"loss": 1.0})
    with pytest.raises(MetricsError, match="token revoked"):
        shipper.flush(timeout=10)
    # Seen once; later reports go through again.
    train.report_training_metrics(steps_completed=2, metrics={"loss": 1.0})
    with pytest.raises(MetricsError, match=r"steps 2\.\.2"):
        shipper.close(timeout=10)


def test_an_unreachable_master_surfaces_after_the_retry_window_on_the_next_report() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    train, shipper = _train(down, retry_for=0.2)
    train.report_training_metrics(steps_completed=1, metrics={"loss": 1.0})
    deadline = time.monotonic() + 10
    with pytest.raises(MetricsError, match="unreachable"):
        while time.monotonic() < deadline:
            train.report_training_metrics(steps_completed=2, metrics={"loss": 1.0})
            time.sleep(0.02)
    with pytest.raises(MetricsError):  # what is still queued fails the same way, loudly
        shipper.close(timeout=10)


def test_progress_is_sent_with_the_run_id() -> None:
    progress: list[dict[str, object]] = []

    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/progress"):
            progress.append(json.loads(request.content))
        assert request.headers["Authorization"] == "Bearer alloc-token"
        return httpx.Response(204)

    train, shipper = _train(master)
    train.report_progress(0.25)
    train.report_progress(0.5)
    shipper.close(timeout=10)
    assert progress[-1] == {"run_id": 2, "progress": 0.5}
