"""Every route declares which credentials may call it, and every credential kind is held to it.

The first test walks the app's route table: a route without exactly one ``Allow`` declaration is a
bug, whoever adds it. The second calls every route with every kind of credential (none, a login
session, an API token, an agent credential, an allocation token) and checks that each kind the
route does not allow is refused before anything else happens, and each kind it allows gets past
the credential check.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from registry_support import start_trial

from stalwart_master.api.deps import Allow, Credential, RouteEntry, declared_allows, route_table
from stalwart_master.db.orm import User
from stalwart_master.services import agents as agents_service
from stalwart_master.services import users as users_service

pytestmark = pytest.mark.integration

CONFIG = "name: creds-{tag}\nentrypoint: python3 train.py\nsearcher: {{name: single, metric: loss}}\n"
# Path values that exist nowhere, so a call that gets past its credential check changes nothing.
SAMPLE = {
    "sha256": "0" * 64,
    "name": "no-such-model",
    "username": "no-such-user",
    "agent_id": "no-such-agent",
}
KIND_REFUSALS = (
    "agent credentials may only call the agent routes",
    "a trial's allocation token may only report for and read its own trial",
    "this route is for agents or trials, not for users",
    "this needs a cluster admin",
)


def _api_routes(app: Any) -> list[RouteEntry]:
    return route_table(app.routes)


def _concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in SAMPLE:
            return SAMPLE[name]
        if "uuid" in name or name == "allocation_id":
            return str(uuid.UUID(int=1))
        return "999999"

    return re.sub(r"\{(\w+)\}", value, path)


def test_every_route_declares_exactly_one_set_of_allowed_credentials(app: Any) -> None:
    routes = _api_routes(app.app_ref)
    assert len(routes) >= 60, "the walk must find the app's routes"
    undeclared = []
    for route in routes:
        allows = declared_allows(route.dependant)
        if len(allows) != 1:
            undeclared.append(f"{sorted(route.methods)} {route.path}: {allows}")
    assert not undeclared, "routes without exactly one Allow declaration:\n" + "\n".join(undeclared)


@pytest.fixture
def credentials(admin: Any) -> dict[str, str]:
    """One live credential of each kind, all belonging to the admin."""
    sessions = admin.app_ref.state.sessions
    experiment = admin.post(
        "/api/v1/experiments", json={"config": CONFIG.format(tag=uuid.uuid4().hex[:8]), "paused": True}
    ).json()
    run = start_trial(sessions, experiment["id"])
    with sessions.begin() as session:
        owner = session.query(User).filter_by(username="admin").one()
        api_token, _row = users_service.create_api_token(session, owner, "matrix", None)
        agent_token, _id = agents_service.create_agent_token(session, owner, "matrix-agent")
    with sessions.begin() as session:
        owner = session.query(User).filter_by(username="admin").one()
        session_token = users_service.issue_token(session, owner, 1, kind="user")
    admin.headers.pop("Authorization", None)  # "none" must really send nothing
    return {
        Credential.SESSION: session_token,
        Credential.API_TOKEN: api_token,
        Credential.AGENT: agent_token,
        Credential.ALLOCATION: run.token,
    }


def test_every_route_refuses_every_credential_kind_it_does_not_allow(
    client: Any, credentials: dict[str, str]
) -> None:
    checked = 0
    failures = []
    # Logout revokes the token that calls it: last, so it cannot spoil the calls after it.
    routes = sorted(_api_routes(client.app_ref), key=lambda r: r.path.endswith("/auth/logout"))
    for route in routes:
        (allow,) = declared_allows(route.dependant)
        assert isinstance(allow, Allow)
        path = _concrete(route.path)
        for method in sorted(route.methods - {"HEAD"}) or ["HEAD"]:
            params = {"timeout_seconds": "0"} if route.path.endswith(("/work", "/preemption")) else {}
            for kind, secret in [("none", None), *credentials.items()]:
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                response = client.request(method, path, headers=headers, params=params, json={})
                body = response.json() if response.content and _is_json(response) else {}
                detail = body.get("detail", "") if isinstance(body, dict) else ""
                refused_for_kind = response.status_code == 401 or (
                    response.status_code == 403 and (detail in KIND_REFUSALS or method == "HEAD")
                )
                if allow.public:
                    should_refuse = False
                elif kind == "none":
                    should_refuse = True
                else:
                    should_refuse = kind not in allow.kinds
                checked += 1
                if should_refuse != refused_for_kind:
                    failures.append(f"{method} {route.path} with {kind}: {response.status_code} {detail!r}")
    assert checked >= 300, checked
    assert not failures, "\n".join(failures)


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("content-type", "")


def test_an_admins_allocation_token_cannot_act_as_the_admin(client: Any, credentials: dict[str, str]) -> None:
    """Finding 1: a trial's token of an admin's experiment became the admin on every user route."""
    trial = {"Authorization": f"Bearer {credentials[Credential.ALLOCATION]}"}
    attempts = [
        client.post(
            "/api/v1/users", headers=trial, json={"username": "m", "password": "p" * 12, "admin": True}
        ),
        client.post("/api/v1/agents/tokens", headers=trial, json={"agent_id": "rogue"}),
        client.post("/api/v1/experiments", headers=trial, json={"config": CONFIG.format(tag="x")}),
        client.get("/api/v1/trials/1/logs", headers=trial),
        client.get("/api/v1/experiments", headers=trial),
        client.get("/api/v1/users", headers=trial),
        client.post("/api/v1/tokens", headers=trial, json={}),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts), [r.text for r in attempts]


def test_agent_credentials_read_no_user_data(client: Any, credentials: dict[str, str]) -> None:
    """Finding 9: agent tokens read experiments, configs, users, contexts, checkpoints and models."""
    agent = {"Authorization": f"Bearer {credentials[Credential.AGENT]}"}
    for path in (
        "/api/v1/experiments",
        "/api/v1/experiments/1",
        "/api/v1/users",
        f"/api/v1/contexts/{'0' * 64}",
        f"/api/v1/checkpoints/{uuid.uuid4()}",
        "/api/v1/models",
        "/api/v1/workspaces",
        "/api/v1/audit",
    ):
        response = client.get(path, headers=agent)
        assert response.status_code == 403, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
