"""The governed search endpoint every copilot calls."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from memory import search as search_svc
from memory.api import presenters, schemas
from memory.api.deps import ContainerDep, SessionDep, role
from memory.clock import to_epoch
from memory.metrics import SEARCH_HITS, SEARCH_RECALL_REPAIRS, SEARCH_WITHHELD
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["search"], responses=schemas.ERRORS)


@router.post("/search", response_model=schemas.SearchOut)
def search(
    body: schemas.SearchIn,
    session: SessionDep,
    container: ContainerDep,
    who: Annotated[EffectivePrincipal, role("reader")],
) -> schemas.SearchOut:
    """Top-k chunks this caller may see (send `X-Acting-For: <user id>` when acting for a user), each with a
    citation, plus the policy applied and counts of hits withheld for clearance, jurisdiction or consent.
    State a `purpose` to see personal data of sources that require consent to it. 422 `invalid_purpose`."""
    request = search_svc.SearchRequest(
        query=body.query, top_k=body.top_k, as_of=to_epoch(body.as_of) if body.as_of else None,
        source_ids=tuple(body.source_ids) if body.source_ids is not None else None, purpose=body.purpose,
    )
    # Authentication is done: end its transaction, so SQLite's write lock is not held while the query
    # embeds (search() takes it again at its first statement, for the filter, render and audit record).
    session.commit()
    result = search_svc.search(
        session, store=container.store, embedder=container.embedder, who=who, request=request,
        max_top_k=container.settings.search_max_top_k,
    )
    for h in result.hits:
        SEARCH_HITS.labels(masked=str(h.masked).lower()).inc()
    for w in result.withheld:
        SEARCH_WITHHELD.labels(reason=w.reason).inc(w.count)
    if result.recall_repaired:
        SEARCH_RECALL_REPAIRS.inc()
    return presenters.search(result)
