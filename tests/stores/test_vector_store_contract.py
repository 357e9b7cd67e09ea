"""One contract for every VectorStore: Qdrant Edge on a temp dir, and the server backend on
QdrantClient(":memory:") (which speaks the server's API). Backend-specific tests sit at the end."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient

from memory.errors import StoreLockedError, ValidationFailedError, VectorStoreError, VectorStoreUnavailableError
from memory.stores.base import (
    OPEN_END,
    AccessFilter,
    Beam,
    ChunkPayload,
    JurisdictionGrant,
    PayloadPatch,
    Ranked,
    Selector,
    SourceScope,
    VectorPoint,
    VectorStore,
)
from memory.stores.edge import EdgeVectorStore
from memory.stores.edge_config import EdgeTuning
from memory.stores.filters import access_plan
from memory.stores.server import ServerVectorStore

DIM = 8
KINDS = ["edge", "server"]
EU_FULL = JurisdictionGrant("EU", personal_ok=True)
EU_NON_PERSONAL = JurisdictionGrant("EU", personal_ok=False)
EU_MASKED = JurisdictionGrant("EU", personal_ok=True, masked=True)


def open_store(kind: str, root: Path, dim: int = DIM, tuning: EdgeTuning | None = None) -> VectorStore:
    if kind == "edge":
        return EdgeVectorStore.open(root / "vectors", dim, tuning=tuning)
    store = ServerVectorStore(QdrantClient(":memory:"), "chunks", dim, owns_client=True)
    store.ensure_collection()
    return store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s = open_store(request.param, tmp_path)
    yield s
    s.close()


def payload(**overrides: object) -> ChunkPayload:
    """A payload the base filter admits; each test changes one thing."""
    base = ChunkPayload(
        chunk_id="c1",
        source_id="s1",
        document_id="d1",
        version_id="v1",
        read_groups=("g1",),
        label=1,
        jurisdiction="EU",
        personal=True,
        entity_types=("PERSON",),
        valid_from=100.0,
        valid_to=OPEN_END,
        retracted=False,
        committed=True,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def access(**overrides: object) -> AccessFilter:
    base = AccessFilter(groups=frozenset({"g1", "g2"}), max_label=2, grants=(EU_FULL,), as_of=150.0)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def unit(i: int, dim: int = DIM) -> list[float]:
    v = [0.0] * dim
    v[i % dim] = 1.0
    return v


def point(p: ChunkPayload, vector: list[float] | None = None) -> VectorPoint:
    return VectorPoint(id=str(uuid.uuid4()), vector=vector or unit(0), payload=p)


def visible_ids(store: VectorStore, flt: AccessFilter, limit: int = 100) -> set[str]:
    return {h.id for h in store.search(unit(0), flt, limit)}


# -- basics ----------------------------------------------------------------------------------------------


def test_upsert_then_retrieve_roundtrips_payload_in_request_order(store: VectorStore) -> None:
    a, b = point(payload(chunk_id="a", entity_types=())), point(payload(chunk_id="b", read_groups=("g1", "g2")))
    store.upsert([a, b])
    got = store.retrieve([b.id, str(uuid.uuid4()), a.id])
    assert [p.id for p in got] == [b.id, a.id]
    assert got[0].payload == b.payload and got[1].payload == a.payload
    assert all(p.score == 0.0 for p in got)
    assert store.retrieve([]) == []


def test_upsert_is_idempotent_by_id(store: VectorStore) -> None:
    p = point(payload())
    store.upsert([p])
    store.upsert([dataclasses.replace(p, payload=payload(label=3))])
    assert store.count() == 1
    assert store.retrieve([p.id])[0].payload.label == 3


def test_search_ranks_by_cosine_best_first(store: VectorStore) -> None:
    query = [1.0, 1.0] + [0.0] * (DIM - 2)
    near, mid, far = (
        point(payload(), [5.0, 4.0] + [0.0] * (DIM - 2)),
        point(payload(), unit(0)),
        point(payload(), unit(3)),
    )
    store.upsert([far, near, mid])
    hits = store.search(query, access(), 3)
    assert [h.id for h in hits] == [near.id, mid.id, far.id]
    assert hits[1].score == pytest.approx(1 / np.sqrt(2), abs=1e-5)  # cosine ignores magnitude
    assert hits[2].score == pytest.approx(0.0, abs=1e-5)


def test_search_honours_limit_and_zero_limit(store: VectorStore) -> None:
    store.upsert([point(payload(), unit(i)) for i in range(6)])
    assert len(store.search(unit(0), access(), 4)) == 4
    assert store.search(unit(0), access(), 0) == []
    assert len(store.search_unfiltered(unit(0), 5)) == 5


def test_search_batch_equals_one_search_per_filter_in_order(store: VectorStore) -> None:
    store.upsert([point(payload(label=i % 4, read_groups=(f"g{i % 3}",)), unit(i)) for i in range(12)])
    filters = [access(), access(groups=frozenset({"nobody"})), access(groups=frozenset()), access(max_label=0),
               dataclasses.replace(access(), max_label=None, grants=None)]
    query = [1.0, 0.5, 0.25] + [0.0] * (DIM - 3)
    batch = store.search_batch(query, filters, 5)
    assert [[(h.id, h.payload) for h in hits] for hits in batch] == [
        [(h.id, h.payload) for h in store.search(query, f, 5)] for f in filters
    ]
    assert batch[1] == [] and batch[2] == []  # no group / empty groups: nothing, fail closed
    assert store.search_batch(query, [], 5) == []
    assert store.search_batch(query, filters, 0) == [[] for _ in filters]


def test_search_batch_beams_keep_the_filter_and_must_match_the_filters(store: VectorStore) -> None:
    # The COUNT beam is narrower and the WIDE one wider, never looser: every hit still matches its filter (a
    # small store is searched exactly, so here the hits are the same); a beams list of another length is a
    # caller bug.
    store.upsert([point(payload(label=i % 4, read_groups=(f"g{i % 3}",)), unit(i)) for i in range(12)])
    filters = [access(max_label=1), dataclasses.replace(access(), max_label=None, grants=None)]
    query = [1.0, 0.5, 0.25] + [0.0] * (DIM - 3)
    served, counted = store.search_batch(query, filters, 5, [Beam.SERVE, Beam.COUNT])
    assert [h.id for h in counted] == [h.id for h in store.search(query, filters[1], 5)]
    assert [h.id for h in served] == [h.id for h in store.search(query, filters[0], 5)]
    assert all(filters[0].matches(h.payload) for h in served) and all(filters[1].matches(h.payload) for h in counted)
    (wide,) = store.search_batch(query, filters[:1], 5, [Beam.WIDE])
    assert [h.id for h in wide] == [h.id for h in served]
    with pytest.raises(ValueError, match="beams"):
        store.search_batch(query, filters, 5, [Beam.COUNT])


def test_rank_batch_is_search_batch_without_payloads(store: VectorStore) -> None:
    # Same ids, same scores, same order, for every beam; filters that match nothing stay empty; a beams list
    # of another length is a caller bug.
    store.upsert([point(payload(label=i % 4, read_groups=(f"g{i % 3}",)), unit(i)) for i in range(12)])
    filters = [access(max_label=1), dataclasses.replace(access(), max_label=None, grants=None),
               access(groups=frozenset())]
    query = [1.0, 0.5, 0.25] + [0.0] * (DIM - 3)
    for beams in ([Beam.SERVE, Beam.COUNT, Beam.SERVE], [Beam.WIDE] * 3, None):
        ranked = store.rank_batch(query, filters, 5, beams)
        full = store.search_batch(query, filters, 5, beams)
        assert [[(r.id, r.score) for r in hits] for hits in ranked] == [[(h.id, h.score) for h in hits]
                                                                         for hits in full]
        assert all(isinstance(r, Ranked) for hits in ranked for r in hits)
    assert ranked[0] and ranked[2] == []
    assert store.rank_batch(query, filters, 0) == [[] for _ in filters]
    with pytest.raises(ValueError, match="beams"):
        store.rank_batch(query, filters, 5, [Beam.COUNT])


def test_count_with_and_without_filter(store: VectorStore) -> None:
    store.upsert([point(payload()), point(payload(retracted=True)), point(payload(read_groups=("other",)))])
    assert store.count() == 3
    assert store.count(access()) == 1
    assert store.count(access(groups=frozenset())) == 0


def test_wrong_dimension_is_a_store_error(store: VectorStore) -> None:
    with pytest.raises(VectorStoreError):
        store.upsert([point(payload(), [1.0, 0.0])])
    with pytest.raises(VectorStoreError):
        store.search([1.0], access(), 3)


def test_a_malformed_point_id_is_a_store_error(store: VectorStore) -> None:
    """Point ids are UUIDs; anything else is the store's typed error on both backends (the embedded one let the
    engine's bare ValueError out, a 500 at the API: found by review)."""
    bad = dataclasses.replace(point(payload(), unit(0)), id="not-a-uuid")
    with pytest.raises(VectorStoreError):
        store.upsert([bad])


# -- every AccessFilter clause ---------------------------------------------------------------------------

CLAUSES = [
    # (case, payload overrides, filter overrides, visible)
    ("base", {}, {}, True),
    ("groups overlap one of several", {"read_groups": ("x", "g2")}, {}, True),
    ("groups disjoint", {"read_groups": ("x",)}, {}, False),
    ("no read groups on chunk", {"read_groups": ()}, {}, False),
    ("caller has no groups", {}, {"groups": frozenset()}, False),
    ("label at ceiling", {"label": 2}, {}, True),
    ("label above ceiling", {"label": 3}, {}, False),
    ("max_label None disables ceiling", {"label": 3}, {"max_label": None}, True),
    ("as_of == valid_from", {}, {"as_of": 100.0}, True),
    ("as_of before valid_from", {}, {"as_of": 99.5}, False),
    ("as_of == valid_to (superseded)", {"valid_to": 150.0}, {}, False),
    ("as_of just before valid_to", {"valid_to": 150.5}, {}, True),
    ("retracted", {"retracted": True}, {}, False),
    ("uncommitted", {"committed": False}, {}, False),
    ("source in source_ids", {}, {"source_ids": frozenset({"s1", "s9"})}, True),
    ("source not in source_ids", {}, {"source_ids": frozenset({"s9"})}, False),
    ("empty source_ids", {}, {"source_ids": frozenset()}, False),
    ("allow grant, personal", {}, {}, True),
    ("deny_personal grant, personal", {}, {"grants": (EU_NON_PERSONAL,)}, False),
    ("deny_personal grant, not personal", {"personal": False}, {"grants": (EU_NON_PERSONAL,)}, True),
    ("grant for another jurisdiction", {"jurisdiction": "US"}, {}, False),
    ("allow wins over deny_personal", {}, {"grants": (EU_NON_PERSONAL, EU_FULL)}, True),
    ("one grant of several admits", {"jurisdiction": "US", "personal": False},
     {"grants": (EU_FULL, JurisdictionGrant("US", False))}, True),
    ("empty grants", {}, {"grants": ()}, False),
    ("grants None disables jurisdiction", {"jurisdiction": "US", "personal": False}, {"grants": None}, True),
    # The withheld count ranks a personal chunk through its twin only: never on its clear text.
    ("grants None: a personal chunk's clear point is not counted", {"jurisdiction": "US"}, {"grants": None}, False),
    ("max_label below public matches nothing", {"label": 0}, {"max_label": -1}, False),
    ("latest: the current version", {}, {"latest": True}, True),
    ("latest: superseded, even while as_of is inside it", {"valid_to": 200.0}, {"latest": True}, False),
    ("latest: uncommitted", {"committed": False}, {"latest": True}, False),
    ("latest: retracted", {"retracted": True}, {"latest": True}, False),
    ("latest: other clauses still apply", {"label": 3}, {"latest": True}, False),
    ("consent: personal, source blocked", {}, {"consent_blocked_sources": frozenset({"s1"})}, False),
    ("consent: not personal, source blocked", {"personal": False}, {"consent_blocked_sources": frozenset({"s1"})},
     True),
    ("consent: personal, another source blocked", {}, {"consent_blocked_sources": frozenset({"s9"})}, True),
    ("consent: one of several blocked", {}, {"consent_blocked_sources": frozenset({"s9", "s1"})}, False),
    ("consent: the only searched source blocked", {}, {"source_ids": frozenset({"s1"}),
                                                      "consent_blocked_sources": frozenset({"s1"})}, False),
    ("consent: the only searched source blocked, not personal", {"personal": False},
     {"source_ids": frozenset({"s1"}), "consent_blocked_sources": frozenset({"s1"})}, True),
    ("consent: a searched source blocked, not this one", {},
     {"source_ids": frozenset({"s1", "s9"}), "consent_blocked_sources": frozenset({"s9"})}, True),
    ("consent: blocked outside the searched sources", {},
     {"source_ids": frozenset({"s1"}), "consent_blocked_sources": frozenset({"s9"})}, True),
    ("consent: applies with the other clauses off", {},
     {"max_label": None, "grants": None, "consent_blocked_sources": frozenset({"s1"})}, False),
    ("consent: with latest", {}, {"latest": True, "consent_blocked_sources": frozenset({"s1"})}, False),
    # Sources left out (a floor above the caller's clearance, on the read-group filter).
    ("excluded: the source", {}, {"excluded_sources": frozenset({"s1"})}, False),
    ("excluded: another source", {}, {"excluded_sources": frozenset({"s9"})}, True),
    ("excluded: one of several", {"personal": False}, {"excluded_sources": frozenset({"s9", "s1"})}, False),
    ("excluded: within source_ids", {}, {"source_ids": frozenset({"s1", "s9"}),
                                         "excluded_sources": frozenset({"s1"})}, False),
    ("excluded: outside source_ids", {}, {"source_ids": frozenset({"s1"}), "excluded_sources": frozenset({"s9"})},
     True),
    ("excluded: its twin too", {"masked_twin": True}, {"grants": (EU_MASKED,), "excluded_sources": frozenset({"s1"})},
     False),
    # Masked twins: a personal chunk read masked is admitted as its twin only; every other filter takes clear
    # points only (the withheld count included).
    ("twin: allow admits the clear point only", {"masked_twin": True}, {}, False),
    ("twin: read masked", {"masked_twin": True}, {"grants": (EU_MASKED,)}, True),
    ("twin: clear personal point read masked", {}, {"grants": (EU_MASKED,)}, False),
    ("twin: clear point without personal data read masked", {"personal": False}, {"grants": (EU_MASKED,)}, True),
    ("twin: deny_personal", {"masked_twin": True}, {"grants": (EU_NON_PERSONAL,)}, False),
    ("twin: read masked, another jurisdiction", {"masked_twin": True, "jurisdiction": "US"},
     {"grants": (EU_MASKED,)}, False),
    ("twin: allow for one jurisdiction, masked for another", {"masked_twin": True, "jurisdiction": "US"},
     {"grants": (EU_FULL, JurisdictionGrant("US", True, masked=True))}, True),
    ("twin: counted for its personal chunk (grants None)", {"masked_twin": True}, {"grants": None}, True),
    ("twin: consent-blocked source", {"masked_twin": True},
     {"grants": (EU_MASKED,), "consent_blocked_sources": frozenset({"s1"})}, False),
    ("twin: scope reads the source masked", {"masked_twin": True},
     {"scope": SourceScope(frozenset(), masked=frozenset({"s1"}))}, True),
    ("twin: scope masked, clear personal point", {}, {"scope": SourceScope(frozenset(), masked=frozenset({"s1"}))},
     False),
    ("twin: scope masked, clear point without personal data", {"personal": False},
     {"scope": SourceScope(frozenset(), masked=frozenset({"s1"}))}, True),
    # (the scope reads no read groups: the filler point of s1 stays invisible only where s1 is not read clear)
    ("twin: scope reads the source in full", {"masked_twin": True, "source_id": "s2"},
     {"scope": SourceScope(frozenset({"s2"}), masked=frozenset({"s1"}))}, False),
    ("twin: scope masks another source", {"masked_twin": True},
     {"scope": SourceScope(frozenset({"s2"}), masked=frozenset({"s3"}))}, False),
    ("twin: scope masked, outside source_ids", {"masked_twin": True},
     {"scope": SourceScope(frozenset(), masked=frozenset({"s1"})), "source_ids": frozenset({"s2"})}, False),
    ("twin: scope non_personal", {"masked_twin": True},
     {"scope": SourceScope(frozenset(), non_personal=frozenset({"s1"}))}, False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "p_over", "f_over", "visible"), CLAUSES, ids=[c[0] for c in CLAUSES])
def test_access_filter_clause(
    store: VectorStore, case: str, p_over: dict[str, object], f_over: dict[str, object], visible: bool
) -> None:
    p, flt = point(payload(**p_over)), access(**f_over)
    assert flt.matches(p.payload) is visible  # the table agrees with the reference semantics
    store.upsert([p, point(payload(read_groups=("someone-else",)))])
    assert (p.id in visible_ids(store, flt)) is visible
    assert store.count(flt) == int(visible)


def test_no_consent_clause_when_nothing_is_blocked() -> None:
    """The common case pays nothing: no consent-gated source for this purpose, no clause at all."""
    plain, gated = access_plan(access()), access_plan(access(consent_blocked_sources=frozenset({"s1"})))
    assert plain is not None and gated is not None
    assert len(gated.clauses) == len(plain.clauses) + 1
    assert access_plan(access(source_ids=frozenset({"s2"}), consent_blocked_sources=frozenset({"s1"}))) == \
        access_plan(access(source_ids=frozenset({"s2"})))


def test_a_caller_who_reads_nothing_masked_pays_one_clear_clause() -> None:
    """Masked twins cost a caller without a masked source one indexed integer clause at the top level (the source
    or jurisdiction clause keeps its shape); one with a masked source gets the three-branch clause instead."""
    from memory.stores.filters import CLEAR, COUNTED, AnyValue, OneOf

    for flt in (access(), access(scope=SourceScope(frozenset({"s1"}), frozenset({"s2"})))):
        plan = access_plan(flt)
        assert plan is not None and plan.clauses.count(CLEAR) == 1
    # The withheld count: non-personal chunks by their clear points, personal ones by their twins.
    counted = access_plan(dataclasses.replace(access(), max_label=None, grants=None))
    assert counted is not None and CLEAR not in counted.clauses and counted.clauses.count(COUNTED) == 1
    masked = access_plan(access(scope=SourceScope(frozenset({"s1"}), masked=frozenset({"s2"}))))
    assert masked is not None and CLEAR not in masked.clauses
    assert isinstance(masked.clauses[-1], OneOf) and len(masked.clauses[-1].clauses) == 3
    # Every source read masked (the withheld count's scope): the source clause factored out of the branches.
    scoped = access_plan(dataclasses.replace(access(), max_label=None, grants=None,
                                             scope=SourceScope(frozenset(), masked=frozenset({"s2", "s1"}))))
    assert scoped is not None and scoped.clauses[-2:] == (AnyValue("source_id", ("s1", "s2")), COUNTED)


# -- patch and delete: visible to the very next search ---------------------------------------------------


def test_patch_by_version_retracts_immediately(store: VectorStore) -> None:
    v1, v2 = point(payload(version_id="v1")), point(payload(version_id="v2"))
    store.upsert([v1, v2])
    store.patch(Selector(version_ids=("v1",)), PayloadPatch(retracted=True))
    assert visible_ids(store, access()) == {v2.id}
    assert store.retrieve([v1.id])[0].payload.retracted is True


def test_patch_by_source_changes_groups_and_jurisdiction(store: VectorStore) -> None:
    a, b = point(payload(source_id="s1", personal=False)), point(payload(source_id="s2", personal=False))
    store.upsert([a, b])
    store.patch(Selector(source_id="s1"), PayloadPatch(read_groups=("g9",), jurisdiction="US"))
    assert visible_ids(store, access()) == {b.id}
    assert visible_ids(store, access(groups=frozenset({"g9"}), grants=None)) == {a.id}


def test_patch_by_point_ids_supersedes_and_commits(store: VectorStore) -> None:
    old, new = point(payload()), point(payload(committed=False))
    store.upsert([old, new])
    unknown = str(uuid.uuid4())  # ignored
    store.patch(Selector(point_ids=(old.id, unknown)), PayloadPatch(committed=True, valid_to=150.0))
    assert visible_ids(store, access(latest=True)) == set()  # the new one is not committed yet
    store.patch(Selector(point_ids=(new.id,)), PayloadPatch(committed=True, valid_to=OPEN_END))
    assert visible_ids(store, access()) == {new.id}
    assert visible_ids(store, access(latest=True)) == {new.id}
    assert visible_ids(store, access(as_of=120.0)) == {old.id, new.id}
    with pytest.raises(ValueError, match="together"):  # `current` derives from both
        PayloadPatch(valid_to=150.0)


def test_patch_by_point_ids_relabels(store: VectorStore) -> None:
    """A relabel (memory.relabel) sets label and personal flag on points by id: the next search filters by them."""
    a, b = point(payload(personal=False)), point(payload(personal=False))
    store.upsert([a, b])
    no_personal = access(grants=(EU_NON_PERSONAL,))
    store.patch(Selector(point_ids=(a.id,)), PayloadPatch(label=3, personal=True))
    assert visible_ids(store, access()) == {b.id}  # above the clearance (max_label 2)
    assert visible_ids(store, access(max_label=3)) == {a.id, b.id}
    assert visible_ids(store, dataclasses.replace(no_personal, max_label=3)) == {b.id}
    store.patch(Selector(point_ids=(a.id,)), PayloadPatch(label=0, personal=False))
    assert visible_ids(store, no_personal) == {a.id, b.id}
    assert store.retrieve([a.id])[0].payload == dataclasses.replace(a.payload, label=0, personal=False)


def test_empty_patch_is_a_no_op_and_bad_selector_is_rejected(store: VectorStore) -> None:
    p = point(payload())
    store.upsert([p])
    store.patch(Selector(source_id="s1"), PayloadPatch())
    assert store.retrieve([p.id])[0].payload == p.payload
    for bad in (Selector(), Selector(source_id="s1", version_ids=("v1",))):
        with pytest.raises(ValidationFailedError):
            store.patch(bad, PayloadPatch(retracted=True))
        with pytest.raises(ValidationFailedError):
            store.delete(bad)


@pytest.mark.parametrize(
    "selector_of",
    [
        lambda p: Selector(version_ids=(p.payload.version_id,)),
        lambda p: Selector(source_id=p.payload.source_id),
        lambda p: Selector(point_ids=(p.id,)),
    ],
    ids=["version_ids", "source_id", "point_ids"],
)
def test_delete_by_selector(store: VectorStore, selector_of: object) -> None:
    gone, kept = point(payload(version_id="v1", source_id="s1")), point(payload(version_id="v2", source_id="s2"))
    store.upsert([gone, kept])
    store.delete(selector_of(gone))  # type: ignore[operator]
    assert store.count() == 1
    assert store.retrieve([gone.id, kept.id])[0].id == kept.id
    assert visible_ids(store, access()) == {kept.id}


# -- top_k stays full at selective filters -----------------------------------------------------------------


def random_corpus(n: int, dim: int, seed: int) -> tuple[list[VectorPoint], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pts = []
    for i in range(n):
        u = rng.random()
        groups = ("all",) + (("ten",) if u < 0.1 else ()) + (("one",) if u < 0.01 else ())
        p = payload(read_groups=groups, label=int(rng.integers(0, 3)), personal=bool(rng.random() < 0.5))
        pts.append(VectorPoint(id=str(uuid.UUID(int=i + 1)), vector=x[i], payload=p))
    return pts, x


def recall_at_k(store: VectorStore, pts: list[VectorPoint], x: np.ndarray, flt: AccessFilter, k: int) -> float:
    mask = np.array([flt.matches(p.payload) for p in pts])
    idx = np.flatnonzero(mask)
    rng = np.random.default_rng(1)
    recalls = []
    for _ in range(10):
        q = rng.normal(size=x.shape[1]).astype(np.float32)
        exact = {pts[i].id for i in idx[np.argsort(-(x[idx] @ q))[:k]]}
        hits = store.search(q, flt, k)
        assert len(hits) == min(k, len(idx))  # top_k stays full
        assert all(flt.matches(h.payload) for h in hits)  # nothing leaks
        recalls.append(len(exact & {h.id for h in hits}) / len(exact))
    return float(np.mean(recalls))


@pytest.mark.parametrize("kind", KINDS)
def test_top_k_full_at_selective_filters(kind: str, tmp_path: Path) -> None:
    store = open_store(kind, tmp_path, dim=16)
    pts, x = random_corpus(3000, 16, seed=3)
    store.upsert(pts)
    one_percent = access(groups=frozenset({"one"}), max_label=None)
    assert 15 <= store.count(one_percent) <= 50
    assert recall_at_k(store, pts, x, one_percent, 10) == 1.0
    assert recall_at_k(store, pts, x, access(groups=frozenset({"ten"})), 10) == 1.0
    store.close()


def test_edge_graph_search_keeps_recall_after_optimize(tmp_path: Path) -> None:
    """Tiny thresholds force an HNSW build and graph search, the path big stores take."""
    tuning = EdgeTuning(indexing_threshold_kb=10, full_scan_threshold_kb=10)
    store = EdgeVectorStore.open(tmp_path / "vectors", 16, tuning=tuning)
    pts, x = random_corpus(3000, 16, seed=5)
    store.upsert(pts)
    assert store.optimize() is True
    assert store.stats()["indexed_vectors"] > 0
    for flt in (
        access(groups=frozenset({"all"})),
        access(groups=frozenset({"ten"})),
        access(groups=frozenset({"one"})),
    ):
        assert recall_at_k(store, pts, x, flt, 10) >= 0.99
    store.close()


def test_stats_count_points_and_indexed_vectors(store: VectorStore) -> None:
    assert store.stats()["points"] == 0
    pts, _ = random_corpus(50, DIM, seed=3)
    store.upsert(pts)
    stats = store.stats()
    assert set(stats) == {"points", "indexed_vectors", "segments"}
    assert stats["points"] == store.count() == 50
    assert 0 <= stats["indexed_vectors"] <= stats["points"]


def test_watch_index_gauges_unindexed_points_and_warns_past_its_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """New points no HNSW index covers (every search scores them exactly) until `optimize`: the API's repair
    thread gauges them and warns past `unindexed_warn_points`."""
    from prometheus_client import REGISTRY

    from memory.maintenance import watch_index

    store = EdgeVectorStore.open(tmp_path / "vectors", 16, tuning=EdgeTuning(indexing_threshold_kb=10,
                                                                              full_scan_threshold_kb=10))
    try:
        pts, _ = random_corpus(3000, 16, seed=5)
        store.upsert(pts)
        assert watch_index(store, warn_above=2999) == 3000
        assert REGISTRY.get_sample_value("memory_vector_points_unindexed") == 3000
        assert "vectors.unindexed points=3000 of=3000" in caplog.text
        caplog.clear()
        store.optimize()
        assert watch_index(store, warn_above=0) == 0
        assert REGISTRY.get_sample_value("memory_vector_points_unindexed") == 0
        assert "vectors.unindexed" not in caplog.text
    finally:
        store.close()


# -- property: the backend's filter agrees with AccessFilter.matches ------------------------------------------

GROUPS = st.sampled_from(["g1", "g2", "g3"])
TIMES = st.sampled_from([0.0, 1.0, 2.0, 3.0])  # few values, so boundaries are hit often
PAYLOADS = st.builds(
    ChunkPayload,
    chunk_id=st.just("c"),
    source_id=st.sampled_from(["s1", "s2"]),
    document_id=st.just("d"),
    version_id=st.sampled_from(["v1", "v2"]),
    read_groups=st.lists(GROUPS, max_size=2, unique=True).map(tuple),
    label=st.integers(0, 3),
    jurisdiction=st.sampled_from(["EU", "US"]),
    personal=st.booleans(),
    entity_types=st.just(()),
    valid_from=TIMES,
    valid_to=st.one_of(TIMES, st.just(OPEN_END)),
    retracted=st.booleans(),
    committed=st.booleans(),
    masked_twin=st.booleans(),
)
# One grant per data jurisdiction, as policy.build_filter makes them (two conflicting grants for one jurisdiction
# have no meaning: the filter takes a full grant over a masked one, `matches` either).
GRANTS = st.lists(st.builds(JurisdictionGrant, st.sampled_from(["EU", "US", "UK"]), st.booleans(), st.booleans()),
                  max_size=3, unique_by=lambda g: g.data_jurisdiction).map(tuple)
FILTERS = st.builds(
    AccessFilter,
    groups=st.frozensets(GROUPS, max_size=2),
    max_label=st.one_of(st.none(), st.integers(0, 3)),
    grants=st.one_of(st.none(), GRANTS),
    as_of=TIMES,
    source_ids=st.one_of(st.none(), st.frozensets(st.sampled_from(["s1", "s2"]), max_size=2)),
    latest=st.booleans(),
    consent_blocked_sources=st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=3),
    scope=st.one_of(st.none(), st.builds(
        SourceScope, st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=3),
        st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=3),
        st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=3),
    )),
    excluded_sources=st.frozensets(st.sampled_from(["s1", "s2", "s3"]), max_size=2),
).map(
    # As policy.build_filter makes them: sources above the caller's clearance are excluded by id only when no
    # scope lists the readable ones (a scope leaves them out itself).
    lambda f: dataclasses.replace(f, excluded_sources=frozenset()) if f.scope is not None else f
)


@settings(max_examples=300, deadline=None)
@given(flt=FILTERS)
def test_every_field_a_filter_reads_is_indexed_on_both_backends(flt: AccessFilter) -> None:
    """A filtered field without a payload index is a full scan (and on a Qdrant server with strict mode, an
    error): every key the policy's filters and the stores' selectors read has one, of the type the clause needs,
    in the one schema both backends create (found untested by review: the server's indexes are not made in
    local mode)."""
    from memory.stores.base import FLOAT_FIELDS, INTEGER_FIELDS, KEYWORD_FIELDS
    from memory.stores.filters import AllOf, HasIds, OneOf, selector_plan

    kinds = {"AnyValue": KEYWORD_FIELDS, "NoneOf": KEYWORD_FIELDS, "IntEquals": INTEGER_FIELDS,
             "IntIn": INTEGER_FIELDS, "InRange": FLOAT_FIELDS}

    def walk(clause: object) -> None:
        if isinstance(clause, (AllOf, OneOf)):
            for inner in clause.clauses:
                walk(inner)
        elif not isinstance(clause, HasIds):
            assert clause.key in kinds[type(clause).__name__], clause  # type: ignore[attr-defined]

    plan = access_plan(flt)
    if plan is not None:  # None: the filter admits nothing, nothing is searched
        walk(plan)
    for selector in (Selector(version_ids=("v",)), Selector(source_id="s")):
        walk(selector_plan(selector))


def test_the_server_store_creates_every_payload_index_and_refuses_a_mistyped_one() -> None:
    """Off local mode (a real server), opening the collection makes each payload index of the schema, and an
    existing index of another type is refused (vector_schema_mismatch)."""
    from unittest import mock

    from qdrant_client.http import models

    from memory.stores.base import FLOAT_FIELDS, INTEGER_FIELDS, KEYWORD_FIELDS

    client = mock.Mock(init_options={"url": "http://qdrant:6333"})
    store = ServerVectorStore(client, "chunks", DIM)
    store._ensure_indexes({})
    made = {c.args[1]: c.kwargs["field_schema"] for c in client.create_payload_index.call_args_list}
    assert made == {**{f: models.PayloadSchemaType.KEYWORD for f in KEYWORD_FIELDS},
                    **{f: models.PayloadSchemaType.INTEGER for f in INTEGER_FIELDS},
                    **{f: models.PayloadSchemaType.FLOAT for f in FLOAT_FIELDS}}
    wrong = models.PayloadIndexInfo(data_type=models.PayloadSchemaType.KEYWORD, points=0)
    with pytest.raises(VectorStoreError) as refused:
        store._ensure_indexes({next(iter(INTEGER_FIELDS)): wrong})
    assert refused.value.code == "vector_schema_mismatch"


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(PAYLOADS, min_size=1, max_size=12), filters=st.lists(FILTERS, min_size=1, max_size=4))
def test_backend_filter_agrees_with_reference(
    kind: str, payloads: list[ChunkPayload], filters: list[AccessFilter]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(kind, Path(tmp))
        try:
            pts = [VectorPoint(id=str(uuid.uuid4()), vector=unit(i), payload=p) for i, p in enumerate(payloads)]
            store.upsert(pts)
            for flt in filters:
                expected = {p.id for p in pts if flt.matches(p.payload)}
                assert {h.id for h in store.search(unit(0), flt, len(pts))} == expected
                assert store.count(flt) == len(expected)
        finally:
            store.close()


# -- Edge only: persistence and single ownership ---------------------------------------------------------------


def test_edge_reopen_keeps_points(tmp_path: Path) -> None:
    store = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    p = point(payload())
    store.upsert([p])
    store.close()
    store.close()  # idempotent
    reopened = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    assert reopened.retrieve([p.id])[0].payload == p.payload
    assert reopened.count(access()) == 1
    reopened.close()


def _legacy_points() -> list[VectorPoint]:
    """Current, superseded, uncommitted, and current-but-retracted points."""
    return [point(payload(chunk_id="cur")), point(payload(chunk_id="old", valid_to=150.0)),
            point(payload(chunk_id="pending", committed=False)), point(payload(chunk_id="gone", retracted=True))]


def _assert_backfilled(store: VectorStore, pts: list[VectorPoint]) -> None:
    assert visible_ids(store, access(latest=True)) == {pts[0].id}
    assert visible_ids(store, access(as_of=120.0)) == {pts[0].id, pts[1].id}


def test_edge_open_backfills_current_on_a_store_written_before_it(tmp_path: Path) -> None:
    import qdrant_edge as qe

    store = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    pts = _legacy_points()
    store.upsert(pts)
    everything = qe.Filter(must=[qe.FieldCondition("chunk_id", match=qe.MatchAny(["cur", "old", "pending", "gone"]))])
    store._shard.update(qe.UpdateOperation.delete_payload_by_filter(everything, ["current"]))  # as written by 0.x
    assert visible_ids(store, access(latest=True)) == set()  # fails closed without the field
    store.close()
    reopened = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    try:
        _assert_backfilled(reopened, pts)
    finally:
        reopened.close()


def test_edge_open_stamps_clear_on_points_written_before_masked_twins(tmp_path: Path) -> None:
    import qdrant_edge as qe

    store = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    pts = _legacy_points()
    store.upsert(pts)
    everything = qe.Filter(must=[qe.FieldCondition("chunk_id", match=qe.MatchAny(["cur", "old", "pending", "gone"]))])
    store._shard.update(qe.UpdateOperation.delete_payload_by_filter(everything, ["masked_twin"]))
    assert visible_ids(store, access(latest=True)) == set()  # fails closed without the field
    assert store.retrieve([pts[0].id])[0].payload.masked_twin is False
    store.close()
    reopened = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    try:
        _assert_backfilled(reopened, pts)
        assert visible_ids(reopened, access(latest=True, grants=(EU_MASKED,))) == set()  # personal, no twin
    finally:
        reopened.close()


def test_edge_second_open_is_refused_in_process_and_across_processes(tmp_path: Path) -> None:
    store = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    with pytest.raises(StoreLockedError):
        EdgeVectorStore.open(tmp_path / "vectors", DIM)
    child = (
        "import sys; from pathlib import Path\n"
        "from memory.errors import StoreLockedError\n"
        "from memory.stores.edge import EdgeVectorStore\n"
        "try:\n    EdgeVectorStore.open(Path(sys.argv[1]), 8)\nexcept StoreLockedError:\n    sys.exit(3)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path / "vectors")], cwd=root, timeout=60)
    assert done.returncode == 3
    store.close()
    EdgeVectorStore.open(tmp_path / "vectors", DIM).close()  # the lock is released on close


def test_edge_reopen_with_another_dim_is_a_schema_mismatch(tmp_path: Path) -> None:
    EdgeVectorStore.open(tmp_path / "vectors", DIM).close()
    with pytest.raises(VectorStoreError) as err:
        EdgeVectorStore.open(tmp_path / "vectors", DIM * 2)
    assert err.value.code == "vector_schema_mismatch"
    EdgeVectorStore.open(tmp_path / "vectors", DIM).close()  # the failed open released the lock


def test_edge_use_after_close_is_a_store_error(tmp_path: Path) -> None:
    store = EdgeVectorStore.open(tmp_path / "vectors", DIM)
    store.close()
    with pytest.raises(VectorStoreError):
        store.search(unit(0), access(), 3)
    with pytest.raises(VectorStoreError):
        store.count()


# -- Server only: collection lifecycle ---------------------------------------------------------------------------


def test_server_ensure_collection_is_idempotent_and_checks_schema() -> None:
    client = QdrantClient(":memory:")
    store = ServerVectorStore(client, "chunks", DIM)
    store.ensure_collection()
    store.upsert([point(payload())])
    store.ensure_collection()
    assert store.count() == 1
    with pytest.raises(VectorStoreError) as err:
        ServerVectorStore(client, "chunks", DIM * 2).ensure_collection()
    assert err.value.code == "vector_schema_mismatch"
    client.close()


def test_an_unreachable_server_is_vector_store_unavailable_with_a_retry_after() -> None:
    client = QdrantClient(url="http://127.0.0.1:1", timeout=2, check_compatibility=False)  # nothing listens there
    store = ServerVectorStore(client, "chunks", DIM, owns_client=True)
    for call in (store.ensure_collection, lambda: store.search(unit(0), access(), 5), lambda: store.count()):
        with pytest.raises(VectorStoreUnavailableError) as err:
            call()
        assert (err.value.code, err.value.status, err.value.retry_after_s) == ("vector_store_unavailable", 503, 5)
        assert "127.0.0.1" not in err.value.message  # the backend's address is for the log, not the caller
    store.close()


@pytest.mark.parametrize("field", ["current", "masked_twin"])
def test_server_ensure_collection_backfills_a_field_points_lack(field: str) -> None:
    """Points written before `current` (derived) or `masked_twin` (clear points: 0) existed get it once."""
    from qdrant_client import models

    store = ServerVectorStore(QdrantClient(":memory:"), "chunks", DIM, owns_client=True)
    store.ensure_collection()
    pts = _legacy_points()
    store.upsert(pts)
    store._client.delete_payload("chunks", [field], points=models.FilterSelector(filter=models.Filter()))
    assert visible_ids(store, access(latest=True)) == set()
    store.ensure_collection()
    try:
        _assert_backfilled(store, pts)
    finally:
        store.close()


def test_server_missing_collection_is_a_store_error_not_value_error() -> None:
    client = QdrantClient(":memory:")
    store = ServerVectorStore(client, "never-created", DIM)
    for call in (lambda: store.search(unit(0), access(), 3), store.count, lambda: store.upsert([point(payload())])):
        with pytest.raises(VectorStoreError) as err:
            call()
        assert err.value.code == "vector_collection_missing"
    client.close()


@pytest.mark.parametrize("consistency", [None, "all", "majority", "quorum", "1", 2])
def test_server_accepts_read_consistency_settings(consistency: str | int | None) -> None:
    client = QdrantClient(":memory:")
    store = ServerVectorStore(
        client, "chunks", DIM, shard_number=2, replication_factor=2, write_consistency_factor=2,
        read_consistency=consistency,
    )  # fmt: skip
    store.ensure_collection()
    p = point(payload())
    store.upsert([p])
    assert [h.id for h in store.search(unit(0), access(), 3)] == [p.id]
    assert [h.id for h in store.retrieve([p.id])] == [p.id]
    client.close()


def test_server_rejects_unknown_read_consistency() -> None:
    with pytest.raises(VectorStoreError):
        ServerVectorStore(QdrantClient(":memory:"), "chunks", DIM, read_consistency="eventually")
