"""Signing in and out of the dashboard: the session is an HttpOnly cookie that survives a reload,
and a session ended anywhere (sign-out, or revoked on the server) sends the browser to sign-in."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from webui_support import PATIENCE_S, UiSession, shot

pytestmark = pytest.mark.e2e


def test_sign_in_survives_a_reload_and_sign_out_or_a_revoked_session_return_to_sign_in(
    browse: Callable[..., UiSession], live_master: Any
) -> None:
    ui = browse()
    page = ui.open("/experiments")
    # Nobody signed in: any page sends the browser to the form, remembering where it was going.
    expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fexperiments"))
    expect(page.get_by_role("heading", name="Sign in to Stalwart")).to_be_visible()
    shot(page, "sign-in")

    page.get_by_label("Password").fill("not the password")
    page.get_by_label("User name").fill(live_master.admin_username)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/sign-in"))

    page.get_by_label("Password").fill(live_master.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/experiments$"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # The session is a cookie the page's scripts cannot read.
    session_cookie = next(c for c in ui.context.cookies() if c.get("name") == "stalwart_session")
    assert session_cookie.get("httpOnly") is True
    assert "stalwart_session" not in page.evaluate("document.cookie")

    page.reload()
    expect(page).to_have_url(re.compile(r"/experiments$"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in"))
    assert not any(c.get("name") == "stalwart_session" for c in ui.context.cookies())
    page.goto(f"{live_master.url}/models")
    expect(page).to_have_url(re.compile(r"/sign-in"))

    # Signed in again, then the session is revoked behind the browser's back.
    page.get_by_label("User name").fill(live_master.admin_username)
    page.get_by_label("Password").fill(live_master.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/models$"))
    revoked = httpx.post(
        f"{live_master.url}/api/v1/auth/logout", headers=ui.api_headers(), timeout=PATIENCE_S
    )
    assert revoked.status_code == 204, revoked.text
    assert any(c.get("name") == "stalwart_session" for c in ui.context.cookies())  # the browser still has it
    page.goto(f"{live_master.url}/experiments")
    expect(page).to_have_url(re.compile(r"/sign-in"))
    expect(page.get_by_role("heading", name="Sign in to Stalwart")).to_be_visible()
    assert ui.dialogs == []


def test_the_dashboard_is_usable_by_keyboard_alone(
    browse: Callable[..., UiSession], live_master: Any
) -> None:
    ui = browse()
    page = ui.open("/sign-in")
    # The form starts focused on the user name; Tab moves on, Enter submits.
    page.keyboard.type(live_master.admin_username)
    page.keyboard.press("Tab")
    page.keyboard.type(live_master.admin_password)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/experiments$"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # The first Tab reaches the skip link, which jumps past the navigation to the page itself.
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    expect(page.locator(":focus")).to_have_attribute("id", "main")

    # From the top, Tab walks the navigation in order; Enter follows a link.
    page.goto(f"{live_master.url}/experiments")
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.locator(":focus").text_content() == "Cluster":
            break
    expect(page.locator(":focus")).to_have_text("Cluster")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/cluster$"))
    expect(page.get_by_role("heading", name="Cluster")).to_be_visible()
