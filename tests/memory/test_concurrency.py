"""Concurrency-sensitive paths with concurrent writers: version supersede, key creation, ingestion of
the same document from several threads. Run on SQLite here and on PostgreSQL in the second CI pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from memory import audit, principals, sources
from memory.db import transaction
from memory.ingestion import FileInput, ingest_files
from memory.models import ApiKey, AuditRecord, DocumentVersion
from memory.principals import NewPrincipal


def _setup(c):
    with transaction(c.sessions) as s:
        principals.create_principal(s, spec=NewPrincipal("st", "user", ("g",), "restricted", "EU", ("steward",)),
                                    actor="t")
        sources.register(s, spec=sources.NewSource("s1", "S1", "st", "EU", ("g",), floor="public"), actor="t")


def test_concurrent_updates_of_one_document_leave_one_current_version(container):
    _setup(container)

    def ingest(i: int):
        text = f"# Policy\n\nRevision number {i} of the travel policy.\n"
        return ingest_files(container.sessions, container.store, container.pipeline, source_id="s1", actor="st",
                            files=[FileInput(text.encode(), "p.md", "p.md", "t://p")])[0]

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(ingest, range(8)))
    ok = [o for o in outcomes if o.status in ("created", "updated")]
    failed = [o for o in outcomes if o.status == "failed"]
    assert all(o.error_code == "concurrent_update" for o in failed)
    assert ok
    with container.sessions() as s:
        active = s.scalar(select(func.count()).select_from(DocumentVersion).where(DocumentVersion.status == "active"))
        numbers = sorted(s.scalars(select(DocumentVersion.version)).all())
        current = s.scalar(select(DocumentVersion.version).where(DocumentVersion.status == "active"))
        assert active == 1
        # Unique and ordered; an abandoned concurrent attempt leaves a gap rather than a second current one.
        assert len(numbers) == len(set(numbers)) and current == numbers[-1]
        assert s.scalar(select(func.count()).select_from(DocumentVersion).where(
            DocumentVersion.status == "pending")) == 0
    with container.sessions() as s:
        assert audit.verify_chain(s).valid


def test_concurrent_key_creation_is_unique_and_audited(container):
    _setup(container)

    def issue(_: int) -> str:
        with transaction(container.sessions) as s:
            return principals.issue_key(s, principal_id="st", actor="admin").key_id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(issue, range(20)))
    assert len(set(ids)) == 20
    with container.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 20
        report = audit.verify_chain(s)
        assert report.valid and report.checked >= 22


def test_concurrent_decisions_on_one_access_request_let_exactly_one_through(container):
    """Steward and admins deciding the same open request at once: one decision lands, the others get 409
    `request_closed` (the request row is locked on PostgreSQL; SQLite serialises writers)."""
    from threading import Barrier

    from memory import access_requests
    from memory.errors import ConflictError

    _setup(container)
    with transaction(container.sessions) as s:
        principals.create_principal(s, spec=NewPrincipal("r1", "user", ("g",), "public", "EU", ()), actor="t")
        principals.create_principal(s, spec=NewPrincipal("adm", "user", ("g",), "restricted", "EU", ("admin",)),
                                    actor="t")
        reader = principals.resolve_effective(s, caller=principals.get_principal(s, principal_id="r1"), acting_for=None)
        req_id = access_requests.file_request(s, who=reader, source_id="s1", reason="clearance",
                                              justification="I need it").id
    deciders = ["st", "adm", "st", "adm"]
    barrier = Barrier(len(deciders))

    def decide(pid: str) -> str:
        barrier.wait()
        try:
            with transaction(container.sessions) as s:
                caller = principals.get_principal(s, principal_id=pid)
                who = principals.resolve_effective(s, caller=caller, acting_for=None)
                access_requests.decide(s, container.store, request_id=req_id, who=who, decision="refuse",
                                       note=f"refused by {pid}")
            return "ok"
        except ConflictError as exc:
            return exc.code

    with ThreadPoolExecutor(len(deciders)) as pool:
        outcomes = sorted(pool.map(decide, deciders))
    assert outcomes == ["ok"] + ["request_closed"] * (len(deciders) - 1)
    with container.sessions() as s:
        bodies = s.scalars(select(AuditRecord.body).where(AuditRecord.event == "write")).all()
        assert [b["action"] for b in bodies].count("access_request.refuse") == 1
        assert audit.verify_chain(s).valid
