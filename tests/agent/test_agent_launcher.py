"""The trial launcher with real child processes; ``fake_runner.py`` stands in for the trial runner.

The GPUs are fake (no GPU here): the launcher only turns slot uuids into ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stalwart_agent.launcher import LaunchError, TrialProcess, launch_trial, visible_devices
from stalwart_agent.logs import LogBuffer, LogLine, LogShipper, pump
from stalwart_agent.master import StartAction
from stalwart_agent.slots import Slot

from support import process_gone, wait_for

pytestmark = pytest.mark.integration

FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")
HOLD_TRIAL = Path(__file__).with_name("hold_trial.py")
GPUS = {
    f"GPU-{i}": Slot(index=i, type="cuda", uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3", memory_mb=81559)
    for i in range(3)
}
CPU = {"cpu-uuid": Slot(index=0, type="cpu", uuid="cpu-uuid", name="CPU", memory_mb=1024)}


def start(
    tmp_path: Path, *runner_args: str, slot_uuids: tuple[str, ...] = (), slots: dict[str, Slot] | None = None
) -> TrialProcess:
    action = StartAction("alloc-42", "alloc-secret", trial_id=5, experiment_id=2, slot_uuids=slot_uuids)
    base_env = {**os.environ, "STALWART_AGENT_TOKEN": "agent-secret", "CUDA_VISIBLE_DEVICES": "0,1,2"}
    return launch_trial(
        action,
        master_url="http://master:8080",
        slots=slots if slots is not None else GPUS,
        work_root=tmp_path / "work",
        command=[sys.executable, str(FAKE_RUNNER), *runner_args],
        base_env=base_env,
    )


@pytest.fixture
def trials() -> Iterator[list[TrialProcess]]:
    """Kills whatever a failed test left running."""
    started: list[TrialProcess] = []
    yield started
    for trial in started:
        trial.kill_session()
        trial.process.wait()


def test_runner_sees_only_its_gpus_by_uuid_and_never_the_agent_token(
    tmp_path: Path, trials: list[TrialProcess]
) -> None:
    dump = tmp_path / "env.json"
    trial = start(tmp_path, "--dump-env", str(dump), slot_uuids=("GPU-2", "GPU-0"))
    trials.append(trial)

    assert trial.wait() == 0
    seen = json.loads(dump.read_text())
    env = seen["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-2,GPU-0"
    assert env["STALWART_MASTER"] == "http://master:8080"
    assert env["STALWART_ALLOCATION_ID"] == "alloc-42"
    assert env["STALWART_ALLOCATION_TOKEN"] == "alloc-secret"
    assert (env["STALWART_TRIAL_ID"], env["STALWART_EXPERIMENT_ID"]) == ("5", "2")
    assert "STALWART_AGENT_TOKEN" not in env
    assert "agent-secret" not in json.dumps(env)
    assert Path(seen["cwd"]).parent == tmp_path / "work"
    assert Path(seen["cwd"]).name.startswith("alloc-42-")


@pytest.mark.parametrize(
    "slots", [CPU, {"a": Slot(0, "artificial", "a", "artificial", 0)}], ids=["cpu", "artificial"]
)
def test_cpu_and_artificial_slots_hide_every_gpu(
    tmp_path: Path, trials: list[TrialProcess], slots: dict[str, Slot]
) -> None:
    dump = tmp_path / "env.json"
    trial = start(tmp_path, "--dump-env", str(dump), slot_uuids=tuple(slots), slots=slots)
    trials.append(trial)

    assert trial.wait() == 0
    assert json.loads(dump.read_text())["env"]["CUDA_VISIBLE_DEVICES"] == ""


def test_slots_not_on_this_agent_are_refused() -> None:
    with pytest.raises(LaunchError, match="not on this agent: GPU-9"):
        visible_devices(("GPU-0", "GPU-9"), GPUS)


def test_missing_runner_executable_is_a_launch_error(tmp_path: Path) -> None:
    action = StartAction("alloc-1", "t", trial_id=1, experiment_id=1, slot_uuids=())
    with pytest.raises(LaunchError, match="cannot start the trial runner"):
        launch_trial(
            action, master_url="http://m", slots={}, work_root=tmp_path, command=["/nonexistent/runner"]
        )
    assert list(tmp_path.iterdir()) == []  # its scratch directory is gone too


def test_exit_code_is_reported_and_work_dir_removed(tmp_path: Path, trials: list[TrialProcess]) -> None:
    trial = start(tmp_path, "--exit", "3")
    trials.append(trial)

    assert trial.wait() == 3
    trial.cleanup()
    assert not trial.work_dir.exists()


def test_kill_stops_the_group_with_sigterm_within_the_grace(
    tmp_path: Path, trials: list[TrialProcess]
) -> None:
    pidfile = tmp_path / "runner.pid"
    trial = start(tmp_path, "--pidfile", str(pidfile), "--sleep", "600")
    trials.append(trial)
    wait_for(pidfile.exists, 10, "the runner to start")

    began = time.monotonic()
    trial.kill(grace_seconds=30)

    assert trial.wait() == -signal.SIGTERM
    assert time.monotonic() - began < 10
    assert trial.kill_requested


OWN_GROUP = pytest.mark.parametrize(
    "child_group", [[], ["--child-own-group"]], ids=["child-in-runner-group", "child-in-own-group"]
)


@OWN_GROUP
def test_kill_escalates_to_sigkill_for_a_group_that_ignores_sigterm(
    tmp_path: Path, trials: list[TrialProcess], child_group: list[str]
) -> None:
    pidfile, child_pidfile = tmp_path / "runner.pid", tmp_path / "child.pid"
    trial = start(
        tmp_path,
        "--ignore-term",
        *child_group,
        "--child-pidfile",
        str(child_pidfile),
        "--pidfile",
        str(pidfile),
        "--sleep",
        "600",
    )
    trials.append(trial)
    wait_for(pidfile.exists, 10, "the runner to start")
    child = int(child_pidfile.read_text())
    assert os.getsid(child) == trial.pid  # in the session the SIGKILL sweeps
    assert (os.getpgid(child) == trial.pgid) == (not child_group)

    began = time.monotonic()
    trial.kill(grace_seconds=1.0)
    code = trial.wait()
    elapsed = time.monotonic() - began

    assert code == -signal.SIGKILL
    assert 1.0 <= elapsed < 10, elapsed
    wait_for(lambda: process_gone(child), 10, "the runner's child to die with its group")


@OWN_GROUP
def test_whatever_the_runner_leaves_in_its_session_is_killed_when_it_exits(
    tmp_path: Path, trials: list[TrialProcess], child_group: list[str]
) -> None:
    child_pidfile = tmp_path / "child.pid"
    trial = start(tmp_path, *child_group, "--child-pidfile", str(child_pidfile), "--exit", "0")
    trials.append(trial)

    assert trial.wait() == 0
    child = int(child_pidfile.read_text())
    wait_for(lambda: process_gone(child), 10, "the runner's leftover child to be killed")


def test_output_is_shipped_in_order_in_batches_of_at_most_500(
    tmp_path: Path, trials: list[TrialProcess]
) -> None:
    trial = start(tmp_path, "--stdout-lines", "1234", "--stderr-lines", "3")
    trials.append(trial)
    batches: list[list[LogLine]] = []
    buffer = LogBuffer()
    readers = [
        threading.Thread(target=pump, args=(trial.stdout, "stdout", buffer)),
        threading.Thread(target=pump, args=(trial.stderr, "stderr", buffer)),
    ]
    shipper = LogShipper("alloc-42", buffer, batches.append)
    for thread in readers:
        thread.start()
    shipper.start()

    assert trial.wait() == 0
    for thread in readers:
        thread.join(10)
    buffer.close()
    assert shipper.join(10)

    lines = [line for batch in batches for line in batch]
    assert all(0 < len(batch) <= 500 for batch in batches)
    assert [line["message"] for line in lines if line["stream"] == "stdout"] == [
        f"out {i}" for i in range(1234)
    ]
    assert [line["message"] for line in lines if line["stream"] == "stderr"] == ["err 0", "err 1", "err 2"]
    assert {line["rank"] for line in lines} == {0}
    stamps = [line["ts"] for line in lines if line["stream"] == "stdout"]
    assert stamps == sorted(stamps) and stamps[0].endswith("Z") and "T" in stamps[0]


def test_trial_runner_dies_when_the_agent_is_sigkilled(tmp_path: Path) -> None:
    runner = _hold_then_sigkill(tmp_path, "die")
    wait_for(lambda: process_gone(runner), 10, "the trial runner to die with the agent")


def test_without_the_parent_death_signal_the_runner_would_be_orphaned(tmp_path: Path) -> None:
    """The control for the test above: it fails if the runner dies for some other reason."""
    runner = _hold_then_sigkill(tmp_path, "orphan")
    try:
        # Nothing should happen here, so there is no event to wait for: watch for a second.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not process_gone(runner), "the runner died without PR_SET_PDEATHSIG"
            time.sleep(0.05)
    finally:
        os.killpg(runner, signal.SIGKILL)


def _hold_then_sigkill(tmp_path: Path, mode: str) -> int:
    holder = subprocess.Popen(
        [sys.executable, str(HOLD_TRIAL), str(tmp_path / "work"), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        runner = int(holder.stdout.readline())
        assert psutil.Process(runner).ppid() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    return runner


@pytest.mark.unit
def test_pumped_lines_are_decoded_safely_and_never_carry_nul() -> None:
    buffer = LogBuffer()
    pump(io.BytesIO(b"caf\xc3\xa9\r\nbad \xff byte\nnul\x00here"), "stderr", buffer)
    buffer.close()

    batch = buffer.take(500, 0.0)

    assert batch is not None
    assert [line["message"] for line in batch] == ["caf\u00e9", "bad \ufffd byte", "nul\ufffdhere"]
    assert buffer.take(500, 0.0) is None


@pytest.mark.unit
def test_a_small_batch_waits_at_most_the_delay_and_a_full_one_not_at_all() -> None:
    buffer = LogBuffer()
    for i in range(3):
        buffer.append("stdout", f"line {i}")
    began = time.monotonic()
    assert len(buffer.take(500, 0.2) or []) == 3
    assert 0.2 <= time.monotonic() - began < 5

    for i in range(600):
        buffer.append("stdout", f"line {i}")
    began = time.monotonic()
    assert len(buffer.take(500, 30.0) or []) == 500
    assert time.monotonic() - began < 5


@pytest.mark.unit
def test_the_buffer_keeps_the_newest_lines_when_full() -> None:
    buffer = LogBuffer(limit=3)
    for i in range(5):
        buffer.append("stdout", f"line {i}")
    assert [line["message"] for line in buffer.take(500, 0.0) or []] == ["line 2", "line 3", "line 4"]
    assert buffer.dropped == 2
