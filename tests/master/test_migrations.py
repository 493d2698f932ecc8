"""Migrations build the schema from nothing, repeat harmlessly, and match the ORM and master/schema.sql."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

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


def test_0006_keeps_the_newest_runs_row_of_a_step_live_and_dates_pending_preemptions(empty_engine) -> None:  # type: ignore[no-untyped-def]
    upgrade(empty_engine, "0005")
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, password_hash) VALUES (1, 'u', 'x')"))
        conn.execute(
            text(
                "INSERT INTO experiments (id, name, state, config, original_config, owner_id)"
                " VALUES (1, 'e', 'ACTIVE', '{}', '', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO trials (id, experiment_id, request_id, hparams, seed, state)"
                " VALUES (1, 1, 'r', '{}', 0, 'ACTIVE')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO metrics (trial_id, run_id, "group", steps_completed, values) VALUES'
                " (1, 1, 'training', 5, '{}'), (1, 2, 'training', 5, '{}'), (1, 1, 'training', 6, '{}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO allocations (id, trial_id, run_id, resource_pool, slots_needed, priority, state,"
                " preempt_requested) VALUES (gen_random_uuid(), 1, 2, 'p', 1, 42, 'RUNNING', true)"
            )
        )
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT run_id, steps_completed, archived FROM metrics ORDER BY 2, 1")).all()
        asked = conn.execute(text("SELECT preempt_requested_at IS NOT NULL FROM allocations")).scalar()
    assert [tuple(r) for r in rows] == [(1, 5, True), (2, 5, False), (1, 6, False)]
    assert asked is True
