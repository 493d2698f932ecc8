"""The FastAPI application factory: migrate, make sure an admin exists, then serve."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master import __version__
from stalwart_master.api import (
    agents,
    allocations,
    audit,
    auth,
    cluster,
    context_files,
    contexts,
    docs_page,
    etag,
    experiments,
    lineage,
    master,
    metrics,
    models,
    openapi,
    problems,
    security_headers,
    trials,
    webui,
    workspaces,
)
from stalwart_master.api.deps import public_routes
from stalwart_master.db.migrate import upgrade
from stalwart_master.db.orm import Cluster
from stalwart_master.db.session import get_engine
from stalwart_master.jobs import gc as gc_jobs
from stalwart_master.scheduler.loop import SchedulerThread
from stalwart_master.services import users as users_service
from stalwart_master.settings import Settings, get_settings

log = logging.getLogger(__name__)

ADMIN_PASSWORD_FILE = "admin-password"


def _write_secret(path: Path, value: str) -> None:
    """Readable by this user alone, also when an older file with looser bits was there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(value + "\n")


def bootstrap(sessions: sessionmaker[Session], settings: Settings) -> None:
    """First-start duties; safe to repeat on every start."""
    with sessions.begin() as session:
        if session.scalar(select(Cluster.id)) is None:
            session.add(Cluster())
        password = users_service.ensure_admin(session, settings.auth.admin_password)
    if password is not None and settings.auth.admin_password is None:
        path = settings.data_dir / ADMIN_PASSWORD_FILE
        _write_secret(path, password)
        # Never the password itself: logs are kept, shipped and read by others. The 0600 file is its
        # one copy (`stalwart deploy local up` shows it once, on the start that created it).
        log.warning("created user 'admin'; its generated password is in %s (mode 0600)", path)


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    engine = get_engine(settings.database.sqlalchemy_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if migrate:
            upgrade(engine)
        bootstrap(sessions, settings)
        scheduler = SchedulerThread(
            sessions,
            settings.scheduler_tick_seconds,
            dt.timedelta(seconds=settings.agent_reconnect_wait_seconds),
            chores=[
                (
                    settings.gc.republish_interval_seconds,
                    lambda: gc_jobs.republish_pending(sessions, settings),
                )
            ],
            preemption=settings.preemption_policy(),
        )
        app.state.scheduler = scheduler
        scheduler.start()
        log.info("master %s ready (cluster %s)", __version__, settings.cluster_name)
        yield
        scheduler.stop()
        engine.dispose()

    app = FastAPI(
        title="Stalwart",
        version=__version__,
        summary="Train deep-learning models without losing work",
        lifespan=lifespan,
        docs_url=None,  # served by docs_page from the master's own files, no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    gc_jobs.install_outbox()
    problems.install(app)
    etag.install(app)  # before the security headers: its Cache-Control stands
    metrics.install(app)
    security_headers.install(app, settings)
    for module in (master, auth):
        app.include_router(module.public)
    for module in (
        master,
        auth,
        contexts,
        experiments,
        trials,
        agents,
        allocations,
        models,
        lineage,
        workspaces,
        audit,
        cluster,
        context_files,
    ):
        app.include_router(module.router)
    openapi.install(app, public_routes(app.routes))
    docs_page.install(app)
    webui.install(app, settings)  # last: it answers what no route took
    return app
