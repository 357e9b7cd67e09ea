"""Recall repair: when the served (filtered) graph search misses a hit the caller may see, and the count
search over the caller's readable set found it ranking above the last served hit, the service searches
again with Beam.WIDE. Served hits still come only from the filter inside the search.

A store proxy strands the first served search (drops its best hit), as a fragmented filter can strand a real
graph search; everything else goes to the real store (Qdrant Edge, real embeddings, SQLite)."""

from __future__ import annotations

from typing import Any

from memory import search as search_svc
from memory.db import transaction
from memory.models import AuditChunk
from memory.principals import get_principal, resolve_effective
from memory.stores.base import Beam

DOC = (
    "# Travel\n\nTrain tickets for business trips are booked through the travel desk.\n\n"
    "# Hotels\n\nHotel rooms for business trips are capped at one hundred and fifty euros per night.\n\n"
    "# Meals\n\nMeals during business trips are reimbursed up to forty euros per day.\n\n"
    "# Taxis\n\nTaxis on business trips are allowed after ten in the evening.\n"
)
SECRET = "# Board\n\nThe board will decide on business trips to the new office in March.\n"
QUERY = "how are train tickets for business trips booked"
UNRELATED = "# Cafeteria\n\nThe cafeteria menu changes every Monday and lists vegetarian dishes first.\n"


def _with_something_withholdable(api: Any) -> None:
    """A restricted source the readers' group can read, on another subject: the internal-clearance readers
    could have a hit withheld, so their searches count (and so can notice a stranded served search)."""
    api.source("s-restricted", read_groups=["g"], floor="restricted")
    assert api.upload("s-restricted", "cafeteria.md", UNRELATED).status_code == 201


class StrandedServeStore:
    """Delegates to the real store and records each batch's beams; with `strand`, a SERVE search (first of
    its batch) loses its best hit."""

    def __init__(self, inner: Any, *, strand: bool = True) -> None:
        self.inner, self.strand = inner, strand
        self.calls: list[tuple[Beam, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def rank_batch(self, vector: Any, filters: Any, limit: int, beams: Any = None) -> Any:
        beams = tuple(beams or [Beam.SERVE] * len(filters))
        self.calls.append(beams)
        results = self.inner.rank_batch(vector, filters, limit, beams)
        if self.strand and beams[0] is Beam.SERVE and results[0]:
            results[0] = results[0][1:]
        return results


def _search(api: Any, store: Any, pid: str, top_k: int = 2) -> search_svc.SearchResult:
    c = api.container
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id=pid), acting_for=None)
        return search_svc.search(s, store=store, embedder=c.embedder, who=who,
                                 request=search_svc.SearchRequest(query=QUERY, top_k=top_k))


def test_a_stranded_served_search_is_repaired_with_the_wide_beam(api):
    api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    _with_something_withholdable(api)
    expected = _search(api, api.container.store, "r1")
    assert not expected.recall_repaired and len(expected.hits) == 2

    proxy = StrandedServeStore(api.container.store)
    result = _search(api, proxy, "r1")

    assert proxy.calls == [(Beam.SERVE, Beam.COUNT), (Beam.WIDE,)]
    assert result.recall_repaired is True
    assert [h.citation.chunk_id for h in result.hits] == [h.citation.chunk_id for h in expected.hits]
    assert result.withheld == []
    with api.container.sessions() as s:  # the audit record names what was finally served
        audited = s.query(AuditChunk.chunk_id).filter(AuditChunk.seq == result.audit_seq).all()
    assert sorted(c for (c,) in audited) == sorted(h.citation.chunk_id for h in result.hits)


def test_a_hit_withheld_by_policy_is_counted_not_repaired(api):
    """The best readable hit is above the caller's clearance: it is a withheld hit, not a missed one."""
    api.principal("r1", groups=["g"], clearance="internal")
    api.source("s1", read_groups=["g"])
    api.source("s2", read_groups=["g"], floor="restricted")
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    assert api.upload("s2", "board.md", SECRET).status_code == 201

    store = StrandedServeStore(api.container.store, strand=False)
    result = _search(api, store, "r1", top_k=5)
    assert store.calls == [(Beam.SERVE, Beam.COUNT)]
    assert result.recall_repaired is False
    assert [(w.source_id, w.reason) for w in result.withheld] == [("s2", "clearance")]
    assert all(h.citation.source_id == "s1" for h in result.hits)


def test_the_api_counts_repairs_in_prometheus(api, monkeypatch):
    from prometheus_client import REGISTRY

    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    _with_something_withholdable(api)
    before = REGISTRY.get_sample_value("memory_search_recall_repairs_total") or 0.0
    monkeypatch.setattr(api.container, "store", StrandedServeStore(api.container.store), raising=False)
    r = api.search(reader, QUERY, top_k=2)
    assert r.status_code == 200, r.text
    assert (REGISTRY.get_sample_value("memory_search_recall_repairs_total") or 0.0) == before + 1


def test_nothing_withholdable_means_no_count_search(api):
    """r1 can read only what its clearance and jurisdiction allow: the count search is skipped (the served one
    is the same), the response says so, and the same search counts again once a restricted source appears."""
    api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    store = StrandedServeStore(api.container.store, strand=False)
    lean = _search(api, store, "r1", top_k=5)  # more than s1 holds: every readable hit ranks "above"
    assert store.calls == [(Beam.SERVE,)]
    assert lean.withheld == [] and lean.rules_applied["withheld_counted"] is False and lean.hits

    api.source("s2", read_groups=["g"], floor="restricted")
    assert api.upload("s2", "board.md", SECRET).status_code == 201
    store.calls.clear()
    counted = _search(api, store, "r1", top_k=5)
    assert store.calls == [(Beam.SERVE, Beam.COUNT)] and counted.rules_applied["withheld_counted"] is True
    assert [(w.source_id, w.reason, w.count) for w in counted.withheld] == [("s2", "clearance", 1)]
    assert [h.citation.chunk_id for h in counted.hits] == [h.citation.chunk_id for h in lean.hits]
