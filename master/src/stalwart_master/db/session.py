"""Engine and sessions. Services receive a Session and never commit; the caller owns the unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.settings import get_settings


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    return create_engine(
        url or settings.database.sqlalchemy_url,
        pool_size=settings.database.pool_size,
        pool_pre_ping=True,  # survive a PostgreSQL restart without handing out dead connections
        # Errors and echo never quote bound values: they are configs with secrets, tokens, user text.
        hide_parameters=True,
        future=True,
    )


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def unit_of_work(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
