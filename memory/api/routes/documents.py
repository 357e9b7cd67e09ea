"""Documents for stewards and auditors: a source's documents, a page at a time, and a document's version history."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Query

from memory import audit, document_listing, documents
from memory import sources as sources_svc
from memory.api import presenters, schemas
from memory.api.deps import SessionDep, TransactionPerHop, WhoDep
from memory.errors import ForbiddenError
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["documents"], responses=schemas.ERRORS, route_class=TransactionPerHop)
_OVERSEERS = frozenset({"auditor", "admin"})


def _require_document_reader(who: EffectivePrincipal) -> None:
    if not ({"steward"} | _OVERSEERS) & who.roles:
        raise ForbiddenError("requires role steward or auditor", code="missing_role")


@router.get("/sources/{source_id}/documents", response_model=schemas.DocumentListOut)
def list_documents(
    source_id: str,
    session: SessionDep,
    who: WhoDep,
    limit: Annotated[int, Query(ge=1, le=document_listing.MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=4096,
                                        description="The `next_cursor` of the previous page")] = None,
    key_prefix: Annotated[str | None, Query(min_length=1, max_length=1024, description=(
        "Only documents whose external key starts with this (taken literally), e.g. a folder"))] = None,
    state: Annotated[document_listing.State | None, Query(description="active | retracted | none")] = None,
) -> schemas.DocumentListOut:
    """The source's documents by external key: each one's state, label, personal data, staleness and current
    version's provenance. For the source's steward, auditors and admins: another steward who can see the source
    gets 403 `not_source_steward`, anyone else the 404 `source_not_found` of an unknown id. 422
    `invalid_cursor` for a cursor this service did not return. Audited (`documents.list`)."""
    _require_document_reader(who)
    src = sources_svc.get(session, source_id=source_id)
    if not _OVERSEERS & who.roles:
        sources_svc.ensure_steward(who, src)
    page = document_listing.page(session, source_id=source_id, limit=limit, cursor=cursor, key_prefix=key_prefix,
                                 state=state)
    audit.append(session, audit.Read(action="documents.list", target=source_id, details={
        # The prefix is a name, possibly a person's: recorded as its hash, like a search's query.
        "key_prefix_sha256": hashlib.sha256(key_prefix.encode()).hexdigest() if key_prefix else None,
        "state": state, "continued": cursor is not None, "returned": len(page.entries),
    }), principal_id=who.principal_id, acting_for=who.acting_for, source_id=source_id)
    return presenters.document_page(page)


@router.get("/documents/{document_id}/versions", response_model=schemas.DocumentVersionsOut)
def document_versions(document_id: str, session: SessionDep, who: WhoDep) -> schemas.DocumentVersionsOut:
    """Every version with its provenance (hashes, validity window, pipeline versions, retraction). Stewards
    see their own sources' documents only (any other id is `document_not_found`); auditors and admins all.
    Audited (`document.versions`)."""
    _require_document_reader(who)
    doc = documents.get_stewarded_document(
        session, document_id=document_id, principal_id=who.principal_id, roles=who.roles
    )
    rows = documents.versions(session, document_id=document_id)
    audit.append(session, audit.Read(action="document.versions", target=document_id,
                                     details={"returned": len(rows)}),
                 principal_id=who.principal_id, acting_for=who.acting_for, source_id=doc.source_id,
                 document_id=doc.id)
    return schemas.DocumentVersionsOut(
        document_id=doc.id, source_id=doc.source_id, external_key=doc.external_key,
        versions=[presenters.version(v) for v in rows],
    )
