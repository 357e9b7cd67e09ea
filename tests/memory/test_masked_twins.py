"""Masked twins: a caller who reads a source masked is searched on the masked text of its personal chunks, so a
hit's score no longer confirms a guessed name (docs/operations.md, "What a masked hit still tells its caller").

Through the real stack: SQL, Qdrant Edge, parsing; the leak test with the real model and classifier."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import select, update

from memory import explain, ingestion, masked_twins, retraction, search, sources
from memory.db import transaction
from memory.ingestion import FileInput
from memory.models import Chunk, DocumentVersion, Source
from memory.principals import NewPrincipal, create_principal, get_principal, resolve_effective
from memory.rendering import mask
from memory.stores.base import PayloadPatch, Selector

# Default transfer rules (memory.policy.DEFAULT_TRANSFER_RULES): EU data is allowed to EU callers, masked for US
# callers, and its personal data withheld from IN callers.
CALLERS = {
    "eu": ("EU", "confidential"),  # clear
    "us": ("US", "confidential"),  # masked
    "in": ("IN", "confidential"),  # personal data withheld (deny_personal)
    "us_low": ("US", "internal"),  # masked, but personal chunks are confidential: withheld for clearance
}


def _world(c, docs: dict[str, dict[str, str]]) -> None:
    """Principals (CALLERS, and a steward), EU sources readable by group g, each with its documents."""
    with transaction(c.sessions) as s:
        create_principal(s, spec=NewPrincipal("steward", "user", ("g",), "restricted", "EU", ("steward", "reader")),
                         actor="t")
        for pid, (j, clearance) in CALLERS.items():
            create_principal(s, spec=NewPrincipal(pid, "user", ("g",), clearance, j), actor="t")
        for sid in docs:
            sources.register(s, spec=sources.NewSource(sid, sid, "steward", "EU", ("g",)), actor="t")
    for sid, files in docs.items():
        out = ingestion.ingest_files(c.sessions, c.store, c.pipeline, source_id=sid, actor="steward", files=[
            FileInput(text.encode(), name, name, f"t://{sid}/{name}") for name, text in files.items()])
        assert all(o.status == "created" for o in out), out


def _search(c, caller: str, query: str, top_k: int = 10, source_ids: tuple[str, ...] | None = None,
            purpose: str | None = None):
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id=caller), acting_for=None)
        request = search.SearchRequest(query=query, top_k=top_k, source_ids=source_ids, purpose=purpose)
        return search.search(s, store=c.store, embedder=c.embedder, who=who, request=request)


def _chunks(c) -> list[Chunk]:
    with c.sessions() as s:
        return list(s.scalars(select(Chunk).order_by(Chunk.source_id, Chunk.ordinal)))


# -- the leak ----------------------------------------------------------------------------------------------

REVIEW = "{} exceeded expectations in the quarterly review and led the billing migration to the new platform."
NAMES = ["Jonas Weber", "Maria Garcia", "Peter Novak", "Laura Fischer", "Thomas Becker", "Anna Schmidt",
         "David Miller", "Sofia Rossi", "Lukas Wagner", "Emma Dubois", "Oliver Brown", "Clara Jensen"]


def test_a_masked_callers_score_does_not_confirm_a_guessed_name(real_container):
    c = real_container
    # Two one-chunk documents that differ only by the name in them, in two sources of the same jurisdiction.
    _world(c, {"weber": {"review.txt": REVIEW.format("Jonas Weber")},
               "garcia": {"review.txt": REVIEW.format("Maria Garcia")}})
    chunks = {ch.source_id: ch for ch in _chunks(c)}
    assert all(ch.personal and ch.masked_point_id for ch in chunks.values())

    def scores(caller: str, sid: str) -> list[float]:
        out = []
        for name in NAMES:
            (hit,) = _search(c, caller, REVIEW.format(name), top_k=1, source_ids=(sid,)).hits
            assert hit.masked is (caller == "us")
            out.append(hit.score)
        return out

    # The clear caller's score rises for the right name: the guess is confirmed (as the rules allow).
    clear = scores("eu", "weber")
    assert int(np.argmax(clear)) == NAMES.index("Jonas Weber")
    assert clear[0] - sorted(clear)[-2] > 0.02
    # The masked caller's scores are the same whichever name the document holds: for every guess, the
    # document naming Jonas Weber scores exactly as the one naming Maria Garcia. Nothing tells the right one.
    masked_weber, masked_garcia = scores("us", "weber"), scores("us", "garcia")
    assert masked_weber == pytest.approx(masked_garcia, abs=1e-5)
    assert int(np.argmax(masked_weber)) != NAMES.index("Jonas Weber") or \
        masked_weber[0] - sorted(masked_weber)[-2] < 0.01
    # ... and each is the score of the masked text it is served.
    (hit,) = _search(c, "us", REVIEW.format("Jonas Weber"), top_k=1, source_ids=("weber",)).hits
    assert hit.text == REVIEW.format("<PERSON>")
    served = np.asarray(c.embedder.embed([hit.text])[0])
    query = np.asarray(c.embedder.embed_query(REVIEW.format("Jonas Weber")))
    assert hit.score == pytest.approx(float(served @ query), abs=1e-4)


# -- who gets which point ----------------------------------------------------------------------------------

EMAIL_DOC = "Contact alice.smith@example.com about payroll."
PLAIN_DOC = "Alice in wonderland reads the payroll calendar."


def test_each_chunk_once_as_its_clear_point_or_its_twin(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    personal = next(ch for ch in _chunks(c) if ch.personal)
    plain = next(ch for ch in _chunks(c) if not ch.personal)
    assert plain.masked_point_id is None and personal.masked_point_id is not None
    assert c.store.count() == 3  # two chunks, one twin
    twin = c.store.retrieve([personal.masked_point_id])[0].payload
    assert twin == c.store.retrieve([personal.point_id])[0].payload.twin()
    query = "alice smith example com payroll"
    eu, us, in_ = (_search(c, who, query) for who in ("eu", "us", "in"))
    # The clear caller: both chunks, in clear, scored on the clear text.
    assert {(h.citation.chunk_id, h.masked) for h in eu.hits} == {(personal.id, False), (plain.id, False)}
    # The masked caller: both chunks, each once; the personal one masked, scored on its masked text.
    assert sorted(h.citation.chunk_id for h in us.hits) == sorted([personal.id, plain.id])
    got = {h.citation.chunk_id: h for h in us.hits}
    assert got[personal.id].masked and got[personal.id].text == "Contact <EMAIL_ADDRESS> about payroll."
    masked_vec, qvec = c.embedder.embed([got[personal.id].text])[0], c.embedder.embed_query(query)
    assert got[personal.id].score == pytest.approx(float(masked_vec @ qvec), abs=1e-5)
    assert got[personal.id].score < next(h.score for h in eu.hits if h.citation.chunk_id == personal.id)
    # deny_personal: the plain chunk only, never the twin; and it counts one withheld chunk, not two.
    assert [h.citation.chunk_id for h in in_.hits] == [plain.id]
    assert [(w.reason, w.count) for w in in_.withheld] == [("jurisdiction", 1)]
    for res in (eu, us):
        assert res.withheld == []
    # The policy block says which jurisdictions' personal data came masked (searched through the twins).
    grants = {g["data"]: g for g in us.rules_applied["jurisdiction_grants"]}
    assert grants["EU"] == {"data": "EU", "personal": True, "masked": True}
    assert not any(g["masked"] for g in eu.rules_applied["jurisdiction_grants"])


def test_withheld_counts_count_each_chunk_once(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    # us_low reads hr masked but may not read confidential chunks: the personal one is withheld for clearance,
    # counted once (its twin is never a candidate of the count).
    res = _search(c, "us_low", "alice smith example com payroll")
    assert [h.masked for h in res.hits] == [False]
    assert [(w.reason, w.count) for w in res.withheld] == [("clearance", 1)]


def test_a_chunk_read_masked_is_not_a_recall_miss(container):
    """The count search ranks the clear point; the served search ranks the twin. A clear score above the last
    served hit is not a miss, and must not trigger a repair (its flag would tell how the clear text scored)."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    res = _search(c, "us", "alice smith example com", top_k=1)
    assert [h.masked for h in res.hits] == [False]  # the plain chunk outranks the masked text
    assert res.recall_repaired is False and res.withheld == []
    clear = _search(c, "eu", "alice smith example com", top_k=1)
    assert [h.masked for h in clear.hits] == [False]
    assert clear.hits[0].citation.chunk_id != res.hits[0].citation.chunk_id  # the clear caller ranks it first


# -- everything that changes or deletes points covers twins -------------------------------------------------


def test_retraction_source_changes_and_version_deletes_cover_the_twin(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    (ch,) = _chunks(c)
    with transaction(c.sessions) as s:
        upd = sources.update(s, source_id="hr", patch=sources.SourcePatch(read_groups=("g", "h")),
                             store=c.store, actor="steward")
    assert upd.access_changed
    sources.publish_access(c.sessions, c.store, "hr")
    assert sorted(c.store.retrieve([ch.masked_point_id])[0].payload.read_groups) == ["g", "h"]
    with transaction(c.sessions) as s:
        steward = resolve_effective(s, caller=get_principal(s, principal_id="steward"), acting_for=None)
        retraction.retract(s, c.store, version_id=ch.version_id, reason="test", actor_effective=steward)
    assert c.store.retrieve([ch.masked_point_id])[0].payload.retracted is True
    assert _search(c, "us", "alice payroll").hits == []
    c.store.delete(Selector(version_ids=(ch.version_id,)))  # how an abandoned ingest's points go
    assert c.store.retrieve([ch.point_id, ch.masked_point_id]) == []


def test_repair_republishes_a_source_whose_twin_alone_carries_stale_access(container):
    """On a cluster one operation over a source can land on some shards only: a twin left with the old read
    groups while its clear point has the new ones is found by the repair's samples and republished."""
    from memory.vector_sync import repair

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    (ch,) = _chunks(c)
    assert repair(c.sessions, c.store)["republished"] == 0
    c.store.patch(Selector(point_ids=(ch.masked_point_id,)), PayloadPatch(read_groups=("stale",)))
    assert repair(c.sessions, c.store)["republished"] == 1
    assert c.store.retrieve([ch.masked_point_id])[0].payload.read_groups == \
        c.store.retrieve([ch.point_id])[0].payload.read_groups
    assert repair(c.sessions, c.store)["republished"] == 0


def test_repair_samples_a_twin_of_a_source_whose_sampled_chunks_have_none(container, monkeypatch):
    """The repair samples two chunks of each source; when neither is personal, a twin of the source is sampled
    too (an index seek on (source_id, masked_point_id)), so a twin left with stale access is still found."""
    from memory.vector_sync import repair

    c = container
    _world(c, {"hr": {"a.txt": PLAIN_DOC, "b.txt": "Bob in accounting files the payroll calendar.",
                      "mail.txt": EMAIL_DOC}})
    # The two chunk samples are not personal (which two a LIMIT without ORDER BY returns is the database's
    # choice: pin it), so only the twin sample can find the stale twin.
    monkeypatch.setattr(sources, "_ACCESS_SAMPLES", sources._ACCESS_SAMPLES.where(Chunk.personal.is_(False)))
    with c.sessions() as s:
        sampled = list(s.execute(sources._ACCESS_SAMPLES, {"source_id": "hr"}))
    assert len(sampled) == 2 and all(twin is None for _, twin in sampled)
    (personal,) = [ch for ch in _chunks(c) if ch.personal]
    c.store.patch(Selector(point_ids=(personal.masked_point_id,)), PayloadPatch(read_groups=("g", "stale")))
    assert repair(c.sessions, c.store)["republished"] == 1
    assert c.store.retrieve([personal.masked_point_id])[0].payload.read_groups == ("g",)
    assert repair(c.sessions, c.store)["republished"] == 0


def test_a_twin_whose_row_says_clear_is_dropped(container, caplog):
    """SQL decides: a twin hit for a chunk SQL would serve this caller clear (here: its source moved to a
    jurisdiction the caller reads in clear after the vectors were written) is not served."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    (ch,) = _chunks(c)
    # The vectors still say EU (masked for US callers); SQL now says US (clear for them).
    with transaction(c.sessions) as s:
        s.execute(update(Source).where(Source.id == "hr").values(jurisdiction="US"))
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="us"), acting_for=None)
        request = search.SearchRequest(query="alice payroll", top_k=5)
        planned = search.plan(s, who=who, request=request)
    # Plan under the old jurisdiction's scope: build it by hand as a plan read before the change would have.
    from memory import policy

    flt = policy.build_filter(who, planned.rules, as_of=planned.as_of, latest=True, readable={"hr": "EU"})
    assert flt.scope is not None and flt.scope.masked == {"hr"}
    with transaction(c.sessions) as s:
        stale = search.SearchPlan(**{**planned.__dict__, "flt": flt, "readable": None})
        res = search.search(s, store=c.store, embedder=c.embedder, who=who, request=request, planned=stale)
    assert res.hits == []
    assert any("search.twin_disagrees" in r.getMessage() and ch.id in r.getMessage() for r in caplog.records)
    assert all("alice" not in r.getMessage() for r in caplog.records)


# -- chunks stored before twins: fail closed, then backfill -------------------------------------------------


def _forget_twins(c) -> list[Chunk]:
    """As a store written before masked twins: no twin points, no masked_point_id."""
    chunks = [ch for ch in _chunks(c) if ch.personal]
    c.store.delete(Selector(point_ids=tuple(ch.masked_point_id for ch in chunks)))
    with transaction(c.sessions) as s:
        s.execute(update(Chunk).values(masked_point_id=None))
    return chunks


def test_backfill_stores_the_missing_twins_once(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC, "two.txt": "Ms Maria Garcia signed it."}})
    personal = _forget_twins(c)
    assert len(personal) == 2 and c.store.count() == 3
    # Fail closed: the masked caller is not served the personal chunks, the clear caller still is.
    assert [h.masked for h in _search(c, "us", "alice payroll maria garcia").hits] == [False]
    assert len(_search(c, "eu", "alice payroll maria garcia").hits) == 3
    with c.sessions() as s:
        assert masked_twins.count_lacking(s) == 2
        note = explain.explain_access(s, c.store, principal_id="us", chunk_id=personal[0].id)
    assert any("no masked twin" in n for n in note.notes)

    report = masked_twins.backfill(c.sessions, c.store, c.embedder, None, batch=1)
    assert report.as_dict() == {"stored": 2, "embedded": 2, "other_model": 0, "point_missing": 0, "unsettled": 0}
    assert c.store.count() == 5
    for ch in _chunks(c):
        if ch.personal:
            assert ch.masked_point_id == ingestion.masked_point_id_for(ch.id)
            twin = c.store.retrieve([ch.masked_point_id])[0]
            assert twin.payload == c.store.retrieve([ch.point_id])[0].payload.twin()
    res = _search(c, "us", "alice payroll maria garcia")
    assert sorted(h.masked for h in res.hits) == [False, True, True]
    with c.sessions() as s:
        for h in res.hits:
            if h.masked:  # served masked, scored on exactly that text
                ch = s.get(Chunk, h.citation.chunk_id)
                assert h.text == mask(ch.text, ch.spans)
        assert masked_twins.count_lacking(s) == 0
    # Idempotent: nothing left to do.
    assert masked_twins.backfill(c.sessions, c.store, c.embedder, None).stored == 0
    assert c.store.count() == 5


def test_backfill_copies_a_retracted_chunks_state_and_skips_other_models(container):
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}, "crm": {"two.txt": "Ms Maria Garcia signed it."}})
    retracted, other = sorted(_forget_twins(c), key=lambda ch: ch.source_id != "hr")
    with transaction(c.sessions) as s:
        steward = resolve_effective(s, caller=get_principal(s, principal_id="steward"), acting_for=None)
        retraction.retract(s, c.store, version_id=retracted.version_id, reason="test", actor_effective=steward)
        s.execute(update(DocumentVersion).where(DocumentVersion.id == other.version_id)
                  .values(embedding_model="another-model@1"))
    report = masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    assert (report.stored, report.other_model) == (1, 1)
    assert c.store.retrieve([ingestion.masked_point_id_for(retracted.id)])[0].payload.retracted is True
    assert c.store.retrieve([ingestion.masked_point_id_for(other.id)]) == []
    assert _search(c, "us", "alice payroll").hits == []


def test_a_backfill_that_crashes_before_naming_its_twins_leaves_nothing_any_search_admits(container, monkeypatch):
    """A crash between storing the twins and naming them in SQL: the twins are stored uncommitted, so no filter
    admits them and they take no `top_k` slot (the masked caller's one slot goes to the next chunk); the next
    run stores them again under the same ids and names them."""
    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    (personal,) = _forget_twins(c)
    query = "contact email address payroll"
    assert [h.citation.chunk_id for h in _search(c, "eu", query, top_k=1).hits] == [personal.id]

    def crash(*_a, **_k):
        raise RuntimeError("killed before SQL named the twins")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(masked_twins, "transaction", crash)
        masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    (orphan,) = c.store.retrieve([ingestion.masked_point_id_for(personal.id)])
    assert orphan.payload.masked_twin and not orphan.payload.committed
    (hit,) = _search(c, "us", query, top_k=1).hits  # top_k full: the orphan took no slot
    assert hit.citation.chunk_id != personal.id and not hit.masked

    assert masked_twins.backfill(c.sessions, c.store, c.embedder, None).stored == 1
    assert c.store.count() == 3  # two chunks, one twin
    (hit,) = _search(c, "us", query, top_k=1).hits
    assert (hit.citation.chunk_id, hit.masked) == (personal.id, True)


def test_a_backfill_that_crashes_before_syncing_its_twins_is_finished_by_repair(container, monkeypatch):
    """A crash after SQL named the twins, before their versions were synced: the chunk is not served to the
    masked caller (its twin is uncommitted: fail closed), its version is left unsynced, and repair() commits the
    twin with the version's state from SQL."""
    from memory import vector_sync

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC}})
    (personal,) = _forget_twins(c)

    def crash(*_a, **_k):
        raise RuntimeError("killed before the versions were synced")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(masked_twins, "_commit_twins", crash)
        masked_twins.backfill(c.sessions, c.store, c.embedder, None)
    with c.sessions() as s:
        assert s.get(Chunk, personal.id).masked_point_id == ingestion.masked_point_id_for(personal.id)
        assert vector_sync.unsynced_versions(s) == [personal.version_id]
        assert masked_twins.count_lacking(s) == 0
    assert _search(c, "us", "contact email address payroll").hits == []
    assert vector_sync.repair(c.sessions, c.store)["synced"] == 1
    (twin,) = c.store.retrieve([ingestion.masked_point_id_for(personal.id)])
    assert twin.payload == c.store.retrieve([personal.point_id])[0].payload.twin()
    assert [h.masked for h in _search(c, "us", "contact email address payroll").hits] == [True]


def test_a_backfill_commits_its_twins_alone_and_never_undoes_a_retraction_that_starts_meanwhile(
    container, monkeypatch
):
    """Step 4 patches the twin points only (a patch moves a point out of its indexed segment; the version's
    other points keep theirs), never the retracted flag: a retraction that starts while the backfill patches
    waits for the versions' row locks, then patches the whole version, the twin included, and the version is
    left to repair() (found by review: syncing whole versions with their retracted flag undid it)."""
    import threading

    from memory import vector_sync

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "plain.txt": PLAIN_DOC}})
    (personal,) = _forget_twins(c)
    twin_id = ingestion.masked_point_id_for(personal.id)
    real_patch, selectors, threads = c.store.patch, [], []

    def retract() -> None:
        with transaction(c.sessions) as s:
            steward = resolve_effective(s, caller=get_principal(s, principal_id="steward"), acting_for=None)
            retraction.retract(s, c.store, version_id=personal.version_id, reason="r", actor_effective=steward)

    def patch(selector, p, *, durable=True):
        selectors.append(selector)
        if p.committed is True and not threads:  # a steward retracts while the backfill commits its twins
            threads.append(threading.Thread(target=retract))
            threads[0].start()
            threads[0].join(0.5)
        return real_patch(selector, p, durable=durable)

    with monkeypatch.context() as m:
        m.setattr(c.store, "patch", patch)
        assert masked_twins.backfill(c.sessions, c.store, c.embedder, None).stored == 1
        threads[0].join(60)
    ours = [sel for sel in selectors if sel.point_ids]
    assert ours and all(sel.point_ids == (twin_id,) for sel in ours)  # the twin alone, never the version
    clear, twin = (c.store.retrieve([pid])[0].payload for pid in (personal.point_id, twin_id))
    assert clear.retracted and twin.retracted and twin.committed
    for caller in ("eu", "us"):
        assert personal.id not in {h.citation.chunk_id for h in _search(c, caller, "contact email payroll").hits}
    with c.sessions() as s:  # the retraction committed after the backfill, and patched its whole version
        assert vector_sync.unsynced_versions(s) == []
    assert vector_sync.repair(c.sessions, c.store)["synced"] == 0
    assert c.store.retrieve([twin_id])[0].payload == c.store.retrieve([personal.point_id])[0].payload.twin()
    assert c.store.retrieve([twin_id])[0].payload.retracted


def test_the_api_backfills_missing_twins_on_its_repair_thread_as_it_starts(container, caplog):
    """On the embedded store only the API's process can write the twins while it runs: its repair thread runs
    the backfill once as it starts (audited, gauged), then repairs on its interval; a failed first run is logged
    and the loop goes on."""
    from functools import partial

    from prometheus_client import REGISTRY

    from memory.maintenance import RepairLoop
    from memory.models import AuditRecord

    c = container
    _world(c, {"hr": {"mail.txt": EMAIL_DOC, "two.txt": "Ms Maria Garcia signed it."}})
    assert len(_forget_twins(c)) == 2
    loop = RepairLoop(c.sessions, c.store, interval_s=3600, pending_grace_s=900,
                      first=partial(c.backfill_twins, actor="system"))  # as the API passes it
    loop.start()
    loop.stop(timeout_s=60)
    with c.sessions() as s:
        assert masked_twins.count_lacking(s) == 0
        runs = [b["details"] for b in s.scalars(select(AuditRecord.body))
                if b.get("action") == "maintenance.backfill_twins"]
    # The masked texts' vectors came from the embedding cache (ingest embedded them before they were forgotten).
    assert runs == [{"stored": 2, "embedded": 0, "other_model": 0, "point_missing": 0, "unsettled": 0,
                     "lacking": 0}]
    assert REGISTRY.get_sample_value("memory_personal_chunks_without_twin") == 0
    assert sorted(h.masked for h in _search(c, "us", "alice payroll maria garcia").hits) == [True, True]

    def broken() -> None:
        raise RuntimeError("embedder down")

    loop = RepairLoop(c.sessions, c.store, interval_s=0.05, pending_grace_s=900, first=broken)
    loop.start()
    time.sleep(0.3)
    loop.stop()
    assert "maintenance.first_run_failed error=RuntimeError" in caplog.text


def test_withheld_counts_do_not_depend_on_a_personal_chunks_clear_text(container):
    """A caller allowed the masked text (US, purpose payroll) searches again with a purpose the data subjects did
    not consent to: the chunk is withheld for consent and counted. The count, taken against the last served
    hit's score (chosen through top_k), must not tell whether a guessed name is the one in the clear text: the
    count search ranks a personal chunk through its twin (found by a review: it used to be a yes/no oracle)."""
    c = container
    with transaction(c.sessions) as s:
        create_principal(s, spec=NewPrincipal("steward", "user", ("g",), "restricted", "EU", ("steward", "reader")),
                         actor="t")
        create_principal(s, spec=NewPrincipal("us", "user", ("g",), "confidential", "US"), actor="t")
        sources.register(s, spec=sources.NewSource("pub", "pub", "steward", "EU", ("g",)), actor="t")
        sources.register(s, spec=sources.NewSource("hr", "hr", "steward", "EU", ("g",),
                         personal_data_requires_consent=True, consent_purposes=("payroll",)), actor="t")
    fillers = ["mr exceeded expectations review", "exceeded expectations review", "mr expectations review",
               "exceeded review", "mr review notes", "review notes agenda", "agenda notes lunch"]
    docs = [("pub", f"ref{i}.txt", t) for i, t in enumerate(fillers)]
    for sid, name, text in [*docs, ("hr", "rev.txt", "Mr Jonas Weber exceeded expectations in the review.")]:
        out = ingestion.ingest_files(c.sessions, c.store, c.pipeline, source_id=sid, actor="steward",
                                     files=[FileInput(text.encode(), name, name, f"t://{sid}/{name}")])
        assert out[0].status == "created"

    def probe(guess: str) -> list[tuple[float, int]]:
        seen = []
        for top_k in range(1, 8):
            res = _search(c, "us", f"Mr {guess} exceeded expectations review", top_k=top_k, purpose="marketing")
            seen.append((round(res.hits[-1].score, 4), sum(w.count for w in res.withheld)))
        return seen

    right = probe("Jonas Weber")
    assert any(n for _, n in right)  # the chunk is counted (withheld for consent) ...
    assert probe("Maria Garcia") == right == probe("Peter Novak")  # ... the same whichever name is guessed


def test_a_name_found_in_the_file_name_is_masked_in_the_text_and_its_twin(container):
    """The file name marks the chunk personal (a person: `Ms Maria Garcia.txt`) but the text's classifier misses
    the name in the text. Its occurrences in the text are the chunk's PII spans too: served masked, and the twin
    embeds that masked text (found by a review: the "masked" text, and the twin's vector, kept the name)."""
    c = container
    text = "Maria Garcia exceeded expectations in the review; ping maria_garcia about it."
    _world(c, {"hr": {"Ms Maria Garcia.txt": text}})
    (ch,) = _chunks(c)
    assert ch.personal and ch.masked_point_id
    assert {text[s.start:s.end] for s in ch.spans if s.recognizer == "shown_name"} == {"Maria Garcia",
                                                                                      "maria_garcia"}
    query = "Maria Garcia review"
    (hit,) = _search(c, "us", query, top_k=1).hits
    assert hit.masked and hit.text == "<PERSON> exceeded expectations in the review; ping <PERSON> about it."
    served = np.asarray(c.embedder.embed([hit.text])[0])
    assert hit.score == pytest.approx(float(served @ np.asarray(c.embedder.embed_query(query))), abs=1e-5)
    assert "garcia" not in (hit.citation.document_uri or "").lower()


def test_a_name_in_the_file_name_never_stays_in_a_masked_text_real_classifier(real_container):
    """The same with the real classifier, the name in capitals and hyphenated in the text."""
    c = real_container
    text = "MARIA GARCIA exceeded expectations in the quarterly review; ping maria-garcia about the audit."
    _world(c, {"hr": {"Maria_Garcia_review.txt": text}})
    query = "maria garcia quarterly review"
    (hit,) = _search(c, "us", query, top_k=1).hits
    assert hit.masked and "garcia" not in hit.text.lower() and "maria" not in hit.text.lower(), hit.text
    served = np.asarray(c.embedder.embed([hit.text])[0])
    assert hit.score == pytest.approx(float(served @ np.asarray(c.embedder.embed_query(query))), abs=1e-4)
    assert "garcia" not in (hit.citation.document_uri or "").lower()
