"""Provenance, audit and recourse service results -> response schemas."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from memory.access_requests import Decided
from memory.api import schemas_audit as s
from memory.api.schemas import CitationOut
from memory.audit import ChainReport
from memory.clock import aware
from memory.explain import Explanation
from memory.models import AccessRequest
from memory.retraction import ImpactReport
from memory.verification import Provenance, ServedBy, Status, Verification


def _status(st: Status) -> s.StatusOut:
    return s.StatusOut(**asdict(st))


def _served(rows: list[ServedBy]) -> list[s.ServedByOut]:
    return [s.ServedByOut(**asdict(r)) for r in rows]


def provenance(p: Provenance) -> s.ProvenanceOut:
    return s.ProvenanceOut(
        citation=CitationOut(**p.citation.to_dict()), source=p.source, document=p.document, version=p.version,
        chunk=p.chunk, status=_status(p.status), served_by=_served(p.served_by), served_total=p.served_total,
    )


def verification(v: Verification) -> s.VerificationOut:
    return s.VerificationOut(
        valid=v.valid, chunk_id=v.chunk_id, problems=[s.ProblemOut(**asdict(x)) for x in v.problems],
        status=_status(v.status), recomputed_chunk_sha256=v.recomputed_chunk_sha256,
        served_by=_served(v.served_by), served_total=v.served_total,
    )


def explanation(e: Explanation) -> s.ExplainOut:
    return s.ExplainOut(
        principal_id=e.principal_id, acting_for=e.acting_for, chunk_id=e.chunk_id, as_of=e.as_of, purpose=e.purpose,
        visible=e.decision.visible, masked=e.decision.masked,
        withheld_reason=e.withheld_reason,  # type: ignore[arg-type]
        checks=[s.RuleCheckOut(rule=c.rule, passed=c.passed, detail=c.detail) for c in e.decision.checks],
        effective_principal=e.effective_principal, transfer_rules_version=e.transfer_rules_version,
        transfer_mode=e.transfer_mode, payload=e.payload, vector_payload=e.vector_payload,
        payload_disagreements=e.payload_disagreements, notes=e.notes,
    )


def impact(r: ImpactReport) -> s.ImpactOut:
    return s.ImpactOut(
        document_id=r.document_id, source_id=r.source_id, version_id=r.version_id, version=r.version,
        action=r.action, at=r.at, by=r.by, reason=r.reason, audit_seq=r.audit_seq,  # type: ignore[arg-type]
        chunk_count=r.chunk_count, served=[s.ServedRecordOut(**asdict(x)) for x in r.served],
        principals=r.principals,
    )


def access_request(r: AccessRequest) -> s.AccessRequestOut:
    return s.AccessRequestOut(**_access_request_fields(r))


def _access_request_fields(r: AccessRequest) -> dict[str, Any]:
    return {
        "id": r.id, "requester_id": r.requester_id, "acting_for": r.acting_for, "source_id": r.source_id,
        "reason": r.reason, "purpose": r.purpose, "justification": r.justification, "status": r.status,
        "created_at": aware(r.created_at), "escalated_by": r.escalated_by,
        "escalated_at": aware(r.escalated_at) if r.escalated_at else None, "escalation_note": r.escalation_note,
        "decided_by": r.decided_by, "decided_at": aware(r.decided_at) if r.decided_at else None,
        "decision_note": r.decision_note,
    }


def decided(d: Decided) -> s.DecisionOut:
    res = d.resolution
    return s.DecisionOut(
        **_access_request_fields(d.request), changes=d.changes,
        resolution=None if res is None else s.ResolutionOut(
            reason=res.reason, resolved=res.resolved, beneficiary=res.beneficiary,
            beneficiary_resolved=res.beneficiary_resolved, failing_checks=list(res.failing_checks),
            detail=res.detail, notes=list(res.notes),
        ),
    )


def chain(c: ChainReport) -> s.ChainOut:
    return s.ChainOut(**asdict(c))


__all__ = ["access_request", "chain", "decided", "explanation", "impact", "provenance", "verification"]
