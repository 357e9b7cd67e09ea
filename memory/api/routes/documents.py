"""Documents for stewards and auditors: a source's documents, a page at a time, and a document's version history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from memory import document_listing, documents
from memory.api import presenters, schemas
from memory.api.deps import SessionDep, TransactionPerHop, WhoDep

router = APIRouter(prefix="/v1", tags=["documents"], responses=schemas.ERRORS, route_class=TransactionPerHop)


@router.get("/sources/{source_id}/documents", response_model=schemas.DocumentListOut)
def list_documents(
    source_id: str,
    session: SessionDep,
    who: WhoDep,
    limit: Annotated[int, Query(ge=1, le=document_listing.MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=4096,
                                        description="The `next_cursor` of the previous page")] = None,
    key_prefix: Annotated[str | None, Query(min_length=1, max_length=1024, description=(
        "Only documents whose external key starts with this (taken literally; case counts), e.g. a folder"))] = None,
    state: Annotated[document_listing.State | None, Query(description="active | retracted | none")] = None,
) -> schemas.DocumentListOut:
    """The source's documents by external key: each one's state, label, personal data, staleness and current
    version's provenance. For the source's steward (an agent acting for a user: that user), auditors and admins:
    another steward who can see the source gets 403 `not_source_steward`, anyone else the 404 `source_not_found`
    of an unknown id. 422 `invalid_cursor` for a cursor this service did not return, `invalid_key_prefix` for a
    prefix with a control character. Audited (`documents.list`)."""
    return presenters.document_page(document_listing.list_for(
        session, who=who, source_id=source_id, limit=limit, cursor=cursor, key_prefix=key_prefix, state=state))


@router.get("/documents/{document_id}/versions", response_model=schemas.DocumentVersionsOut)
def document_versions(document_id: str, session: SessionDep, who: WhoDep) -> schemas.DocumentVersionsOut:
    """Every version with its provenance (hashes, validity window, pipeline versions, retraction). Stewards
    see their own sources' documents only (any other id is `document_not_found`); auditors and admins all.
    Audited (`document.versions`)."""
    doc, rows = documents.version_history(session, who=who, document_id=document_id)
    return schemas.DocumentVersionsOut(
        document_id=doc.id, source_id=doc.source_id, external_key=doc.external_key,
        versions=[presenters.version(v) for v in rows],
    )
