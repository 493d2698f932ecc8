"""Every route outside the public allowlist refuses a missing, malformed or revoked token with 401."""

from __future__ import annotations

import re
import uuid

import pytest

pytestmark = pytest.mark.integration

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/health"),
    ("GET", "/api/v1/master"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
SAMPLE_PARAMS = {"experiment_id": "1", "sha256": "a" * 64}


def _protected_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every operation the app publishes; no route of ours is hidden from the OpenAPI description."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if (method.upper(), path) in PUBLIC:
                continue
            concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), "1"), path)
            routes.append((method.upper(), concrete))
    return routes


def test_public_allowlist_answers_without_a_token(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/health").status_code == 200
    assert client.get("/api/v1/master").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_every_protected_route_refuses_bad_tokens(client, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    # A token of its own, revoked by logging out, so the session token stays usable.
    login = client.post("/api/v1/auth/login", json={"username": "admin", "password": "test-admin-password"})
    revoked = login.json()["token"]
    assert (
        client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {revoked}"}).status_code == 204
    )

    routes = _protected_routes(client.app_ref)
    assert len(routes) >= 15, routes  # the test must not pass by finding nothing to check
    bad_headers = {
        "none": {},
        "malformed": {"Authorization": "Bearer not a token at all"},
        "wrong scheme": {"Authorization": f"Basic {admin_token}"},
        "unknown": {"Authorization": f"Bearer {uuid.uuid4().hex}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    failures = []
    for method, path in routes:
        for kind, headers in bad_headers.items():
            response = client.request(method, path, headers=headers)
            if response.status_code != 401 or response.headers["content-type"] != "application/problem+json":
                failures.append(f"{method} {path} with {kind} token -> {response.status_code}")
    assert not failures, "\n".join(failures)


def test_login_logout_and_me(client) -> None:  # type: ignore[no-untyped-def]
    bad = client.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"})
    assert bad.status_code == 401
    assert bad.json()["type"] == "urn:stalwart:problem:unauthorized"
    nobody = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong-password"})
    assert nobody.status_code == 401
    assert nobody.json()["detail"] == bad.json()["detail"]  # no hint which of the two was wrong

    token = client.post("/api/v1/auth/login", json={"username": "admin", "password": "test-admin-password"})
    headers = {"Authorization": f"Bearer {token.json()['token']}"}
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["username"] == "admin" and me.json()["admin"] is True
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_tokens_are_stored_only_as_hashes(client, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from stalwart_master.db.orm import Token
    from stalwart_master.services.users import hash_token

    with client.app_ref.state.sessions() as session:
        hashes = set(session.scalars(select(Token.token_hash)))
    assert admin_token not in hashes
    assert hash_token(admin_token) in hashes


def test_only_admins_create_users_and_names_are_unique(admin) -> None:  # type: ignore[no-untyped-def]
    name = f"user-{uuid.uuid4().hex[:8]}"
    created = admin.post("/api/v1/users", json={"username": name, "password": "a-good-password"})
    assert created.status_code == 201, created.text
    again = admin.post("/api/v1/users", json={"username": name, "password": "a-good-password"})
    assert again.status_code == 409
    short = admin.post("/api/v1/users", json={"username": name + "x", "password": "short"})
    assert short.status_code == 422 and short.json()["errors"][0]["path"] == "body.password"

    token = admin.post("/api/v1/auth/login", json={"username": name, "password": "a-good-password"}).json()[
        "token"
    ]
    other = admin.post(
        "/api/v1/users",
        json={"username": name + "y", "password": "a-good-password"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert other.status_code == 403


def test_metrics_count_requests_by_route_template(admin) -> None:  # type: ignore[no-untyped-def]
    admin.get("/api/v1/experiments/424242")
    body = admin.get("/metrics").text
    assert 'route="/api/v1/experiments/{experiment_id}"' in body
    assert "424242" not in body


def test_wrong_method_is_405_listing_every_allowed_method(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.put("/api/v1/experiments/1")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "DELETE, GET, PATCH"
