"""Economics: usage and cost per principal, team (group) and source, and what shared content saved.

Everything is derived from the system of record (audit log, chunks, embeddings), so the figures are as
trustworthy as the audit chain. Duplicates never merge ACLs: each copy keeps its own source's rules; only
the embedding is shared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.clock import utc
from memory.errors import ValidationFailedError
from memory.models import (
    REACHABLE_STATUSES,
    AuditChunk,
    AuditRecord,
    Chunk,
    DocumentVersion,
    Embedding,
    Principal,
    PrincipalGroup,
)


@dataclass
class UsageReport:
    since: datetime | None
    until: datetime | None
    by_principal: dict[str, dict[str, float]] = field(default_factory=dict)
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    duplicates: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)


def _window(q: Any, since: datetime | None, until: datetime | None) -> Any:
    # In UTC whatever zone the caller used: SQLite compares its stored UTC wall time, offset-free.
    if since is not None:
        q = q.where(AuditRecord.ts >= utc(since))
    if until is not None:
        q = q.where(AuditRecord.ts < utc(until))
    return q


def usage_report(session: Session, *, since: datetime | None = None, until: datetime | None = None) -> UsageReport:
    if since is not None and until is not None and utc(since) > utc(until):  # a naive time is UTC (_window)
        raise ValidationFailedError("since is after until: the window is empty", code="invalid_window")
    report = UsageReport(since=since, until=until)
    principal: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    sources: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    kinds = dict(session.execute(select(Principal.id, Principal.kind)).all())
    members: dict[str, list[str]] = defaultdict(list)
    for pid, group in session.execute(select(PrincipalGroup.principal_id, PrincipalGroup.group)):
        members[pid].append(group)

    def charge(pid: str | None, acting_for: str | None, recorded: Any, figures: dict[str, float]) -> None:
        # Work is charged to the user an agent acted for (the team that asked), and counted for the agent too.
        for who in {pid or "unknown", acting_for or pid or "unknown"}:
            _add(principal[who], figures)
        for g in _teams(pid, acting_for, recorded, kinds, members):
            _add(groups[g], figures)

    for pid, acting_for, body in session.execute(
        _window(select(AuditRecord.principal_id, AuditRecord.acting_for, AuditRecord.body)
                .where(AuditRecord.event == "search"), since, until)
    ):
        charge(pid, acting_for, (body.get("filter_summary") or {}).get("groups"), {
            "queries": 1.0, "chunks_served": float(len(body.get("chunk_ids", []))),
            "query_tokens": float(body.get("embedding_tokens", 0)),
            "withheld": float(sum(body.get("withheld", {}).values())),
        })
    for pid, acting_for, sid, body in session.execute(
        _window(select(AuditRecord.principal_id, AuditRecord.acting_for, AuditRecord.source_id, AuditRecord.body)
                .where(AuditRecord.event == "write"), since, until)
    ):
        details = body.get("details", {})
        if body.get("action") != "document.ingest" or not sid:
            continue
        ingested = {
            "versions_ingested": 1.0, "chunks_ingested": float(details.get("chunks", 0)),
            "chunks_embedded": float(details.get("embedded", 0)),
            # Recorded since 2026-11-29: older ingests count their chunks embedded, not their tokens.
            "embedded_tokens": float(details.get("embedded_tokens", 0)),
            # The masked texts of chunks with personal data embedded for their masked twins (the same cost).
            "masked_texts_embedded": float(details.get("embedded_masked", 0)),
        }
        _add(sources[sid], ingested)
        charge(pid, acting_for, details.get("groups"), ingested)
    report.by_principal = {k: dict(v) for k, v in sorted(principal.items())}
    report.by_group = {k: dict(v) for k, v in sorted(groups.items())}

    served = _window(
        select(Chunk.source_id, func.count()).select_from(AuditChunk)
        .join(AuditRecord, AuditRecord.seq == AuditChunk.seq).join(Chunk, Chunk.id == AuditChunk.chunk_id)
        .group_by(Chunk.source_id), since, until)
    for sid, n in session.execute(served):
        sources[sid]["chunks_served"] = n
    # Storage now (not windowed): every chunk kept of a committed version, the superseded ones kept for time
    # travel included (`history_chunks` of them), and the masked twins' extra vectors.
    for sid, status, n, chars, tokens, twins in session.execute(
        select(Chunk.source_id, DocumentVersion.status, func.count(), func.sum(func.length(Chunk.text)),
               func.sum(Chunk.token_count), func.count(Chunk.masked_point_id))
        .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .where(DocumentVersion.status.in_(REACHABLE_STATUSES)).group_by(Chunk.source_id, DocumentVersion.status)
    ):
        row = sources[sid]
        _add(row, {"stored_chunks": n, "stored_chars": float(chars or 0), "stored_tokens": float(tokens or 0),
                   "history_chunks": n if status != "active" else 0, "masked_twins": twins})
    report.by_source = {k: dict(v) for k, v in sorted(sources.items())}
    report.duplicates = _duplicates(session)
    report.totals = {
        "queries": float(session.scalar(_window(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.event == "search"), since, until)) or 0),
        "embeddings_stored": float(session.scalar(select(func.count()).select_from(Embedding)) or 0),
    }
    return report


def _add(row: dict[str, float], figures: dict[str, float]) -> None:
    for k, v in figures.items():
        row[k] += v


def _teams(pid: str | None, acting_for: str | None, recorded: Any, kinds: dict[str, str],
           members: dict[str, list[str]]) -> list[str]:
    """The teams a search or an ingest is charged to: the groups its record states (`recorded`: a search's the
    groups it ran under, the user's or the user's an agent acted for met with the agent's own; an ingest's its
    user's teams), so a later change of membership does not move past work between teams. Teams are groups of
    people: an agent or service working for no user is charged to none. A record without its groups (an ingest
    recorded before they were) falls back to the user's groups now."""
    user = acting_for if acting_for is not None else pid
    if user is None or (acting_for is None and kinds.get(user) != "user"):
        return []
    return list(recorded) if isinstance(recorded, list) else members.get(user, [])


def _duplicates(session: Session) -> dict[str, Any]:
    """Chunk texts held by more than one source, and the embedding work computing each once saved."""
    rows = session.execute(
        select(Chunk.sha256, func.count(func.distinct(Chunk.source_id)), func.count(), func.max(Chunk.token_count))
        .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .where(DocumentVersion.status == "active")
        .group_by(Chunk.sha256)
    ).all()
    shared = [(sha, n_src, n_occ, tok) for sha, n_src, n_occ, tok in rows if n_src > 1]
    all_occ = sum(n_occ for _, _, n_occ, _ in rows)
    return {
        "distinct_chunk_texts": len(rows),
        "chunk_occurrences": all_occ,
        "texts_shared_across_sources": len(shared),
        "embeddings_saved": all_occ - len(rows),
        "tokens_saved": float(sum((n_occ - 1) * (tok or 0) for _, _, n_occ, tok in rows)),
        "top_shared": [{"chunk_sha256": sha, "sources": n_src, "occurrences": n_occ}
                       for sha, n_src, n_occ, _ in sorted(shared, key=lambda r: -r[2])[:10]],
    }
