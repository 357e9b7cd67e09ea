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


@router.post("/relabel", response_model=schemas.RelabelOut)
def relabel(
    body: schemas.RelabelIn, session: SessionDep, container: ContainerDep,
    who: Annotated[EffectivePrincipal, role("admin")],
) -> schemas.RelabelOut:
    """Bring the chunks already stored (of one source, or all) to the label map in force and their sources'
    floors, which otherwise apply only to what is ingested next: labels and personal flags in SQL and in the
    vector payloads, the vectors tightened before SQL changes and loosened only after it commits; then the masked
    twins of chunks that became personal are stored. Audited (`policy.relabel`, one record per batch of
    versions). Idempotent; `dry_run` counts without writing. 404 for an unknown source; 409
    `label_map_changed` or `floor_changed` if the map or a floor changes while it runs (run it again). Runs in
    the request: ~10 s per 100k chunks when nothing changes, ~100 s when 30k do (scripts/bench_relabel.py):
    for a large one, start it as a background job (`POST /v1/admin/jobs`, kind `relabel`) and follow it. The
    CLI's `memory relabel` does the same. On the embedded store, run `memory optimize` after a large one."""
    session.commit()  # the authentication's transaction: on SQLite it would hold the lock relabel needs
    out = container.relabel(actor=who.principal_id, acting_for=who.acting_for, source_id=body.source_id,
                            dry_run=body.dry_run)
    return schemas.RelabelOut(**out)  # type: ignore[arg-type]
