"""Document version history (stewards and auditors)."""

from __future__ import annotations

from fastapi import APIRouter

from memory import documents
from memory.api import presenters, schemas
from memory.api.deps import SessionDep, TransactionPerHop, WhoDep
from memory.errors import ForbiddenError

router = APIRouter(prefix="/v1", tags=["documents"], responses=schemas.ERRORS, route_class=TransactionPerHop)


@router.get("/documents/{document_id}/versions", response_model=schemas.DocumentVersionsOut)
def document_versions(document_id: str, session: SessionDep, who: WhoDep) -> schemas.DocumentVersionsOut:
    """Every version with its provenance (hashes, validity window, pipeline versions, retraction). Stewards
    see their own sources' documents only (any other id is `document_not_found`); auditors and admins all."""
    if not ({"steward", "auditor", "admin"} & who.roles):
        raise ForbiddenError("requires role steward or auditor", code="missing_role")
    doc = documents.get_stewarded_document(
        session, document_id=document_id, principal_id=who.principal_id, roles=who.roles
    )
    rows = documents.versions(session, document_id=document_id)
    return schemas.DocumentVersionsOut(
        document_id=doc.id, source_id=doc.source_id, external_key=doc.external_key,
        versions=[presenters.version(v) for v in rows],
    )


