"""The trial launcher with real child processes; ``fake_runner.py`` stands in for the trial runner.

The GPUs are fake (no GPU here): the launcher only turns slot uuids into ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stalwart_agent.launcher import (
    LaunchError,
    TrialProcess,
    launch_trial,
    process_start_ticks,
    recover,
    visible_devices,
)
from stalwart_agent.logs import MAX_LINE_BYTES, LogLine, LogTail, decode_line, split_lines
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
    allocation_dir = tmp_path / "work" / "allocations" / "alloc-42"
    assert Path(seen["cwd"]) == allocation_dir / "scratch"
    assert env["STALWART_EXIT_FILE"] == str(allocation_dir / "exit")


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
    assert list((tmp_path / "allocations").iterdir()) == []  # its directory is gone too


def test_exit_code_is_reported_and_work_dir_removed(tmp_path: Path, trials: list[TrialProcess]) -> None:
    trial = start(tmp_path, "--exit", "3")
    trials.append(trial)

    assert trial.wait() == 3
    assert trial.directory.read_exit_code() == 3
    trial.cleanup()
    assert not trial.work_dir.exists()


def test_the_state_file_names_the_runner_by_pid_and_start_time(
    tmp_path: Path, trials: list[TrialProcess]
) -> None:
    pidfile = tmp_path / "runner.pid"
    trial = start(tmp_path, "--pidfile", str(pidfile), "--sleep", "600", slot_uuids=("GPU-1",))
    trials.append(trial)
    wait_for(pidfile.exists, 10, "the runner to start")

    state = json.loads(trial.directory.state.read_text())

    assert state["allocation_id"] == "alloc-42" and state["pid"] == trial.pid
    assert state["start_ticks"] == process_start_ticks(trial.pid) is not None
    assert (state["trial_id"], state["experiment_id"], state["slot_uuids"]) == (5, 2, ["GPU-1"])
    # The same pid with another start time is another process: never adopted, never signalled.
    impostor = TrialProcess("alloc-42", trial.directory, trial.pid, state["start_ticks"] + 1)
    assert not impostor.alive()
    assert not impostor.signal_group(signal.SIGTERM) and not impostor.kill_session()
    assert trial.alive()


def test_a_signal_exit_without_exit_file_is_recorded_by_the_agent(
    tmp_path: Path, trials: list[TrialProcess]
) -> None:
    pidfile = tmp_path / "runner.pid"
    trial = start(tmp_path, "--pidfile", str(pidfile), "--sleep", "600")
    trials.append(trial)
    wait_for(pidfile.exists, 10, "the runner to start")

    trial.kill_session()

    assert trial.wait() == -signal.SIGKILL
    # A restarted agent reading this before the exit was reported sees the same code.
    assert trial.directory.read_exit_code() == -signal.SIGKILL


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
    tail = LogTail("alloc-42", trial.directory.root, lambda lines, batch_id: batches.append(lines) or True)
    tail.start()

    assert trial.wait() == 0
    tail.finish()
    assert tail.join(10)

    lines = [line for batch in batches for line in batch]
    assert all(0 < len(batch) <= 500 for batch in batches)
    assert [line["message"] for line in lines if line["stream"] == "stdout"] == [
        f"out {i}" for i in range(1234)
    ]
    assert [line["message"] for line in lines if line["stream"] == "stderr"] == ["err 0", "err 1", "err 2"]
    assert {line["rank"] for line in lines} == {0}
    stamps = [line["ts"] for line in lines if line["stream"] == "stdout"]
    assert stamps == sorted(stamps) and stamps[0].endswith("Z") and "T" in stamps[0]


def test_the_runner_outlives_a_sigkilled_agent_and_a_new_one_adopts_it(tmp_path: Path) -> None:
    runner = _hold_then_sigkill(tmp_path, "--ticks", "100000", "--tick-every", "0.01")
    try:
        # Nothing should happen to it, so there is no event to wait for: watch for a second.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not process_gone(runner), "the runner died with the agent"
            time.sleep(0.05)
        (adopted,) = recover(tmp_path / "work")
        assert adopted.adopted and adopted.pid == runner and adopted.alive()
        assert adopted.allocation_id == "alloc-hold"
        size = adopted.directory.stdout.stat().st_size
        wait_for(lambda: adopted.directory.stdout.stat().st_size > size, 10, "the runner to keep writing")

        adopted.kill(grace_seconds=5)
        assert adopted.wait() is None  # SIGTERM killed it before it could write an exit code
        assert process_gone(runner)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner, signal.SIGKILL)


def test_an_adopted_runner_that_ignores_sigterm_is_killed_with_its_session(tmp_path: Path) -> None:
    child_pidfile = tmp_path / "child.pid"
    runner = _hold_then_sigkill(
        tmp_path,
        "--ignore-term",
        "--child-own-group",
        "--child-pidfile",
        str(child_pidfile),
        "--sleep",
        "600",
    )
    try:
        wait_for(child_pidfile.exists, 10, "the runner's child")
        child = int(child_pidfile.read_text())
        (adopted,) = recover(tmp_path / "work")

        began = time.monotonic()
        adopted.kill(grace_seconds=0.5)
        assert adopted.wait() == -signal.SIGKILL
        assert 0.5 <= time.monotonic() - began < 10
        wait_for(lambda: process_gone(runner) and process_gone(child), 10, "the whole session to die")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner, signal.SIGKILL)


def test_an_adopted_runner_that_exits_reports_its_exit_file(tmp_path: Path) -> None:
    runner = _hold_then_sigkill(tmp_path, "--sleep", "1", "--exit", "4")
    (adopted,) = recover(tmp_path / "work")
    assert adopted.wait() == 4
    wait_for(lambda: process_gone(runner), 10, "the runner to be gone")
    # After it ended, a further restart finds it ended, with the same code.
    (again,) = recover(tmp_path / "work")
    assert not again.alive() and again.wait() == 4


def test_recover_drops_directories_without_a_state_file(tmp_path: Path) -> None:
    (tmp_path / "allocations" / "half-made" / "scratch").mkdir(parents=True)
    assert recover(tmp_path) == []
    assert not (tmp_path / "allocations" / "half-made").exists()


def _hold_then_sigkill(tmp_path: Path, *runner_args: str) -> int:
    holder = subprocess.Popen(
        [sys.executable, str(HOLD_TRIAL), str(tmp_path / "work"), *runner_args],
        stdout=subprocess.PIPE,
        text=True,
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
def test_lines_are_split_and_decoded_safely_and_never_carry_nul() -> None:
    data = b"caf\xc3\xa9\r\nbad \xff byte\nnul\x00here"
    assert [decode_line(raw) for _, raw in split_lines(data, final=True)] == [
        "caf\u00e9",
        "bad \ufffd byte",
        "nul\ufffdhere",
    ]
    # An unterminated last line waits for its end unless this is the final read.
    assert [raw for _, raw in split_lines(data, final=False)] == [b"caf\xc3\xa9\r\n", b"bad \xff byte\n"]
    long = b"x" * (MAX_LINE_BYTES + 10)
    assert [len(raw) for _, raw in split_lines(long, final=False)] == [MAX_LINE_BYTES]
    assert sum(used for used, _ in split_lines(data + b"\n", final=False)) == len(data) + 1


class _Master:
    """Stores batches by id, as the master does: a repeated id adds nothing."""

    def __init__(self) -> None:
        self.batches: dict[str, list[LogLine]] = {}
        self.calls = 0
        self.fail_after_storing: int | None = None

    def deliver(self, lines: list[LogLine], batch_id: str) -> bool:
        self.calls += 1
        self.batches.setdefault(batch_id, lines)
        # With fail_after_storing: stored, but the agent never learned it (it dies here).
        return self.fail_after_storing != self.calls

    def messages(self) -> list[str]:
        return [line["message"] for lines in self.batches.values() for line in lines]


@pytest.mark.unit
def test_a_restarted_tail_neither_loses_nor_repeats_lines(tmp_path: Path) -> None:
    stdout = tmp_path / "stdout.log"
    stdout.write_bytes(b"".join(f"line {i}\n".encode() for i in range(10)))
    master = _Master()
    master.fail_after_storing = 2

    first = LogTail("a", tmp_path, master.deliver, max_lines=4, interval=0.01)
    first.start()
    assert first.join(10) and first.abandoned  # it "died" right after its second batch was stored
    with stdout.open("ab") as file:
        file.write(b"line 10\nline 11 (unterminated)")

    second = LogTail("a", tmp_path, master.deliver, max_lines=4, interval=0.01)
    second.start()
    second.finish()
    assert second.join(10) and not second.abandoned

    assert master.messages() == [f"line {i}" for i in range(11)] + ["line 11 (unterminated)"]
    # The batch in flight when the first tail died was sent again under its id.
    assert master.calls == len(master.batches) + 1
    state = json.loads((tmp_path / "logs.json").read_text())
    assert state == {"stdout": stdout.stat().st_size, "stderr": 0, "pending": None}


@pytest.mark.unit
def test_the_tail_waits_for_output_and_ships_it_while_the_trial_runs(tmp_path: Path) -> None:
    master = _Master()
    tail = LogTail("a", tmp_path, master.deliver, interval=0.01)
    tail.start()
    try:
        (tmp_path / "stderr.log").write_bytes(b"first\n")
        wait_for(lambda: master.messages() == ["first"], 10, "the first line")
        with (tmp_path / "stderr.log").open("ab") as file:
            file.write(b"second\n")
        wait_for(lambda: master.messages() == ["first", "second"], 10, "the second line")
    finally:
        tail.finish()
        assert tail.join(10)


def test_the_real_runner_leaves_its_exit_code_in_the_exit_file(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    env["STALWART_EXIT_FILE"] = str(exit_file)  # nothing else: the runner fails before starting a trial
    result = subprocess.run(
        [sys.executable, "-m", "stalwart.exec.run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 125
    assert exit_file.read_text() == "125\n"
    assert [p.name for p in tmp_path.iterdir()] == ["exit"]  # no temporary file left behind
