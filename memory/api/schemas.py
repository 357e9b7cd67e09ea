"""Request and response bodies of the v1 API (pydantic). Field descriptions feed the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from memory.clock import utc
from memory.principals import MAX_NAMES  # one limit for every edge (the services check it too)
from memory.provenance import Citation as CitationOut  # one definition: the dataclass is the schema

LabelName = Literal["public", "internal", "confidential", "restricted"]
# memory.policy.WITHHELD_REASONS as a schema type (a test keeps the two equal).
WithheldReason = Literal["clearance", "jurisdiction", "consent"]
RoleName = Literal["reader", "steward", "auditor", "admin"]



def _representable_in_utc(value: datetime) -> datetime:
    """An input instant the service can store and compare: in UTC between years 1 and 9999 (an offset can
    push 0001-01-01 or 9999-12-31 out of that range)."""
    try:
        utc(value)
    except OverflowError:
        raise ValueError("the instant is outside years 1-9999 in UTC") from None
    return value


# Every instant a caller sends (bodies and query parameters): out of range is 422 invalid_request, not a 500.
Instant = Annotated[datetime, AfterValidator(_representable_in_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing, invalid, revoked or expired API key"},
    403: {"model": ErrorResponse, "description": "Authenticated but not allowed (role, delegation, stewardship)"},
    404: {"model": ErrorResponse, "description": "Unknown id"},
    409: {"model": ErrorResponse, "description": "Conflict with existing state"},
    422: {"model": ErrorResponse, "description": "Malformed or invalid request"},
    503: {"model": ErrorResponse, "description": "A backend is busy or unavailable; nothing of the request was kept. "
          "database_busy, database_unavailable and vector_store_unavailable come with a Retry-After header; "
          "vector_store_error, store_locked"},
}


# A document upload's multipart body (memory.api.routes.sources reads it after the caller is checked).
UPLOAD_FORM: dict[str, Any] = {
    "title": "UploadForm",
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream", "title": "File",
                 "description": "The document: pdf, docx, pptx, xlsx, html, eml, msg, md, txt ..."},
        "external_key": {"type": "string", "title": "External Key",
                         "description": "Document identity in the source (default: the file name)"},
    },
}


class PrincipalCreate(Strict):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")
    kind: Literal["user", "service", "agent"]
    groups: list[str] = Field(default_factory=list, max_length=MAX_NAMES)
    clearance: LabelName
    jurisdiction: str = Field(min_length=2, max_length=16)
    roles: list[RoleName] = Field(default=["reader"])
    display_name: str = Field("", max_length=256)
    may_act_for: list[str] = Field(default_factory=list, max_length=MAX_NAMES,
                                   description="User ids an agent/service may act for")
    may_act_for_any: StrictBool = Field(False, description="Agent/service may act for any active user")
    key_expires_at: Instant | None = Field(None, description="Expiry of the first API key (in the future)")


class PrincipalOut(BaseModel):
    id: str
    kind: str
    display_name: str
    groups: list[str]
    clearance: LabelName
    jurisdiction: str
    roles: list[str]
    active: bool
    may_act_for: list[str]
    may_act_for_any: bool
    created_at: datetime


class KeyOut(BaseModel):
    key_id: str
    api_key: str | None = Field(None, description="The secret key, shown only once at creation")
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None


class PrincipalCreated(BaseModel):
    principal: PrincipalOut
    key: KeyOut


class KeyCreate(Strict):
    expires_at: Instant | None = Field(None, description="Expiry of the key (in the future)")
    description: str = Field("", max_length=256)


class PrincipalPatch(Strict):
    """Only the fields given change; each change is audited. Roles and delegations are read on every request,
    so a withdrawn role or delegation is refused from the principal's next request on."""

    active: StrictBool | None = None
    groups: list[str] | None = Field(None, max_length=MAX_NAMES)
    clearance: LabelName | None = Field(None, description="Global: applies to every source (and, for an agent, "
                                        "caps every user it acts for)")
    roles: list[RoleName] | None = Field(None, description="Replaces the roles ([] = none)")
    may_act_for: list[str] | None = Field(None, max_length=MAX_NAMES,
                                          description="Agent/service only: replaces the user ids it may act "
                                          "for ([] = none)")
    may_act_for_any: StrictBool | None = Field(None, description="Agent/service only: may act for any active user")


class SourceCreate(Strict):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")
    name: str = Field(min_length=1, max_length=256)
    steward: str | None = Field(None, description="Steward principal id (default: the caller)")
    jurisdiction: str = Field(min_length=2, max_length=16)
    read_groups: list[str] = Field(default_factory=list, max_length=MAX_NAMES,
                                   description="Empty = nobody reads (never everyone)")
    floor: LabelName = "internal"
    uri: str = Field("", max_length=1024)
    description: str = Field("", max_length=4096)
    personal_data_requires_consent: StrictBool = Field(
        False, description="Personal data is served only to searches stating a purpose in consent_purposes")
    consent_purposes: list[str] = Field(
        default_factory=list, max_length=MAX_NAMES,
        description="Purposes the data subjects consented to (lowercase slugs, e.g. support)")


class SourcePatchIn(Strict):
    name: str | None = Field(None, min_length=1, max_length=256)
    steward: str | None = None
    jurisdiction: str | None = None
    read_groups: list[str] | None = Field(None, max_length=MAX_NAMES)
    floor: LabelName | None = None
    description: str | None = Field(None, max_length=4096)
    personal_data_requires_consent: StrictBool | None = None
    consent_purposes: list[str] | None = Field(None, max_length=MAX_NAMES,
                                               description="Replaces the list (applies to the next search)")


class SourceOut(BaseModel):
    id: str
    name: str
    steward: str
    jurisdiction: str
    read_groups: list[str]
    floor: LabelName
    uri: str
    description: str
    personal_data_requires_consent: bool
    consent_purposes: list[str]
    created_at: datetime
    updated_at: datetime


class IngestWarningOut(BaseModel):
    code: str = Field(description="Stable code: an ingest error code, or attachment_limit")
    message: str
    attachment: str | None = Field(None, description="The email attachment concerned (nested: a/b.pdf)")


class RelabelIn(Strict):
    source_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="Relabel this source's chunks only (default: every source's)")
    dry_run: StrictBool = Field(False, description="Count what would change; write nothing")


class RelabelOut(BaseModel):
    """What one relabel run did, or would do (memory.relabel)."""

    label_map_version: str = Field(description="The label map applied (the one in force when the run started)")
    versions: int = Field(description="Versions examined (those a search can reach: active and superseded)")
    chunks: int = Field(description="Their chunks")
    versions_relabelled: int = Field(description="Versions with a chunk whose label or personal flag changed")
    raised: int = Field(description="Chunks whose label went up")
    lowered: int = Field(description="Chunks whose label went down")
    now_personal: int = Field(description="Chunks that now hold personal data (not served to a caller who reads "
                              "them masked until their masked twin is stored: see twins_stored)")
    no_longer_personal: int = Field(description="Chunks that no longer hold personal data (masked twin deleted)")
    points_patched: int = Field(description="Vector points written, twins deleted included")
    points_missing: int = Field(description="Chunks whose vector point is missing (run repair, or ingest again)")
    vectors_behind: int = Field(description="Chunks whose vector points did not carry SQL's label or flag when read "
                                "(left by a run that crashed); a run copies them, a dry run counts them")
    dry_run: bool
    twins_stored: int = Field(description="Masked twins stored after the relabel")
    twins_lacking: int | None = Field(description="Personal chunks still without a masked twin; null on a dry run")


class JobIn(Strict):
    kind: Literal["relabel"] = Field(description="relabel: as POST /v1/admin/relabel, in the background")
    source_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="relabel: this source's chunks only (default: every source's)")
    dry_run: StrictBool = Field(False, description="relabel: count what would change; write nothing")


class JobError(BaseModel):
    code: str = Field(description="Stable code: the error's (e.g. label_map_changed), runner_lost, "
                      "service_stopping or internal_error")
    message: str


class JobOut(BaseModel):
    """A background job (memory.jobs): poll it until `status` is succeeded, failed, cancelled or interrupted."""

    job_id: str
    kind: str
    scope: str = Field(description="What it works on: `*` (every source) or `source:<id>`; one queued or running "
                       "job per kind and scope")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    params: dict[str, Any]
    requested_by: str
    acting_for: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None = Field(description="Its runner's last sign of life (after every batch)")
    finished_at: datetime | None
    cancel_requested: bool
    progress: dict[str, Any] | None = Field(description="relabel: the report so far (RelabelOut's counts) and "
                                            "versions_total, the versions it examines")
    result: dict[str, Any] | None = Field(description="relabel: a RelabelOut, once succeeded")
    error: JobError | None


class SourceUpdated(SourceOut):
    relabel: RelabelOut | None = Field(
        None, description="A patch with a floor whose relabel ran before this returned (200): the relabel of the "
        "source's stored chunks under it (memory.relabel); null when the patch had no floor or its relabel runs in "
        "the background")
    relabel_job: JobOut | None = Field(
        None, description="A patch with a floor whose relabel runs in the background (202, `Location` of the job): "
        "the job, queued in the patch's transaction; follow it with GET /v1/jobs/{job_id}. The floor holds for "
        "every search from the patch's commit, before the job ends")


class RepairOut(BaseModel):
    """What one repair run fixed (memory.maintenance)."""

    abandoned: int = Field(description="Ingests left pending past the grace period, undone")
    synced: int = Field(description="Versions whose vectors were copied from SQL (a reveal or restore left unsynced)")
    republished: int = Field(description="Sources whose access change was left narrowed, given SQL's access")
    retractions_resynced: int = Field(
        0, description="Recently retracted or restored versions whose vectors did not carry SQL's retraction (a"
        " restore whose reveal never ran, a retraction whose commit failed after its patch), synced from SQL")
    unindexed_points: int | None = Field(
        None, description="Embedded store: vector points no HNSW index covers (new since the last `memory optimize`;"
        " every search scores them exactly), also the gauge memory_vector_points_unindexed; null on a Qdrant server")


class IngestOut(BaseModel):
    external_key: str
    status: Literal["created", "updated", "unchanged", "failed"]
    document_id: str | None
    version: int | None
    version_id: str | None
    chunks: int
    embedded: int = Field(description="Chunks whose text this source did not hold yet (whether another source's "
                          "copy spared the work is not told here: admins see it in /v1/usage)")
    revealed: bool = Field(True, description="False: stored and committed, but making it searchable failed, so "
                           "the previous version is still served; upload the same file again (or restart) to finish")
    reprocessed: bool = Field(False, description="`updated` with the current version's own bytes: an older pipeline"
                              " generation had processed them, so they were classified again and stored as a new "
                              "version (labels, personal data and masking as the pipeline finds them now)")
    entity_counts: dict[str, int]
    error_code: str | None = None
    error: str | None = None
    warnings: list[IngestWarningOut] = Field(
        default_factory=list, description="Stored, but with these left out (e.g. skipped email attachments)"
    )


class VersionOut(BaseModel):
    version_id: str
    version: int
    status: str
    sha256: str
    size_bytes: int
    mime_type: str
    filename: str
    uri: str
    ingested_at: datetime
    ingested_by: str
    valid_from: float
    valid_to: float | None
    superseded_by: str | None
    retracted_at: datetime | None
    retracted_by: str | None
    retraction_reason: str | None
    chunk_count: int
    pipeline: dict[str, str]


class DocumentVersionsOut(BaseModel):
    document_id: str
    source_id: str
    external_key: str
    versions: list[VersionOut]


class DocumentSummaryOut(BaseModel):
    document_id: str
    external_key: str = Field(description="The document's name in its source (its path, or the steward's id)")
    created_at: datetime
    versions: int = Field(description="Stored versions (a failed ingest is not one)")
    state: Literal["active", "retracted", "none"] = Field(
        description="active: its current version is served (to whom the policy allows); retracted: its current "
        "version is retracted; none: no version was stored whole (every ingest of it failed)")
    label: LabelName | None = Field(description="The highest label of the current version's chunks")
    personal: bool = Field(description="The current version holds personal data")
    stale: bool = Field(description="An older pipeline processed the current version: sending its bytes again "
                        "processes them anew (`memory stale-versions`)")
    current: VersionOut | None = Field(description="The current version's provenance (None: state none)")


class DocumentListOut(BaseModel):
    source_id: str
    documents: list[DocumentSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class SearchIn(Strict):
    query: str = Field(min_length=1, max_length=4000)
    top_k: StrictInt = Field(10, ge=1, le=1000)
    as_of: Instant | None = Field(
        None, description="Time travel: what the memory held at this instant, read under the access rules in force now"
    )
    source_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        None, max_length=MAX_NAMES, description="Search only these sources (at most "
        f"{MAX_NAMES}; each is recorded in the search's audit record). Sources the caller cannot read "
        "are simply not searched.")
    purpose: str | None = Field(
        None, max_length=64, description="Why you search (a lowercase slug, e.g. support). Personal data of a "
        "source that requires consent is served only when its data subjects consented to this purpose")


class HitOut(BaseModel):
    score: float
    text: str
    label: LabelName
    entity_types: list[str]
    masked: bool = Field(description="PII spans replaced by <ENTITY_TYPE> under an allow_masked rule")
    citation: CitationOut


class WithheldOut(BaseModel):
    reason: WithheldReason
    count: int
    source_id: str
    steward: str = Field(description="Whom to ask (file an access request)")


class PolicyBlock(BaseModel):
    effective_principal: dict[str, Any]
    acting_for_chain: list[str]
    rules_applied: dict[str, Any]
    withheld: list[WithheldOut]


class SearchOut(BaseModel):
    hits: list[HitOut]
    policy: PolicyBlock
    audit_seq: int
    latency_ms: float


class TransferRuleIn(Strict):
    data: str = Field(description="Jurisdiction where the data resides")
    caller: str = Field(description="Jurisdiction of the caller")
    rule: Literal["allow", "allow_masked", "deny_personal", "deny"]


class TransferRulesIn(Strict):
    rules: list[TransferRuleIn]


class TransferRulesOut(BaseModel):
    version: int
    rules: list[dict[str, str]]
    default: Literal["deny"] = "deny"


class LabelMapIn(Strict):
    mapping: dict[str, LabelName]
    unmapped: LabelName = "internal"
    personal_types: list[str] | None = None


class LabelMapOut(BaseModel):
    version: int
    label_map_version: str
    mapping: dict[str, str]
    unmapped: str
    personal_types: list[str]
