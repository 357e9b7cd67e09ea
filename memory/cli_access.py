"""CLI commands for the recourse path: list and decide access requests (stewards; the CLI acts as an
operator with admin rights, recorded as `--actor`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from memory import access_requests
from memory.bootstrap import Container
from memory.cli import Actor, DataDir, app, csv_list, out, run
from memory.cli_audit import operator
from memory.db import transaction

access_app = typer.Typer(help="Access requests filed when hits were withheld (stewards).", no_args_is_help=True)
app.add_typer(access_app, name="access")


@access_app.command("list")
def access_list(
    status: Annotated[str | None, typer.Option(help="open | granted | refused")] = "open",
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """List access requests."""

    def _do(c: Container) -> list[tuple[str, ...]]:
        with c.sessions() as s:
            return [
                (r.id, r.source_id, r.requester_id, r.acting_for or "", r.reason, r.status, r.justification[:60])
                for r in access_requests.list_requests(s, who=operator(actor), status=status, source_id=source)
            ]

    table = Table("id", "source", "requester", "acting for", "reason", "status", "justification")
    for row in run(data_dir, _do):
        table.add_row(*row)
    out.print(table)


@access_app.command("decide")
def access_decide(
    request_id: Annotated[str, typer.Argument(help="Request id.")],
    decision: Annotated[str, typer.Option(help="grant | refuse")],
    note: Annotated[str, typer.Option(help="Decision note (required to refuse).")] = "",
    add_groups: Annotated[str, typer.Option(help="Grant: comma-separated source read groups to give the user.")] = "",
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Grant (optionally adding read groups to the requester) or refuse a request; audited."""

    def _do(c: Container) -> str:
        with transaction(c.sessions) as s:
            grant = access_requests.Grant(add_groups=csv_list(add_groups)) if decision == "grant" else None
            req = access_requests.decide(s, c.store, request_id=request_id, who=operator(actor), decision=decision,
                                         note=note, grant=grant)
            return req.status

    out.print(f"request {request_id}: {run(data_dir, _do)}", markup=False)
