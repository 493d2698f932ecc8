"""Alembic environment: always given a live connection by stalwart_master.db.migrate."""

from __future__ import annotations

from alembic import context

from stalwart_master.db.orm import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `stalwart-master db upgrade`, not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
