"""CLI commands for the recourse path: list and decide access requests (stewards and admins; the CLI acts
as an operator with admin rights, recorded as `--actor`, so it may also raise clearance or set a transfer
rule when granting)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from memory import access_grants, access_requests
from memory.bootstrap import Container
from memory.cli import Actor, DataDir, app, csv_list, fail, out, print_ids_table, print_json, run
from memory.cli_audit import operator
from memory.db import transaction

access_app = typer.Typer(help="Access requests filed when hits were withheld (stewards).", no_args_is_help=True)
app.add_typer(access_app, name="access")


@access_app.command("list")
def access_list(
    status: Annotated[str | None, typer.Option(help="open | escalated | granted | refused")] = "open",
    source: Annotated[str | None, typer.Option(help="Only this source (source_not_found if there is none).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /v1/access-requests).")] = False,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """List access requests (their whole ids: `access decide` takes one)."""
    from memory import sources
    from memory.api import presenters_audit

    def _do(c: Container) -> list[dict[str, Any]]:
        with c.sessions() as s:
            if source is not None:  # as `documents list`: a mistyped id is an error, not an empty list
                sources.get_visible(s, who=operator(actor), source_id=source)
            return [presenters_audit.access_request(r).model_dump(mode="json")
                    for r in access_requests.list_requests(s, who=operator(actor), status=status, source_id=source)]

    rows = run(data_dir, _do)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "source", "requester", "acting for", "reason", "status", "justification")
    for r in rows:
        table.add_row(r["id"], r["source_id"], r["requester_id"], r["acting_for"] or "",
                      r["reason"] + (f" ({r['purpose']})" if r["purpose"] else ""), r["status"],
                      r["justification"][:60])
    print_ids_table(table, [r["id"] for r in rows])  # piped or narrow, still the id `access decide` takes


@access_app.command("decide")
def access_decide(
    request_id: Annotated[str, typer.Argument(help="Request id.")],
    decision: Annotated[str, typer.Option(help="grant | refuse | escalate")],
    note: Annotated[str, typer.Option(help="Decision note (required to refuse or escalate).")] = "",
    add_groups: Annotated[str, typer.Option(help="Grant: comma-separated source read groups to give the user.")] = "",
    add_read_groups: Annotated[str, typer.Option(help="Grant: comma-separated groups to add to the source.")] = "",
    clearance: Annotated[str | None, typer.Option(
        help="Grant a clearance request: raise the user's clearance to this level (global, admin).")] = None,
    transfer_rule: Annotated[str | None, typer.Option(
        help="Grant a jurisdiction request: allow | allow_masked | deny_personal for (source jurisdiction -> "
        "caller jurisdiction), as a new rules version (admin).")] = None,
    caller_jurisdiction: Annotated[str | None, typer.Option(
        help="Caller side of --transfer-rule (default: the user's jurisdiction).")] = None,
    add_consent_purpose: Annotated[str | None, typer.Option(
        help="Grant a consent request: record consent to this purpose on the source (its steward).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Grant (groups, clearance, a transfer rule or a consent purpose), refuse or escalate a request; audited. A
    grant reports whether the withheld reason is now resolved."""
    if caller_jurisdiction is not None and transfer_rule is None:  # it would be dropped, the request still closed
        fail("invalid_arguments", "--caller-jurisdiction is the caller side of --transfer-rule: give both")

    def _do(c: Container) -> dict[str, Any]:
        grant = access_grants.Grant(
            add_groups=csv_list(add_groups), add_read_groups=csv_list(add_read_groups), clearance=clearance,
            transfer_rule=access_grants.TransferGrant(rule=transfer_rule, caller_jurisdiction=caller_jurisdiction)
            if transfer_rule is not None else None, add_consent_purpose=add_consent_purpose,
        )
        with transaction(c.sessions) as s:
            d = access_requests.decide(s, c.store, request_id=request_id, who=operator(actor), decision=decision,
                                       note=note, grant=grant)
            result = {"id": d.request.id, "status": d.request.status, "changes": d.changes,
                      "resolution": asdict(d.resolution) if d.resolution else None}
        d.publish(c.sessions, c.store)  # after the commit
        return result

    result = run(data_dir, _do)
    if as_json:
        print_json(result)
        return
    out.print(f"request {request_id}: {result['status']}", markup=False)
    res = result["resolution"]
    if res is not None:
        state = {True: "resolved", False: "NOT resolved", None: "unknown"}[res["resolved"]]
        out.print(f"{res['reason']}: {state} ({res['detail']})", markup=False)
        for line in res["notes"]:
            out.print(f"note: {line}", markup=False)
