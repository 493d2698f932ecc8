"""Logins are throttled, people's tokens are theirs to list and revoke, accounts can be turned off,
and the audit log says who did what (findings 10 and the user-management part of the trust model)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from stalwart_master.errors import TooManyRequests
from stalwart_master.services.login_throttle import LoginThrottle

pytestmark = pytest.mark.integration

PASSWORD = "users-password-1"


def _user(client: Any, admin_headers: dict[str, str], **extra: Any) -> str:
    name = f"u-{uuid.uuid4().hex[:10]}"
    response = client.post(
        "/api/v1/users", headers=admin_headers, json={"username": name, "password": PASSWORD, **extra}
    )
    assert response.status_code == 201, response.text
    return name


def _login(client: Any, name: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/login", json={"username": name, "password": password})


@pytest.fixture
def admin_headers(client: Any, admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


def test_forty_wrong_passwords_then_the_right_one_is_refused_with_retry_after(
    client: Any, admin_headers: dict[str, str]
) -> None:
    name = _user(client, admin_headers)
    statuses = [_login(client, name, "wrong-password").status_code for _ in range(40)]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
    right = _login(client, name)
    assert right.status_code == 429, right.text
    assert int(right.headers["Retry-After"]) >= 1
    assert right.headers["content-type"].startswith("application/problem+json")
    # Another user from the same address is not locked out by someone else's guesses.
    assert _login(client, _user(client, admin_headers)).status_code == 200


def test_the_throttle_counts_per_address_and_lets_go_after_the_window() -> None:
    now = [1000.0]
    throttle = LoginThrottle(
        max_failures_per_user=3, max_failures_per_address=5, window_seconds=60, clock=lambda: now[0]
    )
    for index in range(5):  # five different user names from one address
        throttle.check(f"user{index}", "10.0.0.1")
        throttle.failed(f"user{index}", "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        throttle.check("someone-else", "10.0.0.1")
    assert 1 <= refused.value.retry_after <= 61
    throttle.check("someone-else", "10.0.0.2")  # other addresses are untouched
    now[0] += 61
    throttle.check("someone-else", "10.0.0.1")


def test_api_tokens_are_listed_without_secrets_and_die_when_revoked(
    client: Any, admin_headers: dict[str, str]
) -> None:
    name = _user(client, admin_headers)
    session = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    created = client.post(
        "/api/v1/tokens", headers=session, json={"description": "ci", "expires_in_days": 30}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    api = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=api).json()["username"] == name
    listed = client.get("/api/v1/tokens", headers=session)
    assert secret not in listed.text
    kinds = {t["id"]: t["kind"] for t in listed.json()}
    assert kinds[created.json()["id"]] == "api" and "session" in kinds.values()
    expires = dt.datetime.fromisoformat(created.json()["expires_at"])
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    # Someone else's token is not even found.
    other = {"Authorization": f"Bearer {_login(client, _user(client, admin_headers)).json()['token']}"}
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=other).status_code == 404
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=session).status_code == 204
    assert client.get("/api/v1/me", headers=api).status_code == 401


def test_a_deactivated_user_is_out_at_once_and_a_reset_password_ends_old_tokens(
    client: Any, admin_headers: dict[str, str]
) -> None:
    name = _user(client, admin_headers)
    session = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    assert client.patch(f"/api/v1/users/{name}", headers=session, json={"active": False}).status_code == 403
    assert (
        client.patch(f"/api/v1/users/{name}", headers=admin_headers, json={"active": False}).status_code
        == 200
    )
    assert client.get("/api/v1/me", headers=session).status_code == 401
    assert _login(client, name).status_code == 401
    assert (
        client.patch(f"/api/v1/users/{name}", headers=admin_headers, json={"active": True}).status_code == 200
    )
    session = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    reset = client.patch(
        f"/api/v1/users/{name}", headers=admin_headers, json={"password": "a-new-password-2"}
    )
    assert reset.status_code == 200
    assert client.get("/api/v1/me", headers=session).status_code == 401
    assert _login(client, name).status_code == 401
    assert _login(client, name, "a-new-password-2").status_code == 200


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(
    client: Any, admin_headers: dict[str, str]
) -> None:
    name = _user(client, admin_headers)
    first = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    second = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    wrong = {"old_password": "not-it-at-all", "new_password": "changed-password-3"}
    assert client.post("/api/v1/me/password", headers=first, json=wrong).status_code == 403
    body = {"old_password": PASSWORD, "new_password": "changed-password-3"}
    assert client.post("/api/v1/me/password", headers=first, json=body).status_code == 204
    assert client.get("/api/v1/me", headers=first).status_code == 200
    assert client.get("/api/v1/me", headers=second).status_code == 401


def test_the_last_active_admin_cannot_be_removed(client: Any, admin_headers: dict[str, str]) -> None:
    admins = [
        u for u in client.get("/api/v1/users", headers=admin_headers).json() if u["admin"] and u["active"]
    ]
    if len(admins) == 1:
        response = client.patch("/api/v1/users/admin", headers=admin_headers, json={"admin": False})
        assert response.status_code == 409, response.text
    second = _user(client, admin_headers, admin=True)
    assert (
        client.patch(f"/api/v1/users/{second}", headers=admin_headers, json={"active": False}).status_code
        == 200
    )


def test_the_audit_log_names_who_did_what_and_only_admins_read_it(
    client: Any, admin_headers: dict[str, str]
) -> None:
    name = _user(client, admin_headers)
    assert _login(client, name, "wrong-password").status_code == 401
    session = {"Authorization": f"Bearer {_login(client, name).json()['token']}"}
    workspace = client.post("/api/v1/workspaces", headers=session, json={"name": f"ws-{name}"}).json()
    assert client.get("/api/v1/audit", headers=session).status_code == 403
    page = client.get("/api/v1/audit", headers=admin_headers, params={"username": name, "limit": 50}).json()
    actions = [(e["action"], e["outcome"]) for e in page["items"]]
    assert ("workspace.create", "ok") in actions
    assert ("auth.login", "ok") in actions and ("auth.login", "refused") in actions
    create = next(e for e in page["items"] if e["action"] == "workspace.create")
    assert create["target_id"] == str(workspace["id"]) and create["credential"] == "user"
    by_admin = client.get(
        "/api/v1/audit", headers=admin_headers, params={"action": "user.", "limit": 200}
    ).json()
    assert any(e["action"] == "user.create" and e["target_id"] == name for e in by_admin["items"])
