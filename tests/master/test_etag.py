"""ETags on the API's JSON reads: a poll of unchanged data is a 304 without a body, and streams
are neither buffered nor tagged."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.types import Message, Receive, Scope, Send

from stalwart_master.api.deps import SESSION_COOKIE
from stalwart_master.api.etag import BROWSER_CACHE_CONTROL, _ETags, matches
from stalwart_master.db.orm import Allocation, Experiment, Trial
from stalwart_master.services import trials as trials_service
from stalwart_master.services.states import ExperimentState

# A pool no agent serves: the trial's run never starts.
CONFIG = (
    "name: etag-{tag}\nentrypoint: python3 train.py\n"
    "searcher: {{name: single, metric: loss}}\nresources: {{resource_pool: no-agents}}\n"
)


@pytest.mark.integration
def test_an_unchanged_read_keeps_its_etag_and_answers_304_without_a_body(admin: Any) -> None:
    first = admin.get("/api/v1/users")
    second = admin.get("/api/v1/users")
    assert first.status_code == second.status_code == 200
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and len(tag) == len('W/""') + 32
    assert second.headers["ETag"] == tag
    again = admin.get("/api/v1/users", headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == tag
    assert again.headers["Cache-Control"] == "no-store"  # a bearer client: nothing keeps it
    # A list naming it, and the strong form of the same tag, match too.
    listed = admin.get("/api/v1/users", headers={"If-None-Match": f'"other", {tag.removeprefix("W/")}'})
    assert listed.status_code == 304


@pytest.mark.integration
def test_a_change_in_the_data_gives_a_new_etag_and_the_new_body(admin: Any) -> None:
    tag = admin.get("/api/v1/users").headers["ETag"]
    username = f"etag-{uuid.uuid4().hex[:8]}"
    created = admin.post("/api/v1/users", json={"username": username, "password": "etag-password"})
    assert created.status_code == 201, created.text
    changed = admin.get("/api/v1/users", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != tag
    assert username in {user["username"] for user in changed.json()}


@pytest.mark.integration
def test_errors_and_writes_carry_no_etag(admin: Any) -> None:
    missing = admin.get("/api/v1/experiments/999999", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and "ETag" not in missing.headers
    login = admin.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"]},
        headers={"If-None-Match": "*"},
    )
    assert login.status_code == 200 and "ETag" not in login.headers
    assert login.headers["Cache-Control"] == "no-store"


@pytest.mark.integration
def test_a_cookie_session_may_keep_the_answer_but_must_revalidate_it(app: Any) -> None:
    browser = TestClient(app.app_ref, raise_server_exceptions=False)  # its own cookie jar
    login = browser.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"], "cookie": True},
    )
    assert login.status_code == 200, login.text
    assert login.headers["Cache-Control"] == "no-store"
    first = browser.get("/api/v1/me")
    assert first.headers["Cache-Control"] == BROWSER_CACHE_CONTROL
    revalidated = browser.get("/api/v1/me", headers={"If-None-Match": first.headers["ETag"]})
    assert revalidated.status_code == 304
    assert revalidated.headers["Cache-Control"] == BROWSER_CACHE_CONTROL
    assert browser.cookies.get(SESSION_COOKIE)


@pytest.mark.integration
def test_a_followed_log_stream_is_untouched(admin: Any) -> None:
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG.format(tag=uuid.uuid4().hex[:8])})
    assert experiment.status_code == 201, experiment.text
    experiment_id = experiment.json()["id"]
    trial_id = admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()[0]["id"]
    sessions = admin.app_ref.state.sessions
    with sessions.begin() as session:
        allocation = Allocation(
            trial_id=trial_id, run_id=99, resource_pool="no-agents", slots_needed=1, priority=1
        )
        allocation.state = "TERMINATED"
        session.add(allocation)
        session.flush()
        lines = [
            trials_service.LogLine(
                ts=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), rank=0, stream="stdout", message=f"line {i}"
            )
            for i in range(3)
        ]
        trials_service.append_logs(session, trial_id, allocation.id, lines, uuid.uuid4())
    with sessions.begin() as session:
        # Nothing is coming, so the followed stream ends after the stored lines.
        session.execute(update(Trial).where(Trial.id == trial_id).values(state="COMPLETED"))
        session.execute(update(Allocation).where(Allocation.trial_id == trial_id).values(state="TERMINATED"))
        session.execute(
            update(Experiment).where(Experiment.id == experiment_id).values(state=ExperimentState.COMPLETED)
        )
    response = admin.get(
        f"/api/v1/trials/{trial_id}/logs", params={"follow": True}, headers={"If-None-Match": "*"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "ETag" not in response.headers
    assert [json.loads(raw)["message"] for raw in response.text.splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]


@pytest.mark.unit
def test_a_json_body_in_several_pieces_passes_through_as_it_comes() -> None:
    """Each piece reaches the client before the next is made: nothing is held back to hash."""
    sent: list[Message] = []
    seen_by_app: list[int] = []

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in (b"[1,", b"2]"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            seen_by_app.append(len(sent))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/things",
        "headers": [(b"if-none-match", b"*")],
    }
    asyncio.run(_ETags(streaming)(scope, receive, send))
    assert seen_by_app == [2, 3], "a piece was held back"
    assert sent[0]["status"] == 200
    assert all(name != b"etag" for name, _value in sent[0]["headers"])
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"[1,2]"


@pytest.mark.unit
def test_if_none_match_compares_weakly_and_star_matches_anything() -> None:
    tag = 'W/"abc"'
    assert matches('"abc"', tag) and matches('W/"abc"', tag) and matches("*", tag)
    assert matches('"x", W/"abc"', tag)
    assert not matches('"abcd"', tag) and not matches(None, tag) and not matches("", tag)
