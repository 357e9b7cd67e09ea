"""The audit trail for auditors: filtered pages, JSON-lines export, and the hash-chain check."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from memory import audit, audit_trail
from memory.api import presenters_audit as present
from memory.api import schemas, schemas_audit
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, role
from memory.models import MAX_INT64
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["audit"], responses=schemas.ERRORS, route_class=TransactionPerHop)
AuditorDep = Annotated[EffectivePrincipal, role("auditor")]


def audit_filter(
    principal: Annotated[str | None, Query(description="Principal who acted")] = None,
    acting_for: Annotated[str | None, Query(description="User the principal acted for")] = None,
    source_id: Annotated[str | None, Query(description="Records about the source or serving its chunks")] = None,
    document_id: Annotated[str | None, Query(description="Records about the document or serving its chunks")] = None,
    chunk_id: Annotated[str | None, Query(description=(
        "Records that served this chunk (a citation lookup, verify or explain of it has it as `target`: "
        "find those with source_id or document_id)"))] = None,
    event: Annotated[Literal["search", "write", "read"] | None, Query(description="search | write | read")] = None,
    action: Annotated[str | None, Query(description="Action of a write/read, e.g. version.retract")] = None,
    since: Annotated[schemas.Instant | None, Query(description="From this instant (inclusive)")] = None,
    until: Annotated[schemas.Instant | None, Query(description="Until this instant (exclusive)")] = None,
) -> audit_trail.AuditFilter:
    return audit_trail.AuditFilter(
        principal_id=principal, acting_for=acting_for, source_id=source_id, document_id=document_id,
        chunk_id=chunk_id, event=event, action=action, since=since, until=until,
    )


FilterDep = Annotated[audit_trail.AuditFilter, Depends(audit_filter)]


@router.get("/audit", response_model=schemas_audit.AuditPageOut)
def list_audit(
    session: SessionDep,
    who: AuditorDep,
    flt: FilterDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_INT64,
                                    description="Return records after this seq (keyset pagination)")] = 0,
    limit: Annotated[int, Query(ge=1, le=audit_trail.MAX_LIMIT)] = 100,
) -> schemas_audit.AuditPageOut:
    """Audit records matching every given filter, oldest first, `limit` per page."""
    result = audit_trail.page(session, flt=flt, after_seq=after_seq, limit=limit)
    audit.append(session, audit.Read(action="audit.read", target="audit_log", details={
        "filter": flt.to_dict(), "after_seq": after_seq, "returned": len(result.records),
    }), principal_id=who.principal_id, acting_for=who.acting_for)
    return schemas_audit.AuditPageOut.model_validate(
        {"records": result.records, "next_after_seq": result.next_after_seq}
    )


@router.get("/audit/verify", response_model=schemas_audit.ChainOut)
def verify_audit(
    session: SessionDep, who: AuditorDep,
    anchor_seq: Annotated[int | None, Query(le=MAX_INT64, description=(
        "With anchor_hash: a record an earlier check reported (its head_seq), kept outside the database"))] = None,
    anchor_hash: Annotated[str | None, Query(description="That record's hash (the earlier check's head_hash)")] = None,
) -> schemas_audit.ChainOut:
    """Recompute the hash chain; report the first broken seq (edited, inserted or deleted record, or served-chunk
    rows that differ from the record's chunk_ids) and why. A valid chain reports its head's seq and hash: keep
    them outside the database and send them as the anchor next time, so that newest records deleted together
    with a rewritten head are found too. 422 `invalid_anchor` (one part of it, or a malformed hash)."""
    report = audit.verify_chain(session, anchor=audit.anchor(anchor_seq, anchor_hash))
    audit.append(session, audit.Read(action="audit.verify", target="audit_log", details={
        "valid": report.valid, "checked": report.checked, "first_broken_seq": report.first_broken_seq,
        "anchor_seq": anchor_seq,
    }), principal_id=who.principal_id, acting_for=who.acting_for)
    return present.chain(report)


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}},
                     "description": "One audit record per line (JSON), oldest first, with its hashes"}},
)
def export_audit(
    session: SessionDep, container: ContainerDep, who: AuditorDep, flt: FilterDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_INT64,
                                    description="Export records after this seq (resume an interrupted export)")] = 0,
) -> StreamingResponse:
    """Every matching record after `after_seq` as JSON lines, streamed (`memory audit export` is the CLI twin).

    If the database fails after streaming began, the last line is `{"error": {"code", "message",
    "resume_after_seq"}}` and the stream is cut without its final chunk (an incomplete transfer, never a clean
    end): export again with `after_seq` set to `resume_after_seq`."""
    audit.append(session, audit_trail.export_event(flt, after_seq), principal_id=who.principal_id,
                 acting_for=who.acting_for)
    # The export record commits with this request; the stream reads in its own short sessions.
    session.commit()
    return StreamingResponse(audit_trail.export_lines(container.sessions, flt=flt, after_seq=after_seq),
                             media_type="application/x-ndjson",
                             headers={"Content-Disposition": "attachment; filename=audit.jsonl"})
