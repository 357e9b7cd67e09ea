"""Citations (provenance, verification) and policy explanations.

Auditors see any citation and every record that served it. Any other caller may look up or verify only a
chunk that the audit log shows was served to them (or to the user an agent acted for; an agent acting for a
user: served to that same pair), and sees only those records: "who else saw this" is the auditor's question.
Time travel is `as_of` on POST /v1/search.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from memory import audit, verification
from memory import explain as explain_svc
from memory.api import presenters_audit as present
from memory.api import schemas, schemas_audit
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, WhoDep, role
from memory.clock import to_epoch
from memory.errors import ForbiddenError
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["provenance"], responses=schemas.ERRORS, route_class=TransactionPerHop)
AuditorDep = Annotated[EffectivePrincipal, role("auditor")]


def _is_auditor(who: EffectivePrincipal) -> bool:
    return bool({"auditor", "admin"} & who.roles)


def _scope(session: Session, who: EffectivePrincipal, chunk_id: str | None) -> verification.Viewer | None:
    """None for auditors (everything); otherwise the caller (an agent acting for a user: that pair), after
    checking the chunk was served to them (verification.Viewer)."""
    if _is_auditor(who):
        return None
    viewer = verification.Viewer(who.principal_id, who.acting_for)
    if chunk_id is not None and not verification.was_served_to(session, chunk_id=chunk_id, viewer=viewer):
        # Same answer whether or not the chunk exists: nothing about other callers' data leaks.
        raise ForbiddenError("this chunk was not served to you", code="not_served_to_caller")
    return viewer


@router.get("/citations/{chunk_id}", response_model=schemas_audit.ProvenanceOut)
def get_citation(chunk_id: str, session: SessionDep, who: WhoDep) -> schemas_audit.ProvenanceOut:
    """Provenance of a chunk: source -> document -> version -> chunk, pipeline versions, status
    (current / superseded / retracted) and the audit records that served it. 404 `chunk_not_found`."""
    visible_to = _scope(session, who, chunk_id)
    result = verification.get_citation(session, chunk_id=chunk_id, visible_to=visible_to)
    audit.append(session, audit.Read(action="citation.get", target=chunk_id),
                 principal_id=who.principal_id, acting_for=who.acting_for, source_id=result.citation.source_id,
                 document_id=result.citation.document_id)
    return present.provenance(result)


@router.post("/citations/verify", response_model=schemas_audit.VerificationOut)
def verify_citation(body: schemas_audit.VerifyIn, session: SessionDep, who: WhoDep) -> schemas_audit.VerificationOut:
    """Recompute the chunk hash from stored text and check every citation field against the store.
    Unknown, malformed or altered citations are `valid: false` with reason codes, never valid."""
    raw = body.citation.get("chunk_id")
    chunk_id = raw if isinstance(raw, str) and raw else None
    visible_to = _scope(session, who, chunk_id)
    result = verification.verify_citation(session, presented=body.citation, visible_to=visible_to)
    verification.record_verify(session, result, principal_id=who.principal_id, acting_for=who.acting_for)
    return present.verification(result)


@router.post("/explain", response_model=schemas_audit.ExplainOut)
def explain(
    body: schemas_audit.ExplainIn, session: SessionDep, container: ContainerDep, who: AuditorDep
) -> schemas_audit.ExplainOut:
    """Would this principal (acting for this user) see this chunk at `as_of`, in a search for `purpose`, and by
    which rules? Auditors."""
    result = explain_svc.explain_access(
        session, container.store, principal_id=body.principal_id, chunk_id=body.chunk_id,
        acting_for=body.acting_for, as_of=to_epoch(body.as_of) if body.as_of else None, purpose=body.purpose,
    )
    explain_svc.record_explain(session, result, principal_id=who.principal_id, acting_for=who.acting_for)
    return present.explanation(result)
