"""Top_k stays full when render drops hits: points whose payload the filter admitted and SQL does not (a
retraction some shard missed, a label raised in SQL before its points were patched) are dropped, and their slots
are filled by the same filtered search asked for more, skipping them. The withheld count follows what was
finally served. Through the API and the service, on the real SQL + Qdrant Edge + parsing (model doubles)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from memory import search as search_svc
from memory.db import transaction
from memory.models import AuditChunk, Chunk, Document
from memory.principals import get_principal, resolve_effective
from memory.stores.base import PayloadPatch, Selector

QUERY = "how are train tickets for business trips booked"
DOC = (
    "# Hotels\n\nHotel rooms for business trips are capped at one hundred and fifty euros per night.\n\n"
    "# Meals\n\nMeals during business trips are reimbursed up to forty euros per day.\n\n"
    "# Taxis\n\nTaxis on business trips are allowed after ten in the evening.\n"
)
BEST = "# Train\n\nTrain tickets for business trips are booked through the travel desk.\n"
UNRELATED = "# Cafeteria\n\nThe cafeteria menu changes every Monday and lists vegetarian dishes first.\n"


def _world(api: Any) -> str:
    """Source s1 (group g) with the query's best match in its own document, and three more chunks; returns the
    best match's chunk id."""
    api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "rules.md", DOC).status_code == 201
    best = api.upload("s1", "train.md", BEST).json()
    with api.container.sessions() as s:
        return s.scalars(select(Chunk.id).where(Chunk.version_id == best["version_id"])).one()


def _search(api: Any, top_k: int) -> search_svc.SearchResult:
    c = api.container
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r1"), acting_for=None)
        return search_svc.search(s, store=c.store, embedder=c.embedder, who=who,
                                 request=search_svc.SearchRequest(query=QUERY, top_k=top_k))


def _point_of(api: Any, chunk_id: str) -> str:
    with api.container.sessions() as s:
        return s.scalars(select(Chunk.point_id).where(Chunk.id == chunk_id)).one()


def test_a_retraction_a_shard_missed_does_not_cost_a_slot(api: Any):
    best = _world(api)
    before = _search(api, top_k=2)
    assert best in [h.citation.chunk_id for h in before.hits] and before.refilled == 0
    with api.container.sessions() as s:
        doc_id = s.scalars(select(Document.id).join(Chunk, Chunk.document_id == Document.id)
                           .where(Chunk.id == best)).one()
    steward = {"Authorization": api.principal("st2", roles=["steward", "reader"], groups=["g"])["Authorization"]}
    r = api.client.post(f"/v1/documents/{doc_id}/retract", headers=api.admin, json={"reason": "outdated"})
    assert r.status_code == 200, r.text
    # The shard that missed the retraction's patch: the filter admits the point again, SQL does not.
    api.container.store.patch(Selector(point_ids=(_point_of(api, best),)), PayloadPatch(retracted=False))

    after = _search(api, top_k=2)
    served = [h.citation.chunk_id for h in after.hits]
    assert len(served) == 2 and best not in served and after.refilled == 1
    with api.container.sessions() as s:  # the audit names what was served, the dropped hit not among it
        audited = set(s.scalars(select(AuditChunk.chunk_id).where(AuditChunk.seq == after.audit_seq)))
    assert audited == set(served)
    metric = "memory_search_refilled_hits_total"
    refilled_before = REGISTRY.get_sample_value(metric) or 0.0
    over_http = api.search(steward, QUERY, top_k=2).json()
    assert len(over_http["hits"]) == 2 and best not in [h["citation"]["chunk_id"] for h in over_http["hits"]]
    assert (REGISTRY.get_sample_value(metric) or 0.0) == refilled_before + 1


def test_a_hit_sql_withholds_is_refilled_and_counted_as_withheld(api: Any):
    best = _world(api)
    api.source("s-restricted", read_groups=["g"], floor="restricted")  # r1 could have hits withheld: counted
    assert api.upload("s-restricted", "cafeteria.md", UNRELATED).status_code == 201
    assert _search(api, top_k=2).withheld == []
    with transaction(api.container.sessions) as s:  # raised in SQL, its point not yet patched (a relabel mid-way)
        s.execute(update(Chunk).where(Chunk.id == best).values(label=3))

    result = _search(api, top_k=2)
    assert len(result.hits) == 2 and best not in [h.citation.chunk_id for h in result.hits]
    assert result.refilled == 1
    assert [(w.source_id, w.reason, w.count) for w in result.withheld] == [("s1", "clearance", 1)]


def test_when_nothing_else_passes_the_filter_fewer_hits_come_back(api: Any):
    best = _world(api)
    with transaction(api.container.sessions) as s:
        s.execute(update(Chunk).where(Chunk.id == best).values(label=3))
    result = _search(api, top_k=10)  # four chunks pass the filter, one of them dropped: three, no loop
    assert len(result.hits) == 3 and result.refilled == 0


class ChangingStore:
    """The real store; before its second search (the refill's), `change` runs (the vectors patched under the
    search, as a retraction does before SQL commits)."""

    def __init__(self, inner: Any, change: Any) -> None:
        self.inner, self.change, self.calls = inner, change, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def rank_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            self.change()
        return self.inner.rank_batch(*args, **kwargs)


def test_a_refill_that_would_serve_fewer_hits_is_not_taken(api: Any):
    """The refill's search finds only hits SQL drops, and one already served has left the vectors meanwhile:
    the hits already checked stay (never fewer, never a negative refill count)."""
    _world(api)
    ranked = [h.citation.chunk_id for h in _search(api, top_k=4).hits]
    assert len(ranked) == 4
    with transaction(api.container.sessions) as s:  # SQL withholds ranks 1, 3 and 4 from r1 (clearance)
        s.execute(update(Chunk).where(Chunk.id.in_([ranked[0], ranked[2], ranked[3]])).values(label=3))
    second = _point_of(api, ranked[1])
    c = api.container
    store = ChangingStore(c.store, lambda: c.store.patch(Selector(point_ids=(second,)),
                                                         PayloadPatch(retracted=True)))
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r1"), acting_for=None)
        result = search_svc.search(s, store=store, embedder=c.embedder, who=who,
                                   request=search_svc.SearchRequest(query=QUERY, top_k=2))
    assert store.calls >= 2
    assert [h.citation.chunk_id for h in result.hits] == [ranked[1]] and result.refilled == 0
    with c.sessions() as s:
        assert set(s.scalars(select(AuditChunk.chunk_id).where(AuditChunk.seq == result.audit_seq))) == {ranked[1]}
