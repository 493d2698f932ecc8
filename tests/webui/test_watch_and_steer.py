"""Watching and steering real training from the dashboard: the digits example, submitted with the
CLI to the live master and run by a real agent, shows up live, its chart and logs grow, it pauses
and resumes from the page, a killed trial process appears as a new run, and its best checkpoint
becomes a model version whose lineage the model page draws."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from playwright.sync_api import Locator, Page, expect
from webui_support import (
    DIGITS,
    PATIENCE_MS,
    PATIENCE_S,
    PHONE,
    TERMINAL,
    UiSession,
    cli,
    experiment,
    only_trial,
    shot,
    token_of,
    trial,
    trial_processes,
)

from support import ManagedProcess, wait_for

pytestmark = pytest.mark.e2e

# Long enough that the trial is still training whenever a test looks (each test kills it at the end).
LONG = "200"
# Sums the data points of every chart on the page (the trial page draws one per metric group).
CHART_POINTS = (
    "() => [...document.querySelectorAll('[data-testid=metric-chart]')]"
    ".reduce((sum, chart) => sum + Number(chart.dataset.points || 0), 0)"
)
SECTIONS = "Sections"


@pytest.fixture
def submit_digits(
    live_master: Any, admin_api: httpx.Client, start_agent: Callable[..., ManagedProcess]
) -> Iterator[Callable[..., tuple[int, ManagedProcess]]]:
    """Starts an agent and submits examples/digits with `stalwart experiment create`; kills what it
    submitted after the test. Returns (experiment id, the agent's process)."""
    submitted: list[int] = []

    def submit(
        name: str, epochs: str = LONG, config: str = "const.yaml", slots: int = 1
    ) -> tuple[int, ManagedProcess]:
        agent = start_agent(f"{name}-agent", slots)
        out = cli(
            live_master.url,
            token_of(admin_api),
            "experiment",
            "create",
            str(DIGITS / config),
            str(DIGITS),
            "--config",
            f"name={name}",
            "--config",
            f"hyperparameters.epochs={epochs}",
            "--json",
        )
        experiment_id = int(json.loads(out)["id"])
        submitted.append(experiment_id)
        return experiment_id, agent

    yield submit
    for experiment_id in submitted:
        if experiment(admin_api, experiment_id)["state"] not in TERMINAL:
            admin_api.post(f"/api/v1/experiments/{experiment_id}/kill")


def open_tab(page: Page, label: str) -> None:
    page.get_by_role("navigation", name=SECTIONS).get_by_role("link", name=label, exact=True).click()


def chart_points(page: Page) -> int:
    return int(page.evaluate(CHART_POINTS))


def wait_chart_points_above(page: Page, floor: int) -> int:
    # Polled from here: the master's CSP (no eval) rules out Playwright's in-page wait_for_function.
    wait_for(
        lambda: chart_points(page) > floor, PATIENCE_S * 2, f"the charts to hold more than {floor} points"
    )
    return chart_points(page)


def wait_training(api: httpx.Client, trial_id: int) -> None:
    """Until the trial has reported training (its process is up, the imports done)."""
    wait_for(
        lambda: (trial(api, trial_id).get("steps_completed") or 0) > 0,
        PATIENCE_S * 4,
        f"trial {trial_id} to train",
        interval=0.2,
    )


def state_badge(page: Page) -> Locator:
    return page.get_by_test_id("experiment-state")


def test_a_cli_submitted_experiment_appears_live_and_its_chart_and_logs_grow(
    admin_ui: UiSession,
    signed_in: Callable[..., UiSession],
    submit_digits: Callable[..., tuple[int, ManagedProcess]],
    live_master: Any,
    admin_api: httpx.Client,
) -> None:
    name = f"ui-live-{uuid.uuid4().hex[:6]}"
    page = admin_ui.open("/experiments")
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    page.evaluate("window.stalwartNotReloaded = true")  # a reload would lose it

    experiment_id, _ = submit_digits(name)
    row = page.get_by_test_id(f"experiment-row-{experiment_id}")
    expect(row).to_be_visible()
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("ACTIVE")
    assert page.evaluate("window.stalwartNotReloaded") is True

    trial_id = only_trial(admin_api, experiment_id)["id"]
    wait_training(admin_api, trial_id)
    shot(page, "experiments-list")
    row.get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(rf"/experiments/{experiment_id}$"))
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    wait_chart_points_above(page, 0)
    shot(page, "experiment-overview")

    page.goto(f"{live_master.url}/trials/{trial_id}")
    first = wait_chart_points_above(page, 0)
    grown = wait_chart_points_above(page, first)
    assert grown > first
    shot(page, "trial-metrics")

    open_tab(page, "Logs")
    expect(page).to_have_url(re.compile(rf"/trials/{trial_id}/logs$"))
    lines = page.get_by_test_id("log-line")
    expect(lines.first).to_be_visible()
    before = lines.count()
    expect(lines.nth(before)).to_be_attached(timeout=PATIENCE_MS * 2)
    shot(page, "trial-logs")

    page.goto(f"{live_master.url}/cluster")
    expect(page.get_by_test_id(f"agent-{name}-agent")).to_be_visible()
    shot(page, "cluster")

    phone = signed_in(live_master.admin_username, live_master.admin_password, viewport=PHONE)
    small = phone.open("/experiments")
    expect(small.get_by_test_id(f"experiment-row-{experiment_id}")).to_be_attached()
    shot(small, "experiments-list-phone")
    assert admin_ui.dialogs == [] and phone.dialogs == []


def test_pause_and_activate_from_the_experiment_page_change_its_state_in_the_api(
    admin_ui: UiSession, submit_digits: Callable[..., tuple[int, ManagedProcess]], admin_api: httpx.Client
) -> None:
    name = f"ui-pause-{uuid.uuid4().hex[:6]}"
    experiment_id, _ = submit_digits(name)
    trial_id = only_trial(admin_api, experiment_id)["id"]
    wait_training(admin_api, trial_id)

    page = admin_ui.open(f"/experiments/{experiment_id}")
    expect(state_badge(page)).to_have_text("ACTIVE")
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(state_badge(page)).to_have_text("PAUSED")
    assert experiment(admin_api, experiment_id)["state"] == "PAUSED"
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_disabled()
    # The trial stops (it checkpoints and exits when asked) before it is resumed.
    wait_for(
        lambda: (
            trial(admin_api, trial_id)["state"] == "PAUSED"
            and all(run["ended_at"] for run in admin_api.get(f"/api/v1/trials/{trial_id}/runs").json())
        ),
        PATIENCE_S * 2,
        "the paused trial's run to end",
        interval=0.2,
    )

    page.get_by_role("button", name="Activate", exact=True).click()
    expect(state_badge(page)).to_have_text("ACTIVE")
    assert experiment(admin_api, experiment_id)["state"] == "ACTIVE"
    wait_for(
        lambda: len(admin_api.get(f"/api/v1/trials/{trial_id}/runs").json()) >= 2,
        PATIENCE_S * 2,
        "the activated trial to run again",
        interval=0.2,
    )
    assert admin_ui.dialogs == []


def test_a_killed_trial_process_shows_as_a_new_run_on_the_timeline(
    admin_ui: UiSession,
    submit_digits: Callable[..., tuple[int, ManagedProcess]],
    admin_api: httpx.Client,
    live_master: Any,
) -> None:
    name = f"ui-kill-{uuid.uuid4().hex[:6]}"
    experiment_id, agent = submit_digits(name)
    trial_id = only_trial(admin_api, experiment_id)["id"]
    wait_for(
        lambda: trial(admin_api, trial_id)["latest_checkpoint"] is not None,
        PATIENCE_S * 4,
        f"trial {trial_id}'s first checkpoint",
        interval=0.2,
    )

    page = admin_ui.open(f"/trials/{trial_id}/runs")
    timeline = page.get_by_test_id("run-timeline")
    expect(timeline.get_by_test_id("run-1")).to_be_visible()
    expect(timeline.get_by_test_id("run-2")).to_have_count(0)

    (victim,) = trial_processes(agent.process.pid, trial_id)
    victim.kill()
    wait_for(
        lambda: not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, PATIENCE_S, "the kill"
    )

    second_run = timeline.get_by_test_id("run-2")
    expect(second_run).to_be_visible(timeout=PATIENCE_MS * 2)
    expect(timeline.get_by_test_id("run-1")).to_contain_text(re.compile(r"code (137|-9)\b"))
    # The new run resumes from the trial's latest checkpoint, and the timeline names it.
    expect(second_run.get_by_role("link", name=re.compile(r"^checkpoint "))).to_be_visible()
    first, second = admin_api.get(f"/api/v1/trials/{trial_id}/runs").json()[:2]
    assert first["ended_at"] and first["exit_code"] in (137, -9)
    assert second["run_id"] == 2 and second["restored_checkpoint"]
    shot(page, "trial-runs")


def test_the_best_checkpoint_registered_from_the_page_shows_its_lineage_on_the_model_version(
    admin_ui: UiSession,
    signed_in: Callable[..., UiSession],
    submit_digits: Callable[..., tuple[int, ManagedProcess]],
    admin_api: httpx.Client,
    live_master: Any,
) -> None:
    tag = uuid.uuid4().hex[:6]
    name, model = f"ui-model-{tag}", f"digits-{tag}"
    # The grid example (four trials, two at a time), trained briefly: a best checkpoint among several.
    experiment_id, _ = submit_digits(name, epochs="2", config="grid.yaml", slots=2)
    wait_for(
        lambda: experiment(admin_api, experiment_id)["state"] in TERMINAL,
        PATIENCE_S * 4,
        f"experiment {experiment_id} to end",
        interval=0.2,
    )
    assert experiment(admin_api, experiment_id)["state"] == "COMPLETED"
    checkpoints = admin_api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()
    completed = [c for c in checkpoints if c["state"] == "COMPLETED"]
    best = max(completed, key=lambda c: (c.get("searcher_metric") or 0, c["steps_completed"]))
    trial_id = best["trial_id"]

    page = admin_ui.open(f"/experiments/{experiment_id}")
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    open_tab(page, "Trials")
    expect(page.locator("[data-testid^=trial-row-]")).to_have_count(4)
    shot(page, "experiment-trials")
    open_tab(page, "Hyperparameters")
    expect(page.get_by_role("heading", name="Parallel coordinates")).to_be_visible()
    shot(page, "experiment-hyperparameters")
    open_tab(page, "Config")
    expect(page.get_by_test_id("config-submitted")).to_contain_text("max_concurrent_trials")
    expect(page.get_by_test_id("config-defaults")).to_contain_text(name)
    shot(page, "experiment-config")
    open_tab(page, "Code")
    page.get_by_role("navigation", name="Files").get_by_role("button", name="train.py").click()
    expect(page.get_by_test_id("code-viewer")).to_contain_text("stalwart.pytorch.Trainer")
    shot(page, "experiment-code")

    open_tab(page, "Checkpoints")
    row = page.get_by_test_id(f"checkpoint-row-{best['uuid']}")
    expect(row).to_be_visible()
    shot(page, "experiment-checkpoints")
    row.get_by_role("button", name="Register", exact=True).click()
    form = page.get_by_role("form", name=f"Register checkpoint {best['uuid']}")
    form.get_by_role("combobox", name=re.compile(r"^Model")).select_option(label="New model…")
    form.get_by_label("New model name").fill(model)
    form.get_by_role("button", name="Register version").click()
    version_link = page.get_by_role("link", name=f"{model} version 1", exact=True)
    expect(version_link).to_be_visible()

    version = admin_api.get(f"/api/v1/models/{model}/versions/1")
    assert version.status_code == 200, version.text
    assert version.json()["checkpoint_uuid"] == best["uuid"]

    version_link.click()
    expect(page).to_have_url(re.compile(rf"/models/{model}/1$"))
    lineage = page.get_by_test_id("lineage-graph")
    expect(lineage.get_by_role("link", name=f"{experiment_id} · {name}", exact=True)).to_be_visible()
    expect(lineage.get_by_role("link", name=str(trial_id), exact=True)).to_be_visible()
    expect(lineage.get_by_role("link", name=f"{model} v1", exact=True)).to_be_visible()
    shot(page, "model-version")

    page.goto(f"{live_master.url}/models")
    expect(page.get_by_role("link", name=model, exact=True)).to_be_visible()
    shot(page, "models")

    page.goto(f"{live_master.url}/trials/{trial_id}/checkpoints?checkpoint={best['uuid']}")
    lineage = page.get_by_test_id("lineage-graph")
    expect(lineage.get_by_role("link", name=f"{model} v1", exact=True)).to_be_visible()
    shot(page, "trial-checkpoints")

    dark = signed_in(live_master.admin_username, live_master.admin_password, color_scheme="dark")
    dark_page = dark.open(f"/experiments/{experiment_id}")
    expect(dark_page.get_by_role("heading", name=name)).to_be_visible()
    wait_chart_points_above(dark_page, 0)
    shot(dark_page, "experiment-overview-dark")
    assert admin_ui.dialogs == [] and dark.dialogs == []
