"""Metric series for chart tests: a trial that never runs, and rows written straight into PostgreSQL
(one INSERT ... SELECT generate_series statement) where a test needs many of them fast."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from stalwart_master.db.orm import Trial


def paused_trial(admin: Any, config: str) -> int:
    """The trial of a new paused experiment: no scheduler or agent ever touches its rows."""
    experiment = admin.post("/api/v1/experiments", json={"config": config, "paused": True}).json()
    with admin.app_ref.state.sessions() as session:
        return int(session.scalars(select(Trial.id).where(Trial.experiment_id == experiment["id"])).one())


def seed_sql(admin: Any, trial_id: int, sql: str, **params: Any) -> None:
    """Runs ``sql`` with ``:trial`` bound to the trial, in a transaction of its own."""
    with admin.app_ref.state.sessions.begin() as session:
        session.execute(text(sql), {"trial": trial_id, **params})
