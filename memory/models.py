"""SQL schema (SQLAlchemy 2 typed declarative). Alembic migrations in memory/migrations mirror it.

Group memberships and read groups are relational rows (not JSON lists) so SQL can filter by them on
SQLite and PostgreSQL alike. Times are timezone-aware UTC; epoch floats are what the vector payload holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import JSON, TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The largest values the integer columns hold (INTEGER / BIGINT): inputs past them are refused at the edges
# (API 422, CLI usage error) instead of failing in the driver.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware column that always stores UTC. SQLite keeps no offset (it would store an aware value's
    local wall time, which reads back as UTC: +05:00 would be 5 hours late), so every value is converted to UTC
    on the way in; a naive value is taken to be UTC already. PostgreSQL stores the same instant either way."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value


TZ = UtcDateTime()


class Principal(Base):
    __tablename__ = "principals"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # user | service | agent
    display_name: Mapped[str] = mapped_column(String(256), default="")
    clearance: Mapped[int] = mapped_column(Integer)  # classifiers.types.Label
    jurisdiction: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    may_act_for_any: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(TZ)
    groups: Mapped[list[PrincipalGroup]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    roles: Mapped[list[PrincipalRole]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    delegations: Mapped[list[Delegation]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", foreign_keys="Delegation.agent_id"
    )


class PrincipalGroup(Base):
    __tablename__ = "principal_groups"
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(128), primary_key=True)


class PrincipalRole(Base):
    __tablename__ = "principal_roles"
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)


class Delegation(Base):
    """An agent/service may act for this user (user_id) — explicit, per user."""

    __tablename__ = "delegations"
    agent_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public key id (prefix of the token)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    description: Mapped[str] = mapped_column(String(256), default="")


class Source(Base):
    __tablename__ = "sources"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    steward_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    # Indexed: a search filtered on read groups asks for the sources whose floor is above its caller's clearance
    # (memory.readable_sources.floors_above).
    floor: Mapped[int] = mapped_column(Integer, index=True)
    uri: Mapped[str] = mapped_column(String(1024), default="")
    # Indexed: every search asks for the flagged sources (memory.consent.blocked_sources).
    personal_data_requires_consent: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    # Purposes the data subjects consented to (lowercase slugs); read only when the flag is set.
    consent_purposes: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ)
    # What any chunk ever stored in the source can be at worst (raised with the chunks' transaction, never
    # lowered): the highest label (None: no chunk yet) and whether one held personal data. A search whose
    # readable sources can withhold nothing skips its withheld-count search (memory.withholdable).
    max_label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_personal: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    read_groups: Mapped[list[SourceReadGroup]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class SourceReadGroup(Base):
    __tablename__ = "source_read_groups"
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("source_id", "external_key"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"), index=True)
    external_key: Mapped[str] = mapped_column(String(1024))  # path or steward-given id
    created_at: Mapped[datetime] = mapped_column(TZ)
    current_version: Mapped[int] = mapped_column(Integer, default=0)


# The statuses of versions a search can reach (their points committed); a version of any other status never does.
REACHABLE_STATUSES = ("active", "superseded")


class DocumentVersion(Base):
    __tablename__ = "document_versions"
    __table_args__ = (
        UniqueConstraint("document_id", "version"), Index("ix_versions_status", "status"),
        # The latest retractions and restores, which every repair run checks in the vectors (partial: most versions
        # are neither, and an ingest writes no entry; memory.vector_sync.settle_retractions).
        Index("ix_versions_retracted_at", "retracted_at", sqlite_where=text("retracted_at IS NOT NULL"),
              postgresql_where=text("retracted_at IS NOT NULL")),
        Index("ix_versions_restored_at", "restored_at", sqlite_where=text("restored_at IS NOT NULL"),
              postgresql_where=text("restored_at IS NOT NULL")),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | active | superseded | failed
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(1024))
    uri: Mapped[str] = mapped_column(String(2048))
    ingested_at: Mapped[datetime] = mapped_column(TZ)
    ingested_by: Mapped[str] = mapped_column(String(128))
    valid_from: Mapped[float] = mapped_column(Float)
    valid_to: Mapped[float] = mapped_column(Float)
    superseded_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    retracted_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    retracted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    retraction_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    parser_version: Mapped[str] = mapped_column(String(128))
    chunker_version: Mapped[str] = mapped_column(String(64))
    classifier_version: Mapped[str] = mapped_column(String(256))
    label_map_version: Mapped[str] = mapped_column(String(64))
    embedding_model: Mapped[str] = mapped_column(String(128))
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    vectors_synced: Mapped[bool] = mapped_column(Boolean, default=False)  # vector payload matches this row
    restored_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    restored_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    text_length: Mapped[int] = mapped_column(Integer, default=0)
    # The highest label of the version's chunks (None: no chunk) and whether any holds personal data: fixed
    # when the version is stored. A caller the policy would not show every chunk of it in clear gets no measure
    # of its whole clear text (version hash, offsets: memory.provenance.VERSION_MEASURE_FIELDS).
    max_label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_personal: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Personal data in the names shown beside its chunks (its file name, its attachments' names: ingest.NamePii)
    # as [{"name", "spans": [{"entity_type", "start", "end"}]}]; None: none found (or stored before they were
    # classified). A caller who gets a chunk masked gets these masked in its citation too.
    names_pii: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class Chunk(Base):
    __tablename__ = "chunks"
    # A source's masked twins by an index seek (the access repair samples one: memory.sources.settle_access).
    __table_args__ = (Index("ix_chunks_source_masked_point", "source_id", "masked_point_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    point_id: Mapped[str] = mapped_column(String(36), unique=True)
    # The chunk's masked twin (a chunk with personal data: its masked text's vector, searched by callers who read
    # it masked; memory.stores.base). Set once the twin is stored (at ingest, or by `memory backfill-twins` for
    # chunks stored before twins existed); NULL for chunks without personal data, and for personal chunks still
    # without a twin, which are then not served to a masked caller at all.
    masked_point_id: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True, index=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("document_versions.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(64), index=True)
    source_id: Mapped[str] = mapped_column(String(128))  # indexed by ix_chunks_source_masked_point (its first column)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    page_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The email attachment the chunk comes from (its safe file name); None for the message body and for
    # every other kind of file. Offsets and page_number are within the document's text as parsed.
    attachment: Mapped[str | None] = mapped_column(Text, nullable=True)  # nested: "fwd.eml/report.pdf"
    element_types: Mapped[list[str]] = mapped_column(JSON)
    token_count: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    personal: Mapped[bool] = mapped_column(Boolean)
    entity_types: Mapped[list[str]] = mapped_column(JSON)
    spans: Mapped[list[PiiSpan]] = relationship(cascade="all, delete-orphan", lazy="selectin", order_by="PiiSpan.start")


class PiiSpan(Base):
    __tablename__ = "pii_spans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chunk_id: Mapped[str] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    entity_type: Mapped[str] = mapped_column(String(64))
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    recognizer: Mapped[str] = mapped_column(String(128))


class Embedding(Base):
    """Content-addressed embedding cache: one vector per (model, chunk text sha256)."""

    __tablename__ = "embeddings"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZ)
    tokens: Mapped[int] = mapped_column(Integer, default=0)


class AuditHead(Base):
    """One row; writers lock it (UPDATE first) so the hash chain is appended strictly in order."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuditRecord(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(TZ, index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    principal_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    acting_for: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    source_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    document_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    body: Mapped[dict[str, object]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChunk(Base):
    """Which chunks an audit record served (for impact reports and 'who saw this')."""

    __tablename__ = "audit_chunks"
    seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq"), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class PolicyVersion(Base):
    """Versioned admin policy: kind 'jurisdictions' (transfer rules) or 'labels' (entity->label map)."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("kind", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZ)
    created_by: Mapped[str] = mapped_column(String(128))
    effective_from: Mapped[float] = mapped_column(Float)


class PolicyEpoch(Base):
    """One row that every committed change to what a search plan reads (sources, their read groups, policy
    versions) gives a new random token: database triggers write it (migration 9d2e6f1a4c83), so a process may
    keep those reads while the token it read stays the same (memory.policy_cache). `n` counts the changes."""

    __tablename__ = "policy_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    token: Mapped[str] = mapped_column(String(32))


class AccessRequest(Base):
    __tablename__ = "access_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    requester_id: Mapped[str] = mapped_column(String(128), index=True)
    acting_for: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"), index=True)
    reason: Mapped[str] = mapped_column(String(32))  # clearance | jurisdiction | consent
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the searches' purpose (consent)
    justification: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | escalated | granted | refused
    created_at: Mapped[datetime] = mapped_column(TZ)
    escalated_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    escalation_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)


# A job's statuses while it holds its kind's one active slot (the partial unique index below).
ACTIVE_JOB_STATUSES = ("queued", "running")


class Job(Base):
    """A long maintenance run started in the background (memory.jobs: an admin's, or a steward's new floor): its
    state, progress and outcome, readable from any API replica."""

    __tablename__ = "jobs"
    __table_args__ = (
        # One queued or running job per kind and scope, across every process: a second start is 409 `job_running`.
        Index("uq_jobs_active_scope", "kind", "scope", unique=True,
              sqlite_where=text("status IN ('queued', 'running')"),
              postgresql_where=text("status IN ('queued', 'running')")),
        Index("ix_jobs_created_at", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # relabel
    scope: Mapped[str] = mapped_column(String(160), default="*", server_default="*")  # * | source:<id>
    status: Mapped[str] = mapped_column(String(16))  # queued | running | succeeded | failed | cancelled | interrupted
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(128))
    acting_for: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ)
    started_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
