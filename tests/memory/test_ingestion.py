"""Versioning with provenance, the embedding cache, and crash safety of the ingestion workflow."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from memory import documents, sources
from memory.db import transaction
from memory.ingestion import FileInput, ingest_files
from memory.models import Chunk, DocumentVersion, Embedding
from memory.principals import NewPrincipal, create_principal
from memory.stores.base import AccessFilter, JurisdictionGrant
from memory.vector_sync import repair


def _section(title: str, sentence: str) -> str:
    return f"# {title}\n\n" + " ".join([sentence] * 30) + "\n\n"


# Three sections, each long enough to be its own chunk; v2 changes only the second.
DOC_V1 = _section("Travel", "Train tickets are reimbursed.") + _section("Hotels", "Hotels cost at most 150 euros.") + \
    _section("Meals", "Meals are covered on trips.")
DOC_V2 = DOC_V1.replace("Hotels cost at most 150 euros.", "Hotels cost at most 180 euros.")


@pytest.fixture
def src(container):
    with transaction(container.sessions) as s:
        create_principal(s, spec=NewPrincipal("st", "user", ("g",), "restricted", "EU", ("steward",)), actor="t")
        sources.register(s, spec=sources.NewSource("s1", "S1", "st", "EU", ("g",), floor="public"), actor="t")
    return "s1"


def ingest(container, *files):
    return ingest_files(container.sessions, container.store, container.pipeline, source_id="s1", actor="st",
                        files=[FileInput(data=d.encode(), filename=n, external_key=n, uri=f"test://{n}")
                               for n, d in files])


def visible(container, as_of=None):
    flt = AccessFilter(groups=frozenset({"g"}), max_label=3, grants=(JurisdictionGrant("EU", True),),
                       as_of=as_of or time.time() + 1)
    return container.store.count(flt)


def test_identical_bytes_create_nothing(container, src):
    [first] = ingest(container, ("a.md", DOC_V1))
    [again] = ingest(container, ("a.md", DOC_V1))
    assert first.status == "created" and again.status == "unchanged"
    assert again.version == 1 and again.document_id == first.document_id
    with container.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DocumentVersion)) == 1


def test_changed_bytes_supersede_and_keep_history(container, src):
    [v1] = ingest(container, ("a.md", DOC_V1))
    t_between = time.time()
    [v2] = ingest(container, ("a.md", DOC_V2))
    assert v2.status == "updated" and v2.version == 2
    with container.sessions() as s:
        old = s.get(DocumentVersion, v1.version_id)
        new = s.get(DocumentVersion, v2.version_id)
        assert old.status == "superseded" and old.superseded_by == new.id
        assert old.valid_to == new.valid_from
        assert s.scalar(select(func.count()).select_from(Chunk).where(Chunk.version_id == old.id)) > 0
    assert visible(container) == v2.chunks
    assert visible(container, as_of=t_between) == v1.chunks  # time travel sees the old version


def test_unchanged_chunks_are_not_embedded_again(container, src):
    [v1] = ingest(container, ("a.md", DOC_V1))
    [v2] = ingest(container, ("a.md", DOC_V2))
    assert v1.embedded == v1.chunks
    assert v2.embedded < v2.chunks  # only the changed chunk is embedded


def test_same_text_in_two_sources_is_embedded_once_but_keeps_both_acls(container, src):
    with transaction(container.sessions) as s:
        sources.register(s, spec=sources.NewSource("s2", "S2", "st", "EU", ("other",), floor="public"), actor="t")
    ingest(container, ("a.md", DOC_V1))
    [copy] = ingest_files(container.sessions, container.store, container.pipeline, source_id="s2", actor="st",
                          files=[FileInput(DOC_V1.encode(), "a.md", "a.md", "test://copy")])
    # Reported as new to s2 (a hit on s1's text is not revealed to s2's steward), yet embedded once:
    assert copy.embedded == copy.chunks
    with container.sessions() as s:
        n_vectors = s.scalar(select(func.count()).select_from(Embedding))
        assert n_vectors == copy.chunks
    only_g = AccessFilter(groups=frozenset({"g"}), max_label=3, grants=(JurisdictionGrant("EU", True),),
                          as_of=time.time() + 1)
    assert container.store.count(only_g) == copy.chunks  # s2's copy is not readable by group g


def test_one_bad_file_does_not_stop_the_batch(container, src):
    out = ingest(container, ("good.md", DOC_V1), ("empty.txt", ""), ("x.wav", "RIFF....WAVEfmt "))
    assert [o.status for o in out] == ["created", "failed", "failed"]
    assert out[1].error_code == "empty_document"


def test_paths_report_missing_files_and_walk_folders(container, src, tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a.md").write_text(DOC_V1)
    (tmp_path / "dir" / "sub" / "b.txt").write_text("Plain text about hotels.")
    (tmp_path / "dir" / ".hidden").write_text("skip me")
    out = documents.ingest_paths(container.sessions, container.store, container.ingest_pipeline, source_id="s1",
                                 paths=[str(tmp_path / "dir"), str(tmp_path / "missing.pdf")], actor="st",
                                 max_bytes=10_000)
    assert sorted((o.external_key, o.status) for o in out) == sorted([
        ("a.md", "created"), (str(tmp_path / "missing.pdf"), "failed"), ("sub/b.txt", "created")])


def test_two_files_with_one_document_key_in_a_run_store_the_first_and_refuse_the_second(container, src, tmp_path):
    """report.txt from two folders is one document key: the second file used to supersede the first without a
    word, and the next run reported one of them unchanged while the other was served (found by review)."""
    for folder, text in (("A", DOC_V1), ("B", "Plain text about hotels.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "report.txt").write_text(text)
    for _ in range(2):  # and again: the first file stays the document, unchanged
        out = documents.ingest_paths(
            container.sessions, container.store, container.ingest_pipeline, source_id="s1", actor="st",
            paths=[str(tmp_path / "A"), str(tmp_path / "B" / "report.txt")], max_bytes=10_000)
        [second] = [o for o in out if o.status == "failed"]  # (files refused before parsing are reported first)
        [first] = [o for o in out if o is not second]
        assert (first.external_key, second.external_key) == ("report.txt", "report.txt")
        assert (second.status, second.error_code) == ("failed", "duplicate_key")
        assert str(tmp_path / "A" / "report.txt") in (second.error or "")
    assert first.status == "unchanged"
    with container.sessions() as s:
        versions = s.scalars(select(DocumentVersion).where(DocumentVersion.document_id == first.document_id)).all()
    assert [v.sha256 for v in versions] == [hashlib.sha256(DOC_V1.encode()).hexdigest()]


def test_a_uri_base_names_where_readers_find_the_originals(container, src, tmp_path):
    (tmp_path / "dir" / "sub dir").mkdir(parents=True)
    (tmp_path / "dir" / "sub dir" / "a.md").write_text(DOC_V1)
    [out] = documents.ingest_paths(container.sessions, container.store, container.ingest_pipeline, source_id="s1",
                                   paths=[str(tmp_path / "dir")], actor="st", max_bytes=10_000,
                                   uri_base="https://intranet.example.com/policies/")
    with container.sessions() as s:
        uri = s.get(DocumentVersion, out.version_id).uri
    assert uri == "https://intranet.example.com/policies/sub%20dir/a.md"  # never this host's file path


def test_a_busy_database_while_storing_fails_the_file_with_database_busy(container, src, monkeypatch):
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY

    def busy(*a, **k):
        raise OperationalError("INSERT INTO audit_records", None, locked)

    monkeypatch.setattr("memory.ingestion.audit.append", busy)
    [failed] = ingest(container, ("a.md", DOC_V1))
    assert (failed.status, failed.error_code) == ("failed", "database_busy")  # the file may be sent again
    monkeypatch.undo()
    assert visible(container) == 0
    [stored] = ingest(container, ("a.md", DOC_V1))
    assert stored.status == "created"


def test_failure_while_storing_leaves_nothing_visible_and_repair_cleans_up(container, src, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    [v1] = ingest(container, ("a.md", DOC_V1))
    monkeypatch.setattr("memory.ingestion.audit.append", boom)
    [failed] = ingest(container, ("a.md", DOC_V2))
    assert (failed.status, failed.error_code) == ("failed", "internal_error")
    monkeypatch.undo()
    assert visible(container) == v1.chunks  # v1 still served, nothing of v2
    with container.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DocumentVersion)) == 1
    [v2] = ingest(container, ("a.md", DOC_V2))
    assert v2.status == "updated"


def test_crash_before_reveal_is_finished_by_repair(container, src, monkeypatch):
    monkeypatch.setattr("memory.ingestion.sync_versions", lambda *a, **k: None)  # crash after SQL commit
    [v1] = ingest(container, ("a.md", DOC_V1))
    monkeypatch.undo()
    assert visible(container) == 0  # committed in SQL but not yet revealed: invisible, never half-visible
    assert repair(container.sessions, container.store) == {"abandoned": 0, "synced": 1, "republished": 0,
                                                           "retractions_resynced": 0}
    assert visible(container) == v1.chunks


def test_crash_after_vectors_before_sql_is_undone_by_repair(container, src):
    from memory import ingestion

    real = ingestion.transaction
    calls = {"n": 0}

    def crash_on_second(factory):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("crash")  # simulates the process dying between steps B and C
        return real(factory)

    ingestion.transaction = crash_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            ingest(container, ("a.md", DOC_V1))
    finally:
        ingestion.transaction = real
    assert visible(container) == 0
    repair(container.sessions, container.store)
    with container.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DocumentVersion)) == 0
    assert container.store.count() == 0
