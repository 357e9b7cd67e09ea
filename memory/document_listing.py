"""A source's documents, a page at a time: what a steward (or an auditor, or an admin) has stored in it.

Each entry is a document's name (its external key), how many versions it has, and its current version's
provenance summary: status, hashes, highest label, whether it holds personal data, its retraction, and whether
an ingest of its own bytes would process them again under this code's pipeline (`stale`,
memory.ingestion.reprocesses, the rule `memory stale-versions` applies). Ordered by external key, then id, with
keyset pagination: the cursor is opaque to callers (the last entry's key and id), so a page never skips or
repeats a document while others are added.

Who may list (`list_for`): the source's steward (an agent acting for a user: that user, within the agent's roles),
auditors and admins; another steward who can see the source gets 403 `not_source_steward`, anyone else the 404 of
an unknown source. Each listing is audited (`documents.list`; the prefix, a name and possibly a person's, as its
hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from memory import audit
from memory import sources as sources_svc
from memory.errors import ForbiddenError, ValidationFailedError
from memory.ingestion import reprocesses
from memory.models import Document, DocumentVersion
from memory.policy import EffectivePrincipal

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


def _plain(text: str, limit: int) -> bool:
    """Text an external key may hold (memory.documents: no control characters) and SQL can take (no lone
    surrogates, no NUL), within `limit` characters."""
    return len(text) <= limit and not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (external key, document id) a cursor holds; 422 `invalid_cursor` for anything `encode_cursor` did not
    make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, doc_id = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValidationFailedError("cursor is not one this service returned", code="invalid_cursor") from exc
    if not (isinstance(key, str) and isinstance(doc_id, str) and _plain(key, 1024) and _plain(doc_id, 64)):
        raise ValidationFailedError("cursor is not one this service returned", code="invalid_cursor")
    return key, doc_id


def list_for(
    session: Session, *, who: EffectivePrincipal, source_id: str, limit: int = 100, cursor: str | None = None,
    key_prefix: str | None = None, state: State | None = None,
) -> DocumentPage:
    """`page` for a caller allowed to list the source (the module docstring), audited."""
    if not {"steward", "auditor", "admin"} & who.roles:
        raise ForbiddenError("requires role steward or auditor", code="missing_role")
    src = sources_svc.get(session, source_id=source_id)
    if not {"auditor", "admin"} & who.roles:
        sources_svc.ensure_steward(who, src)
    listed = page(session, source_id=source_id, limit=limit, cursor=cursor, key_prefix=key_prefix, state=state)
    audit.append(session, audit.Read(action="documents.list", target=source_id, details={
        "key_prefix_sha256": hashlib.sha256(key_prefix.encode()).hexdigest() if key_prefix else None,
        "state": state, "continued": cursor is not None, "returned": len(listed.entries),
    }), principal_id=who.principal_id, acting_for=who.acting_for, source_id=source_id)
    return listed


def page(
    session: Session, *, source_id: str, limit: int = 100, cursor: str | None = None,
    key_prefix: str | None = None, state: State | None = None,
) -> DocumentPage:
    """Up to `limit` documents of the source after `cursor`, optionally only those whose external key starts
    with `key_prefix` (taken literally, character for character: no wildcards, case counts) or in one `state`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailedError(f"limit must be within 1..{MAX_LIMIT}", code="invalid_limit")
    if state is not None and state not in STATES:
        raise ValidationFailedError(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    if key_prefix is not None and not _plain(key_prefix, 1024):
        raise ValidationFailedError("key_prefix holds a control character", code="invalid_key_prefix")
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
        # An external key is unique in its source: the key alone orders the pages (the unique index's range).
        .order_by(Document.external_key)
        .limit(limit + 1)
    )
    if cursor is not None:
        q = q.where(Document.external_key > decode_cursor(cursor)[0])
    if key_prefix:
        # Not LIKE: SQLite's ignores case. Nor a range from the prefix: a collation may sort a key before its own
        # prefix (contractions). The pages' index order stops the scan after `limit` matches.
        q = q.where(func.substr(Document.external_key, 1, len(key_prefix)) == key_prefix)
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
