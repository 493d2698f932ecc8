"""Migrations build the schema from nothing, repeat harmlessly, and match the ORM and master/schema.sql."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from stalwart_master.db.migrate import current_revision, upgrade
from stalwart_master.db.orm import Base
from stalwart_master.db.schema_dump import dump_schema

pytestmark = pytest.mark.integration

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "master" / "schema.sql"


@pytest.fixture
def empty_engine(scratch_database):  # type: ignore[no-untyped-def]
    url = scratch_database("migrations")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


def test_migrations_from_empty_reach_head_and_repeat_harmlessly(empty_engine) -> None:  # type: ignore[no-untyped-def]
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    head = current_revision(empty_engine)
    assert head is not None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head


def test_migrated_schema_matches_the_orm(empty_engine) -> None:  # type: ignore[no-untyped-def]
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"ORM and migrations disagree: {diff}"


def test_migrated_schema_matches_committed_dump(empty_engine) -> None:  # type: ignore[no-untyped-def]
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        dumped = dump_schema(conn)
    assert dumped == SCHEMA_SQL.read_text(), (
        "master/schema.sql is out of date: regenerate it with "
        "`stalwart-master db dump-schema --output master/schema.sql`"
    )
