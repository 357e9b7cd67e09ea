"""Relabelling what is stored (memory.relabel): a new label map or source floor reaches the chunks already stored,
in SQL and in the vectors, with the vectors never looser than SQL or the map at any step (a crash included).

Through the real stack: SQL, Qdrant Edge, parsing (fake embedder and classifier); the last test with the real
Presidio classifier, through the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from classifiers.labels import LabelMap
from classifiers.types import Label
from memory import masked_twins, policy_store, relabel, sources, withholdable
from memory.db import transaction
from memory.errors import ConflictError, NotFoundError
from memory.ingestion import masked_point_id_for
from memory.models import AuditRecord, Chunk, DocumentVersion, Source
from tests.conftest import PG_URL
from tests.memory.test_masked_twins import EMAIL_DOC, PLAIN_DOC, _search, _world

QUERY = "contact email address payroll"


def _put_map(c, **changes: Any) -> LabelMap:
    body = {**LabelMap().to_json(), **changes}
    with transaction(c.sessions) as s:
        return policy_store.put_label_map(s, body=body, actor="admin")[0]


def _email_map(c, label: str) -> LabelMap:
    return _put_map(c, mapping={**LabelMap().to_json()["mapping"], "EMAIL_ADDRESS": label})  # type: ignore[dict-item]


def _mail(c) -> Chunk:
    with c.sessions() as s:
        return s.scalars(select(Chunk).where(Chunk.text.contains("@"))).one()


def _points(c, chunk: Chunk) -> dict[str, tuple[int, bool]]:
    """The chunk's points in the vector store (clear, twin) -> (label, personal)."""
    got = {p.id: p.payload for p in c.store.retrieve([chunk.point_id, masked_point_id_for(chunk.id)])}
    return {("twin" if p.masked_twin else "clear"): (p.label, p.personal) for p in got.values()}


def _run(c, **kw: Any) -> relabel.RelabelReport:
    return relabel.relabel(c.sessions, c.store, actor="admin", **kw)


def _served(c, caller: str) -> list[tuple[str, bool]]:
    return [(h.citation.chunk_id, h.masked) for h in _search(c, caller, QUERY).hits]


def test_a_raised_label_reaches_the_stored_chunk_and_its_twin_and_comes_back_down(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    assert (mail.label, _points(c, mail)) == (Label.CONFIDENTIAL, {"clear": (2, True), "twin": (2, True)})
    raised = _email_map(c, "restricted")
    assert (mail.id, False) in _served(c, "eu")  # a new map applies to what is ingested next only

    dry = _run(c, dry_run=True)
    assert (dry.raised, dry.versions_relabelled, dry.points_patched, dry.dry_run) == (1, 1, 0, True)
    assert _mail(c).label == Label.CONFIDENTIAL and _points(c, mail)["clear"] == (2, True)

    report = _run(c)
    assert (report.label_map_version, report.versions, report.chunks) == (raised.version, 2, 2)
    assert (report.raised, report.lowered, report.versions_relabelled, report.points_patched) == (1, 0, 1, 2)
    assert _mail(c).label == Label.RESTRICTED and _points(c, mail) == {"clear": (3, True), "twin": (3, True)}
    with c.sessions() as s:
        version = s.get(DocumentVersion, mail.version_id)
        assert version is not None and version.max_label == Label.RESTRICTED
        assert version.label_map_version == LabelMap().version  # what its ingest applied: citations still verify
        assert s.get(Source, "hr").max_label == Label.RESTRICTED  # type: ignore[union-attr]
        record = s.scalars(select(AuditRecord).where(AuditRecord.event == "write")
                           .order_by(AuditRecord.seq.desc()).limit(1)).one()
    assert record.body["action"] == "policy.relabel" and record.body["details"]["versions"] == [mail.version_id]
    result = _search(c, "eu", QUERY)
    assert mail.id not in {h.citation.chunk_id for h in result.hits}
    assert [(w.source_id, w.reason, w.count) for w in result.withheld] == [("hr", "clearance", 1)]

    again = _run(c)  # idempotent: nothing left to write
    assert (again.versions_relabelled, again.points_patched) == (0, 0)

    _put_map(c)  # the default map again: the label comes back down
    down = _run(c)
    assert (down.lowered, down.raised) == (1, 0)
    assert _points(c, mail) == {"clear": (2, True), "twin": (2, True)}
    assert (mail.id, False) in _served(c, "eu")


def test_a_chunk_no_longer_personal_loses_its_twin_and_one_personal_again_gets_one(container):
    """The masked caller ("us") gets the chunk once at every step: by its twin, in clear once the map says it holds
    no personal data, and masked again (a new twin) once the map says it does."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    assert (mail.id, True) in _served(c, "us")
    default = LabelMap()
    _put_map(c, personal_types=sorted(default.personal_types - {"EMAIL_ADDRESS"}))
    report = _run(c)
    assert (report.no_longer_personal, report.now_personal) == (1, 0)
    assert _points(c, mail) == {"clear": (2, False)}
    assert _mail(c).masked_point_id is None and not _mail(c).personal
    hits = _search(c, "us", QUERY).hits
    assert [h.masked for h in hits if h.citation.chunk_id == mail.id] == [False]
    assert "alice.smith@example.com" in next(h.text for h in hits if h.citation.chunk_id == mail.id)

    _put_map(c)
    out = c.relabel(actor="admin")
    assert (out["now_personal"], out["twins_stored"], out["twins_lacking"]) == (1, 1, 0)
    assert _points(c, mail) == {"clear": (2, True), "twin": (2, True)}
    hits = _search(c, "us", QUERY).hits
    assert [h.masked for h in hits if h.citation.chunk_id == mail.id] == [True]
    assert "alice.smith" not in next(h.text for h in hits if h.citation.chunk_id == mail.id)


def test_a_raised_floor_reaches_one_sources_chunks_only(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}, "wiki": {"plain.txt": PLAIN_DOC}})
    with transaction(c.sessions) as s:
        sources.update(s, source_id="hr", patch=sources.SourcePatch(floor="restricted"), store=c.store, actor="t")
    report = _run(c, source_id="hr")
    assert (report.versions, report.raised) == (1, 1)
    with c.sessions() as s:
        assert dict(s.execute(select(Chunk.source_id, Chunk.label)).tuples().all()) == {
            "hr": Label.RESTRICTED, "wiki": Label.INTERNAL}
    with pytest.raises(NotFoundError) as err:
        _run(c, source_id="nope")
    assert err.value.code == "source_not_found"


def test_a_crash_after_the_commit_leaves_the_vectors_stricter_and_the_next_run_finishes(container, monkeypatch):
    """Lowering: SQL commits the lower label first; a crash before the vectors follow leaves them at the higher
    one (the reader is not served: fail closed) until the next run copies SQL."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    _email_map(c, "restricted")
    _run(c)
    _put_map(c)

    def crash(*_a: Any, **_k: Any) -> int:
        raise RuntimeError("killed after the commit")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(relabel, "_settle", crash)
        _run(c)
    assert _mail(c).label == Label.CONFIDENTIAL and _points(c, mail)["clear"] == (3, True)
    assert mail.id not in {cid for cid, _ in _served(c, "eu")}
    assert (_run(c, dry_run=True).vectors_behind, _points(c, mail)["clear"]) == (1, (3, True))
    finish = _run(c)
    assert (finish.versions_relabelled, finish.points_patched, finish.vectors_behind) == (0, 2, 1)
    assert (mail.id, False) in _served(c, "eu")
    with c.sessions() as s:  # the copy alone changed no SQL: it is audited all the same
        [sync] = [r for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq))
                  if r.body.get("action") == "policy.relabel_sync"]
    assert sync.body["details"] == {"versions": [mail.version_id], "points": 2, "twins_deleted": 0}
    assert _run(c).points_patched == 0  # nothing left to copy: no record
    with c.sessions() as s:
        assert sum(r.body.get("action") == "policy.relabel_sync" for r in s.scalars(select(AuditRecord))) == 1


def test_a_crash_before_the_commit_leaves_the_vectors_tightened_and_sql_as_it_was(container, monkeypatch):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    _email_map(c, "restricted")

    def crash(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("killed before the commit")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(relabel, "_commit", crash)
        _run(c)
    assert _mail(c).label == Label.CONFIDENTIAL and _points(c, mail)["clear"] == (3, True)
    assert mail.id not in {cid for cid, _ in _served(c, "eu")}
    assert _run(c).raised == 1 and _mail(c).label == Label.RESTRICTED


def test_a_crash_between_deleting_a_twin_and_loosening_its_chunk_serves_the_masked_caller_nothing(
    container, monkeypatch
):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    _put_map(c, personal_types=sorted(LabelMap().personal_types - {"EMAIL_ADDRESS"}))

    def crash(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("killed before the clear point was loosened")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(c.store, "patch", crash)  # the tightening patches nothing here: the loosening is the first
        _run(c)
    assert _points(c, mail) == {"clear": (2, True)}  # twin gone, clear point still personal
    assert mail.id not in {cid for cid, _ in _served(c, "us")}  # neither clear nor masked
    assert _run(c).points_patched == 1
    assert (mail.id, False) in _served(c, "us")


def test_a_label_map_change_while_it_runs_stops_it_before_sql_changes(container, monkeypatch):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    _email_map(c, "restricted")
    tighten, calls = relabel._tighten, []

    def tighten_then_change(*a: Any, **k: Any) -> int:
        n = tighten(*a, **k)
        if not calls:  # after step 2 (the commit tightens again, under its locks)
            calls.append(1)
            _email_map(c, "public")
        return n

    monkeypatch.setattr(relabel, "_tighten", tighten_then_change)
    with pytest.raises(ConflictError) as err:
        _run(c)
    assert err.value.code == "label_map_changed" and _mail(c).label == Label.CONFIDENTIAL


def test_a_floor_change_while_it_runs_stops_it_before_sql_changes(container, monkeypatch):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    _email_map(c, "restricted")
    tighten = relabel._tighten

    def tighten_then_change(*a: Any, **k: Any) -> int:
        n = tighten(*a, **k)
        with transaction(c.sessions) as s:
            sources.update(s, source_id="hr", patch=sources.SourcePatch(floor="public"), store=c.store, actor="t")
        return n

    monkeypatch.setattr(relabel, "_tighten", tighten_then_change)
    with pytest.raises(ConflictError) as err:
        _run(c)
    assert err.value.code == "floor_changed" and _mail(c).label == Label.CONFIDENTIAL


def test_relabel_through_the_api_real_classifier(real_api):
    """PERSON raised to restricted in a running API: the stored review is withheld from a confidential reader once
    an admin relabels; a steward may not relabel, an unknown source is 404, a bad body 422."""
    api = real_api
    api.source("hr", read_groups=["g"])
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    assert api.upload("hr", "review.md", "# Review\n\nMaria Schneider led the migration project this year.\n"
                      ).status_code == 201
    default = api.client.get("/v1/policy/labels", headers=api.admin).json()
    assert api.search(reader, "who led the migration project").json()["hits"]
    put = api.client.put("/v1/policy/labels", headers=api.admin,
                         json={"mapping": {**default["mapping"], "PERSON": "restricted"}})
    assert put.status_code == 200, put.text

    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    assert api.client.post("/v1/admin/relabel", headers=steward, json={}).status_code == 403
    missing = api.client.post("/v1/admin/relabel", headers=api.admin, json={"source_id": "nope"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "source_not_found")
    bad = api.client.post("/v1/admin/relabel", headers=api.admin, json={"dry": True})
    assert bad.status_code == 422, bad.text

    r = api.client.post("/v1/admin/relabel", headers=api.admin, json={"source_id": "hr"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["raised"], out["label_map_version"], out["twins_lacking"]) == (1, put.json()["label_map_version"], 0)
    body = api.search(reader, "who led the migration project").json()
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"


def test_a_stewards_new_floor_relabels_the_sources_stored_chunks_before_the_patch_returns(api):
    """A steward raises the floor of a source holding a note: the note is withheld from a confidential reader
    as the PATCH returns (its answer says what was relabelled); lowering it serves the note again."""
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"], clearance="restricted")
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "note.md", "# Renewal\n\nThe renewal terms for next year.\n", steward).status_code == 201
    assert len(api.search(reader, "renewal terms").json()["hits"]) == 1

    r = api.client.patch("/v1/sources/s1", headers=steward, json={"floor": "restricted"})
    assert r.status_code == 200, r.text
    assert r.json()["floor"] == "restricted"
    assert (r.json()["relabel"]["raised"], r.json()["relabel"]["versions"]) == (1, 1)
    body = api.search(reader, "renewal terms").json()
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"

    r = api.client.patch("/v1/sources/s1", headers=steward, json={"floor": "public"})
    assert r.json()["relabel"]["lowered"] == 1
    assert len(api.search(reader, "renewal terms").json()["hits"]) == 1
    unchanged = api.client.patch("/v1/sources/s1", headers=steward, json={"description": "notes"})
    assert unchanged.status_code == 200 and unchanged.json()["relabel"] is None


def test_a_raised_floor_holds_from_its_commit_even_when_its_relabel_fails(api, monkeypatch):
    """The floor's relabel fails after the floor committed (the stored chunk keeps its old label): the floor
    holds anyway at query time. The note is not served to a reader below it, it is counted as withheld for
    clearance with the steward named, and explain says the floor applies; the next relabel settles it."""
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"], clearance="restricted")
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    auditor = api.principal("aud", roles=["auditor"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "note.md", "# Renewal\n\nThe renewal terms for next year.\n", steward).status_code == 201
    [hit] = api.search(reader, "renewal terms").json()["hits"]
    assert hit["label"] == "public"

    def fails(**_: object) -> dict:
        raise RuntimeError("relabel interrupted")

    monkeypatch.setattr(api.container, "relabel", fails)
    client = TestClient(api.client.app, raise_server_exceptions=False)
    r = client.patch("/v1/sources/s1", headers=steward, json={"floor": "restricted"})
    assert r.status_code == 500
    with api.container.sessions() as s:  # the floor committed, the chunk's stored label did not move
        assert s.get(Source, "s1").floor == int(Label.RESTRICTED)
        assert s.get(Chunk, hit["citation"]["chunk_id"]).label == int(Label.PUBLIC)

    body = api.search(reader, "renewal terms").json()
    assert body["hits"] == []
    assert [(w["reason"], w["count"], w["steward"]) for w in body["policy"]["withheld"]] == [("clearance", 1, "st")]
    [hit_for_steward] = api.search(steward, "renewal terms").json()["hits"]
    assert hit_for_steward["label"] == "restricted"  # as the policy applies it
    why = api.client.post("/v1/explain", headers=auditor,
                          json={"principal_id": "r1", "chunk_id": hit["citation"]["chunk_id"]}).json()
    assert (why["visible"], why["withheld_reason"]) == (False, "clearance")
    assert any("floor restricted is above the chunk's stored label public" in n for n in why["notes"])

    monkeypatch.undo()
    r = api.client.patch("/v1/sources/s1", headers=steward, json={"floor": "restricted"})
    assert r.status_code == 200 and r.json()["relabel"]["raised"] == 1
    assert api.search(reader, "renewal terms").json()["hits"] == []


def test_a_raised_floor_holds_for_a_caller_filtered_on_read_groups(api, monkeypatch):
    """A caller who reads more sources than the plan's limit is filtered on the vectors' read groups and labels,
    which a raised floor has not reached yet: the filter leaves the source out, so its chunks are neither served
    nor take the slots of another source's (counted as withheld for clearance)."""
    from memory import search as search_svc

    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"], steward="admin")
    api.source("s2", read_groups=["g"], steward="admin")
    # Many chunks that rank above s2's (more than the refill's rounds reach when each is dropped at render).
    notes = "".join(f"## Renewal {i}\n\n" + f"The renewal terms for year {i} are set in the contract. " * 40
                    + "\n\n" for i in range(30))
    assert api.upload("s1", "notes.md", "# Renewals\n\n" + notes).status_code == 201
    assert api.upload("s2", "other.md", "# Travel\n\nRenewal of the travel policy is due.\n").status_code == 201
    monkeypatch.setattr(search_svc, "SCOPED_SOURCES_LIMIT", 0)  # every caller past the limit
    assert {h["citation"]["source_id"] for h in api.search(reader, "renewal terms", top_k=2).json()["hits"]} == {"s1"}
    with api.container.sessions() as s:  # the floor committed, no relabel yet
        s.get(Source, "s1").floor = int(Label.RESTRICTED)
        s.commit()
    body = api.search(reader, "renewal terms", top_k=2).json()
    assert [h["citation"]["source_id"] for h in body["hits"]] == ["s2"]
    assert [(w["source_id"], w["reason"]) for w in body["policy"]["withheld"]] == [("s1", "clearance")]


# -- races and review findings (2026-11-28) ------------------------------------------------------------------

NOT_PERSONAL = sorted(LabelMap().personal_types - {"EMAIL_ADDRESS"})


def _twinless_personal_mail(c) -> None:
    """The mail chunk personal without a twin (made not personal, then personal again, no backfill since)."""
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    _put_map(c, personal_types=NOT_PERSONAL)
    _run(c)
    _put_map(c)
    _run(c)
    assert _mail(c).personal and _mail(c).masked_point_id is None


def test_a_backfill_racing_a_relabel_never_names_a_twin_for_a_chunk_no_longer_personal(container, monkeypatch):
    """A backfill stores a twin; a relabel makes the chunk not personal before the backfill names it: the twin is
    not named, not committed and deleted, so the masked caller gets the chunk once, in clear, and a caller it is
    withheld from counts it once."""
    c = container
    _twinless_personal_mail(c)
    _put_map(c, personal_types=NOT_PERSONAL)
    settle = masked_twins._settle

    def relabel_first(*a: Any, **k: Any) -> set[str]:
        _run(c)
        return settle(*a, **k)

    monkeypatch.setattr(masked_twins, "_settle", relabel_first)
    out = masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    monkeypatch.undo()
    mail = _mail(c)
    assert (out.stored, mail.personal, mail.masked_point_id) == (0, False, None)
    assert c.store.retrieve([masked_point_id_for(mail.id)]) == []
    assert [(cid, masked) for cid, masked in _served(c, "us") if cid == mail.id] == [(mail.id, False)]
    assert [(w.reason, w.count) for w in _search(c, "us_low", QUERY).withheld] == [("clearance", 1)]
    _put_map(c)  # personal again: the twin is stored (no stale name keeps the backfill away)
    assert c.relabel(actor="admin")["twins_stored"] == 1
    assert (mail.id, True) in _served(c, "us")


def test_a_relabel_clears_a_twin_name_left_on_a_chunk_not_personal(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    _put_map(c, personal_types=NOT_PERSONAL)
    _run(c)
    mail = _mail(c)
    with transaction(c.sessions) as s:  # as a backfill racing an earlier relabel could leave it
        s.get(Chunk, mail.id).masked_point_id = masked_point_id_for(mail.id)  # type: ignore[union-attr]
    report = _run(c)
    assert (report.versions_relabelled, report.raised, report.no_longer_personal) == (1, 0, 0)
    assert _mail(c).masked_point_id is None


def test_a_conflict_in_a_later_batch_still_stores_the_twins_earlier_batches_need(container, monkeypatch):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, **{f"p{i}.txt": f"{PLAIN_DOC} {i}" for i in range(3)}}})
    _put_map(c, personal_types=NOT_PERSONAL)
    _run(c)
    _put_map(c)
    real = relabel._relabel_batch
    done: list[bool] = []

    def conflict_after_the_mail(factory, store, chunks, *a: Any, **k: Any) -> None:
        if done:
            raise ConflictError("the label map changed while relabelling", code="label_map_changed")
        real(factory, store, chunks, *a, **k)
        done.extend(True for ch in chunks if ch.target.personal)

    monkeypatch.setattr(relabel, "_relabel_batch", conflict_after_the_mail)
    monkeypatch.setitem(relabel.relabel.__kwdefaults__, "batch", 1)
    with pytest.raises(ConflictError):
        c.relabel(actor="admin")
    assert _mail(c).personal and _mail(c).masked_point_id is not None


def test_an_ingest_labelled_under_a_replaced_map_is_refused_at_its_commit(container):
    """A map change (and a relabel) while an upload is between processing and its commit: the upload is refused
    with 409 label_map_changed (nothing stored), so what the relabel left is what the map says; sent again, it is
    labelled under the new map."""
    from memory import ingestion
    from memory.ingestion import FileInput

    c = container
    _world(c, {"hr": {"plain.txt": PLAIN_DOC}})

    class ChangeTheMapMidway:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def process_many(self, items: Any) -> Any:
            out = self.inner.process_many(items)
            _email_map(c, "restricted")
            _run(c)
            return out

    mail = FileInput(EMAIL_DOC.encode(), "mail.txt", "mail.txt", "t://hr/mail.txt")
    (out,) = ingestion.ingest_files(c.sessions, c.store, ChangeTheMapMidway(c.pipeline), source_id="hr",
                                    actor="steward", files=[mail])
    assert (out.status, out.error_code) == ("failed", "label_map_changed")
    with c.sessions() as s:
        assert s.scalars(select(Chunk).where(Chunk.text.contains("@"))).all() == []
    (again,) = ingestion.ingest_files(c.sessions, c.store, c.ingest_pipeline(), source_id="hr", actor="steward",
                                      files=[mail])
    assert again.status == "created" and _mail(c).label == Label.RESTRICTED


def test_an_ingest_labelled_under_a_replaced_floor_is_refused_at_its_commit(container):
    from memory import ingestion
    from memory.ingestion import FileInput

    c = container
    _world(c, {"hr": {"plain.txt": PLAIN_DOC}})

    class ChangeTheFloorMidway:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def process_many(self, items: Any) -> Any:
            out = self.inner.process_many(items)
            with transaction(c.sessions) as s:
                sources.update(s, source_id="hr", patch=sources.SourcePatch(floor="restricted"), store=c.store,
                               actor="t")
            return out

    (out,) = ingestion.ingest_files(c.sessions, c.store, ChangeTheFloorMidway(c.pipeline), source_id="hr",
                                    actor="steward", files=[FileInput(b"A new note.", "n.txt", "n.txt", "t://n")])
    assert (out.status, out.error_code) == ("failed", "floor_changed")


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (SQLite serialises the change behind the relabel)")
def test_a_map_put_while_a_batch_commits_refuses_the_batch(container, monkeypatch):
    """Run A (map M1) is between its locks and its commit when M2 is put and run B (under M2, nothing to change
    yet) finishes: A must not commit M1's labels over M2 (409), so the chunk keeps what M2 says."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    _email_map(c, "public")
    recount = withholdable.recount_source
    runs: list[relabel.RelabelReport] = []

    def put_and_run_b(session: Any, *, source_id: str) -> None:
        if not runs:
            _put_map(c)
            runs.append(relabel.relabel(c.sessions, c.store, actor="b"))
        recount(session, source_id=source_id)

    monkeypatch.setattr(withholdable, "recount_source", put_and_run_b)
    with pytest.raises(ConflictError) as err:
        _run(c)
    assert err.value.code == "label_map_changed" and _mail(c).label == Label.CONFIDENTIAL


def test_concurrent_label_map_changes_are_a_conflict_not_a_crash(container, monkeypatch):
    c = container
    latest = policy_store._latest
    monkeypatch.setattr(policy_store, "_latest", lambda s, kind, as_of: None)  # as if another change were unseen
    with pytest.raises(ConflictError) as err:
        _put_map(c)
    monkeypatch.setattr(policy_store, "_latest", latest)
    assert err.value.code == "concurrent_update"


def test_a_run_under_the_map_the_real_classifier_applied_changes_nothing(real_container):
    """Ingested with Presidio (PII in texts and in file names, floors public and confidential), relabelled under
    the same map and floors: nothing changes (the targets are what ingest computed)."""
    from memory import ingestion
    from memory.ingestion import FileInput
    from memory.principals import NewPrincipal, create_principal

    c = real_container
    with transaction(c.sessions) as s:
        create_principal(s, spec=NewPrincipal("steward", "user", ("g",), "restricted", "EU", ("steward", "reader")),
                         actor="t")
        sources.register(s, spec=sources.NewSource("hr", "hr", "steward", "EU", ("g",), floor="public"), actor="t")
        sources.register(s, spec=sources.NewSource("fin", "fin", "steward", "EU", ("g",), floor="confidential"),
                         actor="t")
    files = {
        "Jonas_Weber_review.md": "# Review\n\nHe exceeded expectations and led the billing migration.\n",
        "notes.txt": "Call Maria Garcia at +49 30 1234567 or maria.garcia@example.com. Her IBAN is "
                     "DE89370400440532013000. We met in Berlin on 3 March 2024.\n",
        "from_anna.schmidt@example.com.txt": "Minutes of the planning meeting: nothing personal here.\n",
        "org.txt": "Acme Corporation and Globex signed the contract in Paris.\n",
    }
    for sid in ("hr", "fin"):
        out = ingestion.ingest_files(c.sessions, c.store, c.pipeline, source_id=sid, actor="steward", files=[
            FileInput(t.encode(), n, f"people/{n}", f"t://{sid}/people/{n}") for n, t in files.items()])
        assert all(o.status == "created" for o in out), out
    report = _run(c)
    assert (report.versions, report.versions_relabelled, report.points_patched) == (8, 0, 0)


def test_a_map_change_during_a_folder_ingest_applies_from_its_next_batch(container, tmp_path):
    """A long folder ingest takes the processor for each batch from the container: the batch labelled under the
    replaced map is refused (send it again), and the batches after it are stored under the new map."""
    from memory import documents

    c = container
    _world(c, {"hr": {"plain.txt": PLAIN_DOC}})
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.txt").write_text(f"Write to person{i}@example.com about the payroll calendar.")
    batches: list[int] = []

    class ChangeTheMapInTheFirstBatch:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def process_many(self, items: Any) -> Any:
            out = self.inner.process_many(items)
            if not batches:
                _email_map(c, "restricted")
            batches.append(len(items))
            return out

    out = documents.ingest_paths(c.sessions, c.store, lambda: ChangeTheMapInTheFirstBatch(c.ingest_pipeline()),
                                 source_id="hr", paths=[str(folder)], actor="steward", max_bytes=10**6,
                                 batch_files=2)
    assert batches == [2, 2, 2]
    assert [o.error_code for o in out] == ["label_map_changed"] * 2 + [None] * 4
    with c.sessions() as s:
        assert set(s.scalars(select(Chunk.label).where(Chunk.text.contains("@")))) == {Label.RESTRICTED}


def test_two_backfills_racing_on_one_chunk_store_and_count_its_twin_once(container, monkeypatch):
    """Backfill B stores, names and commits the twin while backfill A holds its own (uncommitted) copy of it: A's
    copy replaces B's point, so A commits the twin too (named by B) and does not count it; the masked caller is
    served the chunk, masked, once."""
    c = container
    _twinless_personal_mail(c)
    mail = _mail(c)
    settle = masked_twins._settle
    runs: list[masked_twins.TwinBackfill] = []
    started: list[bool] = []

    def b_runs_first(*a: Any, **k: Any) -> set[str]:
        if not started:
            started.append(True)
            runs.append(masked_twins.backfill(c.sessions, c.store, c.embedder, None))
        return settle(*a, **k)

    monkeypatch.setattr(masked_twins, "_settle", b_runs_first)
    a = masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    assert (runs[0].stored, a.stored, a.unsettled) == (1, 0, 0)
    assert _mail(c).masked_point_id == masked_point_id_for(mail.id)
    (twin,) = c.store.retrieve([masked_point_id_for(mail.id)])
    assert twin.payload.committed and twin.payload.masked_twin
    assert [(cid, masked) for cid, masked in _served(c, "us") if cid == mail.id] == [(mail.id, True)]


def test_a_put_of_the_same_map_does_not_stop_a_run(container, monkeypatch):
    """Maps compare by content (as an ingest's commit compares them): a new version with the same rules is the
    same map."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    raised = _email_map(c, "restricted")
    tighten, calls = relabel._tighten, []

    def tighten_then_put_again(*a: Any, **k: Any) -> int:
        n = tighten(*a, **k)
        if not calls:  # after step 2 (the commit tightens again, under its locks)
            calls.append(1)
            assert _email_map(c, "restricted").version == raised.version
        return n

    monkeypatch.setattr(relabel, "_tighten", tighten_then_put_again)
    assert _run(c).raised == 1 and _mail(c).label == Label.RESTRICTED


def test_a_copy_that_never_settled_over_a_twin_another_run_named_waits_for_repair(container, monkeypatch):
    """As above, but A's copy of the twin never settled (its chunk's point kept changing): it is not committed
    (fail closed: the masked caller is not served the chunk), its version is left unsynced, and repair() syncs it
    from SQL (then served masked)."""
    from memory.vector_sync import repair

    c = container
    _twinless_personal_mail(c)
    mail = _mail(c)
    twin_id = masked_point_id_for(mail.id)
    settle = masked_twins._settle
    started: list[bool] = []

    def b_runs_then_a_never_settles(*a: Any, **k: Any) -> set[str]:
        if not started:
            started.append(True)
            assert masked_twins.backfill(c.sessions, c.store, c.embedder, None).stored == 1
            store, twins, _ = a
            store.upsert([twins[twin_id]])  # A's last (uncommitted) copy, over B's committed twin
            return {twin_id}
        return settle(*a, **k)

    monkeypatch.setattr(masked_twins, "_settle", b_runs_then_a_never_settles)
    a = masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    monkeypatch.undo()
    assert (a.stored, a.unsettled) == (0, 0) and _mail(c).masked_point_id == twin_id
    assert not c.store.retrieve([twin_id])[0].payload.committed
    assert mail.id not in {cid for cid, _ in _served(c, "us")}
    assert repair(c.sessions, c.store)["synced"] == 1
    assert [(cid, masked) for cid, masked in _served(c, "us") if cid == mail.id] == [(mail.id, True)]


def test_a_relabel_that_moved_many_points_says_to_optimize(container, monkeypatch, caplog):
    """The embedded store's index gauge cannot see points a payload patch moved: past the warning threshold the
    relabel says so itself."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    _email_map(c, "restricted")
    monkeypatch.setattr(c.settings, "unindexed_warn_points", 1)
    assert c.relabel(actor="admin")["points_patched"] == 2
    assert "vectors.moved points=2" in caplog.text


def _sync_records(c: Any) -> list[dict[str, Any]]:
    with c.sessions() as s:
        return [r.body for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq))
                if r.body.get("action") in ("policy.relabel", "policy.relabel_sync")]


def test_a_batch_that_only_tightens_vectors_looser_than_sql_is_audited(container):
    from memory.stores.base import PayloadPatch, Selector

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    assert _points(c, mail)["clear"] == (2, True)
    # Vectors looser than SQL (what never happens by design: the anomaly most worth a record).
    c.store.patch(Selector(point_ids=(mail.point_id,)), PayloadPatch(label=0, personal=False))
    report = _run(c)
    assert report.points_patched >= 1 and _points(c, mail)["clear"] == (2, True)
    [sync] = [r for r in _sync_records(c) if r["action"] == "policy.relabel_sync"]
    assert sync["details"]["versions"] == [mail.version_id] and sync["details"]["points"] >= 1


def test_leftovers_copied_in_a_batch_that_also_changes_sql_are_audited_apart(container, monkeypatch):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}, "fin": {"plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    _email_map(c, "restricted")
    _run(c)
    _put_map(c)

    def crash(*_a: Any, **_k: Any) -> int:
        raise RuntimeError("killed after the commit")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(relabel, "_settle", crash)
        _run(c)
    assert _mail(c).label == Label.CONFIDENTIAL and _points(c, mail)["clear"] == (3, True)  # the leftover
    with transaction(c.sessions) as s:  # a real change elsewhere, in the same batch of the next run
        sources.update(s, source_id="fin", patch=sources.SourcePatch(floor="confidential"), store=c.store,
                       actor="admin")
    report = _run(c)
    assert report.versions_relabelled == 1 and _points(c, mail)["clear"] == (2, True)  # leftover copied
    relabelled, synced = _sync_records(c)[-2:]
    assert relabelled["action"] == "policy.relabel" and mail.version_id not in relabelled["details"]["versions"]
    assert synced["action"] == "policy.relabel_sync" and synced["details"]["versions"] == [mail.version_id]


def test_vectors_tightened_by_a_batch_whose_commit_is_refused_are_audited(container, monkeypatch):
    from memory.stores.base import PayloadPatch, Selector

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}, "fin": {"plain.txt": PLAIN_DOC}})
    mail = _mail(c)
    c.store.patch(Selector(point_ids=(mail.point_id,)), PayloadPatch(label=0, personal=False))  # looser than SQL
    with transaction(c.sessions) as s:  # a real SQL change in the same batch
        sources.update(s, source_id="fin", patch=sources.SourcePatch(floor="confidential"), store=c.store,
                       actor="admin")

    def refused(*_a: Any, **_k: Any) -> None:
        raise ConflictError("the label map changed while relabelling", code="label_map_changed")

    monkeypatch.setattr(relabel, "_commit", refused)
    with pytest.raises(ConflictError):
        relabel.relabel(c.sessions, c.store, actor="admin")
    assert _points(c, mail)["clear"] == (2, True)  # tightened before the refused commit
    [sync] = [r for r in _sync_records(c) if r["action"] == "policy.relabel_sync"]
    assert mail.version_id in sync["details"]["versions"] and sync["details"]["points"] >= 1


def test_points_tightened_by_a_batch_whose_copy_fails_are_audited(container, monkeypatch):
    """Step 4 (the copy, which carries the batch's policy.relabel_sync record) may fail after step 2 tightened
    the vectors: that write is audited on its own, since the next run finds nothing left to copy."""
    from memory.errors import DatabaseBusyError
    from memory.stores.base import PayloadPatch, Selector

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    mail = _mail(c)
    c.store.patch(Selector(point_ids=(mail.point_id,)), PayloadPatch(label=0, personal=False))  # looser than SQL

    def busy(*_a: Any, **_k: Any) -> int:
        raise DatabaseBusyError("lock wait timed out")

    with monkeypatch.context() as m, pytest.raises(DatabaseBusyError):
        m.setattr(relabel, "_settle", busy)
        relabel.relabel(c.sessions, c.store, actor="admin")
    assert _points(c, mail)["clear"] == (2, True)  # tightened by step 2
    relabel.relabel(c.sessions, c.store, actor="admin")  # a later good run: nothing left to copy
    synced = [r for r in _sync_records(c) if r["action"] == "policy.relabel_sync"]
    assert [r["details"]["versions"] for r in synced] == [[mail.version_id]]


def test_a_run_whose_points_another_runs_copy_set_back_tightens_them_again_before_it_commits(container, monkeypatch):
    """Run A (one map) commits and copies SQL onto the points under the versions' locks; run B (a stricter map,
    read meanwhile) had tightened them before that copy, which set them back. B's commit, under the same locks,
    tightens them once more: the vectors are never looser than SQL, even if B's own copy never runs (a crash).
    (Found by review.)"""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    _email_map(c, "internal")  # run A's map
    real_settle, b = relabel._settle, {}

    def b_reads_and_tightens_before_a_copies(factory, store, chunks, **kw):
        if not b:
            b["map"] = _email_map(c, "restricted")
            with c.sessions() as s:
                b["chunks"] = relabel._chunks(s, list(s.scalars(relabel._versions_after("", None, 64))), b["map"])
            relabel._tighten(store, b["chunks"], relabel._payloads(store, b["chunks"]))
        return real_settle(factory, store, chunks, **kw)

    monkeypatch.setattr(relabel, "_settle", b_reads_and_tightens_before_a_copies)
    relabel.relabel(c.sessions, c.store, actor="admin")  # run A: its copy sets B's tightening back
    monkeypatch.undo()
    assert max(label for label, _ in _points(c, _mail(c)).values()) < int(Label.RESTRICTED)
    relabel._commit(c.sessions, c.store, [ch for ch in b["chunks"] if ch.sql_behind], b["map"], actor="admin",
                    acting_for=None, tightened=Counter())  # run B commits; its copy (step 4) never runs
    mail = _mail(c)
    assert mail.label == int(Label.RESTRICTED)
    assert all(label >= mail.label and personal == mail.personal for label, personal in _points(c, mail).values())
