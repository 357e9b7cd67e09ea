"""ORM rows / service results -> response schemas."""

from __future__ import annotations

from classifiers.types import Label
from memory.api import schemas as s
from memory.clock import aware
from memory.document_listing import DocumentPage
from memory.ingestion import IngestOutcome
from memory.models import ApiKey, DocumentVersion, Job, Principal, Source
from memory.search import SearchResult
from memory.sources import read_groups
from memory.stores.base import OPEN_END


def principal(p: Principal) -> s.PrincipalOut:
    return s.PrincipalOut(
        id=p.id, kind=p.kind, display_name=p.display_name, groups=sorted(g.group for g in p.groups),
        clearance=Label(p.clearance).slug, jurisdiction=p.jurisdiction,  # type: ignore[arg-type]
        roles=sorted(r.role for r in p.roles), active=p.active,
        may_act_for=sorted(d.user_id for d in p.delegations), may_act_for_any=p.may_act_for_any,
        created_at=aware(p.created_at),
    )


def key(k: ApiKey) -> s.KeyOut:
    return s.KeyOut(
        key_id=k.id, expires_at=aware(k.expires_at) if k.expires_at else None,
        revoked_at=aware(k.revoked_at) if k.revoked_at else None, created_at=aware(k.created_at),
    )


def source(src: Source) -> s.SourceOut:
    return s.SourceOut(
        id=src.id, name=src.name, steward=src.steward_id, jurisdiction=src.jurisdiction,
        read_groups=list(read_groups(src)), floor=Label(src.floor).slug,  # type: ignore[arg-type]
        uri=src.uri, description=src.description,
        personal_data_requires_consent=src.personal_data_requires_consent,
        consent_purposes=list(src.consent_purposes or ()),
        created_at=aware(src.created_at), updated_at=aware(src.updated_at),
    )


def ingest(o: IngestOutcome) -> s.IngestOut:
    return s.IngestOut(
        external_key=o.external_key, status=o.status,  # type: ignore[arg-type]
        document_id=o.document_id, version=o.version, version_id=o.version_id, chunks=o.chunks,
        embedded=o.embedded, revealed=o.revealed, reprocessed=o.reprocessed, entity_counts=o.entity_counts,
        error_code=o.error_code,
        error=o.error,
        warnings=[s.IngestWarningOut.model_validate(w) for w in o.warnings],
    )


def version(v: DocumentVersion) -> s.VersionOut:
    return s.VersionOut(
        version_id=v.id, version=v.version, status=v.status, sha256=v.sha256, size_bytes=v.size_bytes,
        mime_type=v.mime_type, filename=v.filename, uri=v.uri, ingested_at=aware(v.ingested_at),
        ingested_by=v.ingested_by, valid_from=v.valid_from, valid_to=None if v.valid_to >= OPEN_END else v.valid_to,
        superseded_by=v.superseded_by, retracted_at=aware(v.retracted_at) if v.retracted_at else None,
        retracted_by=v.retracted_by, retraction_reason=v.retraction_reason, chunk_count=v.chunk_count,
        pipeline={
            "pipeline": v.pipeline_version, "parser": v.parser_version, "chunker": v.chunker_version,
            "classifier": v.classifier_version, "label_map": v.label_map_version, "embedding_model": v.embedding_model,
        },
    )


def document_page(page: DocumentPage) -> s.DocumentListOut:
    return s.DocumentListOut(source_id=page.source_id, next_cursor=page.next_cursor, documents=[
        s.DocumentSummaryOut(
            document_id=e.document.id, external_key=e.document.external_key,
            created_at=aware(e.document.created_at), versions=e.versions, state=e.state,
            label=Label(e.current.max_label).slug if e.current is not None and e.current.max_label is not None
            else None,  # type: ignore[arg-type]
            personal=bool(e.current is not None and e.current.has_personal), stale=e.stale,
            current=version(e.current) if e.current is not None else None,
        )
        for e in page.entries
    ])


def search(r: SearchResult) -> s.SearchOut:
    return s.SearchOut(
        hits=[
            s.HitOut(score=h.score, text=h.text, label=h.label, entity_types=h.entity_types,  # type: ignore[arg-type]
                     masked=h.masked, citation=h.citation)
            for h in r.hits
        ],
        policy=s.PolicyBlock(
            effective_principal=r.effective_principal, acting_for_chain=r.acting_for_chain,
            rules_applied=r.rules_applied,
            withheld=[s.WithheldOut(reason=w.reason, count=w.count, source_id=w.source_id,  # type: ignore[arg-type]
                                    steward=w.steward) for w in r.withheld],
        ),
        audit_seq=r.audit_seq, latency_ms=round(r.latency_ms, 3),
    )


def job(j: Job) -> s.JobOut:
    return s.JobOut(
        job_id=j.id, kind=j.kind, scope=j.scope, status=j.status, params=j.params,  # type: ignore[arg-type]
        requested_by=j.requested_by, acting_for=j.acting_for, created_at=aware(j.created_at),
        started_at=aware(j.started_at) if j.started_at else None,
        heartbeat_at=aware(j.heartbeat_at) if j.heartbeat_at else None,
        finished_at=aware(j.finished_at) if j.finished_at else None, cancel_requested=bool(j.cancel_requested),
        progress=j.progress, result=j.result,
        error=s.JobError(code=j.error_code, message=j.error_message or "") if j.error_code else None,
    )
