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
            conn.execute(text(
                "INSERT INTO documents (id, source_id, external_key, created_at, current_version) "
                "VALUES ('d1', 'crm', 'a.md', CURRENT_TIMESTAMP, 1)"))
            conn.execute(text(
                "INSERT INTO document_versions (id, document_id, version, status, sha256, size_bytes, mime_type, "
                "filename, uri, ingested_at, ingested_by, valid_from, valid_to, pipeline_version, parser_version, "
                "chunker_version, classifier_version, label_map_version, embedding_model, chunk_count, "
                "vectors_synced, text_length) VALUES ('v1', 'd1', 1, 'active', 'x', 1, 'text/markdown', 'a.md', "
                "'', CURRENT_TIMESTAMP, 'steward', 0, 1e300, 'p', 'p', 'c', 'k', 'l', 'e', 2, true, 2)"))
            for cid, label, personal in (("c1", 1, "false"), ("c2", 3, "true"), ("c3", 2, "false")):
                conn.execute(text(
                    "INSERT INTO chunks (id, point_id, version_id, document_id, source_id, ordinal, text, sha256, "
                    "start, \"end\", element_types, token_count, label, personal, entity_types) VALUES "
                    f"('{cid}', '{cid}', 'v1', 'd1', 'crm', 0, 't', 's', 0, 1, '[]', 1, {label}, {personal}, '[]')"))
        for rev in revisions[1:]:
            migrate.upgrade(engine, rev)
        migrate.check(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM source_read_groups")).scalar_one() == 1
            assert conn.execute(text("SELECT status FROM access_requests")).scalar_one() == "open"
            # f3b8d21c6a47 fills each source's chunk summary from the chunks it already holds.
            row = conn.execute(text("SELECT max_label, has_personal FROM sources WHERE id = 'crm'")).one()
            assert (row[0], bool(row[1])) == (3, True)
            # b7c3e5a9d214 fills each version's chunk summary the same way.
            row = conn.execute(text("SELECT max_label, has_personal FROM document_versions WHERE id = 'v1'")).one()
            assert (row[0], bool(row[1])) == (3, True)
            # a9f1c3e7d52b: chunks stored before masked twins have none (`memory backfill-twins` stores them).
            assert conn.execute(text("SELECT count(*) FROM chunks WHERE masked_point_id IS NULL")).scalar_one() == 3
    finally:
        engine.dispose()


def test_the_head_revision_has_every_policy_epoch_trigger(db_url):
    """A migration that rebuilds sources, source_read_groups or policy_versions (an Alembic batch operation on
    SQLite) drops that table's triggers: it must create them again, or the plan's cache would miss changes
    (memory.policy_cache switches itself off then; this test says so first)."""
    from sqlalchemy.orm import Session

    from memory.policy_cache import epoch_triggers_missing

    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with Session(engine) as session:
            assert epoch_triggers_missing(session) == frozenset()
    finally:
        engine.dispose()
