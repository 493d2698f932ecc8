"""What the browser tests share: patience, screenshots, signed-in browser sessions, the page watchers,
and the few API and process look-ups the scenarios make beside the browser."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.sync_api import Browser, BrowserContext, Dialog, Error, Page

from support import wait_for

# The one knob for every wait in these tests: a slow machine sets STALWART_TEST_TIME_SCALE=3.
TIME_SCALE = float(os.environ.get("STALWART_TEST_TIME_SCALE", "1"))
PATIENCE_S = 30.0 * TIME_SCALE
PATIENCE_MS = PATIENCE_S * 1000

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCREENSHOTS = HERE / "screenshots"
TRIALS = HERE / "trials"
DIGITS = ROOT / "examples" / "digits"
WEBUI_DIST = ROOT / "webui" / "dist"
VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
STALWART = Path(sys.executable).with_name("stalwart")
TERMINAL = {"COMPLETED", "CANCELED", "ERROR"}


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot under tests/webui/screenshots/ (docs/webui.md is built from these)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
    return path


@dataclass
class UiSession:
    """One browser context (one person's cookie jar) and what its pages did that no test asked for:
    dialogs opened (an XSS payload would open one) and uncaught script errors (a broken page)."""

    context: BrowserContext
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    accept_confirms: bool = False

    def __post_init__(self) -> None:
        self.context.on("dialog", self._on_dialog)
        self.context.on("weberror", lambda error: self.page_errors.append(str(error.error)))

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        try:
            # Only confirm() is ever accepted, and only where the test asked (kill, delete).
            if dialog.type == "confirm" and self.accept_confirms:
                dialog.accept()
            else:
                dialog.dismiss()
        except Error:
            pass  # the page went away while the dialog was open

    def open(self, path: str = "/") -> Page:
        page = self.context.new_page()
        page.goto(self.base_url + path)
        return page

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.context.cookies() if "name" in c and "value" in c}

    def api_headers(self) -> dict[str, str]:
        """What this browser sends with a state-changing call: its cookies and the CSRF header."""
        cookies = self.cookies()
        return {
            "Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()),
            "X-CSRF-Token": cookies.get("stalwart_csrf", ""),
        }


def login_cookies(base_url: str, username: str, password: str) -> list[dict[str, Any]]:
    """The master's browser session for a user (HttpOnly session + readable CSRF cookie), as
    Playwright cookies for 127.0.0.1."""
    response = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"username": username, "password": password, "cookie": True},
        timeout=PATIENCE_S,
    )
    assert response.status_code == 200, response.text
    jar = {cookie.name: cookie for cookie in response.cookies.jar}
    assert {"stalwart_session", "stalwart_csrf"} <= set(jar), f"login set only {sorted(jar)}"
    return [
        {
            "name": name,
            "value": jar[name].value,
            "domain": "127.0.0.1",
            "path": "/",
            "httpOnly": name == "stalwart_session",
            "sameSite": "Strict",
        }
        for name in ("stalwart_session", "stalwart_csrf")
    ]


def new_session(browser: Browser, base_url: str, **context_options: Any) -> UiSession:
    options: dict[str, Any] = {"viewport": VIEWPORT, **context_options}
    context = browser.new_context(**options)
    context.set_default_timeout(PATIENCE_MS)
    return UiSession(context, base_url)


# -- beside the browser ------------------------------------------------------------------------------


def token_of(api: httpx.Client) -> str:
    return str(api.headers["Authorization"]).removeprefix("Bearer ")


def cli(base_url: str, token: str, *args: str) -> str:
    """The real `stalwart` console script, as a user would type it; returns its stdout."""
    env = {**os.environ, "STALWART_MASTER": base_url, "STALWART_TOKEN": token, "COLUMNS": "200"}
    result = subprocess.run(
        [str(STALWART), *args], env=env, capture_output=True, text=True, timeout=PATIENCE_S * 2
    )
    assert result.returncode == 0, f"stalwart {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def experiment(api: httpx.Client, experiment_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/experiments/{experiment_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def only_trial(api: httpx.Client, experiment_id: int) -> dict[str, Any]:
    def listed() -> list[dict[str, Any]]:
        return list(api.get(f"/api/v1/experiments/{experiment_id}/trials").json())

    wait_for(lambda: bool(listed()), PATIENCE_S, f"experiment {experiment_id}'s trial")
    (trial,) = listed()
    return trial


def trial(api: httpx.Client, trial_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/trials/{trial_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def trial_processes(agent_pid: int, trial_id: int) -> list[psutil.Process]:
    """The user code (`train.py`) of one trial, found under the agent that launched it."""
    found = []
    for proc in psutil.Process(agent_pid).children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or "train.py" not in " ".join(proc.cmdline()):
                continue
            if proc.environ().get("STALWART_TRIAL_ID") == str(trial_id):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
