"""A source's documents, a page at a time: what a steward (or an auditor, or an admin) has stored in it.

Each entry is a document's name (its external key), how many versions it has, and its current version's
provenance summary: status, hashes, highest label, whether it holds personal data, its retraction, and whether
an ingest of its own bytes would process them again under this code's pipeline (`stale`,
memory.ingestion.reprocesses, the rule `memory stale-versions` applies). Ordered by external key, then id, with
keyset pagination: the cursor is opaque to callers (the last entry's key and id), so a page never skips or
repeats a document while others are added.

Who may list is the route's decision (memory.api.routes.documents); this module only reads.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from memory.errors import ValidationFailedError
from memory.ingestion import reprocesses
from memory.models import Document, DocumentVersion

MAX_LIMIT = 500
# active: its current version is served (unless the policy withholds it); retracted: its current version is
# retracted; none: no version was ever stored whole (every ingest of it failed).
State = Literal["active", "retracted", "none"]
STATES: tuple[State, ...] = ("active", "retracted", "none")


@dataclass(frozen=True)
class DocumentEntry:
    document: Document
    current: DocumentVersion | None
    versions: int  # stored versions (a pending or failed ingest is not one)
    state: State
    stale: bool


@dataclass(frozen=True)
class DocumentPage:
    source_id: str
    entries: list[DocumentEntry]
    next_cursor: str | None  # None: this was the last page


def encode_cursor(external_key: str, document_id: str) -> str:
    raw = json.dumps([external_key, document_id], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (external key, document id) a cursor holds; 422 `invalid_cursor` for anything `encode_cursor` did not
    make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, doc_id = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValidationFailedError("cursor is not one this service returned", code="invalid_cursor") from exc
    if not isinstance(key, str) or not isinstance(doc_id, str):
        raise ValidationFailedError("cursor is not one this service returned", code="invalid_cursor")
    return key, doc_id


def page(
    session: Session, *, source_id: str, limit: int = 100, cursor: str | None = None,
    key_prefix: str | None = None, state: State | None = None,
) -> DocumentPage:
    """Up to `limit` documents of the source after `cursor`, optionally only those whose external key starts
    with `key_prefix` (taken literally: `%` and `_` are not wildcards) or in one `state`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailedError(f"limit must be within 1..{MAX_LIMIT}", code="invalid_limit")
    if state is not None and state not in STATES:
        raise ValidationFailedError(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    current = aliased(DocumentVersion)
    stored = (
        select(func.count()).where(DocumentVersion.document_id == Document.id,
                                   DocumentVersion.status.not_in(("pending", "failed")))
        .scalar_subquery()
    )
    q = (
        select(Document, current, stored)
        .outerjoin(current, and_(current.document_id == Document.id, current.version == Document.current_version))
        .where(Document.source_id == source_id)
        .order_by(Document.external_key, Document.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        key, doc_id = decode_cursor(cursor)
        q = q.where(or_(Document.external_key > key, and_(Document.external_key == key, Document.id > doc_id)))
    if key_prefix:
        q = q.where(Document.external_key.startswith(key_prefix, autoescape=True))
    if state == "active":
        q = q.where(current.id.is_not(None), current.retracted_at.is_(None))
    elif state == "retracted":
        q = q.where(current.retracted_at.is_not(None))
    elif state == "none":
        q = q.where(current.id.is_(None))
    rows = session.execute(q).all()
    entries = [_entry(doc, version, int(n)) for doc, version, n in rows[:limit]]
    more = len(rows) > limit
    last = entries[-1].document if entries and more else None
    return DocumentPage(source_id=source_id, entries=entries,
                        next_cursor=encode_cursor(last.external_key, last.id) if last is not None else None)


def _entry(doc: Document, current: DocumentVersion | None, versions: int) -> DocumentEntry:
    if current is None:
        return DocumentEntry(document=doc, current=None, versions=versions, state="none", stale=False)
    state: State = "retracted" if current.retracted_at is not None else "active"
    return DocumentEntry(document=doc, current=current, versions=versions, state=state,
                         stale=state == "active" and reprocesses(current))
