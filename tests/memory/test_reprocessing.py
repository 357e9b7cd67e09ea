"""The same bytes, processed by an older pipeline generation, are not `unchanged`: they are classified again
and stored as a new version (memory.ingestion `reprocesses`), unless their version is retracted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from memory.models import AuditRecord, Chunk, DocumentVersion

DOC = "# Travel\n\nTrain tickets are booked through the travel desk.\n"


def _versions(api: Any) -> list[tuple[int, str, str]]:
    with api.container.sessions() as s:
        return [(v.version, v.status, v.pipeline_version)
                for v in s.scalars(select(DocumentVersion).order_by(DocumentVersion.version))]


def test_the_same_bytes_processed_by_an_older_pipeline_are_processed_again(api: Any) -> None:
    api.source("s1", read_groups=["g"])
    first = api.upload("s1", "travel.md", DOC)
    assert first.status_code == 201 and not first.json()["reprocessed"], first.text
    again = api.upload("s1", "travel.md", DOC)
    assert (again.status_code, again.json()["status"], again.json()["reprocessed"]) == (200, "unchanged", False)
    with api.container.sessions() as s:  # stored by the pipeline before names were classified
        s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
        s.commit()
    redo = api.upload("s1", "travel.md", DOC)
    assert redo.status_code == 201, redo.text
    assert (redo.json()["status"], redo.json()["version"], redo.json()["reprocessed"]) == ("updated", 2, True)
    assert _versions(api) == [(1, "superseded", "ingest-1"), (2, "active", "ingest-3")]
    then = api.upload("s1", "travel.md", DOC)
    assert (then.status_code, then.json()["status"], then.json()["version"]) == (200, "unchanged", 2)
    with api.container.sessions() as s:
        details = [r.body["details"] for r in s.scalars(select(AuditRecord).where(AuditRecord.event == "write"))
                   if r.body.get("action") == "document.ingest"]
    assert [d.get("reprocessed", False) for d in details] == [False, True]
    reader = api.principal("r", groups=["g"])
    hits = api.search(reader, "train tickets travel desk").json()["hits"]
    assert {h["citation"]["version"] for h in hits} == {2}


def test_only_an_older_pipeline_generationreprocesses(api: Any) -> None:
    """A classifier or label map version other than the process's, a newer generation (a process still on the
    older pipeline during a rolling upgrade) or a string that is no generation: unchanged, so two processes never
    take turns reclassifying a document."""
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    for values in ({"classifier_version": "other"}, {"label_map_version": "lm-other"},
                   {"pipeline_version": "ingest-3"}, {"pipeline_version": "custom"}):
        with api.container.sessions() as s:
            s.execute(update(DocumentVersion).values(values))
            s.commit()
        r = api.upload("s1", "travel.md", DOC)
        assert (r.status_code, r.json()["status"]) == (200, "unchanged"), (values, r.text)
    assert [v for v, _, _ in _versions(api)] == [1]


def test_a_retracted_version_is_not_reprocessed_so_its_retraction_holds(api: Any) -> None:
    """Found by review: reprocessing the bytes of a retracted current version stored them as a new, unretracted
    version, and the re-sync the upgrade asks for would have brought every retracted document back."""
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    reader = api.principal("r", groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    doc = api.upload("s1", "travel.md", DOC, headers=steward).json()
    assert api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward,
                           json={"reason": "wrong desk"}).status_code == 200
    with api.container.sessions() as s:
        s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
        s.commit()
    again = api.upload("s1", "travel.md", DOC, headers=steward)
    assert (again.status_code, again.json()["status"], again.json()["reprocessed"]) == (200, "unchanged", False)
    assert api.search(reader, "train tickets travel desk").json()["hits"] == []
    assert [v for v, _, _ in _versions(api)] == [1]


def test_concurrent_reprocessing_of_the_same_bytes_keeps_one_version_and_the_other_is_unchanged(api: Any) -> None:
    """Two ingests reprocess the same stale bytes; the second to reserve its version activates first. The other
    then finds those bytes stored by the current pipeline, newer than its reservation: `unchanged`, not a 409
    (found by review: the newer-version conflict was checked first)."""
    from memory.ingestion import FileInput, ingest_files
    from tests.memory.test_ingest_races import Hooked

    c = api.container
    api.source("s1", read_groups=["g"])
    files = [FileInput(DOC.encode(), "e.md", "e.md", "test://e.md")]
    ingest_files(c.sessions, c.store, c.pipeline, source_id="s1", actor="a", files=files)
    with c.sessions() as s:
        s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
        s.commit()
    other: list[Any] = []
    hooked = Hooked(c.store, lambda: other.append(ingest_files(c.sessions, c.store, c.pipeline, source_id="s1",
                                                               actor="b", files=files)[0]), on="upsert")
    [mine] = ingest_files(c.sessions, hooked, c.pipeline, source_id="s1", actor="a", files=files)
    assert (other[0].status, other[0].version, other[0].reprocessed) == ("updated", 3, True)
    assert (mine.status, mine.version) == ("unchanged", 3), mine.error_code
    assert _versions(api) == [(1, "superseded", "ingest-1"), (3, "active", "ingest-3")]


def test_real_stack_a_version_stored_before_names_were_classified_is_classified_on_its_next_ingest(
    real_api: Any, monkeypatch: Any
) -> None:
    """Stored by ingest-1 before names were classified (emulated: no shown names, the old version string), a
    review named after its subject holds no personal data, so a caller denied personal data in that
    jurisdiction is served it, its file name with it. The same bytes uploaded again after the upgrade are
    classified with their name: the chunk is personal, withheld from that caller, masked for one who reads it
    masked."""
    import ingest.pipeline as pipeline_mod

    api = real_api
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    review = "# Performance review\n\nExceeded expectations this year and is recommended for promotion.\n"
    with monkeypatch.context() as old:
        old.setattr(pipeline_mod, "PIPELINE_VERSION", "ingest-1")
        old.setattr(pipeline_mod, "_shown_names", lambda staged: ())
        assert api.upload("hr", "Jonas_Weber_performance_review.md", review).status_code == 201
    india = api.principal("ira", groups=["g"], clearance="restricted", jurisdiction="IN")  # EU->IN: deny_personal
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    [leak] = api.search(india, "recommended for promotion", top_k=3).json()["hits"]
    assert not leak["masked"] and "Jonas_Weber" in leak["citation"]["document_uri"]

    redo = api.upload("hr", "Jonas_Weber_performance_review.md", review)
    assert redo.status_code == 201 and redo.json()["reprocessed"], redo.text
    with api.container.sessions() as s:
        assert [c.personal for c in s.scalars(select(Chunk).join(DocumentVersion)
                                              .where(DocumentVersion.status == "active"))] == [True]
    denied = api.search(india, "recommended for promotion", top_k=3).json()
    assert denied["hits"] == []
    assert [(w["reason"], w["count"]) for w in denied["policy"]["withheld"]] == [("jurisdiction", 1)]
    [masked] = api.search(us, "recommended for promotion", top_k=3).json()["hits"]
    assert masked["masked"] and masked["citation"]["document_uri"] == "upload://hr/<PERSON>_performance_review.md"


def test_a_reprocessing_the_pipeline_now_refuses_keeps_the_stored_version_with_a_warning(api: Any) -> None:
    """Found by review: bytes stored before a limit existed (the 5,000-chunk cap came after ingest-1) are
    refused when processed again; the upload used to fail for a document that is stored and served."""
    api.source("s1", read_groups=["g"])
    body = "\n\n".join(f"# Part {n}\n\n" + f"Rule {n}: expenses of kind {n} are approved by the desk. " * 20
                       for n in range(4))
    first = api.upload("s1", "rules.md", body)
    assert first.status_code == 201 and first.json()["chunks"] >= 2, first.text
    with api.container.sessions() as s:
        s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
        s.commit()
    api.container.pipeline.max_chunks = 1  # the limit the old pipeline did not have
    r = api.upload("s1", "rules.md", body)
    assert (r.status_code, r.json()["status"], r.json()["version"], r.json()["reprocessed"]) == (
        200, "unchanged", 1, False), r.text
    [warning] = r.json()["warnings"]
    assert warning["code"] == "too_many_chunks" and warning["message"].startswith("not reprocessed: ")
    assert _versions(api) == [(1, "active", "ingest-1")]


def test_retracting_the_current_version_after_an_ingest_replaced_it_is_a_conflict_not_a_miss(api: Any) -> None:
    """Found by review: the current version was read before the retraction took the source's lock, so on
    PostgreSQL a reprocessing that committed in between left the retraction on the version it superseded and
    the same text served from the new one. The retraction of "the current version" now checks, under the lock,
    that the version it read is still current (the interleaving is forced here: SQLite serialises them)."""
    import pytest

    from memory import retraction
    from memory.db import transaction
    from memory.errors import ConflictError
    from memory.principals import get_principal, resolve_effective

    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    v1 = api.upload("s1", "travel.md", DOC, headers=steward).json()["version_id"]
    with api.container.sessions() as s:
        s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
        s.commit()
    assert api.upload("s1", "travel.md", DOC, headers=steward).json()["reprocessed"]  # v2 is current now
    with pytest.raises(ConflictError) as err, transaction(api.container.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)
        retraction.retract(s, api.container.store, version_id=v1, reason="x", actor_effective=who, current=True)
    assert err.value.code == "concurrent_update"
    doc_id = api.upload("s1", "travel.md", DOC, headers=steward).json()["document_id"]
    r = api.client.post(f"/v1/documents/{doc_id}/retract", headers=steward, json={"reason": "x"})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
