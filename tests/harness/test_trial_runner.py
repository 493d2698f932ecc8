"""The trial runner (``python -m stalwart.exec.run``) as a real process.

The master here is a small ``http.server`` stub serving only the two routes the runner reads
(allocation info and the context). That stub is allowed in the runner's unit tests only; the
end-to-end tests run it against a real master and agent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stalwart.exec._extract import UnsafeContext, extract_context
from stalwart.exec.run import EXIT_NOT_FOUND, EXIT_RUNNER_FAILED, entrypoint_argv

pytestmark = pytest.mark.unit


def _tarball(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            member.mode = 0o644
            archive.addfile(member, io.BytesIO(content))
        for member in extra or []:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


class StubMaster:
    """Serves GET /api/v1/allocations/{aid}/info and GET /api/v1/contexts/{sha256}."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.contexts: dict[str, bytes] = {}
        self.tokens: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.tokens.append(self.headers.get("Authorization", ""))
                if self.path == f"/api/v1/allocations/{stub.info.get('allocation_id')}/info":
                    self._send(200, json.dumps(stub.info).encode(), "application/json")
                elif (
                    self.path.startswith("/api/v1/contexts/") and self.path.rsplit("/", 1)[1] in stub.contexts
                ):
                    self._send(200, stub.contexts[self.path.rsplit("/", 1)[1]], "application/gzip")
                else:
                    self._send(404, b'{"title": "Not Found"}', "application/problem+json")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve_trial(self, files: dict[str, bytes], entrypoint: str | list[str], **info: Any) -> None:
        data = _tarball(files)
        sha = hashlib.sha256(data).hexdigest()
        self.contexts[sha] = data
        self.info = {
            "allocation_id": "alloc-1",
            "trial_id": 11,
            "experiment_id": 3,
            "run_id": 2,
            "trial_seed": 777,
            "hparams": {"lr": 0.1, "layers": [1, 2]},
            "config": {"checkpoint_storage": {"type": "shared_fs", "host_path": "/mnt/ckpt"}},
            "latest_checkpoint": None,
            "steps_completed": 0,
            "context_sha256": sha,
            "entrypoint": entrypoint,
            "slot_uuids": ["GPU-a", "GPU-b"],
            "searcher": {"max_length": None},
            **info,
        }


@pytest.fixture
def master() -> Iterator[StubMaster]:
    stub = StubMaster()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def _runner_env(master: StubMaster, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    env.update(
        STALWART_MASTER=master.url,
        STALWART_ALLOCATION_ID="alloc-1",
        STALWART_ALLOCATION_TOKEN="tok-123",
        STALWART_WORK_DIR=str(work),
    )
    return env


def _run(master: StubMaster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stalwart.exec.run", *args],
        env=_runner_env(master, tmp_path / "work"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


DUMP_ENV = b"""
import json, os, sys
out = {k: v for k, v in os.environ.items() if k.startswith("STALWART_")}
out["cwd"] = os.getcwd()
out["executable"] = sys.executable
out["argv"] = sys.argv[1:]
with open(os.path.join(os.environ["OUT_DIR"], "env.json"), "w") as f:
    json.dump(out, f)
sys.exit(int(sys.argv[1]))
"""


def test_runner_exports_trial_variables_runs_in_the_context_and_returns_the_exit_code(
    master: StubMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master.serve_trial({"train.py": DUMP_ENV, "pkg/data.txt": b"hello"}, "python3 train.py 3")
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    result = _run(master, tmp_path)
    assert result.returncode == 3, result.stderr
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["STALWART_TRIAL_ID"] == "11" and seen["STALWART_EXPERIMENT_ID"] == "3"
    assert seen["STALWART_TRIAL_RUN_ID"] == "2" and seen["STALWART_TRIAL_SEED"] == "777"
    assert json.loads(seen["STALWART_HPARAMS"]) == {"lr": 0.1, "layers": [1, 2]}
    assert seen["STALWART_LATEST_CHECKPOINT"] == ""
    assert json.loads(seen["STALWART_CHECKPOINT_STORAGE"]) == {"type": "shared_fs", "host_path": "/mnt/ckpt"}
    assert seen["STALWART_SLOT_UUIDS"] == "GPU-a,GPU-b"
    assert seen["STALWART_ALLOCATION_TOKEN"] == "tok-123"
    assert seen["argv"] == ["3"]
    # python3 resolved to the runner's interpreter; the work dir was fresh and is gone afterwards.
    assert Path(seen["executable"]) == Path(sys.executable)
    assert Path(seen["cwd"]).parent == tmp_path / "work"
    assert not Path(seen["cwd"]).exists()
    assert set(master.tokens) == {"Bearer tok-123"}


def test_runner_passes_a_list_entrypoint_as_is_and_keeps_the_work_dir_when_asked(
    master: StubMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = "6f1c1c1e-1f5a-4c8b-9d2e-0a1b2c3d4e5f"
    master.serve_trial({"train.py": DUMP_ENV}, [sys.executable, "train.py", "0"], latest_checkpoint=ckpt)
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    result = _run(master, tmp_path, "--keep-work-dir")
    assert result.returncode == 0, result.stderr
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["STALWART_LATEST_CHECKPOINT"] == ckpt
    assert (Path(seen["cwd"]) / "train.py").is_file()


def test_runner_reports_a_missing_entrypoint_as_127(master: StubMaster, tmp_path: Path) -> None:
    master.serve_trial({"train.py": b""}, "no-such-program-xyz --flag")
    assert _run(master, tmp_path).returncode == EXIT_NOT_FOUND


def test_runner_refuses_a_context_whose_bytes_do_not_match_the_digest(
    master: StubMaster, tmp_path: Path
) -> None:
    master.serve_trial({"train.py": b"print(1)"}, "python3 train.py")
    sha = master.info["context_sha256"]
    master.contexts[sha] = _tarball({"train.py": b"print(2)"})
    result = _run(master, tmp_path)
    assert result.returncode == EXIT_RUNNER_FAILED
    assert "different bytes" in result.stderr


def test_runner_without_its_environment_fails_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    result = subprocess.run(
        [sys.executable, "-m", "stalwart.exec.run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_RUNNER_FAILED
    assert "STALWART_MASTER" in result.stderr


SIGNAL_AWARE = b"""
import os, signal, sys, time
out = os.environ["OUT_DIR"]
def on_term(signum, frame):
    with open(os.path.join(out, "signals.txt"), "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    sys.exit(42)
signal.signal(signal.SIGTERM, on_term)
open(os.path.join(out, "ready"), "w").close()
time.sleep(60)
"""


@pytest.mark.parametrize("target", ["runner", "runner's process group"])
def test_sigterm_is_forwarded_to_the_trial_exactly_once(
    master: StubMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    master.serve_trial({"train.py": SIGNAL_AWARE}, "python3 train.py")
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    runner = subprocess.Popen(
        [sys.executable, "-m", "stalwart.exec.run"],
        env=_runner_env(master, tmp_path / "work"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,  # as the agent starts it
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert runner.poll() is None, runner.stdout.read() if runner.stdout else ""
            assert time.monotonic() < deadline, "trial never became ready"
            time.sleep(0.02)
        if target == "runner":
            runner.send_signal(signal.SIGTERM)
        else:
            os.killpg(runner.pid, signal.SIGTERM)
        assert runner.wait(timeout=30) == 42
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    assert (tmp_path / "signals.txt").read_text() == "SIGTERM\n"


# --- extraction and entrypoints, in process ---------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    member.size = 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("/etc/evil"), "absolute"),
        (_member("../evil"), r"'\.\.'"),
        (_member("a/../../evil"), r"'\.\.'"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
        (_member("link", tarfile.SYMTYPE, "../../x"), "points outside"),
        (_member("hard", tarfile.LNKTYPE, "../x"), "points outside"),
        (_member("dev", tarfile.CHRTYPE), "device"),
        (_member("fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_unsafe_context_entries_are_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    data = _tarball({"a_first.py": b"print()"}, extra=[member])
    destination = tmp_path / "work"
    destination.mkdir()
    with pytest.raises(UnsafeContext, match=reason):
        extract_context(data, destination)
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_safe_context_is_extracted_with_its_directories(tmp_path: Path) -> None:
    data = _tarball({"train.py": b"print()", "pkg/model.py": b"X = 1"})
    assert sorted(extract_context(data, tmp_path)) == ["pkg/model.py", "train.py"]
    assert (tmp_path / "pkg" / "model.py").read_bytes() == b"X = 1"


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("python3 train.py --lr 0.1", [sys.executable, "train.py", "--lr", "0.1"]),
        ("python -m pkg.main", [sys.executable, "-m", "pkg.main"]),
        ("bash -c 'echo hi there'", ["bash", "-c", "echo hi there"]),
        (["python3", "a b.py"], [sys.executable, "a b.py"]),
        (["/usr/bin/env", "x"], ["/usr/bin/env", "x"]),
    ],
)
def test_entrypoint_strings_are_split_like_a_shell_and_python_is_this_interpreter(
    entrypoint: str | list[str], expected: list[str]
) -> None:
    assert entrypoint_argv(entrypoint) == expected
