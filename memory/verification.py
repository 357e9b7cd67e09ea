"""Citation provenance and verification: is this citation what the memory holds, and who was served it?

`get_citation` walks source -> document -> version -> chunk. `verify_citation` recomputes the chunk's hash
from the stored text, checks every field of a presented citation against SQL, checks the version hash
against the hash-chained ingest record, and reports the status (current / superseded / retracted) and the
audit records that served the chunk. Anything unknown, malformed or altered is `valid: false` with reason
codes; nothing here ever reports an unverifiable citation as valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory import audit
from memory.clock import aware, from_epoch
from memory.errors import NotFoundError
from memory.models import REACHABLE_STATUSES, AuditChunk, AuditRecord, Chunk, Document, DocumentVersion, Source
from memory.policy import effective_label
from memory.provenance import CLEAR_TEXT_FIELDS, VERSION_MEASURE_FIELDS, Citation, citation, hide_names
from memory.stores.base import OPEN_END

SERVED_LIMIT = 1000


@dataclass(frozen=True)
class Problem:
    """One reason a citation is not valid: a stable code, the field concerned, a human message."""

    code: str  # malformed_citation | missing_field | unknown_chunk | stored_text_tampered | chunk_hash_mismatch
    #            | version_hash_mismatch | version_hash_tampered | field_mismatch | unverifiable_field
    field: str | None
    message: str


@dataclass(frozen=True)
class ServedBy:
    seq: int
    ts: datetime
    event: str
    principal_id: str | None
    acting_for: str | None


@dataclass(frozen=True)
class Status:
    state: str  # current | superseded | retracted | uncommitted (pending or failed: never served) | unknown
    superseded_by: str | None = None
    superseded_by_version: int | None = None
    superseded_at: datetime | None = None
    retracted_at: datetime | None = None
    retracted_by: str | None = None
    retraction_reason: str | None = None


@dataclass(frozen=True)
class Provenance:
    """The chain behind one chunk, with its status and who was served it."""

    citation: Citation
    source: dict[str, Any]
    document: dict[str, Any]
    version: dict[str, Any]
    chunk: dict[str, Any]
    status: Status
    served_by: list[ServedBy]
    served_total: int


@dataclass(frozen=True)
class Verification:
    valid: bool
    chunk_id: str | None
    problems: list[Problem]
    status: Status
    recomputed_chunk_sha256: str | None = None
    served_by: list[ServedBy] = field(default_factory=list)
    served_total: int = 0
    # Where the chunk lives (None: unknown chunk): for the verify's own audit record, so that the audit's
    # source and document filters find who checked a citation of theirs. Not part of the API response.
    source_id: str | None = None
    document_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load(session: Session, chunk_id: str) -> tuple[Chunk, DocumentVersion, Source, Document] | None:
    row = session.execute(
        select(Chunk, DocumentVersion, Source, Document)
        .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .join(Source, Source.id == Chunk.source_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id == chunk_id)
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def status_of(session: Session, version: DocumentVersion, *, clear: bool = True) -> Status:
    """Retracted wins over superseded: a retracted version is never served, whatever came after it. `clear`:
    whether the caller may read what measures the chunk's clear text (`Served.clear_text`); a retraction's reason
    is a steward's free text, never classified, and may name what was masked for the caller, so it is withheld
    from one only ever served the chunk masked (the retraction itself, its time and who made it are not)."""
    successor = session.get(DocumentVersion, version.superseded_by) if version.superseded_by else None
    by, by_version = version.superseded_by, successor.version if successor else None
    at = from_epoch(version.valid_to) if version.valid_to < OPEN_END else None
    if version.retracted_at is not None:
        return Status("retracted", by, by_version, at, retracted_at=aware(version.retracted_at),
                      retracted_by=version.retracted_by, retraction_reason=version.retraction_reason if clear else None)
    if version.status not in REACHABLE_STATUSES:  # pending (an ingest in flight) or failed: never served
        return Status("uncommitted")
    if version.status == "superseded" or version.superseded_by:
        return Status("superseded", by, by_version, at)
    return Status("current")


@dataclass(frozen=True)
class Viewer:
    """Whose serving records a non-auditor caller may see: a caller on its own sees what was served to it (as
    principal, or as the user an agent acted for); an agent acting for a user sees only what was served to that
    same pair, under the same effective access (not what it got for another user, nor the user's own reads)."""

    principal_id: str
    acting_for: str | None = None


def _serving(chunk_id: str, viewer: Viewer | None, *columns: Any) -> Any:
    """The audit records that served this chunk, only those `viewer` may see (None: all)."""
    q = select(*columns).join(AuditChunk, AuditChunk.seq == AuditRecord.seq).where(AuditChunk.chunk_id == chunk_id)
    if viewer is not None and viewer.acting_for is None:
        q = q.where((AuditRecord.principal_id == viewer.principal_id) | (AuditRecord.acting_for == viewer.principal_id))
    elif viewer is not None:
        q = q.where(AuditRecord.principal_id == viewer.principal_id, AuditRecord.acting_for == viewer.acting_for)
    return q


@dataclass(frozen=True)
class Serving:
    """The audit records that served a chunk, as far as one viewer may see them (Viewer; None: an auditor)."""

    records: list[ServedBy]  # newest first, at most SERVED_LIMIT
    total: int
    # Whether what measures the chunk's clear text (CLEAR_TEXT_FIELDS: hashes, offsets) may be shown: to auditors
    # always; to anyone else only if a record they may see served it unmasked. A caller only ever served it
    # masked gets none from a lookup or a verify: they would confirm guesses of the masked values.
    clear_text: bool
    # Whether what measures the whole version's clear text (VERSION_MEASURE_FIELDS: its hash, the chunk's
    # offsets) may be shown: to auditors always; to anyone else only if a record they may see served the chunk
    # in clear from a version they could see whole (not among the record's `partial_chunk_ids`).
    whole_version: bool


def serving(session: Session, chunk_id: str, *, viewer: Viewer | None = None) -> Serving:
    q = _serving(chunk_id, viewer, AuditRecord)
    total = session.execute(select(func.count()).select_from(q.subquery())).scalar_one()
    rows = list(session.execute(q.order_by(AuditRecord.seq.desc()).limit(SERVED_LIMIT)).scalars())
    clear = [r for r in rows if chunk_id not in (r.body.get("masked_chunk_ids") or ())]
    whole = [r for r in clear if chunk_id not in (r.body.get("partial_chunk_ids") or ())]
    return Serving([ServedBy(r.seq, aware(r.ts), r.event, r.principal_id, r.acting_for) for r in rows], int(total),
                   clear_text=viewer is None or bool(clear), whole_version=viewer is None or bool(whole))


def was_served_to(session: Session, *, chunk_id: str, viewer: Viewer) -> bool:
    """True when an audit record `viewer` may see shows this chunk served (Viewer)."""
    return session.execute(_serving(chunk_id, viewer, AuditRecord.seq).limit(1)).first() is not None


def get_citation(session: Session, *, chunk_id: str, visible_to: Viewer | None = None) -> Provenance:
    """The provenance chain of one chunk. `visible_to` limits `served_by` to that caller's own records
    (`serving`)."""
    found = _load(session, chunk_id)
    if found is None:
        raise NotFoundError(f"chunk {chunk_id!r} not found", code="chunk_not_found")
    chunk, version, source, document = found
    served = serving(session, chunk_id, viewer=visible_to)
    clear, whole = served.clear_text, served.whole_version
    cited = citation(chunk, version, source)
    return Provenance(
        citation=cited.for_view(clear=clear, whole=whole, names_pii=version.names_pii),
        source={"id": source.id, "name": source.name, "uri": source.uri, "jurisdiction": source.jurisdiction,
                "steward": source.steward_id},
        document={"id": document.id,
                  "external_key": document.external_key if clear else hide_names(document.external_key,
                                                                                 version.names_pii),
                  "current_version": document.current_version},
        version={"id": version.id, "version": version.version, "status": version.status,
                 "sha256": version.sha256 if whole else None,
                 "size_bytes": version.size_bytes if whole else None, "mime_type": version.mime_type,
                 "filename": version.filename if clear else hide_names(version.filename, version.names_pii),
                 "valid_from": version.valid_from,
                 "valid_to": None if version.valid_to >= OPEN_END else version.valid_to},
        chunk={"id": chunk.id, "ordinal": chunk.ordinal, "sha256": chunk.sha256 if clear else None,
               "start": chunk.start if whole else None, "end": chunk.end if whole else None,
               "page_number": chunk.page_number,
               "attachment": chunk.attachment if clear else hide_names(chunk.attachment, version.names_pii),
               "token_count": chunk.token_count if clear else None,
               "label": effective_label(chunk.label, source.floor),  # as searches apply it
               "entity_types": list(chunk.entity_types),
               "text_sha256_matches": sha256_text(chunk.text) == chunk.sha256},
        status=status_of(session, version, clear=clear),
        served_by=served.records,
        served_total=served.total,
    )


def _same(field_name: str, presented: Any, stored: Any) -> bool:
    if field_name == "ingested_at":  # compare instants, not spellings of them
        try:
            return aware(datetime.fromisoformat(str(presented))) == aware(datetime.fromisoformat(str(stored)))
        except ValueError:
            return False
    return bool(presented == stored and type(presented) is type(stored))


def _attested_version_hash(session: Session, version: DocumentVersion) -> str | None:
    """The version hash recorded in the hash-chained `document.ingest` audit record, if there is one."""
    rows = session.execute(
        select(AuditRecord.body).where(AuditRecord.document_id == version.document_id, AuditRecord.event == "write")
    ).scalars()
    for body in rows:
        if body.get("action") == "document.ingest" and body.get("target") == version.id:
            details = body.get("details") or {}
            return str(details.get("sha256")) if isinstance(details, dict) else None
    return None


REQUIRED = ("chunk_id", "chunk_sha256", "version_sha256", "document_id", "version", "source_id")
HASHES = ("chunk_sha256", "version_sha256")


def verify_citation(
    session: Session, *, presented: dict[str, Any], visible_to: Viewer | None = None
) -> Verification:
    """Check a presented citation against the stored chunk, version and source; never raises for bad input."""
    unknown = Status("unknown")
    chunk_id = presented.get("chunk_id") if isinstance(presented, dict) else None
    if not isinstance(chunk_id, str) or not chunk_id:
        return Verification(False, None, [Problem("malformed_citation", "chunk_id", "citation has no chunk_id")],
                            unknown)
    # A caller only ever served this chunk masked neither presents nor learns hashes of its clear text.
    served = serving(session, chunk_id, viewer=visible_to)
    clear = served.clear_text
    # Neither presented nor compared: a mismatch would answer a guess.
    hidden = CLEAR_TEXT_FIELDS if not clear else () if served.whole_version else VERSION_MEASURE_FIELDS
    required = tuple(f for f in REQUIRED if f not in hidden)
    problems = [Problem("missing_field", f, f"citation has no {f}") for f in required if f not in presented]
    # Presented anyway (the masked citation carries them as null): not compared, so never reported valid. The
    # problem is the same whatever the value, right or wrong: no oracle.
    problems += [Problem("unverifiable_field", f, f"{f} measures clear text this caller was not served (the chunk "
                         "masked, or a neighbour in its version); it is not verified for them")
                 for f in hidden if presented.get(f) is not None]
    found = _load(session, chunk_id)
    if found is None:
        return Verification(False, chunk_id, [*problems, Problem("unknown_chunk", "chunk_id", "no such chunk")],
                            unknown)
    chunk, version, source, _ = found
    recomputed = sha256_text(chunk.text)
    if recomputed != chunk.sha256:
        problems.append(Problem("stored_text_tampered", "chunk_sha256",
                                "stored chunk text no longer matches its recorded hash"))
    if "chunk_sha256" not in hidden and "chunk_sha256" in presented and presented["chunk_sha256"] != recomputed:
        problems.append(Problem("chunk_hash_mismatch", "chunk_sha256",
                                "citation's chunk hash differs from the hash of the stored text"))
    if "version_sha256" not in hidden and "version_sha256" in presented \
            and presented["version_sha256"] != version.sha256:
        problems.append(Problem("version_hash_mismatch", "version_sha256",
                                "citation's version hash differs from the recorded version hash"))
    attested = _attested_version_hash(session, version)
    if attested is not None and attested != version.sha256:
        problems.append(Problem("version_hash_tampered", "version_sha256",
                                "recorded version hash differs from the hash-chained ingest record"))
    # What the caller holds: a masked hit's citation carries its names masked (compared as given to them).
    stored = citation(chunk, version, source).for_view(clear=clear, whole=True, names_pii=version.names_pii).to_dict()
    for name, value in stored.items():
        if name in HASHES or name in hidden or name not in presented:
            continue
        if not _same(name, presented[name], value):
            problems.append(Problem("field_mismatch", name, f"citation's {name} differs from the stored value"))
    return Verification(
        valid=not problems, chunk_id=chunk_id, problems=problems, status=status_of(session, version, clear=clear),
        recomputed_chunk_sha256=recomputed if clear else None, served_by=served.records, served_total=served.total,
        source_id=source.id, document_id=chunk.document_id,
    )


def record_verify(session: Session, result: Verification, *, principal_id: str | None,
                  acting_for: str | None = None) -> None:
    """The verify's own audit record (API and CLI alike): what was checked, by whom, and where the chunk
    lives, so that the audit's source and document filters find it."""
    audit.append(session, audit.Read(action="citation.verify", target=result.chunk_id or "", details={
        "valid": result.valid, "problems": sorted({p.code for p in result.problems}),
    }), principal_id=principal_id, acting_for=acting_for, source_id=result.source_id,
        document_id=result.document_id)
