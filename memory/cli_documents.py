"""CLI commands for a source's documents: `memory documents list` and `memory documents versions` (the CLI acts
as an operator with admin rights, recorded as `--actor`; each read is audited as its API twin is)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from memory import document_listing, documents
from memory.api import presenters
from memory.bootstrap import Container
from memory.cli import Actor, DataDir, app, fail, out, print_json, run
from memory.cli_audit import operator
from memory.db import transaction

documents_app = typer.Typer(help="A source's documents and their versions (stewards, auditors).",
                            no_args_is_help=True)
app.add_typer(documents_app, name="documents")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@documents_app.command("list")
def documents_list(
    source_id: Annotated[str, typer.Argument(help="Source id.")],
    limit: Annotated[int, typer.Option(min=1, max=document_listing.MAX_LIMIT, help="Documents per page.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only external keys starting with this (literally).")] = None,
    state: Annotated[str | None, typer.Option(help="active | retracted | none")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """List a source's documents by external key: state, label, personal data, staleness, current version."""
    if state is not None and state not in document_listing.STATES:
        fail("invalid_state", f"state must be one of {', '.join(document_listing.STATES)}")

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            page = document_listing.list_for(s, who=operator(actor), source_id=source_id, limit=limit,
                                             cursor=cursor, key_prefix=prefix, state=state)  # type: ignore[arg-type]
            return presenters.document_page(page).model_dump(mode="json")

    listed = run(data_dir, _do)
    if as_json:
        print_json(listed)
        return
    table = Table("document", "external key", "state", "label", "personal", "stale", "version", "chunks",
                  "ingested")
    for d in listed["documents"]:
        cur = d["current"] or {}
        table.add_row(d["document_id"], d["external_key"], d["state"], d["label"] or "",
                      "yes" if d["personal"] else "", "yes" if d["stale"] else "", str(cur.get("version", "")),
                      str(cur.get("chunk_count", "")), str(cur.get("ingested_at", ""))[:19])
    out.print(table)
    if listed["next_cursor"]:
        out.print(f"next page: --cursor {listed['next_cursor']}", markup=False, soft_wrap=True)


@documents_app.command("versions")
def documents_versions(
    document_id: Annotated[str, typer.Argument(help="Document id.")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """A document's version history with provenance (hashes, validity, pipeline, retraction)."""

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            doc, rows = documents.version_history(s, who=operator(actor), document_id=document_id)
            return {"document_id": doc.id, "source_id": doc.source_id, "external_key": doc.external_key,
                    "versions": [presenters.version(v).model_dump(mode="json") for v in rows]}

    listed = run(data_dir, _do)
    if as_json:
        print_json(listed)
        return
    out.print(f"{listed['document_id']} {listed['external_key']} (source {listed['source_id']})", markup=False,
              soft_wrap=True)
    table = Table("version", "status", "sha256", "chunks", "ingested", "by", "retracted", "pipeline")
    for v in listed["versions"]:
        table.add_row(str(v["version"]), v["status"], v["sha256"][:16], str(v["chunk_count"]),
                      str(v["ingested_at"])[:19], v["ingested_by"],
                      (str(v["retracted_at"])[:19] + f" ({v['retraction_reason']})") if v["retracted_at"] else "",
                      v["pipeline"]["pipeline"])
    out.print(table)
