"""Request and response bodies of the provenance, audit and recourse endpoints (pydantic, OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt

from memory.api.schemas import MAX_NAMES, CitationOut, Instant, LabelName, Strict, WithheldReason
from memory.models import MAX_INT32

# Version numbers are 32-bit columns, audit seqs 64-bit (PostgreSQL INTEGER / BIGINT; SQLite's INTEGER): a
# larger number cannot name a row, and the drivers would refuse to bind it (500) instead of saying so (422).


class ServedByOut(BaseModel):
    seq: int = Field(description="Audit record sequence number")
    ts: datetime
    event: str
    principal_id: str | None
    acting_for: str | None


class StatusOut(BaseModel):
    state: Literal["current", "superseded", "retracted", "uncommitted", "unknown"]
    superseded_by: str | None = Field(None, description="Version id that superseded this one")
    superseded_by_version: int | None = None
    superseded_at: datetime | None = None
    retracted_at: datetime | None = None
    retracted_by: str | None = None
    retraction_reason: str | None = None


class ProvenanceOut(BaseModel):
    citation: CitationOut
    source: dict[str, Any]
    document: dict[str, Any]
    version: dict[str, Any]
    chunk: dict[str, Any]
    status: StatusOut
    served_by: list[ServedByOut] = Field(description="Audit records that served this chunk (yours only, "
                                         "unless you are an auditor), newest first, capped")
    served_total: int


class VerifyIn(Strict):
    citation: dict[str, Any] = Field(description="A citation as returned by POST /v1/search")


class ProblemOut(BaseModel):
    code: str = Field(description="Stable reason code, e.g. chunk_hash_mismatch, stored_text_tampered, "
                      "unknown_chunk, field_mismatch, unverifiable_field (a hash or offset this caller was not given: "
                      "the chunk was only served to them masked, or from a version with a masked or withheld "
                      "chunk; not compared, never valid)")
    field: str | None
    message: str


class VerificationOut(BaseModel):
    valid: bool
    chunk_id: str | None
    problems: list[ProblemOut]
    status: StatusOut
    recomputed_chunk_sha256: str | None
    served_by: list[ServedByOut]
    served_total: int


class ExplainIn(Strict):
    principal_id: str
    chunk_id: str
    acting_for: str | None = Field(None, description="User the principal acts for")
    as_of: Instant | None = Field(None, description="Decide as of this instant (default now)")
    purpose: str | None = Field(None, max_length=64, description="The purpose a search would state (decides the "
                                "consent check for personal data of a source that requires consent)")


class RuleCheckOut(BaseModel):
    rule: str
    passed: bool
    detail: str


class ExplainOut(BaseModel):
    principal_id: str
    acting_for: str | None
    chunk_id: str
    as_of: float
    purpose: str | None
    visible: bool
    masked: bool
    withheld_reason: WithheldReason | None
    checks: list[RuleCheckOut]
    effective_principal: dict[str, Any]
    transfer_rules_version: int
    transfer_mode: str | None
    payload: dict[str, Any] = Field(description="Access payload rebuilt from SQL (the source of truth)")
    vector_payload: dict[str, Any] | None = Field(description="What the vector store holds (null: point missing)")
    payload_disagreements: list[str]
    notes: list[str]


class RetractIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)
    version: StrictInt | None = Field(None, ge=1, le=MAX_INT32,
                                      description="Version number (default: the current version)")


class RestoreIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)
    version: StrictInt = Field(ge=1, le=MAX_INT32)


class ServedRecordOut(ServedByOut):
    chunk_ids: list[str]


class ImpactOut(BaseModel):
    document_id: str
    source_id: str
    version_id: str
    version: int
    action: Literal["retracted", "restored"]
    at: datetime
    by: str
    reason: str
    audit_seq: int
    chunk_count: int
    served: list[ServedRecordOut] = Field(description="Every audit record that served the version's chunks")
    principals: list[str] = Field(description="Everyone served: callers and the users they acted for")


class AccessRequestIn(Strict):
    source_id: str
    reason: WithheldReason
    justification: str = Field(min_length=1, max_length=4000)
    purpose: str | None = Field(None, max_length=64, description="The purpose the searches state; required for "
                                "a consent request (the steward is asked to record consent to it)")


class TransferRuleGrantIn(Strict):
    rule: Literal["allow", "allow_masked", "deny_personal"] = Field(
        description="Must admit more than the rule in force for the pair")
    caller_jurisdiction: str | None = Field(
        None, min_length=2, max_length=16,
        description="Caller side of the pair (default: the beneficiary's jurisdiction); the data side is "
        "always the source's jurisdiction")


class DecisionIn(Strict):
    decision: Literal["grant", "refuse", "escalate"] = Field(
        description="escalate: hand the request to admins (the steward agrees, but the change that lifts the "
        "reason is admin-only); admins then grant or refuse it")
    note: str = Field("", max_length=4000, description="Required when refusing or escalating")
    add_groups: list[str] = Field(default_factory=list, max_length=MAX_NAMES,
                                  description="Groups to add to the requester "
                                  "(or the user it acted for); must read this source")
    add_read_groups: list[str] = Field(default_factory=list, max_length=MAX_NAMES,
                                       description="Groups to add to the source's read groups")
    clearance: LabelName | None = Field(
        None, description="Admin only, clearance requests: raise the beneficiary's clearance to this level "
        "(above its current one). Clearance is global: it applies to every source")
    transfer_rule: TransferRuleGrantIn | None = Field(
        None, description="Admin only, jurisdiction requests: set the transfer rule (source jurisdiction -> "
        "caller jurisdiction) as a new rules version. It applies to every source and caller of that pair")
    add_consent_purpose: str | None = Field(
        None, max_length=64, description="Consent requests: add this purpose (normally the request's) to the "
        "source's consent purposes, once its data subjects consented to it")


class AccessRequestOut(BaseModel):
    id: str
    requester_id: str
    acting_for: str | None
    source_id: str
    reason: str
    purpose: str | None = None
    justification: str
    status: Literal["open", "escalated", "granted", "refused"]
    created_at: datetime
    escalated_by: str | None = None
    escalated_at: datetime | None = None
    escalation_note: str | None = None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


class ResolutionOut(BaseModel):
    reason: str
    resolved: bool | None = Field(
        description="The reason no longer withholds any current chunk of the source from the request as filed "
        "(the requester, acting for its user when it did). null: no policy check decides this reason")
    beneficiary: str = Field(description="Who the grant was for: the user an agent acted for, or the requester")
    beneficiary_resolved: bool | None = Field(
        description="The same, for the beneficiary on its own (differs when an agent's ceiling still withholds)")
    failing_checks: list[str] = Field(description="Policy checks that still fail for the request as filed")
    detail: str = Field(description="The reason's policy check, e.g. 'clearance internal vs label confidential'")
    notes: list[str] = Field(description="Why it is not resolved, when it is not")


class DecisionOut(AccessRequestOut):
    changes: dict[str, Any] = Field(description="What the grant changed (also in the audit record)")
    resolution: ResolutionOut | None = Field(description="Grants only: whether the withheld reason is lifted")


class AuditRecordOut(BaseModel):
    seq: int
    ts: datetime
    event: str
    action: str | None
    principal_id: str | None
    acting_for: str | None
    source_id: str | None
    document_id: str | None
    body: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPageOut(BaseModel):
    records: list[AuditRecordOut]
    next_after_seq: int | None = Field(description="Pass as after_seq for the next page; null on the last")


class ChainOut(BaseModel):
    valid: bool
    checked: int
    head_seq: int
    first_broken_seq: int | None
    reason: str | None
    head_hash: str | None = Field(None, description="When valid: the head record's hash; keep it with head_seq as the "
                                  "next check's anchor (anchor_seq, anchor_hash)")
