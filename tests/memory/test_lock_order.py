"""Lock order on PostgreSQL: every writer takes the source row before the document and version rows and before
the audit head, so a grant, a source change, an ingest and a retraction of one source queue instead of
deadlocking. Each test holds one side at its first lock until the other side has taken its own, or a moment
has passed (on SQLite, which serialises whole write transactions, the other side waits for the first to
commit: both still succeed)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from memory import access_grants, access_requests, ingestion, retraction, sources
from memory.db import transaction
from memory.ingestion import FileInput, ingest_files
from memory.models import DocumentVersion
from memory.principals import NewPrincipal, create_principal, get_principal, resolve_effective


@pytest.fixture
def pg(container: Any) -> Any:
    with transaction(container.sessions) as s:
        create_principal(s, spec=NewPrincipal("st", "user", ("eng",), "restricted", "EU", ("steward",)), actor="t")
        create_principal(s, spec=NewPrincipal("u", "user", ("eng",), "public", "EU", ("reader",)), actor="t")
        sources.register(s, spec=sources.NewSource("s1", "S1", "st", "EU", ("eng",), floor="public"), actor="t")
    return container


def _steward(s: Any) -> Any:
    return resolve_effective(s, caller=get_principal(s, principal_id="st"), acting_for=None)


def _run(**sides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def wrap(name: str, fn: Any) -> Any:
        def run() -> None:
            try:
                out[name] = fn()
            except Exception as exc:
                out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return run

    threads = [threading.Thread(target=wrap(k, f)) for k, f in sides.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _ingest(c: Any, text: str) -> Any:
    [o] = ingest_files(c.sessions, c.store, c.pipeline, source_id="s1", actor="st",
                       files=[FileInput(text.encode(), "p.md", "p.md", "test://p.md")])
    return o.status


def test_a_grant_and_a_source_change_queue(pg: Any, monkeypatch: Any) -> None:
    with transaction(pg.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="u"), acting_for=None)
        req = access_requests.file_request(s, who=who, source_id="s1", reason="clearance", justification="x").id
    grant_started, patch_locked = threading.Event(), threading.Event()
    real_get = sources.get

    def get(session: Any, **kw: Any) -> Any:  # the grant reaches its source lock only once the PATCH holds it
        if kw.get("for_update") and threading.current_thread().name == "grant":
            grant_started.set()
            patch_locked.wait(2)
        return real_get(session, **kw)

    monkeypatch.setattr(access_requests.sources_svc, "get", get)

    def grant() -> Any:
        threading.current_thread().name = "grant"
        with transaction(pg.sessions) as s:
            access_requests.decide(s, pg.store, request_id=req, who=_steward(s), decision="grant",
                                   grant=access_grants.Grant(add_groups=("newgrp",), add_read_groups=("newgrp",)))
        return "ok"

    def patch() -> Any:
        grant_started.wait(2)
        with transaction(pg.sessions) as s:
            real_get(s, source_id="s1", for_update=True)
            patch_locked.set()
            sources.update(s, source_id="s1", patch=sources.SourcePatch(name="renamed"), store=pg.store, actor="st")
        return "ok"

    assert _run(grant=grant, patch=patch) == {"grant": "ok", "patch": "ok"}


def test_an_ingest_and_a_retraction_of_its_previous_version_queue(pg: Any, monkeypatch: Any) -> None:
    """Step C holds the source row and is about to supersede v1; the retraction of v1 must not hold v1's row
    while it waits for the source row (it takes the source row first)."""
    assert _ingest(pg, "# Plan\n\nThe first plan.\n") == "created"
    with pg.sessions() as s:
        v1 = s.scalar(select(DocumentVersion.id))
    ingest_locked, retract_locked = threading.Event(), threading.Event()
    real_restamp, real_recount = ingestion._restamp_access, retraction.withholdable.recount_source

    def restamp(*a: Any, **k: Any) -> Any:  # step C holds the source row here
        ingest_locked.set()
        retract_locked.wait(2)  # the retraction gets as far as it can
        return real_restamp(*a, **k)

    def recount(*a: Any, **k: Any) -> Any:  # the retraction holds its locks here
        retract_locked.set()
        ingest_locked.wait(2)
        return real_recount(*a, **k)

    monkeypatch.setattr(ingestion, "_restamp_access", restamp)
    monkeypatch.setattr(retraction.withholdable, "recount_source", recount)

    def retract() -> Any:
        with transaction(pg.sessions) as s:
            retraction.retract(s, pg.store, version_id=v1, reason="wrong", actor_effective=_steward(s))
        return "ok"

    out = _run(ingest=lambda: _ingest(pg, "# Plan\n\nThe second plan.\n"), retract=retract)
    assert out == {"ingest": "updated", "retract": "ok"}
