"""CLI commands for provenance and audit: verify, audit verify/export/show, retract, restore, explain.

Registered on memory.cli.app when memory.cli.main() imports this module. The CLI runs with direct access
to the database and store, so it acts as an operator with admin rights; `--actor` names who is recorded.
Exit codes: 0 ok, 1 a check failed (invalid citation, broken chain), 2 an error (`error: <code>: <message>`).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from classifiers.types import Label
from memory import audit, audit_trail
from memory.bootstrap import Container
from memory.cli import Actor, DataDir, actor_id, app, fail, out, print_json, run
from memory.clock import utc
from memory.db import transaction
from memory.errors import ValidationFailedError
from memory.models import MAX_INT32, MAX_INT64
from memory.policy import EffectivePrincipal

audit_app = typer.Typer(help="The hash-chained audit log (auditors).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

Since = Annotated[datetime | None, typer.Option(help="From this instant, ISO 8601 (inclusive).")]
Until = Annotated[datetime | None, typer.Option(help="Until this instant, ISO 8601 (exclusive).")]
PrincipalOpt = Annotated[str | None, typer.Option("--principal", help="Principal who acted.")]
ActingFor = Annotated[str | None, typer.Option("--acting-for", help="User the principal acted for.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="About the source or serving its chunks.")]
DocumentOpt = Annotated[str | None, typer.Option("--document", help="About the document or serving its chunks.")]
ChunkOpt = Annotated[str | None, typer.Option("--chunk", help="Records that served this chunk.")]
EventOpt = Annotated[str | None, typer.Option("--event", help="search | write | read")]
ActionOpt = Annotated[str | None, typer.Option("--action", help="e.g. version.retract, document.ingest")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def operator(actor: str | None) -> EffectivePrincipal:
    """Whoever runs the CLI holds the database: an operator with admin rights, recorded as `actor`."""
    return EffectivePrincipal(actor_id(actor), None, frozenset(), Label.PUBLIC, (), frozenset({"admin"}))


EVENTS = ("search", "write", "read")  # the API's `event` filter takes the same


def _filter(**kw: Any) -> audit_trail.AuditFilter:
    """The records' filter, refused when it could only ever match nothing by mistake: an unknown event, or a window
    whose start is after its end (`invalid_window`, as GET /v1/usage)."""
    flt = audit_trail.AuditFilter(**kw)
    if flt.event is not None and flt.event not in EVENTS:
        fail("invalid_arguments", f"--event is one of {', '.join(EVENTS)}, not {flt.event!r}")
    if flt.since is not None and flt.until is not None and utc(flt.since) > utc(flt.until):
        fail("invalid_window", "--since is after --until: the window is empty")
    return flt


@app.command()
def verify(
    chunk_id: Annotated[str | None, typer.Argument(help="Chunk id (check the stored chunk).")] = None,
    citation: Annotated[Path | None, typer.Option("--citation", help="A citation JSON file to check.")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Verify a chunk or a citation: hashes, fields, status, who was served it. Exit 1 if not valid."""
    from memory import verification

    if (chunk_id is None) == (citation is None):
        fail("invalid_arguments", "give a CHUNK_ID or --citation FILE (one of them)")
    presented: dict[str, Any] = {}
    if citation is not None:
        try:
            presented = json.loads(citation.read_text())
        except (OSError, ValueError) as exc:
            fail("invalid_citation_file", str(exc))
        presented = presented.get("citation", presented) if isinstance(presented, dict) else presented
        if not isinstance(presented, dict):  # an object missing its fields is the check's to report (exit 1)
            fail("invalid_citation_file", f"{citation} holds no citation: a JSON object (a citation, or an answer "
                 "with one under \"citation\") is expected")

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            given = presented if citation is not None else verification.get_citation(
                s, chunk_id=str(chunk_id)).citation.to_dict()
            result = verification.verify_citation(s, presented=given)
            verification.record_verify(s, result, principal_id=actor_id(actor))
            return json.loads(json.dumps(result.to_dict(), default=str))

    result = run(data_dir, _do)
    print_json(result)
    if not result["valid"]:
        codes = ", ".join(sorted({p["code"] for p in result["problems"]}))
        typer.echo(f"invalid: {codes}", err=True)
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = None, actor: Actor = None,
    anchor: Annotated[str | None, typer.Option("--anchor", metavar="SEQ:HASH", help=(
        "A record an earlier check reported (its head seq and hash, kept outside the database): it must still be "
        "in the chain, so that newest records deleted with a rewritten head are found"))] = None,
) -> None:
    """Recompute the hash chain. Exit 1 and name the first broken seq if any record (or a record's served-chunk
    rows) was altered. A valid chain prints its head's seq and hash: keep them for the next check's --anchor."""
    seq, _, digest = (anchor or "").partition(":")
    given = None
    if anchor is not None:
        try:
            # a seq past the column's range is no record's: refused as malformed, as seq 0 is
            given = audit.anchor(int(seq) if seq.isdigit() and int(seq) <= MAX_INT64 else 0, digest)
        except ValidationFailedError as exc:
            fail(exc.code, f"--anchor is SEQ:HASH, the head an earlier check printed: {exc.message}")

    def _do(c: Container) -> audit.ChainReport:
        with transaction(c.sessions) as s:
            report = audit.verify_chain(s, anchor=given)
            audit.append(s, audit.Read(action="audit.verify", target="audit_log", details={
                "valid": report.valid, "checked": report.checked, "first_broken_seq": report.first_broken_seq,
                "anchor_seq": given.seq if given else None,
            }), principal_id=actor_id(actor))
            return report

    report = run(data_dir, _do)
    if not report.valid:
        typer.echo(f"broken: first broken seq {report.first_broken_seq}: {report.reason}", err=True)
        raise typer.Exit(1)
    # unwrapped: a script or a person copies the head SEQ:HASH from this line for the next --anchor
    out.print(f"valid: {report.checked} records, head {report.head_seq}:{report.head_hash}", markup=False,
              highlight=False, soft_wrap=True)


@audit_app.command("export")
def audit_export(
    since: Since = None, until: Until = None, principal: PrincipalOpt = None, acting_for: ActingFor = None,
    source: SourceOpt = None, document: DocumentOpt = None, chunk: ChunkOpt = None, event: EventOpt = None,
    action: ActionOpt = None, data_dir: DataDir = None, actor: Actor = None,
    after_seq: Annotated[int, typer.Option("--after-seq", min=0, max=MAX_INT64, help="Records after this seq "
                                           "(resume an interrupted export)")] = 0,
) -> None:
    """Matching records as JSON lines on stdout, with their hashes (`> audit.jsonl`). If the database fails
    midway, the last line is `{"error": {..., "resume_after_seq": N}}` and the exit status is non-zero: run
    again with `--after-seq N` for the rest."""
    flt = _filter(principal_id=principal, acting_for=acting_for, source_id=source, document_id=document,
                  chunk_id=chunk, event=event, action=action, since=since, until=until)

    def _do(c: Container) -> int:
        with transaction(c.sessions) as s:
            audit.append(s, audit_trail.export_event(flt, after_seq), principal_id=actor_id(actor))
        n = 0
        for line in audit_trail.export_lines(c.sessions, flt=flt, after_seq=after_seq):
            sys.stdout.write(line)
            n += 1
        sys.stdout.flush()
        return n

    typer.echo(f"exported {run(data_dir, _do)} records", err=True)


@audit_app.command("show")
def audit_show(
    since: Since = None, until: Until = None, principal: PrincipalOpt = None, acting_for: ActingFor = None,
    source: SourceOpt = None, document: DocumentOpt = None, chunk: ChunkOpt = None, event: EventOpt = None,
    action: ActionOpt = None,
    after_seq: Annotated[int, typer.Option(min=0, max=MAX_INT64, help="Show records after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Records per page.")] = 50,
    as_json: AsJson = False, data_dir: DataDir = None,
) -> None:
    """A page of matching records, oldest first (the last line says how to get the next page)."""
    flt = _filter(principal_id=principal, acting_for=acting_for, source_id=source, document_id=document,
                  chunk_id=chunk, event=event, action=action, since=since, until=until)

    def _do(c: Container) -> audit_trail.Page:
        with c.sessions() as s:
            return audit_trail.page(s, flt=flt, after_seq=after_seq, limit=limit)

    result = run(data_dir, _do)
    if as_json:
        print_json({"records": result.records, "next_after_seq": result.next_after_seq})
        return
    table = Table("seq", "ts", "event", "action", "principal", "acting for", "target")
    for r in result.records:
        table.add_row(str(r["seq"]), r["ts"][:19], r["event"], r["action"] or "", r["principal_id"] or "",
                      r["acting_for"] or "", str(r["body"].get("target") or r["document_id"] or r["source_id"] or ""))
    out.print(table)
    if result.next_after_seq is not None:
        out.print(f"more: --after-seq {result.next_after_seq}", markup=False)


def _print_impact(report: Any) -> None:
    out.print(f"{report.action} {report.document_id} v{report.version} ({report.version_id}) "
              f"by {report.by}; audit seq {report.audit_seq}", markup=False)
    out.print(f"served by {len(report.served)} audit records to: {', '.join(report.principals) or 'nobody'}",
              markup=False)
    for r in report.served:
        out.print(f"  seq {r.seq} {r.ts.isoformat()} {r.principal_id}"
                  + (f" for {r.acting_for}" if r.acting_for else "") + f" ({len(r.chunk_ids)} chunks)", markup=False)


@app.command()
def retract(
    document_id: Annotated[str, typer.Argument(help="Document id.")],
    reason: Annotated[str, typer.Option(help="Why (required, recorded in the audit log).")],
    version: Annotated[int | None, typer.Option(min=1, max=MAX_INT32,
                                                help="Version number (default: the current one).")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Retract a document version: invisible to every search at once; prints the impact report."""
    from memory import retraction

    def _do(c: Container) -> Any:
        with transaction(c.sessions) as s:
            return retraction.retract_document(s, c.store, document_id=document_id, version=version, reason=reason,
                                               actor_effective=operator(actor))

    _print_impact(run(data_dir, _do))


@app.command()
def restore(
    document_id: Annotated[str, typer.Argument(help="Document id.")],
    reason: Annotated[str, typer.Option(help="Why (required, recorded in the audit log).")],
    version: Annotated[int, typer.Option(min=1, max=MAX_INT32, help="Version number to restore.")],
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Undo a retraction: the version is served again once this returns."""
    from memory import retraction

    def _do(c: Container) -> Any:
        with transaction(c.sessions) as s:
            vid = retraction.version_id_for(s, document_id=document_id, version=version)
            report = retraction.restore(s, version_id=vid, reason=reason, actor_effective=operator(actor))
        retraction.reveal(c.sessions, c.store, version_ids=[vid])  # after the commit, never before
        return report

    _print_impact(run(data_dir, _do))


@app.command()
def explain(
    chunk_id: Annotated[str, typer.Argument(help="Chunk id.")],
    principal: Annotated[str, typer.Option("--as", help="Principal whose access to explain.")],
    acting_for: Annotated[str | None, typer.Option(help="User the principal acts for.")] = None,
    as_of: Annotated[datetime | None, typer.Option(help="Decide as of this instant (ISO 8601).")] = None,
    purpose: Annotated[str | None, typer.Option(
        help="The purpose a search would state (decides the consent check).")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Would PRINCIPAL (acting for a user) see CHUNK_ID in a search for a purpose, and by which rules?"""
    from memory import explain as explain_svc
    from memory.api import presenters_audit
    from memory.clock import to_epoch

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            result = explain_svc.explain_access(s, c.store, principal_id=principal, chunk_id=chunk_id,
                                                acting_for=acting_for, as_of=to_epoch(as_of) if as_of else None,
                                                purpose=purpose)
            explain_svc.record_explain(s, result, principal_id=actor_id(actor))
            return presenters_audit.explanation(result).model_dump(mode="json")

    res = run(data_dir, _do)
    if as_json:
        print_json(res)
        return
    verdict = "visible" + (" (masked)" if res["masked"] else "") if res["visible"] else "not visible"
    out.print(f"{principal}{' for ' + acting_for if acting_for else ''}: {verdict}"
              + (f"; withheld for {res['withheld_reason']}" if res["withheld_reason"] else ""), markup=False)
    table = Table("rule", "passed", "detail")
    for ch in res["checks"]:
        table.add_row(ch["rule"], "yes" if ch["passed"] else "NO", ch["detail"])
    out.print(table)
    for note in res["notes"]:
        out.print(f"note: {note}", markup=False)
