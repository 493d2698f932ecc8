"""Who may do what, through the CLI against a real master: API tokens, workspace roles, deactivated
accounts, password changes, the audit log and registry deletion.

Each user gets a CLI with a private token cache; every refusal must be one `Error:` line.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_support import report_checkpoint, start_trial
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from stalwart.cli.main import app
from stalwart.client import Client, TooManyRequestsError, UnauthorizedError
from stalwart_master.db.session import get_engine
from stalwart_master.settings import get_settings

from support import SIMPLE_CONFIG, as_json, one_error_line

pytestmark = pytest.mark.e2e

Cli = Callable[..., Result]
PASSWORD = "a-long-enough-password"


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def cli_for(live_master: Any, tmp_path: Path) -> Callable[[str | None], Cli]:
    """A CLI with its own token cache; logged in as the given user (password PASSWORD, or the
    admin's), or not at all with None."""
    runner = CliRunner()

    def make(username: str | None) -> Cli:
        env = {
            "STALWART_MASTER": live_master.url,
            "STALWART_CONFIG_DIR": str(tmp_path / f"config-{username or 'nobody'}-{uuid.uuid4().hex[:6]}"),
            "STALWART_TOKEN": None,
            "STALWART_PASSWORD": None,
            "COLUMNS": "250",
        }

        def run(*args: str, input: str | None = None, **extra_env: str | None) -> Result:
            return runner.invoke(app, list(args), input=input, env={**env, **extra_env})

        if username is not None:
            password = live_master.admin_password if username == live_master.admin_username else PASSWORD
            ok(run("user", "login", username, "--password", password))
        return run

    return make


@pytest.fixture
def admin(cli_for: Callable[[str | None], Cli], live_master: Any) -> Cli:
    return cli_for(live_master.admin_username)


@pytest.fixture
def new_user(admin: Cli) -> Callable[[], str]:
    def make() -> str:
        name = f"trust-{uuid.uuid4().hex[:8]}"
        ok(admin("user", "create", name, "--password", PASSWORD))
        return name

    return make


def create_experiment(cli: Cli, tmp_path: Path, *flags: str) -> dict[str, Any]:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "train.py").write_text("print('hello')\n")
    config = tmp_path / "const.yaml"
    label = uuid.uuid4().hex[:8]
    config.write_text(SIMPLE_CONFIG.format(name=f"trust-{label}", description="test_cli_trust", label=label))
    data: dict[str, Any] = as_json(cli("experiment", "create", str(config), str(model_dir), "--json", *flags))
    return data


def test_api_token_create_use_list_and_revoke(admin: Cli, live_master: Any) -> None:
    created = admin("token", "create", "--description", "nightly job", "--expires-in-days", "2")
    secret = ok(created).strip()
    # Only the secret goes to stdout, so `export STALWART_TOKEN=$(stalwart token create)` works.
    assert len(secret.splitlines()) == 1 and "not shown again" in created.stderr

    as_token = functools.partial(admin, STALWART_CONFIG_DIR="/nonexistent", STALWART_TOKEN=secret)
    assert ok(as_token("user", "whoami")).startswith(f"{live_master.admin_username} (admin)")

    listed = [t for t in as_json(as_token("token", "list", "--json")) if t["description"] == "nightly job"]
    assert len(listed) == 1 and listed[0]["kind"] == "api" and listed[0]["current"] is True
    assert listed[0]["expires_at"] and "token" not in listed[0]
    table = ok(admin("token", "list"))
    assert "nightly job" in table and secret not in table
    assert secret not in ok(admin("token", "list", "--json", "--all"))

    token_id = listed[0]["id"]
    assert ok(admin("token", "revoke", str(token_id))).strip() == f"Revoked token {token_id}"
    one_error_line(as_token("user", "whoami"), "revoked token", "stalwart user login")
    one_error_line(admin("token", "revoke", "2147483647"), "not found")

    as_json_created = as_json(admin("token", "create", "--json"))
    assert as_json_created["token"] and as_json_created["kind"] == "api"
    ok(admin("token", "revoke", str(as_json_created["id"])))


def test_workspace_roles_decide_what_a_member_sees_and_may_do(
    admin: Cli, cli_for: Callable[[str | None], Cli], new_user: Callable[[], str], tmp_path: Path
) -> None:
    ws_name = f"ws-{uuid.uuid4().hex[:8]}"
    workspace = as_json(admin("workspace", "create", ws_name, "--json"))
    ws = str(workspace["id"])
    assert workspace["role"] == "admin"
    project = as_json(admin("project", "create", ws, "vision", "-d", "image models", "--json"))
    assert project["workspace_id"] == workspace["id"]
    assert "vision" in ok(admin("workspace", "describe", ws)) and "vision" in ok(admin("p", "list", ws))

    exp = create_experiment(admin, tmp_path, "--project", str(project["id"]))
    exp_id = str(exp["id"])
    assert exp["project_id"] == project["id"]
    in_ws = as_json(admin("experiment", "list", "--workspace", ws, "--json"))["items"]
    assert [e["id"] for e in in_ws] == [exp["id"]]

    name = new_user()
    user = cli_for(name)
    # No role: the workspace and what is inside do not exist for this user.
    one_error_line(user("experiment", "describe", exp_id), f"experiment {exp_id} not found")
    one_error_line(user("workspace", "describe", ws), "not found")
    assert ws_name not in ok(user("workspace", "list"))

    assert ok(admin("workspace", "assign-role", ws, name, "viewer")).startswith(f"{name} is now viewer")
    members = {m["username"]: m["role"] for m in as_json(admin("w", "list-members", ws, "--json"))}
    assert members[name] == "viewer"
    assert as_json(user("experiment", "describe", exp_id, "--json"))["id"] == exp["id"]  # viewers read
    one_error_line(user("experiment", "kill", exp_id), "Not allowed", "workspace admin")
    one_error_line(user("project", "create", ws, "mine"), "Not allowed")

    ok(admin("workspace", "assign-role", ws, name, "editor"))
    other = as_json(user("project", "create", ws, "mine", "--json"))
    # Editors change only what they own; the workspace admin moves anything inside.
    one_error_line(user("experiment", "move", exp_id, str(other["id"])), "Not allowed", "owner")
    assert (
        as_json(admin("experiment", "move", exp_id, str(other["id"]), "--json"))["project_id"] == other["id"]
    )
    ids = [
        e["id"]
        for e in as_json(admin("experiment", "list", "--project", str(other["id"]), "--json"))["items"]
    ]
    assert ids == [exp["id"]]

    ok(admin("workspace", "unassign-role", ws, name))
    one_error_line(user("experiment", "describe", exp_id), "not found")

    ok(admin("workspace", "archive", ws))
    one_error_line(admin("project", "create", ws, "late"), "archived")
    ok(admin("workspace", "unarchive", ws))
    renamed = as_json(admin("workspace", "edit", ws, "--name", f"{ws_name}-2", "--json"))
    assert renamed["name"] == f"{ws_name}-2"
    one_error_line(admin("workspace", "delete", ws, "--yes"), "Conflict", "still holds")
    ok(admin("experiment", "kill", exp_id))
    ok(admin("project", "delete", str(project["id"]), "--yes"))
    one_error_line(admin("project", "describe", str(project["id"])), "not found")


def test_deactivation_and_password_changes_end_tokens(
    admin: Cli, cli_for: Callable[[str | None], Cli], new_user: Callable[[], str]
) -> None:
    name = new_user()
    user = cli_for(name)
    secret = ok(user("token", "create", "-d", "ci")).strip()
    as_token = functools.partial(user, STALWART_TOKEN=secret)
    ok(as_token("user", "whoami"))
    one_error_line(user("user", "deactivate", name), "Not allowed", "cluster admin")

    assert "deactivated" in ok(admin("user", "deactivate", name))
    assert as_json(admin("user", "list", "--json"))  # the listing still works for the admin
    one_error_line(as_token("user", "whoami"), "revoked token")
    one_error_line(user("user", "whoami"), "revoked token")
    one_error_line(cli_for(None)("user", "login", name, "--password", PASSWORD))
    assert as_json(admin("user", "activate", name, "--json"))["active"] is True
    one_error_line(as_token("user", "whoami"), "revoked token")  # revoked tokens stay revoked

    user = cli_for(name)
    secret = ok(user("token", "create")).strip()
    new_password = "another-long-password"
    one_error_line(
        user("user", "change-password", input=f"wrong-password\n{new_password}\n{new_password}\n"),
        "current password is wrong",
    )
    changed = user("user", "change-password", input=f"{PASSWORD}\n{new_password}\n{new_password}\n")
    assert "Password changed" in ok(changed) and new_password not in changed.stdout
    ok(user("user", "whoami"))  # this session stays, the API token does not
    one_error_line(functools.partial(user, STALWART_TOKEN=secret)("user", "whoami"), "revoked token")
    ok(cli_for(None)("user", "login", name, "--password", new_password))

    # An admin's reset ends every session of the user.
    ok(admin("user", "change-password", name, "--password", PASSWORD))
    one_error_line(user("user", "whoami"), "revoked token")
    assert as_json(admin("user", "edit", name, "--admin", "--json"))["admin"] is True
    assert as_json(admin("user", "edit", name, "--no-admin", "--json"))["admin"] is False


def test_audit_log_shows_logins_and_changes_to_admins_only(
    admin: Cli, cli_for: Callable[[str | None], Cli], new_user: Callable[[], str], live_master: Any
) -> None:
    name = new_user()
    user = cli_for(name)
    workspace = as_json(user("workspace", "create", f"audit-{uuid.uuid4().hex[:8]}", "--json"))

    logins = as_json(admin("audit", "list", "--user", name, "--action", "auth.", "--json"))
    assert logins["total"] >= 1 and {e["action"] for e in logins["items"]} == {"auth.login"}
    created = as_json(admin("audit", "list", "--user", name, "--action", "workspace.create", "--json"))
    assert [e["target_id"] for e in created["items"]] == [str(workspace["id"])]
    assert created["items"][0]["outcome"] == "ok"
    creates = as_json(admin("audit", "list", "--user", live_master.admin_username, "--since", "1h", "--json"))
    assert "user.create" in {e["action"] for e in creates["items"]}
    table = ok(admin("audit", "list", "--user", name, "--limit", "5"))
    assert "workspace.create" in table and "auth.login" in table

    one_error_line(admin("audit", "list", "--since", "last tuesday"), "--since")
    one_error_line(user("audit", "list"), "Not allowed")


@pytest.fixture(scope="module")
def sessions(live_master: Any) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(get_settings().database.sqlalchemy_url), expire_on_commit=False)


def test_model_delete_version_and_delete(
    admin: Cli, live_master: Any, sessions: sessionmaker[Session]
) -> None:
    with Client(live_master.url) as sdk, httpx.Client(base_url=live_master.url, timeout=30) as http:
        sdk.login(live_master.admin_username, live_master.admin_password)
        exp = sdk.create_experiment(
            f"name: trust-{uuid.uuid4().hex[:8]}\nentrypoint: python3 train.py\n"
            "searcher: {name: single, metric: loss}\n"
        )
        ckpt = report_checkpoint(http, start_trial(sessions, exp.id), steps=1)
    name = f"trust-model-{uuid.uuid4().hex[:8]}"
    ok(admin("model", "create", name))
    ok(admin("model", "register-version", name, ckpt))

    one_error_line(admin("model", "delete-version", name, "9", "--yes"), "Not found", "no version 9")
    assert "Aborted" in admin("model", "delete-version", name, "1", input="n\n").stderr
    assert ok(admin("model", "delete-version", name, "1", "--yes")).strip() == f"Deleted {name}:1"
    assert as_json(admin("model", "describe", name, "--json"))["versions"] == []
    assert as_json(admin("checkpoint", "describe", ckpt, "--json"))["model_versions"] == []

    ok(admin("model", "register-version", name, ckpt))
    assert admin("model", "delete", name, input="n\n").exit_code != 0
    ok(admin("model", "describe", name))
    ok(admin("model", "delete", name, "--yes"))
    one_error_line(admin("model", "describe", name), "not found")


def test_throttled_login_is_a_typed_error_and_one_line(
    live_master: Any, new_user: Callable[[], str], cli_for: Callable[[str | None], Cli]
) -> None:
    """The real master's per-user lockout (10 failures): the SDK raises the typed error with the
    master's Retry-After, and the CLI says it on one line."""
    name = new_user()
    with Client(live_master.url) as sdk:
        for _ in range(10):
            with pytest.raises(UnauthorizedError):
                sdk.login(name, "a-wrong-password")
        with pytest.raises(TooManyRequestsError) as caught:
            sdk.login(name, PASSWORD)
    assert caught.value.status == 429 and "try again in" in caught.value.detail
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1

    result = cli_for(None)("user", "login", name, "--password", PASSWORD)
    one_error_line(result, "Too many requests", "try again in")
