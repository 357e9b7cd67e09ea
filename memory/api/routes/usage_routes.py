"""Usage and cost (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from memory import usage
from memory.api import schemas
from memory.api.deps import SessionDep, TransactionPerHop, role
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["usage"], responses=schemas.ERRORS, route_class=TransactionPerHop)


@router.get("/usage")
def get_usage(
    session: SessionDep,
    who: Annotated[EffectivePrincipal, role("admin")],
    since: Annotated[schemas.Instant | None, Query(description="Start of the window (inclusive)")] = None,
    until: Annotated[schemas.Instant | None, Query(description="End of the window (exclusive)")] = None,
) -> dict[str, Any]:
    """Queries, chunks served, embedding tokens per principal, team and source; storage per source;
    content shared across sources and the embedding work computing it once saved."""
    r = usage.usage_report(session, since=since, until=until)
    return {"since": r.since, "until": r.until, "totals": r.totals, "by_principal": r.by_principal,
            "by_group": r.by_group, "by_source": r.by_source, "duplicates": r.duplicates}
