"""The Python SDK (`stalwart.client`) against a real master process on real PostgreSQL and Redis.

A few transport tests at the end use httpx's MockTransport instead: they prove what is sent
(retries, no retry for POST) where a real master cannot show it.
"""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from stalwart.client import (
    TERMINAL_STATES,
    BadRequestError,
    Client,
    ConflictError,
    ExperimentState,
    InvalidTransitionError,
    MasterUnreachable,
    NotFoundError,
    NotLoggedIn,
    UnauthorizedError,
    ValidationError,
    WaitTimeout,
    auth,
)
from stalwart.context import build_context

from support import SIMPLE_CONFIG, wait_for

CONFIG = SIMPLE_CONFIG.replace("{description}", "made by test_client")


@pytest.fixture
def label() -> str:
    """A label no other test uses, so list filters see only this test's experiments."""
    return f"t-{uuid.uuid4().hex[:10]}"


def _model_dir(root: Path, marker: str = "") -> Path:
    model = root / "model"
    model.mkdir(exist_ok=True)
    (model / "train.py").write_text(f"print('training {marker}')\n")
    return model


def _create(client: Client, label: str, *, name: str = "sdk", paused: bool = False) -> Any:
    return client.create_experiment(CONFIG.format(name=name, label=label), paused=paused)


e2e = pytest.mark.e2e


@e2e
def test_master_info_needs_no_login(live_master: Any) -> None:
    with Client(live_master.url) as client:
        assert client.token is None
        info = client.master_info()
    assert info.version and info.cluster_id
    assert info.raw["cluster_name"] == info.cluster_name


@e2e
def test_call_without_token_raises_not_logged_in_before_sending(live_master: Any) -> None:
    with Client(live_master.url) as client, pytest.raises(NotLoggedIn, match="not logged in to http"):
        client.me()


@e2e
def test_login_me_and_logout_revokes_the_token(live_master: Any) -> None:
    client = Client(live_master.url)
    login = client.login(live_master.admin_username, live_master.admin_password)
    assert login.user.username == live_master.admin_username and login.user.admin
    assert client.me().id == login.user.id
    client.logout()
    assert client.token is None
    with Client(live_master.url, token=login.token) as stale, pytest.raises(UnauthorizedError) as err:
        stale.me()
    assert err.value.status == 401 and err.value.type == "unauthorized"


@e2e
def test_wrong_password_raises_unauthorized(live_master: Any) -> None:
    with Client(live_master.url) as client, pytest.raises(UnauthorizedError):
        client.login(live_master.admin_username, "not-the-password")


@e2e
def test_client_picks_up_the_cached_token_and_the_env_token(live_master: Any, monkeypatch: Any) -> None:
    token = Client(live_master.url).login(live_master.admin_username, live_master.admin_password).token
    auth.save_token(live_master.url, live_master.admin_username, token)
    assert stat.S_IMODE(auth.auth_file().stat().st_mode) == 0o600
    assert Client(live_master.url).me().username == live_master.admin_username
    monkeypatch.setenv("STALWART_TOKEN", "not-a-real-token")
    with pytest.raises(UnauthorizedError):
        Client(live_master.url).me()  # the environment wins over the cache


@e2e
def test_create_user_lists_it_and_refuses_a_taken_name(admin: Client) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    user = admin.create_user(name, "a-long-password")
    assert user.username == name and not user.admin and user.active
    assert name in {u.username for u in admin.list_users()}
    with pytest.raises(ConflictError) as err:
        admin.create_user(name, "another-long-password")
    assert err.value.status == 409


@e2e
def test_upload_context_skips_bytes_the_master_already_has(admin: Client, tmp_path: Path) -> None:
    data = build_context(_model_dir(tmp_path, uuid.uuid4().hex))
    first = admin.upload_context(data)
    assert first.uploaded and first.context is not None and first.context.files >= 1
    assert admin.context_exists(first.sha256)
    again = admin.upload_context(data)
    assert not again.uploaded and again.sha256 == first.sha256
    assert admin.download_context(first.sha256) == data


@e2e
def test_unknown_context_is_not_found(admin: Client) -> None:
    missing = "0" * 64
    assert not admin.context_exists(missing)
    with pytest.raises(NotFoundError):
        admin.download_context(missing)


@e2e
def test_experiment_create_get_and_list_filters(admin: Client, label: str, tmp_path: Path) -> None:
    upload = admin.upload_context(build_context(_model_dir(tmp_path, label)))
    exp = admin.create_experiment(CONFIG.format(name="alpha-one", label=label), context=upload.sha256)
    paused = _create(admin, label, name="beta-two", paused=True)
    assert exp.state == ExperimentState.ACTIVE and paused.state == ExperimentState.PAUSED
    got = admin.get_experiment(exp.id)
    assert got.context_sha256 == upload.sha256 and got.labels == (label,)
    assert got.original_config == CONFIG.format(name="alpha-one", label=label)
    assert got.config["searcher"]["name"] == "single"

    page = admin.list_experiments(labels=[label])
    assert page.total == 2 and {e.id for e in page.items} == {exp.id, paused.id}
    assert [e.id for e in admin.list_experiments(labels=[label], states=["PAUSED"]).items] == [paused.id]
    assert [e.id for e in admin.list_experiments(labels=[label], name="ALPHA").items] == [exp.id]
    ordered = admin.list_experiments(labels=[label], order_by="id", order="asc")
    assert [e.id for e in ordered.items] == sorted([exp.id, paused.id])
    one = admin.list_experiments(labels=[label], limit=1, offset=1, order_by="id", order="asc")
    assert one.total == 2 and [e.id for e in one.items] == [paused.id]
    assert admin.list_experiments(labels=[label], owner="nobody-by-this-name").total == 0
    assert sorted(e.id for e in admin.iter_experiments(labels=[label], page_size=1)) == sorted(
        [exp.id, paused.id]
    )


@e2e
def test_every_lifecycle_verb_and_delete(admin: Client, label: str) -> None:
    exp = _create(admin, label, paused=True)
    assert admin.activate_experiment(exp.id).state == "ACTIVE"
    assert admin.pause_experiment(exp.id).state == "PAUSED"
    assert admin.pause_experiment(exp.id).state == "PAUSED"  # repeating a verb is harmless
    assert admin.cancel_experiment(exp.id).state in {"STOPPING_CANCELED", "CANCELED"}
    done = admin.wait_for_experiment(exp.id, timeout=30, poll=0.2)
    assert done.state == "CANCELED" and done.terminal and done.ended_at is not None

    assert admin.archive_experiment(exp.id).archived
    assert exp.id in {e.id for e in admin.list_experiments(labels=[label], archived=True).items}
    assert admin.list_experiments(labels=[label], archived=False).total == 0
    assert not admin.unarchive_experiment(exp.id).archived

    killed = _create(admin, label)
    assert admin.kill_experiment(killed.id).state in {"STOPPING_KILLED", "CANCELED"}

    assert admin.delete_experiment(exp.id).state == "DELETING"

    def gone() -> bool:
        try:
            admin.get_experiment(exp.id)
        except NotFoundError:
            return True
        return False

    wait_for(gone, 30, "the deletion job")


@e2e
def test_illegal_transition_raises_and_names_the_state(admin: Client, label: str) -> None:
    exp = _create(admin, label)
    admin.cancel_experiment(exp.id)
    admin.wait_for_experiment(exp.id, timeout=30, poll=0.2)
    with pytest.raises(InvalidTransitionError) as err:
        admin.pause_experiment(exp.id)
    assert err.value.status == 409 and err.value.type == "invalid-transition"
    assert "CANCELED" in err.value.detail
    active = _create(admin, label)
    with pytest.raises(InvalidTransitionError, match="ACTIVE"):
        admin.delete_experiment(active.id)


@e2e
def test_patch_and_labels(admin: Client, label: str) -> None:
    exp = _create(admin, label)
    renamed = admin.patch_experiment(exp.id, name="renamed", description="new words")
    assert (renamed.name, renamed.description, renamed.labels) == ("renamed", "new words", (label,))
    assert admin.add_experiment_label(exp.id, "extra").labels == (label, "extra")
    assert admin.add_experiment_label(exp.id, "extra").labels == (label, "extra")
    assert admin.remove_experiment_label(exp.id, label).labels == ("extra",)
    assert admin.get_experiment(exp.id).labels == ("extra",)


@e2e
def test_bad_configs_raise_with_field_paths(admin: Client) -> None:
    bad = CONFIG.format(name="bad", label="x").replace("name: single", "name: nonsense-searcher")
    with pytest.raises(ValidationError) as err:
        admin.create_experiment(bad)
    assert err.value.status == 422
    assert any(e.path.startswith("searcher") for e in err.value.errors)
    with pytest.raises(BadRequestError, match="line"):
        admin.create_experiment("name: x\nsearcher: [unclosed\n")


@e2e
def test_create_from_a_mapping_is_sent_as_yaml(admin: Client, label: str) -> None:
    config = {
        "name": "from-dict",
        "labels": [label],
        "entrypoint": "python3 train.py",
        "searcher": {"name": "single", "metric": "loss"},
    }
    exp = admin.create_experiment(config, paused=True)
    assert "from-dict" in (admin.get_experiment(exp.id).original_config or "")


@e2e
def test_wait_for_experiment_times_out_with_the_last_state(admin: Client, label: str) -> None:
    exp = _create(admin, label, paused=True)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        admin.wait_for_experiment(exp.id, timeout=0.5, poll=0.1)
    assert time.monotonic() - started < 5
    assert err.value.experiment.state == "PAUSED"
    assert admin.wait_for_experiment(exp.id, states={"PAUSED"}, timeout=5).state == "PAUSED"


@e2e
def test_missing_experiment_is_not_found(admin: Client) -> None:
    with pytest.raises(NotFoundError) as err:
        admin.get_experiment(2_000_000_000)
    assert err.value.status == 404 and err.value.detail


@pytest.mark.unit
def test_unreachable_master_raises_master_unreachable() -> None:
    with socket_that_refuses() as url, Client(url, token="t", retries=1) as client:
        with pytest.raises(MasterUnreachable, match=f"cannot reach the master at {url}"):
            client.get_experiment(1)
        with pytest.raises(MasterUnreachable):
            client.master_info()


# --- transport behaviour, through httpx.MockTransport --------------------------------------------


def _counting_transport(fail_first: int) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= fail_first:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"version": "1", "cluster_id": "c", "cluster_name": "n"})

    return httpx.MockTransport(handler), seen


@pytest.mark.unit
def test_get_is_retried_after_a_connection_error() -> None:
    transport, seen = _counting_transport(fail_first=2)
    client = Client("http://master.test", token="t", retries=3, transport=transport)
    client._session.backoff = 0
    assert client.master_info().version == "1"
    assert seen == ["GET", "GET", "GET"]


@pytest.mark.unit
def test_post_is_never_retried() -> None:
    transport, seen = _counting_transport(fail_first=1)
    client = Client("http://master.test", token="t", retries=3, transport=transport)
    with pytest.raises(MasterUnreachable):
        client.pause_experiment(1)
    assert seen == ["POST"]


def _unavailable_transport(
    fail_first: int, retry_after: str | None = "0"
) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= fail_first:
            problem = {"type": "urn:stalwart:problem:service-unavailable", "status": 503, "detail": "db down"}
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return httpx.Response(503, json=problem, headers=headers)
        return httpx.Response(200, json={"id": 1, "state": "PAUSED", "name": "e", "config": {}})

    return httpx.MockTransport(handler), seen


@pytest.mark.unit
def test_a_503_with_retry_after_is_sent_again_even_a_post_a_few_times() -> None:
    transport, seen = _unavailable_transport(fail_first=2)
    client = Client("http://master.test", token="t", retries=3, transport=transport)
    assert client.pause_experiment(1).state == "PAUSED"  # the master said it did nothing: safe to repeat
    assert seen == ["POST", "POST", "POST"]

    transport, seen = _unavailable_transport(fail_first=10)
    client = Client("http://master.test", token="t", retries=3, transport=transport)
    with pytest.raises(Exception) as err:
        client.get_experiment(1)
    assert getattr(err.value, "status", None) == 503 and len(seen) == 4  # then it gives up


@pytest.mark.unit
def test_a_503_without_retry_after_is_not_retried() -> None:
    transport, seen = _unavailable_transport(fail_first=1, retry_after=None)
    client = Client("http://master.test", token="t", retries=3, transport=transport)
    with pytest.raises(Exception) as err:
        client.pause_experiment(1)
    assert getattr(err.value, "status", None) == 503 and seen == ["POST"]


@pytest.mark.unit
def test_problem_json_becomes_a_typed_error_and_odd_bodies_stay_readable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/1"):
            problem = {
                "type": "urn:stalwart:problem:invalid",
                "title": "Invalid input",
                "status": 422,
                "detail": "a: x; b: y",
                "errors": [{"path": "a", "message": "x"}, {"path": "b", "message": "y"}],
            }
            return httpx.Response(422, json=problem, headers={"content-type": "application/problem+json"})
        return httpx.Response(502, text="<html>bad gateway</html>")

    client = Client("http://master.test", token="t", transport=httpx.MockTransport(handler))
    with pytest.raises(ValidationError) as err:
        client.get_experiment(1)
    assert [str(e) for e in err.value.errors] == ["a: x", "b: y"]
    assert str(err.value) == "Invalid input: a: x; b: y"
    with pytest.raises(Exception) as other:
        client.get_experiment(2)
    assert getattr(other.value, "status", None) == 502 and "bad gateway" in str(other.value)


@pytest.mark.unit
def test_list_filters_are_sent_as_repeated_query_params() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [], "total": 0, "limit": 5, "offset": 0})

    client = Client("http://master.test", token="t", transport=httpx.MockTransport(handler))
    client.list_experiments(states=["ACTIVE", "PAUSED"], labels=["a", "b"], archived=False, limit=5)
    params = seen[0].params
    assert params.get_list("state") == ["ACTIVE", "PAUSED"] and params.get_list("label") == ["a", "b"]
    assert params["archived"] == "false" and params["limit"] == "5" and "name" not in params


@pytest.mark.unit
def test_resolve_master_and_token_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert auth.resolve_master(None) == auth.DEFAULT_MASTER
    assert auth.resolve_master("gpu-box:8080/") == "http://gpu-box:8080"
    monkeypatch.setenv("STALWART_MASTER", "https://m.example")
    assert auth.resolve_master(None) == "https://m.example"
    assert auth.load_token("https://m.example") is None
    auth.save_token("https://m.example/", "alice", "secret")
    assert auth.load_token("https://m.example") == auth.CachedToken("alice", "secret")
    assert stat.S_IMODE(auth.auth_file().stat().st_mode) == 0o600
    assert auth.forget_token("https://m.example") and not auth.forget_token("https://m.example")
    auth.auth_file().write_text("{not json")
    assert auth.load_token("https://m.example") is None  # a damaged cache reads as logged out
    assert {"COMPLETED", "CANCELED", "ERROR"} == TERMINAL_STATES


class socket_that_refuses:  # noqa: N801 - used like a function
    """A localhost URL where nothing listens (bound, never listening, so the port stays ours)."""

    def __enter__(self) -> str:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
