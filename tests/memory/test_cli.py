"""The `memory` CLI through typer's runner on the real SQL + Qdrant Edge + parsing (model doubles)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory import cli, cli_access, cli_commands  # noqa: F401  (registers commands)
from memory.bootstrap import Container
from memory.db import transaction
from tests.conftest import invoke


def test_register_ingest_and_search(env: Path):
    assert invoke("principals", "create", "st", "--groups", "hr", "--clearance", "restricted",
                  "--roles", "steward,reader").exit_code == 0
    r = invoke("sources", "add", "hr", "--name", "HR", "--steward", "st", "--jurisdiction", "EU",
               "--read-groups", "hr", "--floor", "internal")
    assert r.exit_code == 0, r.output
    folder = env / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Leave\n\nParental leave is twelve weeks at full pay.\n")
    (folder / "sub" / "b.txt").write_text("Sick leave needs a note from the fourth day.")
    r = invoke("ingest", "hr", str(folder), "--json", "--no-optimize")
    assert r.exit_code == 0, r.output
    assert sorted(o["status"] for o in json.loads(r.output)) == ["created", "created"]
    r = invoke("ingest", "hr", str(folder), "--json", "--no-optimize")
    assert sorted(o["status"] for o in json.loads(r.output)) == ["unchanged", "unchanged"]
    r = invoke("search", "parental leave weeks", "--as", "st", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits"][0]["citation"]["source_id"] == "hr"


def test_bad_files_are_reported_per_file_and_fail_the_exit_code(env: Path):
    invoke("principals", "create", "st", "--roles", "steward")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    folder = env / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("A perfectly fine document about trains.")
    (folder / "empty.txt").write_text("")
    (folder / "noise.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64))
    (folder / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e recipe for the canteen.".encode("latin-1"))
    r = invoke("ingest", "s", str(folder), str(env / "missing.pdf"), "--no-optimize")
    assert r.exit_code == 1
    for text in ("empty_document", "unsupported_format", "path_not_found"):
        assert text in r.output
    r = invoke("ingest", "s", str(folder), "--json", "--no-optimize")
    by_key = {o["external_key"]: o["status"] for o in json.loads(r.output)}
    assert by_key["good.txt"] == "unchanged" and by_key["latin1.txt"] == "unchanged"


def test_ingest_parses_in_a_worker_and_reports_skipped_attachments(env: Path, monkeypatch):
    import email.message
    import io

    import docx

    monkeypatch.setenv("MEMORY_PARSE_TIMEOUT_S", "60")  # the production path: parsing in a worker process
    invoke("principals", "create", "st", "--roles", "steward")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    report = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("The attached budget covers two new engineers.")
    document.save(report)
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "Budget"
    msg.set_content("Budget attached; the logo is not.")
    msg.add_attachment(report.getvalue(), maintype="application", subtype="octet-stream", filename="budget.docx")
    msg.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), maintype="image", subtype="png", filename="logo.png")
    folder = env / "mail"
    folder.mkdir()
    (folder / "budget.eml").write_bytes(msg.as_bytes())
    (folder / "cut.docx").write_bytes(report.getvalue()[:1000])

    r = invoke("ingest", "s", str(folder), "--no-optimize")

    assert r.exit_code == 1, r.output
    assert "logo.png" in r.output and "corrupt_document" in r.output
    r = invoke("ingest", "s", str(folder), "--json", "--no-optimize")
    by_key = {o["external_key"]: o for o in json.loads(r.output)}
    assert by_key["cut.docx"]["error_code"] == "corrupt_document"
    email_outcome = by_key["budget.eml"]
    assert email_outcome["status"] == "unchanged"


def test_ingest_runs_pandoc_under_the_configured_heap_limit(env: Path, monkeypatch):
    import os

    import pypandoc
    from pydantic import ValidationError

    from memory.settings import Settings

    monkeypatch.setenv("MEMORY_PANDOC_MAX_HEAP_MB", "256")
    monkeypatch.delenv("GHCRTS", raising=False)
    convert, seen = pypandoc.convert_file, []

    def recording(*args, **kwargs):  # the limit pandoc is started under (the in-process path: this process)
        seen.append(os.environ.get("GHCRTS"))
        return convert(*args, **kwargs)

    monkeypatch.setattr(pypandoc, "convert_file", recording)
    invoke("principals", "create", "st", "--roles", "steward")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    folder = env / "notes"
    folder.mkdir()
    (folder / "leave.rst").write_text("Leave\n=====\n\nParental leave is twelve weeks at full pay.\n")

    r = invoke("ingest", "s", str(folder), "--json", "--no-optimize")

    assert r.exit_code == 0, r.output
    assert [o["status"] for o in json.loads(r.output)] == ["created"]
    assert seen == ["-M256m"]
    assert "GHCRTS" not in os.environ  # put back: no other program this process starts runs under it
    with pytest.raises(ValidationError):
        Settings(pandoc_max_heap_mb=64)  # type: ignore[call-arg]


def test_unknown_source_is_one_line_and_exit_2(env: Path):
    r = invoke("ingest", "nope", str(env))
    assert r.exit_code == 2
    assert "source_not_found" in r.output


def test_bad_option_values_fail_cleanly(env: Path):
    r = invoke("principals", "create", "x", "--clearance", "ultra")
    assert r.exit_code == 2 and "unknown_label" in r.output
    r = invoke("sources", "add", "s", "--name", "S", "--steward", "ghost", "--jurisdiction", "EU")
    assert r.exit_code == 2 and "principal_not_found" in r.output


def test_serve_refuses_workers_on_the_embedded_store(env: Path):
    r = invoke("serve", "--workers", "2")
    assert r.exit_code == 2 and "embedded_single_process" in r.output


def app_closing_its_container(settings, *, container=None) -> str:
    """create_app's stand-in: closes the container serve opened, as the app's shutdown would (uvicorn is stubbed)."""
    if container is not None:
        container.close()
    return "the-app"


def test_serve_runs_uvicorn_with_the_configured_http_parser_and_loop(env: Path, monkeypatch):
    import uvicorn

    from memory.api import app as api_app

    ran: list[dict] = []
    monkeypatch.setattr(api_app, "create_app", app_closing_its_container)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append({"app": app, **kw}))
    monkeypatch.setattr("memory.logging_setup.configure", lambda *a, **k: None)
    assert invoke("serve", "--port", "9123").exit_code == 0
    assert ran[-1]["app"] == "the-app" and ran[-1]["port"] == 9123
    assert (ran[-1]["http"], ran[-1]["loop"]) == ("auto", "auto")  # uvicorn picks httptools and uvloop
    monkeypatch.setenv("MEMORY_HTTP_IMPL", "h11")
    monkeypatch.setenv("MEMORY_EVENT_LOOP", "asyncio")
    assert invoke("serve").exit_code == 0
    assert (ran[-1]["http"], ran[-1]["loop"]) == ("h11", "asyncio")


def test_serve_believes_forwarded_headers_only_from_named_proxies(env: Path, monkeypatch):
    import uvicorn

    from memory.api import app as api_app

    ran: list[dict] = []
    monkeypatch.setattr(api_app, "create_app", app_closing_its_container)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    monkeypatch.setattr("memory.logging_setup.configure", lambda *a, **k: None)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert invoke("serve").exit_code == 0
    assert ran[-1]["proxy_headers"] is False  # uvicorn's default would believe any local process
    monkeypatch.setenv("MEMORY_FORWARDED_ALLOW_IPS", "10.1.0.0/16")
    assert invoke("serve").exit_code == 0
    assert (ran[-1]["proxy_headers"], ran[-1]["forwarded_allow_ips"]) == (True, "10.1.0.0/16,::ffff:10.1.0.0/112")
    monkeypatch.setenv("MEMORY_FORWARDED_ALLOW_IPS", "10.1.0.1/16")
    r = invoke("serve")
    assert r.exit_code == 2 and "invalid_settings: MEMORY_FORWARDED_ALLOW_IPS" in r.output
    # uvicorn's own variable alone (what these docs once said to set) is refused, not silently dropped.
    monkeypatch.delenv("MEMORY_FORWARDED_ALLOW_IPS")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.0.5")
    runs = len(ran)
    r = invoke("serve")
    assert r.exit_code == 2 and "MEMORY_FORWARDED_ALLOW_IPS" in r.output and len(ran) == runs


def test_serve_refuses_an_unknown_http_parser(env: Path, monkeypatch):
    monkeypatch.setenv("MEMORY_HTTP_IMPL", "nginx")
    r = invoke("serve")
    assert r.exit_code == 2
    assert "invalid_settings: MEMORY_HTTP_IMPL: Input should be 'auto', 'httptools' or 'h11'" in r.output
    assert "nginx" not in r.output  # a bad setting's value is never echoed (it could be a secret)


def _hr_source_with_one_document(env: Path) -> None:
    invoke("principals", "create", "st", "--groups", "hr", "--roles", "steward,reader")
    invoke("sources", "add", "hr", "--name", "HR", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "hr")
    (env / "docs").mkdir()
    (env / "docs" / "a.md").write_text("# Leave\n\nParental leave is twelve weeks at full pay.\n")
    assert invoke("ingest", "hr", str(env / "docs"), "--no-optimize").exit_code == 0


def test_stale_versions_lists_what_an_older_pipeline_processed_until_it_is_ingested_again(env: Path):
    from sqlalchemy import update

    from memory.models import DocumentVersion
    from memory.settings import Settings

    _hr_source_with_one_document(env)
    r = invoke("stale-versions", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report == {"pipeline": "ingest-3", "stale": []}
    c = Container(Settings())  # type: ignore[call-arg]
    try:  # stored before the upgrade
        with transaction(c.sessions) as s:
            s.execute(update(DocumentVersion).values(pipeline_version="ingest-1"))
    finally:
        c.close()
    r = invoke("stale-versions", "--source", "hr")
    assert r.exit_code == 0, r.output
    assert "v1 file://" in r.output and "(pipeline ingest-1)" in r.output
    assert "1 documents to ingest again (pipeline ingest-3)" in r.output
    r = invoke("ingest", "hr", str(env / "docs"), "--no-optimize", "--json")
    assert r.exit_code == 0 and [(o["status"], o["reprocessed"]) for o in json.loads(r.output)] == [("updated", True)]
    assert json.loads(invoke("stale-versions", "--json").output)["stale"] == []
    r = invoke("stale-versions", "--source", "nope")
    assert r.exit_code != 0 and "source_not_found" in r.output


def test_optimize_says_how_many_points_no_index_covers_before_and_after(env: Path):
    _hr_source_with_one_document(env)
    r = invoke("optimize")
    assert r.exit_code == 0, r.output
    # One chunk: far below the indexing threshold, so it stays scored exactly (fast at that size).
    assert "vector index optimised: 1 points, 1 not covered by an index (was 1)" in r.output


def test_rebuild_index_swaps_in_a_rebuilt_store_and_audits_it(env: Path):
    from sqlalchemy import select

    from memory.models import AuditRecord
    from memory.settings import Settings

    _hr_source_with_one_document(env)

    r = invoke("rebuild-index", "--actor", "ops")
    assert r.exit_code == 0, r.output
    assert "vector index rebuilt: 1 points" in r.output and "previous shard kept at" in r.output
    assert len(list((env / "data").glob("qdrant-edge.old-*"))) == 1
    r = invoke("search", "parental leave", "--as", "st", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["hits"][0]["citation"]["source_id"] == "hr"
    c = Container(Settings())  # type: ignore[call-arg]
    try:
        with c.sessions() as s:
            rec = s.scalars(select(AuditRecord).where(AuditRecord.event == "write")
                            .order_by(AuditRecord.seq.desc())).first()
            assert rec is not None and rec.principal_id == "ops"
            assert rec.body["action"] == "vectors.rebuild" and rec.body["details"]["points"] == 1
    finally:
        c.close()

    assert invoke("rebuild-index", "--drop-old").exit_code == 0
    assert len(list((env / "data").glob("qdrant-edge.old-*"))) == 1  # the first run's copy; this one's deleted


def test_rebuild_index_refuses_the_server_backend(env: Path, monkeypatch):
    monkeypatch.setenv("MEMORY_QDRANT_URL", "http://127.0.0.1:9")  # never contacted
    r = invoke("rebuild-index")
    assert r.exit_code == 2 and "not_embedded" in r.output


def test_repair_republishes_a_source_access_change_left_narrowed(env: Path):
    from memory import sources
    from memory.settings import Settings

    _hr_source_with_one_document(env)
    c = Container(Settings())  # type: ignore[call-arg]
    try:  # a change committed, then the process died before its publish
        with transaction(c.sessions) as s:
            sources.update(s, source_id="hr", store=c.store, actor="admin",
                           patch=sources.SourcePatch(read_groups=("hr", "ops")))
    finally:
        c.close()
    r = invoke("repair", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"abandoned": 0, "synced": 0, "republished": 1, "retractions_resynced": 0}
    r = invoke("repair")
    assert r.exit_code == 0 and "0 sources' access republished" in r.output


def test_backfill_twins_stores_missing_twins_once_and_audits_it(env: Path):
    from sqlalchemy import select, update

    from memory.models import AuditRecord, Chunk
    from memory.settings import Settings

    assert invoke("principals", "create", "st", "--groups", "hr", "--clearance", "restricted",
                  "--roles", "steward,reader").exit_code == 0
    invoke("sources", "add", "hr", "--name", "HR", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "hr")
    (env / "mail.txt").write_text("Contact alice.smith@example.com about payroll.")
    assert invoke("ingest", "hr", str(env / "mail.txt"), "--no-optimize").exit_code == 0
    c = Container(Settings())  # type: ignore[call-arg]
    try:  # as stored before masked twins
        with transaction(c.sessions) as s:
            s.execute(update(Chunk).values(masked_point_id=None))
    finally:
        c.close()
    r = invoke("backfill-twins", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"stored": 1, "embedded": 0, "other_model": 0, "point_missing": 0,
                                    "unsettled": 0, "lacking": 0}  # its masked text's vector was cached
    r = invoke("backfill-twins")
    assert r.exit_code == 0 and "0 stored" in r.output and "0 personal chunks still without one" in r.output
    c = Container(Settings())  # type: ignore[call-arg]
    try:
        with c.sessions() as s:
            writes = s.scalars(select(AuditRecord).where(AuditRecord.event == "write")).all()
            runs = [r.body for r in writes if r.body["action"] == "maintenance.backfill_twins"]
            assert [r["details"]["stored"] for r in runs] == [1]  # only the run that stored one
    finally:
        c.close()


def test_keygen_prints_a_valid_key(env: Path):
    from memory.settings import Settings

    key = invoke("keygen").output.strip()
    assert Settings(bootstrap_admin_key=key, env="prod").bootstrap_admin_key is not None


def _file_request(requester: str, source_id: str, reason: str, **kw: str) -> str:
    """An access request filed by `requester` (the service, as the API files it), for the CLI to list and decide."""
    from memory import access_requests
    from memory.principals import get_principal, resolve_effective
    from memory.settings import Settings

    c = Container(Settings())  # type: ignore[call-arg]
    try:
        with transaction(c.sessions) as s:
            who = resolve_effective(s, caller=get_principal(s, principal_id=requester), acting_for=None)
            return access_requests.file_request(s, who=who, source_id=source_id, reason=reason, **kw).id
    finally:
        c.close()


def test_access_requests_from_the_cli(env: Path):

    invoke("principals", "create", "st", "--roles", "steward")
    invoke("principals", "create", "ann", "--groups", "g", "--clearance", "public")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    rid = _file_request("ann", "s", "clearance", justification="I need the onboarding notes")
    r = invoke("access", "list")
    assert r.exit_code == 0 and rid[:8] in r.output
    r = invoke("access", "decide", rid, "--decision", "refuse")
    assert r.exit_code == 2 and "note_required" in r.output
    r = invoke("access", "decide", rid, "--decision", "refuse", "--note", "not needed for your role")
    assert r.exit_code == 0 and "refused" in r.output
    rid = _file_request("ann", "s", "clearance", justification="I run onboarding now")
    r = invoke("access", "decide", rid, "--decision", "escalate", "--note", "agree; needs internal")
    assert r.exit_code == 0 and "escalated" in r.output
    r = invoke("access", "list", "--status", "escalated")
    assert r.exit_code == 0 and rid[:8] in r.output
    r = invoke("access", "decide", rid, "--decision", "grant", "--clearance", "public")
    assert r.exit_code == 2 and "clearance_not_raised" in r.output
    r = invoke("access", "decide", rid, "--decision", "grant", "--transfer-rule", "allow")
    assert r.exit_code == 2 and "change_not_for_reason" in r.output
    r = invoke("access", "decide", rid, "--decision", "grant", "--clearance", "internal", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["status"] == "granted" and out["resolution"]["resolved"] is True
    assert out["changes"]["clearance"] == {"principal": "ann", "before": "public", "after": "internal"}


def _consent_of(source_id: str) -> tuple[bool, list[str]]:
    from memory import sources

    c = Container(__import__("memory.settings", fromlist=["Settings"]).Settings())
    try:
        with c.sessions() as s:
            src = sources.get(s, source_id=source_id)
            return src.personal_data_requires_consent, list(src.consent_purposes)
    finally:
        c.close()


def test_source_consent_from_the_cli(env: Path):

    invoke("principals", "create", "st", "--roles", "steward")
    invoke("principals", "create", "ann", "--groups", "g", "--clearance", "restricted")
    r = invoke("sources", "add", "crm", "--name", "CRM", "--steward", "st", "--jurisdiction", "EU",
               "--read-groups", "g", "--consent-required", "--consent-purposes", "support,Billing")
    assert r.exit_code == 0, r.output
    assert _consent_of("crm") == (True, ["billing", "support"])
    assert "consent" in invoke("sources", "list").output
    r = invoke("sources", "update", "crm", "--consent-purposes", "no way")
    assert r.exit_code == 2 and "invalid_purpose" in r.output
    assert invoke("sources", "update", "crm", "--no-consent-required", "--consent-purposes", "support").exit_code == 0
    assert _consent_of("crm") == (False, ["support"])
    assert invoke("sources", "update", "crm", "--consent-required").exit_code == 0
    assert _consent_of("crm") == (True, ["support"])
    rid = _file_request("ann", "crm", "consent", purpose="billing", justification="billing disputes")
    assert "consent" in invoke("access", "list").output
    r = invoke("access", "decide", rid, "--decision", "grant", "--add-consent-purpose", "billing", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["status"] == "granted" and out["resolution"]["resolved"] is True
    assert _consent_of("crm") == (True, ["billing", "support"])


def test_numbers_past_their_columns_are_usage_errors_not_tracebacks(env: Path):
    big = "99999999999999999999"
    for args in (("retract", "d1", "--reason", "x", "--version", big),
                 ("restore", "d1", "--reason", "x", "--version", big),
                 ("audit", "show", "--after-seq", big), ("audit", "export", "--after-seq", big)):
        r = invoke(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    r = invoke("principals", "create", "x\n", "--clearance", "internal", "--jurisdiction", "EU")
    assert r.exit_code != 0 and "invalid" in r.output.lower(), r.output


def test_an_admin_sets_the_label_map_and_the_next_ingest_follows_it(env: Path):
    """`memory policy set-labels`: a new version in force (policy show), the next ingest labelled by it; a bad file
    or map is refused with a one-line reason and a non-zero exit, the map in force left as it was."""
    invoke("principals", "create", "st", "--roles", "steward,reader", "--groups", "g", "--clearance", "restricted")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    shown = json.loads(invoke("policy", "show").output)["labels"]
    raised = env / "labels.json"
    raised.write_text(json.dumps({"mapping": {**shown["mapping"], "EMAIL_ADDRESS": "restricted"}}))
    r = invoke("policy", "set-labels", str(raised))
    assert r.exit_code == 0 and f"version {shown['version'] + 1}" in r.output, r.output
    assert json.loads(invoke("policy", "show").output)["labels"]["mapping"]["EMAIL_ADDRESS"] == "restricted"
    folder = env / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nWrite to ann@example.com about the renewal.\n")
    assert invoke("ingest", "s", str(folder), "--json", "--no-optimize").exit_code == 0
    hit = json.loads(invoke("search", "renewal", "--as", "st", "--json").output)["hits"][0]
    assert hit["label"] == "restricted"

    bad = env / "bad.json"
    for content, code in (("{not json", "invalid_policy_file"), ("[]", "invalid_label_map"),
                          (json.dumps({"mapping": {"EMAIL_ADDRESS": "secret"}}), "invalid_label_map")):
        bad.write_text(content)
        r = invoke("policy", "set-labels", str(bad))
        assert r.exit_code != 0 and code in r.output, r.output
    assert json.loads(invoke("policy", "show").output)["labels"]["version"] == shown["version"] + 1


def test_an_admin_relabels_what_is_stored_after_a_label_map_change(env: Path):
    """`memory relabel`: a dry run counts and changes nothing; the run relabels the note stored before the change;
    an unknown source exits non-zero with a one-line reason."""
    invoke("principals", "create", "st", "--roles", "steward,reader", "--groups", "g", "--clearance", "restricted")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    folder = env / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nWrite to ann@example.com about the renewal.\n")
    assert invoke("ingest", "s", str(folder), "--json", "--no-optimize").exit_code == 0
    shown = json.loads(invoke("policy", "show").output)["labels"]
    raised = env / "labels.json"
    raised.write_text(json.dumps({"mapping": {**shown["mapping"], "EMAIL_ADDRESS": "restricted"}}))
    assert invoke("policy", "set-labels", str(raised)).exit_code == 0

    def label() -> str:
        return str(json.loads(invoke("search", "renewal", "--as", "st", "--json").output)["hits"][0]["label"])

    dry = invoke("relabel", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.output)["raised"] == 1, dry.output
    assert label() == "confidential"
    r = invoke("relabel", "--source", "s")
    assert r.exit_code == 0 and "relabelled 1 of 1 versions" in r.output and "1 chunks raised" in r.output, r.output
    assert label() == "restricted"
    missing = invoke("relabel", "--source", "nope")
    assert missing.exit_code != 0 and "source_not_found" in missing.output, missing.output


def test_an_unexpected_error_is_one_line_without_its_message(monkeypatch, capsys):
    """An exception no command maps to a code exits 1 with one line naming its type and where it was raised, never
    its message (it may quote stored data); MEMORY_CLI_TRACEBACK=1 lets it through whole, for a bug report."""
    from memory import cli_audit, cli_documents, cli_jobs  # noqa: F401  (the commands main registers)

    def boom(**kwargs: object) -> None:
        raise ValueError("Maria Schneider, IBAN DE89370400440532013000")

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.delenv("MEMORY_CLI_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internal_error: unexpected ValueError at test_cli.py:")
    assert "Maria" not in captured.err + captured.out and "DE89" not in captured.err + captured.out
    monkeypatch.setenv("MEMORY_CLI_TRACEBACK", "1")
    with pytest.raises(ValueError):
        cli.main()


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`memory ARGS` through the entry point (main), which shapes usage errors: exit code, stdout, stderr."""
    from memory import cli_audit, cli_documents, cli_jobs  # noqa: F401  (the commands main registers)

    monkeypatch.setattr("sys.argv", ["memory", *args])
    code: object = 0
    try:
        cli.main()  # returns when the command succeeds
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0 if code is None else 1), captured.out, captured.err


@pytest.mark.parametrize("args", [
    ("sources", "add", "s8", "--steward", "stew", "--jurisdiction", "EU"),  # missing required option
    ("principals", "create", "x", "--expires", "notadate"),  # bad date
    ("explain", "c1", "--as", "a", "--as-of", "garbage"),
    ("audit", "show", "--limit", "0"),  # out of range
    ("ingest", "s1"),  # missing argument
    ("nosuchcommand",),
    ("audit", "show", "--no-such-option"),
])
def test_a_bad_command_line_is_one_line_and_exit_2(env: Path, monkeypatch, capsys, args):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid_arguments: "), err
    assert "Usage:" not in out + err and "╭" not in out + err


def test_help_and_a_good_command_keep_their_output_and_exit_code(env: Path, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "--help")
    assert code == 0 and "Usage:" in out and "audit" in out and not err
    code, out, err = run_main(monkeypatch, capsys, "keygen")
    assert code == 0 and out.startswith("gm_") and not err


def test_ctrl_c_is_one_line_and_exit_130(env: Path, monkeypatch, capsys):
    def interrupted(n: int) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.secrets, "token_hex", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "keygen")
    assert code == 130
    assert err.strip().splitlines() == ["error: interrupted: stopped by the user (Ctrl-C)"]


def test_python_dash_m_memory_cli_runs_the_cli(env: Path):
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "memory.cli", "keygen"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("gm_"), ok
    bad = subprocess.run([sys.executable, "-m", "memory.cli", "audit", "show", "--limit", "0"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid_arguments: "), bad


def test_access_list_gives_whole_ids_and_json_and_refuses_an_unknown_source(env: Path):

    long_id = "principal-with-a-rather-long-id-for-a-table"
    invoke("principals", "create", "st", "--roles", "steward")
    invoke("principals", "create", long_id, "--groups", "g", "--clearance", "public")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    rid = _file_request(long_id, "s", "clearance", justification="I need the onboarding notes")
    narrow = CliRunner(env={"COLUMNS": "60"})
    r = narrow.invoke(cli.app, ["access", "list"])
    assert r.exit_code == 0 and rid in r.output, r.output  # whole, on one line, never `0b1f…`
    r = narrow.invoke(cli.app, ["principals", "list"])
    assert r.exit_code == 0 and long_id in r.output, r.output
    long_source = "a-source-with-a-rather-long-id-for-a-table"
    invoke("sources", "add", long_source, "--name", "L", "--steward", "st", "--jurisdiction", "EU",
           "--read-groups", "g")
    r = narrow.invoke(cli.app, ["sources", "list"])
    assert r.exit_code == 0 and long_source in r.output, r.output
    with pytest.MonkeyPatch.context() as m:  # a 60-column terminal: the other columns give way, not the ids
        from rich.console import Console

        m.setattr(cli, "out", Console(force_terminal=True, width=60, color_system=None))
        r = invoke("access", "list")
        assert r.exit_code == 0 and rid in r.output, r.output
        r = invoke("principals", "list")
        assert r.exit_code == 0 and long_id in r.output, r.output
    r = invoke("access", "list", "--json", "--source", "s")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [(x["id"], x["source_id"], x["requester_id"], x["status"]) for x in listed] == [(rid, "s", long_id, "open")]
    r = invoke("access", "list", "--source", "nosuch")
    assert r.exit_code == 2 and r.stderr.startswith("error: source_not_found: "), r.output


def test_access_decide_refuses_a_caller_jurisdiction_without_a_transfer_rule(env: Path):

    invoke("principals", "create", "st", "--roles", "steward")
    invoke("principals", "create", "ann", "--groups", "g", "--clearance", "public")
    invoke("sources", "add", "s", "--name", "S", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g")
    rid = _file_request("ann", "s", "clearance", justification="I need the onboarding notes")
    r = invoke("access", "decide", rid, "--decision", "grant", "--clearance", "internal",
               "--caller-jurisdiction", "US")
    assert r.exit_code == 2 and r.stderr.startswith("error: invalid_arguments: --caller-jurisdiction"), r.output
    r = invoke("access", "list", "--json")
    assert [x["status"] for x in json.loads(r.output)] == ["open"]  # nothing written


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_serve_refuses_a_port_out_of_range_in_one_line(env: Path, monkeypatch, capsys, port):
    import uvicorn

    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    monkeypatch.setattr("memory.logging_setup.configure", lambda *a, **k: None)
    code, _, err = run_main(monkeypatch, capsys, "serve", "--port", port)
    assert code == 2 and not ran, (code, err)
    line, = err.strip().splitlines()
    assert line.startswith("error: invalid_arguments: --port: "), line


def test_a_second_serve_on_one_data_dir_is_store_locked_in_one_line(env: Path, monkeypatch, capsys):
    import uvicorn

    from memory.settings import Settings

    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    monkeypatch.setattr("memory.logging_setup.configure", lambda *a, **k: None)
    first = Container(Settings())  # type: ignore[call-arg]
    try:
        _ = first.store  # the first server holds the store
        code, _, err = run_main(monkeypatch, capsys, "serve")
    finally:
        first.close()
    assert code == 2 and not ran, (code, err)
    line, = err.strip().splitlines()
    assert line.startswith("error: store_locked: "), line
