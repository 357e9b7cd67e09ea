"""The audit trail API (filters, pages, export, chain check), roles, the CLI, and one real-model run."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from memory import audit, audit_trail
from memory.db import transaction
from memory.models import AuditRecord

DOC = "# Travel\n\nThe travel policy covers train tickets and hotels.\n"


def _searches(api):
    api.principal("u", groups=["g"])
    bot = api.principal("bot", kind="agent", groups=["g"], may_act_for=["u"])
    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    doc = api.upload("s1", "t.md", DOC).json()
    hit = api.search(reader, "train tickets").json()["hits"][0]["citation"]
    api.search({**bot, "X-Acting-For": "u"}, "hotels")
    return doc, hit


def _records(api, **params):
    r = api.client.get("/v1/audit", headers=api.admin, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_reader_cannot_read_the_audit_trail(api):
    reader = api.principal("r1", groups=["g"])
    steward = api.principal("st", roles=["steward"])
    for path in ("/v1/audit", "/v1/audit/verify", "/v1/audit/export"):
        for headers in (reader, steward):
            r = api.client.get(path, headers=headers)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_role"), path
        assert api.client.get(path).status_code == 401


def test_filters_select_the_right_records(api):
    doc, hit = _searches(api)
    by_reader = _records(api, principal="r1", event="search")["records"]
    assert len(by_reader) == 1 and by_reader[0]["body"]["chunk_ids"] == [hit["chunk_id"]]
    assert [r["principal_id"] for r in _records(api, acting_for="u")["records"]] == ["bot"]
    served = _records(api, chunk_id=hit["chunk_id"])["records"]
    assert {r["principal_id"] for r in served} == {"r1", "bot"}
    about_doc = _records(api, document_id=doc["document_id"])["records"]
    assert [r["action"] for r in about_doc] == ["document.ingest", None, None]  # the ingest, then two searches
    about_src = [r["action"] for r in _records(api, source_id="s1")["records"]]
    assert about_src[:2] == ["source.register", "document.ingest"]
    assert [r["action"] for r in _records(api, action="source.register")["records"]] == ["source.register"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _records(api, since=future)["records"] == []
    assert len(_records(api, until=future, principal="r1")["records"]) == 1


def test_who_looked_up_verified_or_explained_a_citation_is_found_by_its_source_and_document(api):
    doc, hit = _searches(api)
    reader = api.principal("r2", groups=["g"])
    api.search(reader, "train tickets")
    assert api.client.get(f"/v1/citations/{hit['chunk_id']}", headers=reader).status_code == 200
    assert api.client.post("/v1/citations/verify", headers=reader, json={"citation": hit}).status_code == 200
    auditor = api.principal("aud", roles=["auditor"])
    r = api.client.post("/v1/explain", headers=auditor, json={"principal_id": "r2", "chunk_id": hit["chunk_id"]})
    assert r.status_code == 200, r.text
    reads = ["citation.get", "citation.verify", "policy.explain"]
    for params in ({"document_id": doc["document_id"]}, {"source_id": "s1"}):
        found = _records(api, event="read", **params)["records"]
        assert [r["action"] for r in found] == reads, params
        assert {(r["source_id"], r["document_id"]) for r in found} == {("s1", doc["document_id"])}
    # A verify of an unknown chunk names no source or document.
    api.client.post("/v1/citations/verify", headers=api.admin, json={"citation": {"chunk_id": "nope"}})
    [unknown] = _records(api, event="read", action="citation.verify", principal="admin")["records"]
    assert (unknown["source_id"], unknown["document_id"]) == (None, None)


def test_pages_follow_after_seq(api):
    _searches(api)
    seen, after = [], 0
    while True:
        page = _records(api, after_seq=after, limit=3)
        seen += [r["seq"] for r in page["records"]]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and seen[0] == 1
    r = api.client.get("/v1/audit", headers=api.admin, params={"limit": 0})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def _sqlite_error(message: str, code: int) -> OperationalError:
    """What SQLAlchemy raises when SQLite answers a read with `code` (memory.db_errors decides on the code)."""
    cause = sqlite3.OperationalError(message)
    cause.sqlite_errorcode = code
    return OperationalError("SELECT audit_log", None, cause)


def _batches_fail_after(monkeypatch, batches: int, error: Exception, limit: int = 1000) -> None:
    """The export's pages of at most `limit` records read normally `batches` times, then raise `error`."""
    real, calls = audit_trail.page, []

    def page(session, *, flt, after_seq, **_):
        calls.append(after_seq)
        if len(calls) > batches:
            raise error
        return real(session, flt=flt, after_seq=after_seq, limit=limit)

    monkeypatch.setattr(audit_trail, "page", page)


def test_an_export_that_cannot_read_its_first_batch_fails_with_a_status_not_an_empty_200(api, monkeypatch):
    _batches_fail_after(monkeypatch, 0, _sqlite_error("database is locked", sqlite3.SQLITE_BUSY))
    r = api.client.get("/v1/audit/export", headers=api.admin)
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_busy"


def test_an_export_cut_after_its_first_batch_ends_with_an_error_line_and_resumes_after_it(api, monkeypatch):
    _searches(api)
    # A short first batch, so a second one follows, and that one finds the database locked.
    _batches_fail_after(monkeypatch, 1, _sqlite_error("database is locked", sqlite3.SQLITE_BUSY), limit=3)
    lines = []
    # The server cuts the stream (Starlette: the error came after the response started): no clean end.
    with pytest.raises(RuntimeError, match="response already started") as cut:
        with api.client.stream("GET", "/v1/audit/export", headers=api.admin) as r:
            assert r.status_code == 200
            lines.extend(json.loads(x) for x in r.iter_lines() if x)
    assert isinstance(cut.value.__cause__, audit_trail.ExportInterruptedError)
    *records, error = lines
    assert [x["seq"] for x in records] == [1, 2, 3]
    assert error == {"error": {"code": "database_busy", "resume_after_seq": 3,
                               "message": "the export stopped before its end; resume after the seq given"}}
    monkeypatch.undo()
    rest = api.client.get("/v1/audit/export", headers=api.admin, params={"after_seq": 3})
    assert rest.status_code == 200
    seqs = [x["seq"] for x in records] + [json.loads(x)["seq"] for x in rest.text.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert json.loads(rest.text.splitlines()[-1])["body"]["details"]["after_seq"] == 3  # the resume is recorded
    r = api.client.get("/v1/audit/export", headers=api.admin, params={"after_seq": -1})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_export_streams_json_lines_that_verify_offline(api):
    _searches(api)
    r = api.client.get("/v1/audit/export", headers=api.admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    prev = audit.GENESIS
    for rec in lines:
        assert rec["prev_hash"] == prev
        assert audit.record_hash(
            seq=rec["seq"], ts=datetime.fromisoformat(rec["ts"]), event=rec["event"],
            principal_id=rec["principal_id"], acting_for=rec["acting_for"], source_id=rec["source_id"],
            document_id=rec["document_id"], body=rec["body"], prev_hash=rec["prev_hash"],
        ) == rec["hash"]
        prev = rec["hash"]
    assert lines[-1]["body"]["action"] == "audit.export"  # the export is itself on the record
    only = api.client.get("/v1/audit/export", headers=api.admin, params={"principal": "r1"}).text.splitlines()
    assert len(only) == 1


def test_verify_endpoint_finds_an_edit(api):
    _searches(api)
    assert api.client.get("/v1/audit/verify", headers=api.admin).json()["valid"] is True
    with transaction(api.container.sessions) as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(principal_id="mallory"))
    body = api.client.get("/v1/audit/verify", headers=api.admin).json()
    assert body["valid"] is False and body["first_broken_seq"] == 3


def test_openapi_documents_the_new_endpoints(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/citations/{chunk_id}", "get"), ("/v1/citations/verify", "post"),
                         ("/v1/explain", "post"), ("/v1/audit", "get"), ("/v1/audit/verify", "get"),
                         ("/v1/audit/export", "get"), ("/v1/documents/{document_id}/retract", "post"),
                         ("/v1/documents/{document_id}/restore", "post"), ("/v1/access-requests", "post"),
                         ("/v1/access-requests", "get"), ("/v1/access-requests/{request_id}/decision", "post")):
        op = paths[path][method]
        assert {"401", "403", "404", "422"} <= set(op["responses"]), path


def test_cli_audit_verify_export_show_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from memory import cli, cli_audit  # noqa: F401  (registers the commands)

    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEMORY_ENV", "test")
    runner = CliRunner()
    r = runner.invoke(cli.app, ["audit", "verify"])
    assert r.exit_code == 0 and "valid" in r.output, r.output
    head = r.output.split("head ")[1].strip()  # SEQ:HASH, the next check's anchor
    r = runner.invoke(cli.app, ["audit", "verify", "--anchor", head])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["audit", "verify", "--anchor", head.split(":")[0] + ":" + "0" * 64])
    assert r.exit_code == 1 and "another hash" in r.output, r.output
    for bad in ("12", "x:y", f"0:{'0' * 64}"):
        r = runner.invoke(cli.app, ["audit", "verify", "--anchor", bad])
        assert r.exit_code == 2 and "invalid_anchor" in r.output, (bad, r.output)
    r = runner.invoke(cli.app, ["audit", "export", "--action", "policy.jurisdictions"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["action"] for x in r.stdout.splitlines() if x.startswith("{")] == ["policy.jurisdictions"]
    r = runner.invoke(cli.app, ["audit", "export", "--after-seq", "2"])
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["seq"] == 3, r.output
    r = runner.invoke(cli.app, ["audit", "show", "--json", "--event", "read"])
    assert r.exit_code == 0 and "audit.export" in r.output, r.output
    r = runner.invoke(cli.app, ["verify", "nope"])
    assert r.exit_code == 2 and "chunk_not_found" in r.output
    r = runner.invoke(cli.app, ["retract", "nope", "--reason", "x"])
    assert r.exit_code == 2 and "document_not_found" in r.output
    from memory.bootstrap import Container
    from memory.settings import Settings

    c = Container(Settings())  # type: ignore[call-arg]
    with transaction(c.sessions) as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 1).values(principal_id="mallory"))
    c.close()
    r = runner.invoke(cli.app, ["audit", "verify"])
    assert r.exit_code == 1 and "first broken seq 1" in r.output


def test_cli_audit_refuses_filters_and_anchors_that_can_only_be_mistakes(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """An unknown --event or a window that ends before it starts would print nothing and exit 0; a seq past the
    column's range would overflow: each is one line and exit 2. A head that does not fit the terminal stays on
    one line (it is copied for the next --anchor)."""
    from memory import cli, cli_audit  # noqa: F401  (registers the commands)

    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEMORY_ENV", "test")
    runner = CliRunner(env={"COLUMNS": "40"})
    r = runner.invoke(cli.app, ["audit", "verify"])
    assert r.exit_code == 0, r.output
    line, = r.stdout.splitlines()
    seq, digest = line.split("head ")[1].split(":")
    assert seq.isdigit() and len(digest) == 64, line
    for command in ("show", "export"):
        r = runner.invoke(cli.app, ["audit", command, "--event", "bogus"])
        assert r.exit_code == 2 and r.stderr.startswith("error: invalid_arguments: --event"), r.output
        r = runner.invoke(cli.app, ["audit", command, "--since", "2030-01-01", "--until", "2020-01-01"])
        assert r.exit_code == 2 and r.stderr.startswith("error: invalid_window: "), r.output
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = runner.invoke(cli.app, ["audit", "verify", "--anchor", f"99999999999999999999999:{'a' * 64}"])
    assert r.exit_code == 2 and r.stderr.startswith("error: invalid_anchor: "), r.output


def test_cli_verify_refuses_a_file_that_holds_no_citation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from memory import cli, cli_audit  # noqa: F401  (registers the commands)

    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEMORY_ENV", "test")
    runner = CliRunner()
    for body in ("[1, 2]", '"x"', '{"citation": [1]}'):
        (tmp_path / "c.json").write_text(body)
        r = runner.invoke(cli.app, ["verify", "--citation", str(tmp_path / "c.json")])
        assert r.exit_code == 2 and r.stderr.startswith("error: invalid_citation_file: "), (body, r.output)
    (tmp_path / "c.json").write_text("{}")  # an object: the check's own answer, as POST /v1/citations/verify
    r = runner.invoke(cli.app, ["verify", "--citation", str(tmp_path / "c.json")])
    assert r.exit_code == 1 and "malformed_citation" in r.output and "chunk_not_found" not in r.output, r.output


@pytest.mark.slow
def test_real_stack_citation_verify_retract_and_audit(real_api):
    api = real_api
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    auditor = api.principal("aud", roles=["auditor"])
    api.source("s1", read_groups=["g"])
    doc = api.upload("s1", "travel.md", DOC).json()
    cit = api.search(reader, "Which train tickets are covered?").json()["hits"][0]["citation"]
    assert api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit}).json()["valid"] is True
    report = api.client.post(f"/v1/documents/{doc['document_id']}/retract", headers=api.admin,
                             json={"reason": "superseded policy"}).json()
    assert report["principals"] == ["r1"]
    assert api.search(reader, "Which train tickets are covered?").json()["hits"] == []
    body = api.client.post("/v1/citations/verify", headers=auditor, json={"citation": cit}).json()
    assert body["valid"] is True and body["status"]["state"] == "retracted"
    assert api.client.get("/v1/audit/verify", headers=auditor).json()["valid"] is True


def test_cli_export_cut_midway_prints_an_error_line_and_exits_non_zero(tmp_path: Path, monkeypatch):
    from memory import cli, cli_audit  # noqa: F401  (registers the commands)

    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MEMORY_ENV", "test")
    runner = CliRunner()
    assert runner.invoke(cli.app, ["audit", "verify"]).exit_code == 0  # a few records to export
    _batches_fail_after(monkeypatch, 1, _sqlite_error("disk I/O error", sqlite3.SQLITE_IOERR), limit=1)
    r = runner.invoke(cli.app, ["audit", "export"])
    assert r.exit_code == 2 and "export_interrupted" in r.stderr, r.output
    first, error = (json.loads(x) for x in r.stdout.splitlines())
    assert first["seq"] == 1
    assert error["error"]["code"] == "database_unavailable" and error["error"]["resume_after_seq"] == 1
