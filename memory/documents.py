"""Documents: ingestion entry points (upload, paths) and version history."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.errors import DocumentTooLargeError, IngestError
from ingest.versioning import PIPELINE_VERSION
from memory import audit
from memory.errors import ForbiddenError, NotFoundError, ValidationFailedError
from memory.ingestion import DocumentProcessor, FileInput, IngestOutcome, ingest_files, reprocesses
from memory.models import Document, DocumentVersion, Source
from memory.policy import EffectivePrincipal
from memory.sources import stewards
from memory.stores.base import VectorStore

URI_MAX = 2048  # a version's uri column (memory.models.DocumentVersion)


@dataclass(frozen=True)
class PathProblem:
    path: str
    code: str
    message: str


def ingest_upload(
    factory: sessionmaker[Session],
    store: VectorStore,
    processor: DocumentProcessor,
    *,
    source_id: str,
    data: bytes,
    filename: str,
    external_key: str | None,
    actor: str,
    max_bytes: int,
    acting_for: str | None = None,
) -> IngestOutcome:
    """One uploaded file. A file the pipeline rejects raises its IngestError (-> 422 with its code); a service
    failure while storing it raises its ServiceError, which keeps its status (vector store down -> 503,
    a concurrent change -> 409); anything unexpected is re-raised as it is (500)."""
    if len(data) > max_bytes:
        raise DocumentTooLargeError(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    name = os.path.basename(filename) or "upload"
    key = external_key or name
    if len(name) > 1024:  # the column holds 1024 (PostgreSQL would refuse the row: a 500, not a 422)
        raise ValidationFailedError("the file name is longer than 1024 characters", code="invalid_filename")
    if len(key) > 1024:
        raise ValidationFailedError("external_key is too long", code="invalid_external_key")
    if any(unicodedata.category(ch) == "Cc" for ch in key):  # a newline or NUL in a key, a URI, a citation
        raise ValidationFailedError("external_key (or the file name) holds a control character",
                                    code="invalid_external_key")
    [outcome] = ingest_files(
        factory, store, processor, source_id=source_id, actor=actor, acting_for=acting_for,
        files=[FileInput(data=data, filename=name, external_key=key, uri=f"upload://{source_id}/{key}")],
    )
    if outcome.status == "failed":
        if outcome.exception is not None:
            raise outcome.exception
        err = IngestError(outcome.error or "ingest failed")
        err.code = outcome.error_code or "ingest_error"
        raise err
    return outcome


def iter_files(paths: Iterable[str]) -> Iterator[tuple[Path, Path] | PathProblem]:
    """(file, root it was found under) for files and folders (recursive, sorted, hidden files skipped)."""
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            yield PathProblem(raw, "path_not_found", "no such file or directory")
        elif p.is_file():
            yield (p, p.parent)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    yield (f, p)
        else:
            yield PathProblem(raw, "unsupported_path", "not a regular file or directory")


def ingest_paths(
    factory: sessionmaker[Session],
    store: VectorStore,
    processor: Callable[[], DocumentProcessor],
    *,
    source_id: str,
    paths: Iterable[str],
    actor: str,
    max_bytes: int,
    batch_files: int = 16,
    on_progress: object = None,
    uri_base: str | None = None,
) -> list[IngestOutcome]:
    """Files and folders into one source; document identity = path relative to the folder given. Each
    document's URI (in every citation) is `uri_base` + that path when given (where readers find the original,
    e.g. the intranet folder the files were exported from), else the file's own file:// URI on this host.
    `processor` gives the processor for each batch of `batch_files` (`Container.ingest_pipeline`: one that labels
    with the label map in force, so a map changed during a long ingest applies from the next batch instead of
    every later file being refused with `label_map_changed`)."""
    base = uri_base.rstrip("/") if uri_base else None
    if base is not None and len(base) + 2 > URI_MAX:  # not even `<base>/x` would fit its column
        raise ValidationFailedError(f"--uri-base leaves no room for a path in a {URI_MAX}-character URI "
                                    f"(it has {len(base)})", code="invalid_uri_base")
    outcomes: list[IngestOutcome] = []
    batch: list[FileInput] = []
    # Each document key once a run: two files with one key (report.txt given from two folders) would otherwise
    # become two versions of one document, the second superseding the first without a word, and a later run
    # would report one of them unchanged while the other is served. The first file given keeps the key.
    first_with_key: dict[str, Path] = {}

    def flush() -> None:
        if batch:
            outcomes.extend(ingest_files(factory, store, processor(), source_id=source_id, files=list(batch),
                                         actor=actor))
            if callable(on_progress):
                on_progress(len(batch))
            batch.clear()

    for item in iter_files(paths):
        if isinstance(item, PathProblem):
            outcomes.append(IngestOutcome(item.path, "failed", error_code=item.code, error=item.message))
            continue
        f, root = item
        key = f.relative_to(root).as_posix()
        if key in first_with_key:
            outcomes.append(IngestOutcome(key, "failed", error_code="duplicate_key", error=(
                f"{f} has the document key {key!r} of {first_with_key[key]}, given earlier in this run: give "
                "folders whose relative paths differ, or ingest the two separately")))
            continue
        first_with_key[key] = f
        try:
            size = f.stat().st_size
            if size > max_bytes:
                raise DocumentTooLargeError(f"{size} bytes exceeds the limit of {max_bytes}")
            data = f.read_bytes()
        except IngestError as exc:
            outcomes.append(IngestOutcome(key, "failed", error_code=exc.code, error=exc.message))
            continue
        except OSError as exc:
            outcomes.append(IngestOutcome(key, "failed", error_code="unreadable_file", error=exc.strerror or str(exc)))
            continue
        uri = f"{base}/{quote(key)}" if base is not None else f.resolve().as_uri()
        if len(uri) > URI_MAX:  # the column's size: refused here, not by PostgreSQL (an internal error)
            outcomes.append(IngestOutcome(key, "failed", error_code="uri_too_long",
                                          error=f"its URI is longer than {URI_MAX} characters"))
            continue
        batch.append(FileInput(data=data, filename=f.name, external_key=key, uri=uri))
        if len(batch) >= batch_files:
            flush()
    flush()
    return outcomes


def get_document(session: Session, *, document_id: str) -> Document:
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFoundError(f"document {document_id!r} not found", code="document_not_found")
    return doc


def get_stewarded_document(session: Session, *, document_id: str, who: EffectivePrincipal) -> Document:
    """The document, for its source's steward (memory.sources.stewards: under delegation, within the agent's
    ceiling), an auditor or an admin. Anyone else gets the same `document_not_found` as for an unknown id: a
    document's existence, name and hashes are not revealed to stewards of other sources."""
    doc = session.get(Document, document_id)
    src = session.get(Source, doc.source_id) if doc is not None else None
    if doc is None or src is None or not ({"auditor", "admin"} & set(who.roles) or stewards(who, src)):
        raise NotFoundError(f"document {document_id!r} not found", code="document_not_found")
    return doc


def version_history(session: Session, *, who: EffectivePrincipal, document_id: str
                    ) -> tuple[Document, list[DocumentVersion]]:
    """A document and its versions, for its source's steward (an agent acting for a user: that user), an auditor
    or an admin (anyone else: `missing_role`, or the `document_not_found` of an unknown id). Audited
    (`document.versions`)."""
    if not {"steward", "auditor", "admin"} & who.roles:
        raise ForbiddenError("requires role steward or auditor", code="missing_role")
    doc = get_stewarded_document(session, document_id=document_id, who=who)
    rows = versions(session, document_id=document_id)
    audit.append(session, audit.Read(action="document.versions", target=document_id,
                                     details={"returned": len(rows)}),
                 principal_id=who.principal_id, acting_for=who.acting_for, source_id=doc.source_id,
                 document_id=doc.id)
    return doc, rows


def versions(session: Session, *, document_id: str) -> list[DocumentVersion]:
    get_document(session, document_id=document_id)
    return list(session.execute(
        select(DocumentVersion)
        .where(DocumentVersion.document_id == document_id, DocumentVersion.status != "pending")
        .order_by(DocumentVersion.version)
    ).scalars())


def stale_versions(session: Session, *, source_id: str | None = None) -> list[DocumentVersion]:
    """The documents' current versions that an ingest of their bytes would process again
    (`memory.ingestion.reprocesses`, the one rule): their labels, personal data and masking are as an older
    pipeline found them until their source sends them again (docs/operations.md, "Reprocessing after an
    upgrade"). SQL narrows to current, unretracted versions of another pipeline; the rule decides."""
    q = (
        select(DocumentVersion).join(Document, Document.id == DocumentVersion.document_id)
        .where(DocumentVersion.status == "active", DocumentVersion.retracted_at.is_(None),
               DocumentVersion.pipeline_version != PIPELINE_VERSION)
        .order_by(Document.source_id, DocumentVersion.document_id)
    )
    if source_id is not None:
        q = q.where(Document.source_id == source_id)
    return [v for v in session.scalars(q) if reprocesses(v)]
