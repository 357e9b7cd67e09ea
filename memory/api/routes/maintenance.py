"""Maintenance an admin can start (the API also runs it at start and every `repair_interval_s`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from memory.api import schemas
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, role
from memory.maintenance import run_repair
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1/admin", tags=["operations"], responses=schemas.ERRORS, route_class=TransactionPerHop)


@router.post("/repair", response_model=schemas.RepairOut)
def repair(
    session: SessionDep, container: ContainerDep, who: Annotated[EffectivePrincipal, role("admin")]
) -> schemas.RepairOut:
    """Run repair now: undo ingests left pending past the grace period, copy SQL's state to versions whose
    vectors were left unsynced, and give each source whose access change was left narrowed (a crash or a vector
    store failure after the commit) the access SQL holds. Idempotent; audited (`maintenance.repair`) when it
    fixed anything. On the embedded store it also reads how many vector points no HNSW index covers."""
    session.commit()  # the authentication's transaction: on SQLite it would hold the lock repair needs
    counts = run_repair(container.sessions, container.store, pending_grace_s=container.settings.ingest_pending_grace_s,
                        actor=who.principal_id, acting_for=who.acting_for)
    return schemas.RepairOut(**counts, unindexed_points=container.watch_index())
