"""A user sees in the dashboard exactly what the API lets them see: a viewer of one workspace finds
nothing of another's, and gets no action buttons on what they may only read."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from webui_support import UiSession, shot

pytestmark = pytest.mark.e2e

ACTIONS = ("Pause", "Activate", "Cancel", "Kill", "Archive", "Edit")


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def workspace_with_project(api: httpx.Client, name: str) -> tuple[int, int]:
    workspace = created(api.post("/api/v1/workspaces", json={"name": name}))
    project = created(
        api.post(
            f"/api/v1/workspaces/{workspace['id']}/projects",
            json={"name": f"{name} project", "description": "made by the dashboard's role test"},
        )
    )
    return int(workspace["id"]), int(project["id"])


def paused_experiment(api: httpx.Client, name: str, project_id: int) -> int:
    """Paused, so it never asks for slots: this test is about who sees it, not about running it."""
    config = "\n".join(
        [
            f"name: {json.dumps(name)}",
            "entrypoint: python3 train.py",
            "hyperparameters: {learning_rate: 0.1}",
            "searcher: {name: single, metric: loss}",
        ]
    )
    body = {"config": config, "paused": True, "project_id": project_id}
    return int(created(api.post("/api/v1/experiments", json=body))["id"])


def test_a_viewer_sees_only_their_workspaces_experiments_and_no_action_buttons(
    admin_api: httpx.Client, signed_in: Callable[..., UiSession], live_master: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    workspace_a, project_a = workspace_with_project(admin_api, f"ui-a-{tag}")
    _, project_b = workspace_with_project(admin_api, f"ui-b-{tag}")
    viewer, password = f"viewer-{tag}", f"viewer-password-{tag}"
    created(admin_api.post("/api/v1/users", json={"username": viewer, "password": password}))
    created(admin_api.put(f"/api/v1/workspaces/{workspace_a}/members/{viewer}", json={"role": "viewer"}))
    seen = paused_experiment(admin_api, f"roles-a-{tag}", project_a)
    hidden = paused_experiment(admin_api, f"roles-b-{tag}", project_b)

    # The admin's view, for the record: the workspaces, A with its member, A's project.
    admin = signed_in(live_master.admin_username, live_master.admin_password)
    page = admin.open("/workspaces")
    expect(page.get_by_role("link", name=f"ui-a-{tag}", exact=True)).to_be_visible()
    shot(page, "workspaces")
    page.get_by_role("link", name=f"ui-a-{tag}", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/workspaces/{workspace_a}$"))
    expect(page.get_by_text(viewer, exact=True)).to_be_visible()
    shot(page, "workspace")
    page.get_by_role("link", name=f"ui-a-{tag} project", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/projects/{project_a}$"))
    expect(page.get_by_role("link", name=f"roles-a-{tag}", exact=True)).to_be_visible()
    shot(page, "project")

    ui = signed_in(viewer, password)
    page = ui.open(f"/experiments?q={tag}")
    expect(page.get_by_test_id(f"experiment-row-{seen}")).to_be_visible()
    expect(page.get_by_test_id(f"experiment-row-{hidden}")).to_have_count(0)
    expect(page.get_by_text(f"roles-b-{tag}")).to_have_count(0)
    # Only one of the two experiments matching the search is there.
    shown = page.get_by_role("link", name=re.compile(rf"roles-[ab]-{tag}"))
    expect(shown).to_have_count(1)

    page.goto(f"{live_master.url}/experiments/{hidden}")
    expect(page.get_by_role("alert")).to_contain_text(re.compile("not found", re.I))
    expect(page.get_by_text(f"roles-b-{tag}")).to_have_count(0)
    for action in ACTIONS:
        expect(page.get_by_role("button", name=action, exact=True)).to_have_count(0)

    page.goto(f"{live_master.url}/experiments/{seen}")
    expect(page.get_by_role("heading", name=f"roles-a-{tag}")).to_be_visible()
    expect(page.get_by_text("PAUSED", exact=True).first).to_be_visible()
    for action in ACTIONS:
        expect(page.get_by_role("button", name=action, exact=True)).to_have_count(0)
    # The missing buttons are the API's answer too: the viewer's own session cannot activate it.
    refused = httpx.post(f"{live_master.url}/api/v1/experiments/{seen}/activate", headers=ui.api_headers())
    assert refused.status_code == 403, refused.text
    assert ui.dialogs == [] and admin.dialogs == []
