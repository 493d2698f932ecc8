"""The `stalwart` CLI end to end: typer's CliRunner (and the real console script for exit codes)
against a real master process on real PostgreSQL and Redis.

Every failure must be exactly one `Error: ...` line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from stalwart.cli.main import app

from support import SIMPLE_CONFIG, as_json, wait_for

pytestmark = pytest.mark.e2e

CONFIG = SIMPLE_CONFIG.replace("{description}", "made by test_cli_experiments")
BAD_CONFIG = CONFIG.replace("name: single", "name: nonsense-searcher").replace(
    "learning_rate: 0.05", "lr: {}"
)
STALWART = Path(sys.executable).with_name("stalwart")
Cli = Callable[..., Result]


def one_error_line(result: Result, *fragments: str, code: int = 1) -> str:
    """Assert the CLI failed the house way and return its error line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def cli(live_master: Any, config_dir: Path) -> Cli:
    """Run the CLI in-process against the live master with a private token cache."""
    runner = CliRunner()
    env = {
        "STALWART_MASTER": live_master.url,
        "STALWART_CONFIG_DIR": str(config_dir),
        "STALWART_TOKEN": None,
        "STALWART_PASSWORD": None,
        "COLUMNS": "200",
    }

    def run(*args: str, input: str | None = None, **extra_env: str | None) -> Result:
        return runner.invoke(app, list(args), input=input, env={**env, **extra_env})

    return run


@pytest.fixture
def admin_cli(cli: Cli, live_master: Any) -> Cli:
    result = cli("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    assert result.exit_code == 0, result.stderr
    return cli


@pytest.fixture
def label() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def model(tmp_path: Path, label: str) -> tuple[Path, Path]:
    """A real model directory and a config file for it."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "train.py").write_text(f"print('hello from {label}')\n")
    config = tmp_path / "const.yaml"
    config.write_text(CONFIG.format(name=f"cli-{label}", label=label))
    return config, model_dir


def create(cli: Cli, model: tuple[Path, Path], *flags: str) -> dict[str, Any]:
    result = cli("experiment", "create", str(model[0]), str(model[1]), "--json", *flags)
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_login_whoami_logout_and_a_revoked_token(cli: Cli, live_master: Any, config_dir: Path) -> None:
    login = cli("user", "login", live_master.admin_username, STALWART_PASSWORD=live_master.admin_password)
    assert login.exit_code == 0 and f"as {live_master.admin_username}" in login.stdout
    assert json.loads((config_dir / "auth.json").read_text())[live_master.url]["username"] == "admin"
    token = json.loads((config_dir / "auth.json").read_text())[live_master.url]["token"]
    assert (config_dir / "auth.json").stat().st_mode & 0o077 == 0

    who = cli("u", "whoami")
    assert who.exit_code == 0 and who.stdout.startswith(f"{live_master.admin_username} (admin)")
    assert as_json(cli("user", "whoami", "--json"))["username"] == live_master.admin_username

    out = cli("user", "logout")
    assert out.exit_code == 0 and "Logged out" in out.stdout
    one_error_line(cli("user", "whoami"), f"not logged in to {live_master.url}", "stalwart user login")
    # The old token was revoked on the master, not just forgotten here.
    one_error_line(cli("user", "whoami", STALWART_TOKEN=token), "stalwart user login")
    assert cli("user", "logout").exit_code == 0  # logging out twice is harmless


def test_login_prompts_for_a_hidden_password_and_refuses_a_wrong_one(cli: Cli, live_master: Any) -> None:
    prompted = cli("user", "login", input=f"{live_master.admin_username}\n{live_master.admin_password}\n")
    assert prompted.exit_code == 0, prompted.stderr
    assert live_master.admin_password not in prompted.stdout
    line = one_error_line(cli("user", "login", "admin", "--password", "wrong-password"))
    assert "stalwart user login" not in line


def test_user_create_and_list(admin_cli: Cli) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = as_json(admin_cli("user", "create", name, "--password", "long-enough-password", "--json"))
    assert created["username"] == name and created["admin"] is False
    assert name in {u["username"] for u in as_json(admin_cli("user", "list", "--json"))}
    assert name in admin_cli("user", "list").stdout
    one_error_line(admin_cli("user", "create", name, "--password", "long-enough-password"), name)


def test_create_describe_and_config(admin_cli: Cli, model: tuple[Path, Path], label: str) -> None:
    result = admin_cli("experiment", "create", str(model[0]), str(model[1]))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Created experiment ")
    exp_id = result.stdout.split()[2]
    assert "Context" in result.stderr  # progress goes to stderr, stdout stays the result

    paused = create(admin_cli, model, "--paused")
    assert paused["state"] == "PAUSED" and paused["context_sha256"]
    described = as_json(admin_cli("e", "describe", exp_id, "--json"))
    assert described["state"] == "ACTIVE" and described["labels"] == [label]
    assert described["context_sha256"] == paused["context_sha256"]  # same bytes, stored once
    table = admin_cli("e", "describe", exp_id)
    assert table.exit_code == 0 and f"cli-{label}" in table.stdout and "ACTIVE" in table.stdout

    original = admin_cli("e", "config", exp_id)
    assert original.exit_code == 0 and original.stdout == model[0].read_text()
    assert as_json(admin_cli("e", "config", exp_id, "--json"))["searcher"]["name"] == "single"


def test_create_prints_one_warning_line_per_ignored_determined_field(
    admin_cli: Cli, model: tuple[Path, Path]
) -> None:
    config = model[0]
    config.write_text(
        config.read_text()
        + "profiling: {enabled: true}\nbind_mounts: [{host_path: /data, container_path: /data}]\n"
    )
    result = admin_cli("experiment", "create", str(config), str(model[1]), "--paused")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert sorted(w.split(":")[1].strip() for w in warnings) == ["bind_mounts", "profiling"], result.stderr
    assert all("ignored" in w for w in warnings), warnings
    assert result.stdout.startswith("Created experiment ")  # stdout stays the result


def test_list_filters_and_json(admin_cli: Cli, model: tuple[Path, Path], label: str) -> None:
    active = create(admin_cli, model)
    paused = create(admin_cli, model, "--paused")

    page = as_json(admin_cli("e", "list", "--label", label, "--json"))
    assert page["total"] == 2 and {e["id"] for e in page["items"]} == {active["id"], paused["id"]}
    only_paused = as_json(admin_cli("e", "list", "--label", label, "--state", "PAUSED", "--json"))
    assert [e["id"] for e in only_paused["items"]] == [paused["id"]]
    both = as_json(
        admin_cli("e", "list", "--label", label, "--state", "paused", "--state", "ACTIVE", "--json")
    )
    assert both["total"] == 2
    asc = as_json(admin_cli("e", "list", "--label", label, "--order-by", "id", "--asc", "--json"))
    assert [e["id"] for e in asc["items"]] == [active["id"], paused["id"]]
    second = as_json(
        admin_cli(
            "e",
            "list",
            "--label",
            label,
            "--order-by",
            "id",
            "--asc",
            "--limit",
            "1",
            "--offset",
            "1",
            "--json",
        )
    )
    assert [e["id"] for e in second["items"]] == [paused["id"]]
    assert as_json(admin_cli("e", "list", "--label", label, "--name", label.upper(), "--json"))["total"] == 2
    assert as_json(admin_cli("e", "list", "--label", label, "--owner", "admin", "--json"))["total"] == 2
    assert as_json(admin_cli("e", "list", "--label", label, "--archived", "--json"))["total"] == 0

    table = admin_cli("e", "list", "--label", label)
    assert table.exit_code == 0 and f"cli-{label}" in table.stdout and "PAUSED" in table.stdout
    assert "1 of 2 shown" in admin_cli("e", "ls", "--label", label, "--limit", "1").stdout
    assert admin_cli("e", "list", "--limit", "0").exit_code == 2  # usage error, typer's own


def test_every_lifecycle_verb_and_an_illegal_one(admin_cli: Cli, model: tuple[Path, Path]) -> None:
    exp = str(create(admin_cli, model, "--paused")["id"])

    def state(*args: str) -> str:
        return str(as_json(admin_cli("experiment", *args, exp, "--json"))["state"])

    assert state("activate") == "ACTIVE"
    assert state("pause") == "PAUSED"
    assert "is ACTIVE" in admin_cli("e", "activate", exp).stdout
    assert state("cancel") in {"STOPPING_CANCELED", "CANCELED"}

    one_error_line(admin_cli("e", "pause", exp), "CANCELED")
    assert as_json(admin_cli("e", "archive", exp, "--json"))["archived"] is True
    assert "(archived)" in admin_cli("e", "archive", exp).stdout
    assert as_json(admin_cli("e", "unarchive", exp, "--json"))["archived"] is False

    killed = str(create(admin_cli, model)["id"])
    assert as_json(admin_cli("e", "kill", killed, "--json"))["state"] in {"STOPPING_KILLED", "CANCELED"}
    one_error_line(admin_cli("e", "archive", str(create(admin_cli, model)["id"])), "ACTIVE")


def test_label_and_set(admin_cli: Cli, model: tuple[Path, Path], label: str) -> None:
    exp = str(create(admin_cli, model)["id"])
    assert as_json(admin_cli("e", "label", "add", exp, "keep", "--json"))["labels"] == [label, "keep"]
    assert "keep" in admin_cli("e", "label", "add", exp, "keep").stdout
    assert as_json(admin_cli("e", "label", "remove", exp, label, "--json"))["labels"] == ["keep"]
    assert as_json(admin_cli("e", "set", "name", exp, "renamed-by-cli", "--json"))["name"] == "renamed-by-cli"
    assert admin_cli("e", "set", "description", exp, "fresh words").exit_code == 0
    described = as_json(admin_cli("e", "describe", exp, "--json"))
    assert (described["name"], described["description"]) == ("renamed-by-cli", "fresh words")


def test_delete_asks_first_then_removes(admin_cli: Cli, model: tuple[Path, Path]) -> None:
    exp = str(create(admin_cli, model)["id"])
    assert admin_cli("e", "cancel", exp).exit_code == 0
    declined = admin_cli("e", "delete", exp, input="n\n")
    assert declined.exit_code == 1 and "Traceback" not in declined.stderr
    assert as_json(admin_cli("e", "describe", exp, "--json"))["state"] == "CANCELED"

    deleted = admin_cli("e", "delete", exp, "--yes")
    assert deleted.exit_code == 0 and "DELETING" in deleted.stdout
    wait_for(lambda: admin_cli("e", "describe", exp).exit_code != 0, 30, "the deletion job")
    one_error_line(admin_cli("e", "describe", exp), "not found")


def test_wait_exit_codes(admin_cli: Cli, model: tuple[Path, Path]) -> None:
    canceled = str(create(admin_cli, model)["id"])
    admin_cli("e", "cancel", canceled)
    waited = admin_cli("e", "wait", canceled, "--poll", "0.2")
    assert waited.exit_code == 1 and "CANCELED" in waited.stdout
    waited_json = admin_cli("e", "wait", canceled, "--json")
    assert waited_json.exit_code == 1 and json.loads(waited_json.stdout)["state"] == "CANCELED"

    paused = str(create(admin_cli, model, "--paused")["id"])
    started = time.monotonic()
    one_error_line(admin_cli("e", "wait", paused, "--timeout", "0.5", "--poll", "0.1"), "PAUSED", code=3)
    assert time.monotonic() - started < 10


def test_bad_input_is_one_line_naming_the_problem(
    admin_cli: Cli, model: tuple[Path, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG)
    result = admin_cli("e", "create", str(bad), str(model[1]))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("Error: ") and "searcher" in first
    assert all(line.startswith("  ") for line in rest)  # extra field paths, one per line

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsearcher: [unclosed\n")
    one_error_line(admin_cli("e", "create", str(broken), str(model[1])), "line")
    one_error_line(admin_cli("e", "create", str(tmp_path / "nope.yaml"), str(model[1])), "nope.yaml")
    one_error_line(
        admin_cli("e", "create", str(model[0]), str(tmp_path / "no-dir")), "no-dir", "does not exist"
    )
    one_error_line(admin_cli("e", "describe", "2000000000"), "not found")


def test_context_too_large_is_one_line(admin_cli: Cli, model: tuple[Path, Path], monkeypatch: Any) -> None:
    import stalwart.context

    real = stalwart.context.build_context
    monkeypatch.setattr(stalwart.context, "build_context", lambda path: real(path, max_bytes=10))
    one_error_line(admin_cli("e", "create", str(model[0]), str(model[1])), "model", ".stalwartignore")


def test_interrupt_and_unexpected_errors_never_show_a_traceback(admin_cli: Cli, monkeypatch: Any) -> None:
    from stalwart.client import Client

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "list_experiments", interrupted)
    result = admin_cli("e", "list")
    assert result.exit_code == 130 and "Traceback" not in result.stderr and "Interrupted" in result.stderr

    monkeypatch.setattr(Client, "list_experiments", lambda *a, **k: 1 / 0)
    one_error_line(admin_cli("e", "list"), "ZeroDivisionError")


def test_master_info(cli: Cli, live_master: Any) -> None:
    info = as_json(cli("master", "info", "--json"))  # needs no login
    assert info["version"] and info["cluster_id"]
    table = cli("master", "info")
    assert table.exit_code == 0 and live_master.url in table.stdout and info["version"] in table.stdout


def test_not_logged_in_is_one_line(cli: Cli, live_master: Any) -> None:
    one_error_line(cli("e", "list"), f"not logged in to {live_master.url}", "run `stalwart user login`")


# --- the installed console script, as a user runs it --------------------------------------------


def run_script(*args: str, env: dict[str, str], name: str = "stalwart") -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "STALWART_TOKEN"} | env
    return subprocess.run(
        [str(STALWART.with_name(name)), *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_console_script_exit_codes_and_unreachable_master(live_master: Any, tmp_path: Path) -> None:
    env = {"STALWART_CONFIG_DIR": str(tmp_path / "cfg"), "STALWART_MASTER": live_master.url}
    assert run_script("--help", env=env, name="stw").returncode == 0

    login = run_script(
        "user",
        "login",
        live_master.admin_username,
        env={**env, "STALWART_PASSWORD": live_master.admin_password},
    )
    assert login.returncode == 0, login.stderr
    listed = run_script("e", "list", "--json", "--limit", "1", env=env)
    assert listed.returncode == 0 and "total" in json.loads(listed.stdout)
    missing = run_script("e", "describe", "2000000000", env=env)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    usage = run_script("e", "describe", "not-a-number", env=env)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr

    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for args in (["master", "info"], ["-m", dead, "e", "list"]):
            result = run_script(*args, env={**env, "STALWART_MASTER": dead, "STALWART_TOKEN": "x"})
            assert result.returncode == 1, result.stderr
            assert result.stderr.startswith(f"Error: cannot reach the master at {dead}: ")
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
