"""The dashboard end to end: Playwright drives Debian's Chromium (never a downloaded browser) against
the suite's live master, which serves webui/dist, with real agents from the e2e suite.

`make webui` builds the dashboard first; without a build these tests stop with that instruction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import admin_api, agent_token, no_leftover_work, start_agent
from playwright.sync_api import Browser, expect, sync_playwright
from webui_support import PATIENCE_MS, PATIENCE_S, WEBUI_DIST, UiSession, login_cookies, new_session

__all__ = ["admin_api", "agent_token", "no_leftover_work", "start_agent"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

expect.set_options(timeout=PATIENCE_MS)


def _newer_sources(built: Path) -> list[Path]:
    """Dashboard sources changed after the build (as `make webui` itself decides)."""
    webui = WEBUI_DIST.parent
    sources = [webui / "index.html", *(webui / "src").rglob("*"), *(webui / "public").rglob("*")]
    stamp = built.stat().st_mtime
    return [path for path in sources if path.is_file() and path.stat().st_mtime > stamp]


@pytest.fixture(scope="session")
def webui(live_master: Any) -> str:
    """The live master's URL, once it is known to serve the built dashboard at /."""
    index = WEBUI_DIST / "index.html"
    if not os.environ.get("STALWART_WEBUI_DIR"):  # else the operator's build is served, as is
        if not index.is_file():
            pytest.fail(f"the dashboard is not built ({index} is missing): run `make webui`")
        if stale := _newer_sources(index):
            pytest.fail(
                f"the dashboard build is older than {stale[0]} (and {len(stale) - 1} more): run `make webui`"
            )
    page = httpx.get(f"{live_master.url}/experiments", timeout=PATIENCE_S)
    if page.status_code != 200 or 'id="root"' not in page.text:
        pytest.fail(f"the master does not serve the dashboard at / ({page.status_code}): {page.text[:300]}")
    return str(live_master.url)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browse(browser: Browser, webui: str) -> Iterator[Callable[..., UiSession]]:
    """Opens a fresh browser context (1280x800 unless told otherwise), nobody signed in; after the
    test, fails it if any of its pages threw an uncaught script error."""
    opened: list[UiSession] = []

    def open_context(**context_options: Any) -> UiSession:
        session = new_session(browser, webui, **context_options)
        opened.append(session)
        return session

    yield open_context
    errors = [error for session in opened for error in session.page_errors]
    for session in opened:
        session.context.close()
    assert not errors, f"uncaught script errors in the dashboard: {errors}"


@pytest.fixture
def signed_in(browse: Callable[..., UiSession], webui: str) -> Callable[..., UiSession]:
    """A browser context already holding a user's session cookies, as the sign-in form would leave
    it: `signed_in(username, password, color_scheme="dark", viewport=PHONE)`."""

    def sign_in(username: str, password: str, **context_options: Any) -> UiSession:
        session = browse(**context_options)
        session.context.add_cookies(login_cookies(webui, username, password))  # type: ignore[arg-type]
        return session

    return sign_in


@pytest.fixture
def admin_ui(signed_in: Callable[..., UiSession], live_master: Any) -> UiSession:
    return signed_in(live_master.admin_username, live_master.admin_password)
