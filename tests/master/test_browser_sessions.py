"""The web UI's cookie sessions: the secret stays out of the page, and state changes need CSRF.

Each test drives its own ``TestClient`` on the shared app: a cookie jar left on the session-wide
client would authenticate every later test's "no credential" request.
"""

from __future__ import annotations

import os
import uuid
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stalwart_master.api.deps import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, csrf_token
from stalwart_master.db.orm import User
from stalwart_master.services import agents as agents_service
from stalwart_master.services import users as users_service

pytestmark = pytest.mark.integration


@pytest.fixture
def browser(app: Any) -> TestClient:
    return _own_client(app.app_ref)


def _own_client(application: Any, base_url: str = "http://testserver") -> TestClient:
    """A client with its own cookie jar on the running app. Not entered with ``with``: that would
    run the app's lifespan (a second scheduler) again."""
    return TestClient(application, base_url=base_url, raise_server_exceptions=False)


def _cookie_login(client: TestClient) -> Any:
    response = client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"], "cookie": True},
    )
    assert response.status_code == 200, response.text
    return response


def _set_cookies(response: Any) -> dict[str, Any]:
    """Each Set-Cookie header parsed on its own (its attributes included)."""
    parsed: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            parsed[name] = (morsel, header.lower())
    return parsed


def _new_user_body() -> dict[str, str]:
    return {"username": f"b-{uuid.uuid4().hex[:10]}", "password": "browser-password"}


def test_a_cookie_login_keeps_the_secret_out_of_the_body_and_the_page(browser: TestClient) -> None:
    response = _cookie_login(browser)
    assert response.json()["token"] is None
    assert response.json()["user"]["username"] == "admin"
    assert response.headers["Cache-Control"] == "no-store"
    cookies = _set_cookies(response)
    session, session_header = cookies[SESSION_COOKIE]
    csrf, csrf_header = cookies[CSRF_COOKIE]
    assert "httponly" in session_header and "samesite=strict" in session_header
    assert "path=/" in session_header
    assert int(session["max-age"]) == 24 * 30 * 3600  # the session's lifetime
    assert "secure" not in session_header.split(";")  # plain HTTP here: a Secure cookie would vanish
    assert "httponly" not in csrf_header, "the page's script must read the CSRF value"
    assert "samesite=strict" in csrf_header
    assert csrf.value == csrf_token(session.value)


def test_a_cookie_set_over_https_is_secure(app: Any) -> None:
    response = _cookie_login(_own_client(app.app_ref, "https://testserver"))
    for _morsel, header in _set_cookies(response).values():
        assert "secure" in [part.strip() for part in header.split(";")], header


def test_the_cookie_alone_authenticates_reads(browser: TestClient) -> None:
    _cookie_login(browser)
    assert "Authorization" not in browser.headers
    response = browser.get("/api/v1/me")
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "admin"


def test_a_change_made_with_the_cookie_needs_the_csrf_header(browser: TestClient) -> None:
    _cookie_login(browser)
    missing, wrong, right = _new_user_body(), _new_user_body(), _new_user_body()
    refusals = [
        browser.post("/api/v1/users", json=missing),
        browser.post("/api/v1/users", json=wrong, headers={CSRF_HEADER: "0" * 64}),
    ]
    for refused in refusals:
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["detail"].startswith("missing or wrong CSRF token")
    created = browser.post("/api/v1/users", json=right, headers={CSRF_HEADER: browser.cookies[CSRF_COOKIE]})
    assert created.status_code == 201, created.text
    names = {user["username"] for user in browser.get("/api/v1/users").json()}
    assert right["username"] in names
    assert missing["username"] not in names and wrong["username"] not in names


def test_the_csrf_value_of_another_session_is_wrong(browser: TestClient, app: Any) -> None:
    _cookie_login(browser)
    other = _own_client(app.app_ref)
    _cookie_login(other)
    foreign = other.cookies[CSRF_COOKIE]
    response = browser.post("/api/v1/tokens", json={}, headers={CSRF_HEADER: foreign})
    assert response.status_code == 403, response.text


def test_logout_clears_the_cookies_and_the_old_cookie_is_refused(browser: TestClient) -> None:
    _cookie_login(browser)
    secret = browser.cookies[SESSION_COOKIE]
    csrf = browser.cookies[CSRF_COOKIE]
    response = browser.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert response.status_code == 204, response.text
    cleared = _set_cookies(response)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        morsel, _header = cleared[name]
        assert morsel.value == "" and morsel["max-age"] == "0", name
    assert SESSION_COOKIE not in browser.cookies
    replay = _own_client(browser.app)
    replay.cookies.set(SESSION_COOKIE, secret)
    refused = replay.get("/api/v1/me")
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_only_a_login_session_is_accepted_as_a_cookie(browser: TestClient, admin: Any) -> None:
    api_secret = admin.post("/api/v1/tokens", json={"description": "cookie"}).json()["token"]
    sessions = admin.app_ref.state.sessions
    with sessions.begin() as session:
        owner = session.query(User).filter_by(username="admin").one()
        agent_secret, _id = agents_service.create_agent_token(
            session, owner, f"cookie-{uuid.uuid4().hex[:6]}"
        )
        allocation_secret = users_service.issue_token(session, owner, 1, kind="allocation")
    for secret in (api_secret, agent_secret, allocation_secret):
        browser.cookies.set(SESSION_COOKIE, secret)
        response = browser.get("/api/v1/me")
        assert response.status_code == 401, response.text
        assert "must hold a login session" in response.json()["detail"]
    # Sent as bearer tokens, the same secrets still work where they are allowed.
    browser.cookies.clear()
    as_bearer = browser.get("/api/v1/me", headers={"Authorization": f"Bearer {api_secret}"})
    assert as_bearer.status_code == 200, as_bearer.text


def test_a_bearer_header_wins_over_the_cookie_and_needs_no_csrf(
    browser: TestClient, admin_token: str
) -> None:
    browser.cookies.set(SESSION_COOKIE, "not-a-session")
    headers = {"Authorization": f"Bearer {admin_token}"}
    assert browser.get("/api/v1/me", headers=headers).status_code == 200
    created = browser.post("/api/v1/tokens", json={"description": "bearer"}, headers=headers)
    assert created.status_code == 201, created.text
    # Without the header the (bogus) cookie is the credential, and it is refused.
    assert browser.get("/api/v1/me").status_code == 401


def test_a_plain_login_still_returns_the_token_and_sets_no_cookie(client: Any) -> None:
    response = client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"]}
    )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert isinstance(token, str) and token
    assert not response.headers.get_list("set-cookie")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_no_credential_names_both_ways_to_send_one(browser: TestClient) -> None:
    response = browser.get("/api/v1/me")
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "bearer token" in detail and SESSION_COOKIE in detail
