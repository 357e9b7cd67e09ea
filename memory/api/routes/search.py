"""The governed search endpoint every copilot calls."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from memory import search as search_svc
from memory import tracing
from memory.api import presenters, schemas
from memory.api.deps import ActingForHeader, ContainerDep, TokenDep, TransactionPerHop, client_address, governed
from memory.bootstrap import Container
from memory.clock import to_epoch
from memory.metrics import SEARCH_HITS, SEARCH_RECALL_REPAIRS, SEARCH_REFILLED, SEARCH_WITHHELD
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["search"], responses=schemas.ERRORS, route_class=TransactionPerHop)


@router.post("/search", response_model=schemas.SearchOut)
async def search(
    body: schemas.SearchIn, request: Request, container: ContainerDep, token: TokenDep,
    x_acting_for: ActingForHeader = None,
) -> schemas.SearchOut:
    """Top-k chunks this caller may see (send `X-Acting-For: <user id>` when acting for a user), each with a
    citation, plus the policy applied and counts of hits withheld for clearance, jurisdiction or consent.
    State a `purpose` to see personal data of sources that require consent to it. 422 `invalid_purpose`.

    A missing key is refused (401) before the body is read; a present key is checked after the body's
    schema (the whole search runs in one worker-thread hop)."""
    return await run_in_threadpool(_search, container, token, x_acting_for, body, client_address(request))


def _search(
    container: Container, token: str | None, acting_for: str | None, body: schemas.SearchIn, client: str | None
) -> schemas.SearchOut:
    request = search_svc.SearchRequest(
        query=body.query, top_k=body.top_k, as_of=to_epoch(body.as_of) if body.as_of else None,
        source_ids=tuple(body.source_ids) if body.source_ids is not None else None, purpose=body.purpose,
    )
    max_top_k = container.settings.search_max_top_k

    def plan(session: Session, who: EffectivePrincipal) -> search_svc.SearchPlan:
        return search_svc.plan(session, who=who, request=request, max_top_k=max_top_k,
                               reads=container.policy_reads)

    with container.tracing.tracer.start_as_current_span(
        "memory.search", record_exception=False, set_status_on_exception=False, attributes={
            "memory.search.top_k": request.top_k, "memory.search.time_travel": request.as_of is not None,
            "memory.search.acting_for": acting_for is not None,
            "memory.search.source_scoped": request.source_ids is not None,
        },
    ) as span:
        with governed(container, token=token, acting_for=acting_for, role="reader", prepare=plan,
                      client=client) as (session, who, planned):
            result = search_svc.search(
                session, store=container.store, embedder=container.query_embedder, who=who, request=request,
                max_top_k=max_top_k, planned=planned,
            )
        if span.is_recording():
            span.set_attributes(tracing.search_attributes(result))
    for h in result.hits:
        SEARCH_HITS.labels(masked=str(h.masked).lower()).inc()
    for w in result.withheld:
        SEARCH_WITHHELD.labels(reason=w.reason).inc(w.count)
    if result.recall_repaired:
        SEARCH_RECALL_REPAIRS.inc()
    if result.refilled:
        SEARCH_REFILLED.inc(result.refilled)
    return presenters.search(result)
