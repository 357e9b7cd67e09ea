"""Migrations produce the models' schema on every database (alembic check finds no drift), and are
idempotent."""

from __future__ import annotations

from sqlalchemy import inspect, text

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


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from memory.migrate import _config

    script = ScriptDirectory.from_config(_config(make_engine("sqlite://")))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_every_migration_upgrades_a_database_that_holds_data(db_url):
    """Each step runs on a populated database (rows referencing sources, principals, audit), as an
    upgrade in the field does: e.g. SQLite table rebuilds fail while other tables reference the table."""
    revisions = _revisions()
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, revisions[0])
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO principals (id, kind, display_name, clearance, jurisdiction, active, may_act_for_any, "
                "created_at) VALUES ('steward', 'user', '', 2, 'EU', true, false, CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO sources (id, name, steward_id, jurisdiction, floor, uri, description, "
                "personal_data_requires_consent, created_at, updated_at) VALUES ('crm', 'CRM', 'steward', 'EU', 1, "
                "'', '', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO source_read_groups (source_id, \"group\") VALUES ('crm', 'sales')"))
            conn.execute(text(
                "INSERT INTO access_requests (id, requester_id, source_id, reason, justification, status, "
                "created_at) VALUES ('r1', 'steward', 'crm', 'clearance', 'why', 'open', CURRENT_TIMESTAMP)"))
        for rev in revisions[1:]:
            migrate.upgrade(engine, rev)
        migrate.check(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM source_read_groups")).scalar_one() == 1
            assert conn.execute(text("SELECT status FROM access_requests")).scalar_one() == "open"
    finally:
        engine.dispose()
