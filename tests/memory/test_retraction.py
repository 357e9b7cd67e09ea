"""Retraction: invisible at once, impact report, restore, roles, and no search after the commit sees it."""

from __future__ import annotations

import threading

from sqlalchemy import select

from classifiers.types import Label
from memory import retraction, vector_sync
from memory import search as search_svc
from memory.db import transaction
from memory.models import Chunk, DocumentVersion
from memory.policy import EffectivePrincipal
from memory.principals import get_principal, resolve_effective
from memory.stores.base import PayloadPatch, Selector
from memory.vector_sync import repair

DOC = "# Expenses\n\nMeal expenses are reimbursed up to forty euros per day.\n"
QUERY = "meal expenses reimbursed"


def _setup(api):
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    up = api.upload("s1", "exp.md", DOC, headers=steward)
    assert up.status_code == 201, up.text
    return steward, reader, up.json()


def _hit_ids(api, headers):
    r = api.search(headers, QUERY)
    assert r.status_code == 200, r.text
    return [h["citation"]["chunk_id"] for h in r.json()["hits"]]


def test_retract_hides_at_once_and_reports_who_was_served(api):
    steward, reader, doc = _setup(api)
    served = _hit_ids(api, reader)
    assert served
    r = api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward,
                        json={"reason": "contains an outdated rate"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["action"] == "retracted" and report["version"] == 1 and report["by"] == "st"
    assert [rec["principal_id"] for rec in report["served"]] == ["r1"]
    assert set(report["served"][0]["chunk_ids"]) == set(served)
    assert report["principals"] == ["r1"]
    assert _hit_ids(api, reader) == []
    versions = api.client.get(f"/v1/documents/{doc['document_id']}/versions", headers=steward).json()["versions"]
    assert versions[0]["retracted_by"] == "st" and versions[0]["retraction_reason"] == "contains an outdated rate"
    audit = api.client.get("/v1/audit", headers=api.admin, params={"action": "version.retract"}).json()
    assert [x["body"]["details"]["reason"] for x in audit["records"]] == ["contains an outdated rate"]


def test_restore_brings_it_back_and_verify_reports_retraction_meanwhile(api):
    steward, reader, doc = _setup(api)
    cit = api.search(reader, QUERY).json()["hits"][0]["citation"]
    api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward, json={"reason": "check"})
    st = api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit}).json()["status"]
    assert st["state"] == "retracted" and st["retracted_by"] == "st" and st["retraction_reason"] == "check"
    r = api.client.post(f"/v1/documents/{doc['document_id']}/restore", headers=steward,
                        json={"reason": "checked, fine", "version": 1})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "restored"
    assert _hit_ids(api, reader) == [cit["chunk_id"]]
    again = api.client.post(f"/v1/documents/{doc['document_id']}/restore", headers=steward,
                            json={"reason": "again", "version": 1})
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_retracted"


def test_retraction_errors_have_stable_codes(api):
    steward, reader, doc = _setup(api)
    other_steward = api.principal("st2", roles=["steward"])
    path = f"/v1/documents/{doc['document_id']}/retract"
    cases = [
        (reader, {"reason": "x"}, 403, "missing_role"),
        (other_steward, {"reason": "x"}, 404, "document_not_found"),  # not theirs: as if unknown
        (steward, {"reason": ""}, 422, "invalid_request"),
        (steward, {"reason": "   "}, 422, "reason_required"),
        (steward, {"reason": "x", "version": 9}, 404, "version_not_found"),
    ]
    for headers, body, status, code in cases:
        r = api.client.post(path, headers=headers, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    r = api.client.post("/v1/documents/nope/retract", headers=steward, json={"reason": "x"})
    assert r.json()["error"]["code"] == "document_not_found"
    assert api.client.post(path, headers=steward, json={"reason": "x"}).status_code == 200
    r = api.client.post(path, headers=api.admin, json={"reason": "y"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_retracted")


def test_repair_keeps_a_retraction(api):
    steward, reader, doc = _setup(api)
    api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward, json={"reason": "x"})
    c = api.container
    # Simulate a lost vector patch: the payload says visible, SQL says retracted and unsynced.
    c.store.patch(Selector(version_ids=(doc["version_id"],)), PayloadPatch(retracted=False))
    with transaction(c.sessions) as s:
        s.get(DocumentVersion, doc["version_id"]).vectors_synced = False
    repair(c.sessions, c.store)
    assert _hit_ids(api, reader) == []


def test_no_search_after_the_retraction_commits_returns_the_chunk(api):
    _, _, doc = _setup(api)
    c = api.container
    committed = threading.Event()
    stop = threading.Event()
    leaks: list[str] = []
    counts = {"before": 0, "after": 0}
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            while not stop.is_set():
                after = committed.is_set()
                with transaction(c.sessions) as s:
                    who = resolve_effective(s, caller=get_principal(s, principal_id="r1"), acting_for=None)
                    result = search_svc.search(s, store=c.store, embedder=c.embedder, who=who,
                                               request=search_svc.SearchRequest(query=QUERY, top_k=5))
                ids = [h.citation.version_id for h in result.hits]
                counts["after" if after else "before"] += 1
                if after and doc["version_id"] in ids:
                    leaks.append(str(ids))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    actor = EffectivePrincipal("st", None, frozenset({"g"}), Label.INTERNAL, ("EU",), frozenset({"steward"}))
    with transaction(c.sessions) as s:
        retraction.retract(s, c.store, version_id=doc["version_id"], reason="race",
                           actor_effective=actor)
    committed.set()
    while counts["after"] < 6 and not errors:
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert not leaks, leaks
    assert counts["after"] >= 6


def test_a_restore_whose_reveal_never_ran_is_revealed_by_the_next_ingest_of_its_document(api):
    """The restore commits, the process dies before its reveal, then a new version of the document is uploaded:
    that ingest's step D finds the restored version left unsynced and copies its `retracted` flag too (as
    repair does), instead of marking it synced with its points still retracted (hidden for good)."""
    steward, _, doc = _setup(api)
    c = api.container
    vid = doc["version_id"]
    assert api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward,
                           json={"reason": "x"}).status_code == 200
    with transaction(c.sessions) as s:  # the restore, without its reveal
        who = resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)
        retraction.restore(s, version_id=vid, reason="back", actor_effective=who)
    up = api.upload("s1", "exp.md", DOC + "\nTaxi fares are reimbursed in full.\n", headers=steward)
    assert up.status_code == 201 and up.json()["status"] == "updated", up.text
    with c.sessions() as s:
        row = s.get(DocumentVersion, vid)
        assert row.retracted_at is None and row.vectors_synced
        point_ids = list(s.scalars(select(Chunk.point_id).where(Chunk.version_id == vid)))
    assert {p.payload.retracted for p in c.store.retrieve(point_ids)} == {False}
    assert repair(c.sessions, c.store)["synced"] == 0


def test_a_restore_whose_reveal_never_ran_is_revealed_by_uploading_the_same_bytes_again(api):
    steward, reader, doc = _setup(api)
    c = api.container
    assert api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward,
                           json={"reason": "x"}).status_code == 200
    with transaction(c.sessions) as s:  # the restore, without its reveal
        who = resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)
        retraction.restore(s, version_id=doc["version_id"], reason="back", actor_effective=who)
    assert _hit_ids(api, reader) == []
    up = api.upload("s1", "exp.md", DOC, headers=steward)
    assert up.status_code == 200 and up.json()["status"] == "unchanged" and up.json()["revealed"], up.text
    assert _hit_ids(api, reader)  # the retry finished the restore's reveal, the retracted flag included
    assert repair(c.sessions, c.store)["synced"] == 0


def _retracted_flags(c, version_id):
    with c.sessions() as s:
        ids = [pid for row in s.execute(select(Chunk.point_id, Chunk.masked_point_id)
                                        .where(Chunk.version_id == version_id)) for pid in row if pid]
    return {p.payload.retracted for p in c.store.retrieve(ids)}


def test_repair_reveals_a_restored_version_whose_points_missed_the_restore_patch(api):
    """A restore SQL holds, and marked synced, whose patch some points never got (a Qdrant cluster applies an
    operation on some shards only): nothing is unsynced for repair's sync, and the version would stay hidden for
    good. Repair's retraction check finds it. (A restore can no longer commit between step D's read and its mark:
    step D holds the versions' row locks over its patch, vector_sync.sync_versions.)"""
    steward, _, doc = _setup(api)
    c = api.container
    old = doc["version_id"]
    for action in ("retract", "restore"):
        assert api.client.post(f"/v1/documents/{doc['document_id']}/{action}", headers=steward,
                               json={"reason": "x", "version": 1}).status_code == 200
    c.store.patch(Selector(version_ids=(old,)), PayloadPatch(retracted=True))  # the shard that missed it
    with c.sessions() as s:
        row = s.get(DocumentVersion, old)
        assert row.retracted_at is None and row.vectors_synced  # SQL: restored, and marked in sync
    assert _retracted_flags(c, old) == {True}  # the vectors: still retracted
    r = api.client.post("/v1/admin/repair", headers=api.admin)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("abandoned", "synced", "republished", "retractions_resynced")} == {
        "abandoned": 0, "synced": 0, "republished": 0, "retractions_resynced": 1}
    assert _retracted_flags(c, old) == {False}
    with c.sessions() as s:
        assert s.get(DocumentVersion, old).vectors_synced
    assert repair(c.sessions, c.store)["retractions_resynced"] == 0  # settled
    audit = api.client.get("/v1/audit", headers=api.admin, params={"action": "maintenance.repair"}).json()
    assert [r["body"]["details"]["retractions_resynced"] for r in audit["records"]] == [1]


def test_repair_hides_a_retracted_version_whose_points_missed_the_retraction_patch(api):
    """A retraction SQL holds whose patch some points never got (a Qdrant cluster applies an operation on some
    shards only): those points pass the filter (the search drops them at render, SQL's retraction wins) and take
    top_k slots. Repair's retraction check copies the flag from SQL."""
    steward, reader, doc = _setup(api)
    c = api.container
    vid = doc["version_id"]
    assert api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=steward,
                           json={"reason": "x"}).status_code == 200
    assert _hit_ids(api, reader) == []
    with c.sessions() as s:
        ids = tuple(s.scalars(select(Chunk.point_id).where(Chunk.version_id == vid)))
    c.store.patch(Selector(point_ids=ids), PayloadPatch(retracted=False))  # the shard that missed the patch
    assert _hit_ids(api, reader) == []  # SQL still wins at render: dropped, and logged as a disagreement
    assert repair(c.sessions, c.store)["retractions_resynced"] == 1
    assert _retracted_flags(c, vid) == {True}
    assert repair(c.sessions, c.store)["retractions_resynced"] == 0


def test_the_retraction_check_waits_for_a_retraction_in_flight_instead_of_undoing_it(api):
    """A retraction patches its vectors before it commits: a check reading SQL in between sees the version
    restored and its vectors retracted. It confirms under the version's row lock, which the retraction holds
    until it commits, so it then reads the retraction and leaves the vectors as they are."""
    steward, reader, doc = _setup(api)
    c = api.container
    vid = doc["version_id"]
    for action in ("retract", "restore"):
        assert api.client.post(f"/v1/documents/{doc['document_id']}/{action}", headers=steward,
                               json={"reason": "x", "version": 1}).status_code == 200
    patched, release, result = threading.Event(), threading.Event(), []

    def retract_slowly():
        with transaction(c.sessions) as s:
            who = resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)
            retraction.retract(s, c.store, version_id=vid, reason="again", actor_effective=who)
            patched.set()
            release.wait(10)

    t = threading.Thread(target=retract_slowly)
    t.start()
    assert patched.wait(10)
    # On PostgreSQL the check reads the version restored (the retraction has not committed) and its points
    # retracted, and waits for the row lock to confirm; on SQLite its first read already waits for the writer.
    checker = threading.Thread(target=lambda: result.append(vector_sync.settle_retractions(c.sessions, c.store)))
    checker.start()
    checker.join(0.5)
    assert checker.is_alive() and not result  # waiting for the retraction
    release.set()
    t.join(10)
    checker.join(10)
    assert result == [[]]
    assert _retracted_flags(c, vid) == {True}
    assert _hit_ids(api, reader) == []


def test_a_search_overlapping_a_retraction_is_in_its_report_or_serves_nothing_of_it(api, monkeypatch):
    """A retraction commits after a search read its hits' rows and before the search appends its record (on
    PostgreSQL, where reads take no lock; on SQLite the retraction waits for the search). Either the search's
    record is in the retraction's impact report, or the search serves nothing of the version: never a retracted
    chunk served after the retraction returned, to nobody's knowledge (found by review)."""
    _, _, doc = _setup(api)
    c = api.container
    real_render, reports, threads = search_svc._render, [], []

    def retract() -> None:
        with transaction(c.sessions) as s:
            who = resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)
            reports.append(retraction.retract_document(s, c.store, document_id=doc["document_id"], version=None,
                                                       reason="x", actor_effective=who))

    def render_then_retract(*args, **kwargs):
        out = real_render(*args, **kwargs)
        if not threads:
            threads.append(threading.Thread(target=retract))
            threads[0].start()
            threads[0].join(5)  # PostgreSQL: it commits now; SQLite: it waits for this search
        return out

    monkeypatch.setattr(search_svc, "_render", render_then_retract)
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r1"), acting_for=None)
        res = search_svc.search(s, store=c.store, embedder=c.embedder, who=who,
                                request=search_svc.SearchRequest(query=QUERY))
    threads[0].join(60)
    [report] = reports
    reported = {r.seq for r in report.served}
    served_of_it = [h for h in res.hits if h.citation.version_id == doc["version_id"]]
    assert served_of_it == [] or res.audit_seq in reported, (len(served_of_it), res.audit_seq, reported)
    if c.engine.dialect.name == "postgresql":
        assert served_of_it == []  # the retraction committed first: the search's last check dropped its hits
    else:
        assert served_of_it and res.audit_seq in reported  # the retraction waited: the report names the search
