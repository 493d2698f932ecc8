"""The master serves the built web UI at ``/``: hashed assets cached for good, the app's page for
every other path outside the API, nothing outside the build, and a plain page when there is none."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stalwart_master.api import webui
from stalwart_master.app import create_app
from stalwart_master.settings import Settings

pytestmark = pytest.mark.integration

INDEX = '<!doctype html><title>Stalwart</title><script type="module" src="/assets/app-abc.js"></script>'
SCRIPT = "console.log('stalwart');\n"
SECRET = "not for the browser"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A built UI, with a secret beside it (outside) and a link from inside pointing at it."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "app-abc.js").write_text(SCRIPT)
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / ".env").write_text(SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "assets" / "leak.js")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    return root


def _client(webui_dir: Path) -> TestClient:
    """The real app, without its lifespan: serving files needs neither the database nor a scheduler."""
    return TestClient(create_app(Settings(webui_dir=webui_dir), migrate=False), raise_server_exceptions=False)


def test_the_app_page_answers_the_root_and_every_client_side_route(build: Path) -> None:
    client = _client(build)
    for path in ("/", "/experiments/5", "/trials/7/logs", "/index.html"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.text == INDEX, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["Cache-Control"] == "no-cache"
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert client.head("/experiments/5").status_code == 200
    favicon = client.get("/favicon.svg")
    assert favicon.status_code == 200 and favicon.headers["content-type"].startswith("image/svg")


def test_hashed_assets_are_cached_for_good_and_a_missing_one_is_a_404(build: Path) -> None:
    client = _client(build)
    script = client.get("/assets/app-abc.js")
    assert script.status_code == 200
    assert script.text == SCRIPT
    assert "javascript" in script.headers["content-type"]
    assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    missing = client.get("/assets/app-old.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "path",
    [
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/assets/leak.js",
        "/.env",
        "/assets/%2e%2e/.env",
    ],
)
def test_nothing_outside_the_build_or_hidden_in_it_is_served(build: Path, path: str) -> None:
    response = _client(build).get(path)
    assert SECRET not in response.text, path
    assert response.status_code == 404, (path, response.status_code)


def test_a_link_out_of_the_build_gets_the_app_page_not_its_target(build: Path) -> None:
    response = _client(build).get("/leak.txt")
    assert response.status_code == 200
    assert response.text == INDEX


def test_the_api_keeps_its_own_errors(build: Path) -> None:
    client = _client(build)
    for path in (
        "/api/v1/nope",
        "/api",
        "/docs/nope",
        "/redoc",
        "/openapi.json/x",
        "/health/x",
        "/metrics/x",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json"), path
    wrong_method = client.get("/api/v1/auth/login")
    assert wrong_method.status_code == 405
    assert client.post("/experiments/5").status_code == 404
    assert client.get("/openapi.json").json()["openapi"]


def test_without_a_build_the_root_says_how_to_make_one(tmp_path: Path) -> None:
    client = _client(tmp_path / "empty")
    for path in ("/", "/experiments/5"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "make webui" in response.text
        assert 'href="/docs"' in response.text
        assert "<script" not in response.text and "<style" not in response.text
    assert client.get("/assets/app-abc.js").status_code == 200  # the same page: nothing to serve


def test_the_setting_wins_then_the_package_copy_then_the_repository_build(
    tmp_path: Path, monkeypatch: Any
) -> None:
    packaged, repo, chosen = tmp_path / "packaged", tmp_path / "repo", tmp_path / "chosen"
    for directory in (packaged, repo, chosen):
        directory.mkdir()
        (directory / "index.html").write_text(directory.name)
    monkeypatch.setattr(webui, "PACKAGED_DIR", packaged)
    monkeypatch.setattr(webui, "REPO_DIR", repo)
    assert webui.webui_dir(Settings(webui_dir=chosen)) == chosen
    assert webui.webui_dir(Settings(webui_dir=None)) == packaged
    (packaged / "index.html").unlink()
    assert webui.webui_dir(Settings(webui_dir=None)) == repo
    (repo / "index.html").unlink()
    assert webui.webui_dir(Settings(webui_dir=None)) is None
    # A directory the operator named is not second-guessed, even when it holds no build.
    (repo / "index.html").write_text("repo")
    assert webui.webui_dir(Settings(webui_dir=chosen / "missing")) is None


def test_the_repository_build_is_found_from_the_source_tree() -> None:
    assert Path(__file__).resolve().parents[2] / "webui" / "dist" == webui.REPO_DIR
