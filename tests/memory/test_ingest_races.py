"""Races of the ingestion write path. Each test makes another request land at one exact point of an ingest
(by wrapping the store or the processor and running the other request inline there), then checks what the
vectors, and so every search, admit."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from memory import retraction, sources
from memory.db import transaction
from memory.errors import ConflictError, VectorStoreError
from memory.ingestion import FileInput, IngestOutcome, ingest_files
from memory.models import Chunk, Document, DocumentVersion
from memory.principals import NewPrincipal, create_principal, get_principal, resolve_effective
from memory.stores.base import OPEN_END, AccessFilter, JurisdictionGrant, PayloadPatch, Selector
from memory.vector_sync import repair

DIM = 384


def policy(euros: int) -> str:
    return f"# Policy\n\nHotels cost at most {euros} euros per night.\n"


@pytest.fixture
def src(container: Any) -> str:
    with transaction(container.sessions) as s:
        create_principal(s, spec=NewPrincipal("st", "user", ("eng",), "restricted", "EU", ("steward",)), actor="t")
        sources.register(s, spec=sources.NewSource("s1", "S1", "st", "EU", ("eng", "sales"), floor="public"),
                         actor="t")
    return "s1"


def ingest(container: Any, text: str, *, store: Any = None, processor: Any = None) -> IngestOutcome:
    [out] = ingest_files(container.sessions, store or container.store, processor or container.pipeline,
                         source_id="s1", actor="st", files=[FileInput(text.encode(), "p.md", "p.md", "test://p.md")])
    return out


def readable(group: str, jurisdiction: str = "EU") -> AccessFilter:
    return AccessFilter(groups=frozenset({group}), max_label=3, grants=(JurisdictionGrant(jurisdiction, True),),
                        as_of=time.time() + 1, latest=True)


def served_versions(container: Any, group: str = "eng") -> set[int]:
    """The numbers of the versions whose points a search admits (KeyError: a point of a version SQL lacks)."""
    ids = {h.payload.version_id for h in container.store.search([1.0] + [0.0] * (DIM - 1), readable(group), 50)}
    with container.sessions() as s:
        numbers = {vid: n for vid, n in s.execute(select(DocumentVersion.id, DocumentVersion.version)
                                                  .where(DocumentVersion.id.in_(ids)))}
    return {numbers[vid] for vid in ids}


def count(container: Any, model: Any) -> int:
    with container.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


class AfterProcessing:
    """The pipeline, running `hook` (another request) once, after the files are processed."""

    def __init__(self, inner: Any, hook: Callable[[], object]) -> None:
        self._inner, self._hook, self._fired = inner, hook, False

    def process_many(self, items: Any) -> Any:
        out = self._inner.process_many(items)
        if not self._fired:
            self._fired = True
            self._hook()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Hooked:
    """The store, running `hook` once: after an upsert, or before the first patch `when` accepts."""

    def __init__(self, inner: Any, hook: Callable[[], object], *, on: str,
                 when: Callable[[Any, bool], bool] = lambda patch, durable: True) -> None:
        self._inner, self._hook, self._on, self._when, self._fired = inner, hook, on, when, False

    def _fire(self) -> None:
        if not self._fired:
            self._fired = True
            self._hook()

    def upsert(self, points: Any) -> None:
        self._inner.upsert(points)
        if self._on == "upsert":
            self._fire()

    def patch(self, selector: Any, patch: Any, *, durable: bool = True) -> None:
        if self._on == "patch" and self._when(patch, durable):
            self._fire()
        self._inner.patch(selector, patch, durable=durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FailingReveal:
    """The store, failing every step-D patch (non-durable) with a vector store error."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def patch(self, selector: Any, patch: Any, *, durable: bool = True) -> None:
        if not durable:
            raise VectorStoreError("store unavailable")
        self._inner.patch(selector, patch, durable=durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# 1. access changed while the file was processed


def test_access_narrowed_while_processing_applies_to_the_new_version(container, src):
    def narrow() -> None:
        with transaction(container.sessions) as s:
            sources.update(s, source_id="s1", patch=sources.SourcePatch(read_groups=("eng",), jurisdiction="US"),
                           store=container.store, actor="st")
        sources.publish_access(container.sessions, container.store, "s1")

    out = ingest(container, policy(100), processor=AfterProcessing(container.pipeline, narrow))
    assert out.status == "created"
    with container.sessions() as s:
        pids = list(s.scalars(select(Chunk.point_id)))
    payloads = [p.payload for p in container.store.retrieve(pids)]
    assert payloads and {(p.read_groups, p.jurisdiction) for p in payloads} == {(("eng",), "US")}
    assert container.store.count(readable("sales", "US")) == 0
    assert container.store.count(readable("eng", "US")) == out.chunks


def test_a_group_removed_meanwhile_is_not_served_the_new_upload(api):
    c = api.container
    st = api.principal("st", roles=["steward", "reader"], groups=["eng"])
    sales = api.principal("sal", groups=["sales"])
    api.source("s1", read_groups=["eng", "sales"], steward="st")

    def narrow() -> None:
        assert api.client.patch("/v1/sources/s1", headers=st, json={"read_groups": ["eng"]}).status_code == 200

    c.__dict__["pipeline"] = AfterProcessing(c.pipeline, narrow)
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger with Initech closes in March.\n",
                      headers=st).status_code == 201
    assert api.search(sales, "merger Initech March").json()["hits"] == []
    assert len(api.search(st, "merger Initech March").json()["hits"]) == 1


# 2. step D overlapping another ingest or a retraction


class Meanwhile:
    """The store, starting `other` (another request) on a thread once, before the first patch `when` accepts,
    and letting it run for a moment; `join` waits for it. A request that needs the rows the patching
    transaction holds waits for its commit."""

    def __init__(self, inner: Any, other: Callable[[], object], *,
                 when: Callable[[Any, bool], bool] = lambda patch, durable: True, wait_s: float = 0.5) -> None:
        self._inner, self._other, self._when, self._wait_s = inner, other, when, wait_s
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def patch(self, selector: Any, patch: Any, *, durable: bool = True) -> None:
        if self._thread is None and self._when(patch, durable):
            self._thread = threading.Thread(target=self._run)
            self._thread.start()
            self._thread.join(self._wait_s)  # it runs until it needs what the patching transaction holds
        self._inner.patch(selector, patch, durable=durable)

    def _run(self) -> None:
        try:
            self._other()
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        assert self._thread is not None, "the other request never started"
        self._thread.join(60)
        assert not self.errors, self.errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_overlapping_ingests_leave_only_the_newest_version_current(container, src):
    assert ingest(container, policy(100)).version == 1
    # v3's whole ingest starts while v2's reveal patches: its commit waits for the reveal's row locks (step D
    # never copies a state read before v3 superseded v2).
    newer = Meanwhile(container.store, lambda: ingest(container, policy(300)), when=lambda patch, durable: not durable)
    assert ingest(container, policy(200), store=newer).version == 2
    newer.join()
    assert served_versions(container) == {3}
    with container.sessions() as s:
        rows = s.execute(select(DocumentVersion.version, DocumentVersion.status, DocumentVersion.vectors_synced)
                         .order_by(DocumentVersion.version)).all()
    assert [tuple(r) for r in rows] == [(1, "superseded", True), (2, "superseded", True), (3, "active", True)]


def test_reveal_keeps_a_retraction_committed_while_it_patches(container, src):
    vid = ingest(container, policy(100)).version_id
    assert vid is not None

    def steward(s: Any) -> Any:
        return resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)

    with transaction(container.sessions) as s:
        retraction.retract(s, container.store, version_id=vid, reason="r", actor_effective=steward(s))
    with transaction(container.sessions) as s:
        retraction.restore(s, version_id=vid, reason="ok", actor_effective=steward(s))

    def retract_again() -> None:
        with transaction(container.sessions) as s:
            retraction.retract(s, container.store, version_id=vid, reason="PII", actor_effective=steward(s))

    meanwhile = Meanwhile(container.store, retract_again, when=lambda patch, durable: patch.retracted is False)
    retraction.reveal(container.sessions, meanwhile, version_ids=[vid])
    meanwhile.join()
    assert served_versions(container) == set()
    with container.sessions() as s:
        v = s.get(DocumentVersion, vid)
        assert v is not None and v.retracted_at is not None and v.vectors_synced


# 3. repair on another replica while an ingest is live


def test_repair_leaves_a_young_pending_version_to_its_ingest(container, src):
    results: list[dict[str, int]] = []
    hooked = Hooked(container.store, lambda: results.append(repair(container.sessions, container.store)), on="upsert")
    out = ingest(container, policy(100), store=hooked)
    assert results == [{"abandoned": 0, "synced": 0, "republished": 0, "retractions_resynced": 0}]
    assert out.status == "created" and served_versions(container) == {1}


def test_a_version_abandoned_by_repair_fails_its_ingest_cleanly(container, src):
    results: list[dict[str, int]] = []
    hooked = Hooked(container.store, lambda: results.append(repair(container.sessions, container.store,
                                                                   pending_grace_s=0)), on="upsert")
    out = ingest(container, policy(100), store=hooked)
    assert results == [{"abandoned": 1, "synced": 0, "republished": 0, "retractions_resynced": 0}]
    assert (out.status, out.error_code) == ("failed", "concurrent_update")
    assert isinstance(out.exception, ConflictError)
    assert count(container, DocumentVersion) == count(container, Document) == 0
    assert container.store.count() == 0  # no active version without points, no orphan points


def test_repair_abandons_a_stale_pending_version_and_its_empty_document(container, src, monkeypatch):
    def crash(*a: Any, **k: Any) -> None:
        raise RuntimeError("process died")

    monkeypatch.setattr("memory.ingestion.audit.append", crash)  # fails step C
    monkeypatch.setattr("memory.ingestion.abandon", lambda *a: False)  # and the process dies before undoing
    assert ingest(container, policy(100)).error_code == "internal_error"
    monkeypatch.undo()
    assert count(container, DocumentVersion) == count(container, Document) == 1
    within_grace = repair(container.sessions, container.store)
    assert within_grace == {"abandoned": 0, "synced": 0, "republished": 0, "retractions_resynced": 0}
    assert repair(container.sessions, container.store, pending_grace_s=0) == {
        "abandoned": 1, "synced": 0, "republished": 0, "retractions_resynced": 0}
    assert count(container, DocumentVersion) == count(container, Document) == 0
    assert container.store.count() == 0


class Stalled:
    """The store, running `hook` once before the first upsert (step B): the ingest stalls there."""

    def __init__(self, inner: Any, hook: Callable[[], object]) -> None:
        self._inner, self._hook, self.upserted = inner, hook, []

    def upsert(self, points: Any) -> None:
        if not self.upserted:
            self._hook()
        self.upserted.extend(p.id for p in points)
        self._inner.upsert(points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_an_ingest_waking_up_after_repair_abandoned_it_does_not_take_the_next_ingests_version(container, src):
    """An ingest stalls before its upsert past the grace: repair abandons its version 2, and the next upload of the
    document reserves version 2 again and is slow too. The stalled ingest must not wake up and commit its content
    under that upload's row (whose bytes would then never be stored: their retry is `unchanged`), nor leave points
    the vectors could take for the other version's."""
    ingest(container, policy(100))
    reserved, go = threading.Event(), threading.Event()
    other: list[IngestOutcome] = []
    slow = Stalled(container.store, lambda: (reserved.set(), go.wait(60)))
    thread = threading.Thread(target=lambda: other.append(ingest(container, policy(300), store=slow)))

    def stall() -> None:
        assert repair(container.sessions, container.store, pending_grace_s=0)["abandoned"] == 1
        thread.start()
        assert reserved.wait(60)

    late = ingest(container, policy(200), store=Stalled(container.store, stall))
    go.set()
    thread.join(60)
    assert (late.status, late.error_code) == ("failed", "concurrent_update")
    assert [(o.status, o.version) for o in other] == [("updated", 2)]
    with container.sessions() as s:
        current = s.scalars(select(DocumentVersion).where(DocumentVersion.status == "active")).one()
        texts = s.scalars(select(Chunk.text).where(Chunk.version_id == current.id)).all()
        points = [pid for c in s.scalars(select(Chunk)) for pid in (c.point_id, c.masked_point_id) if pid]
    assert current.sha256 == hashlib.sha256(policy(300).encode()).hexdigest()
    assert "300 euros" in " ".join(texts) and "200" not in " ".join(texts)
    assert container.store.count() == len(points)  # the late ingest's points are gone, the other's all there
    assert served_versions(container) == {2}


def test_points_an_abandoned_ingest_upserts_late_are_never_revealed(container, src, monkeypatch):
    """The reported case: an ingest stalls past the grace, repair abandons its version, and the ingest wakes up,
    upserts its points and dies before its commit. The next version of the document must not reveal them."""
    ingest(container, policy(100))
    stalled = Stalled(container.store, lambda: repair(container.sessions, container.store, pending_grace_s=0))

    def dies(*a: Any, **k: Any) -> None:
        raise RuntimeError("process died")

    monkeypatch.setattr("memory.ingestion._embedded_for_uploader", dies)  # right after the late upsert
    monkeypatch.setattr("memory.ingestion.abandon", lambda *a: False)  # and before undoing
    assert ingest(container, policy(200), store=stalled).error_code == "internal_error"
    monkeypatch.undo()
    assert stalled.upserted
    out = ingest(container, policy(300))
    assert (out.status, out.version) == ("updated", 2)
    assert not any(p.payload.committed for p in container.store.retrieve(stalled.upserted))
    ingest(container, policy(400))  # closing version 2 patches its points again
    assert not any(p.payload.committed for p in container.store.retrieve(stalled.upserted))


# 4. step D failing after step C committed


def test_a_failed_reveal_is_reported_and_the_retry_reveals_it(container, src):
    ingest(container, policy(100))
    out = ingest(container, policy(200), store=FailingReveal(container.store))
    assert (out.status, out.version, out.revealed) == ("updated", 2, False)
    assert served_versions(container) == {1}  # never half-visible: the old version until revealed
    again = ingest(container, policy(200))
    assert (again.status, again.version, again.revealed) == ("unchanged", 2, True)
    assert served_versions(container) == {2}
    with container.sessions() as s:
        assert all(s.scalars(select(DocumentVersion.vectors_synced)))


# 5. the same bytes twice at once


def test_the_same_bytes_stored_twice_at_once_make_one_version(container, src):
    others: list[IngestOutcome] = []
    twice = AfterProcessing(container.pipeline, lambda: others.append(ingest(container, policy(100))))
    out = ingest(container, policy(100), processor=twice)
    assert [(o.status, o.version) for o in others] == [("created", 1)]
    assert (out.status, out.version, out.version_id) == ("unchanged", 1, others[0].version_id)
    assert count(container, DocumentVersion) == 1
    assert container.store.count() == out.chunks  # the dropped version's points are gone
    assert served_versions(container) == {1}


# 6. upload errors keep their status


def test_a_vector_store_failure_is_503_and_leaves_no_document(api):
    c = api.container
    st = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")

    class FailingUpsert(Hooked):
        def upsert(self, points: Any) -> None:
            raise VectorStoreError("store unavailable")

    c.__dict__["store"] = FailingUpsert(c.store, lambda: None, on="never")
    r = api.upload("s1", "p.md", policy(100), headers=st)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "vector_store_error")
    assert count(c, Document) == count(c, DocumentVersion) == 0


def test_a_newer_version_stored_meanwhile_is_409(api):
    c = api.container
    st = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "p.md", policy(100), headers=st).status_code == 201
    real = c.store

    def newer() -> None:
        assert api.upload("s1", "p.md", policy(300), headers=st).json()["version"] == 3

    c.__dict__["store"] = Hooked(real, newer, on="upsert")
    r = api.upload("s1", "p.md", policy(200), headers=st)
    c.__dict__["store"] = real
    assert (r.status_code, r.json()["error"]["code"]) == (409, "concurrent_update")
    with c.sessions() as s:
        assert list(s.scalars(select(DocumentVersion.version).order_by(DocumentVersion.version))) == [1, 3]


# 7. the embedding cache is not an oracle


def test_an_upload_does_not_tell_whether_its_text_is_cached_from_another_source(api):
    secret = "# Board\n\nProject Falcon: we acquire Initech for 40 million on 3 March.\n"
    sa = api.principal("sa", roles=["steward", "reader"], groups=["board"], clearance="restricted")
    sb = api.principal("sb", roles=["steward", "reader"], groups=["sales"])
    api.source("board", read_groups=["board"], steward="sa", floor="restricted")
    api.source("sales", read_groups=["sales"], steward="sb")
    assert api.upload("board", "minutes.md", secret, headers=sa).status_code == 201
    guesses = [api.upload("sales", f"probe{i}.md", text, headers=sb).json()
               for i, text in enumerate((secret.replace("40", "50"), secret))]
    assert [g["embedded"] for g in guesses] == [g["chunks"] for g in guesses]  # both look new
    # The real work is still metered: the sales copy reused the board's vector.
    usage = api.client.get("/v1/usage", headers=api.admin).json()["by_source"]
    assert usage["sales"]["chunks_embedded"] == guesses[0]["chunks"]


def test_an_unexpected_failure_of_one_file_does_not_stop_the_batch(container, src, monkeypatch, caplog):
    from memory import ingestion

    real = ingestion._activate

    def flaky(session, store, **kw):
        if kw["doc_id"] == ingestion.document_id_for("s1", "a.md"):
            raise RuntimeError("connection lost: Alice Smith")  # a message that could quote stored values
        return real(session, store, **kw)

    monkeypatch.setattr(ingestion, "_activate", flaky)
    files = [FileInput(policy(n).encode(), f"{k}.md", f"{k}.md", f"test://{k}.md") for k, n in (("a", 1), ("b", 2))]
    failed, stored = ingest_files(container.sessions, container.store, container.pipeline, source_id="s1",
                                  actor="st", files=files)
    assert (failed.status, failed.error_code, stored.status) == ("failed", "internal_error", "created")
    assert isinstance(failed.exception, RuntimeError)
    assert "Alice Smith" not in caplog.text
    assert count(container, Document) == 1  # the failed file left nothing behind


def test_repair_leaves_a_committed_version_to_its_ingests_reveal(container, src, monkeypatch):
    """The API runs repair on a timer: between an ingest's commit (step C) and its reveal (step D) it must not
    sync that version itself (redundant, and reported and audited as a repair although nothing was broken)."""
    from memory import ingestion

    results: list[dict[str, int]] = []
    real = ingestion.sync_versions

    def repair_first(*args: Any, **kwargs: Any) -> None:
        results.append(repair(container.sessions, container.store))
        real(*args, **kwargs)

    monkeypatch.setattr(ingestion, "sync_versions", repair_first)
    out = ingest(container, policy(100))
    assert results == [{"abandoned": 0, "synced": 0, "republished": 0, "retractions_resynced": 0}]
    assert out.status == "created" and out.revealed and served_versions(container) == {1}
    from memory.vector_sync import REVEALING

    assert out.version_id not in REVEALING  # released once its step D ran


def test_versions_are_released_to_repair_when_their_ingest_fails_before_the_reveal(container, src):
    """A batch with an unchanged file (whose version was left unsynced: it heals it) and a file whose parsing
    raises: the healed version is still revealed, and nothing stays claimed from repair."""
    from memory.vector_sync import REVEALING

    class Broken:
        def process_many(self, items: Any) -> Any:
            raise RuntimeError("the parse worker died")

    ingest(container, policy(100))
    with transaction(container.sessions) as s:  # left unsynced (an earlier step D failed)
        v = s.scalars(select(DocumentVersion)).one()
        v.vectors_synced = False
        vid = v.id
    files = [FileInput(policy(100).encode(), "p.md", "p.md", "test://p.md"),
             FileInput(b"# Other\n\nTrains only.\n", "q.md", "q.md", "test://q.md")]
    with pytest.raises(RuntimeError):
        ingest_files(container.sessions, container.store, Broken(), source_id="s1", actor="st", files=files)
    assert vid not in REVEALING
    with container.sessions() as s:
        assert s.get(DocumentVersion, vid).vectors_synced  # healed by the batch's step D despite the failure
    assert repair(container.sessions, container.store)["synced"] == 0


# 5. a supersede's two patches


class PatchLog:
    """The store, recording every step-D patch (non-durable): its version ids and whether it closes them."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.patches = inner, []

    def patch(self, selector: Any, patch: Any, *, durable: bool = True) -> None:
        if not durable:
            self.patches.append((selector.version_ids, patch.valid_to < OPEN_END))
        self._inner.patch(selector, patch, durable=durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_supersede_closes_the_old_version_before_it_reveals_the_new_one(container, src):
    """Version ids sort as strings (`-v10` before `-v9`): step D orders its patches by what they do, so a search
    between them may miss the document, never see two of its versions current."""
    for euros in range(100, 1000, 100):
        ingest(container, policy(euros))
    logged = PatchLog(container.store)
    assert ingest(container, policy(1000), store=logged).version == 10
    closes = [closing for _, closing in logged.patches]
    assert closes == [True, False], logged.patches
    assert served_versions(container) == {10}


def test_a_version_sql_superseded_is_not_served_while_its_vectors_still_say_current(api, caplog):
    """The reveal-before-close window (or a close left to repair): the vectors admit two versions of one
    document; SQL's rows decide which one is in force, and only it is served."""
    reader = api.principal("r", groups=["g"])
    api.source("s1")
    first = api.upload("s1", "p.md", policy(100)).json()
    second = api.upload("s1", "p.md", policy(200)).json()
    assert second["version"] == 2
    api.container.store.patch(Selector(version_ids=(first["version_id"],)),
                              PayloadPatch(committed=True, valid_to=OPEN_END))
    hits = api.search(reader, "hotel cost per night").json()["hits"]
    assert [h["citation"]["version"] for h in hits] == [2]
    assert "search.payload_disagrees" in caplog.text
    at = time.time()  # time travel: v1 was valid before v2's ingest, and is not now
    hits = api.search(reader, "hotel cost per night", as_of=at).json()["hits"]
    assert [h["citation"]["version"] for h in hits] == [2]


class FailingFlush:
    """The store, failing the first flush after a step-D patch (the process could die there as well)."""

    def __init__(self, inner: Any) -> None:
        self._inner, self._patched, self.failed = inner, False, False

    def patch(self, selector: Any, patch: Any, *, durable: bool = True) -> None:
        self._patched |= not durable
        self._inner.patch(selector, patch, durable=durable)

    def flush(self) -> None:
        if self._patched and not self.failed:
            self.failed = True
            raise VectorStoreError("store unavailable")
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_reveal_that_fails_while_a_newer_version_waits_leaves_nothing_stale(container, src):
    """v3's ingest starts while v2's step D patches, and that step D then fails. v2's rows were locked from its
    read to its mark, so v3 could not supersede v2 in between: the failed step D leaves v2 unsynced, and v3's own
    step D (or repair) copies what SQL holds. (Found by review: a state read before v3's commit, patched after
    v3's step D and then interrupted, left v2 current in the vectors and marked synced, beyond repair.)"""
    assert ingest(container, policy(100)).version == 1
    failing = FailingFlush(container.store)
    # Long enough for v3's whole ingest, had it not to wait for v2's rows.
    newer = Meanwhile(failing, lambda: ingest(container, policy(300)), when=lambda patch, durable: not durable,
                      wait_s=5)
    out = ingest(container, policy(200), store=newer)
    newer.join()
    assert failing.failed and out.version == 2 and not out.revealed
    repair(container.sessions, container.store, pending_grace_s=0)
    assert served_versions(container) == {3}
    with container.sessions() as s:
        rows = s.execute(select(DocumentVersion.version, DocumentVersion.status, DocumentVersion.vectors_synced)
                         .order_by(DocumentVersion.version)).all()
    assert [tuple(r) for r in rows] == [(1, "superseded", True), (2, "superseded", True), (3, "active", True)]
