"""Migrations produce the models' schema on every database (alembic check finds no drift), and are
idempotent."""

from __future__ import annotations

from sqlalchemy import inspect

from memory import migrate
from memory.db import make_engine
from memory.models import Base


def test_migrations_match_the_models(db_url):
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # idempotent
        migrate.check(engine)  # raises SchemaDriftError on any difference
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        engine.dispose()
