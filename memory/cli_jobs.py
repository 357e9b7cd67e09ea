"""CLI commands for background jobs (memory.jobs): list them, cancel one. Jobs run in the API's process (started
with `POST /v1/admin/jobs`); the CLI reads and writes their rows (the runner reads a cancellation after its
current batch). The CLI acts as an operator with admin rights, recorded as `--actor`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from memory import jobs
from memory.api import presenters
from memory.bootstrap import Container
from memory.cli import Actor, DataDir, actor_id, app, fail, out, print_json, run
from memory.db import transaction

jobs_app = typer.Typer(help="Background jobs the API runs (admins).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled | "
                                               "interrupted")] = None,
    limit: Annotated[int, typer.Option(min=1, max=jobs.MAX_LIST, help="Newest first, at most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """List background jobs, newest first (a job whose process stopped is shown interrupted)."""
    if status is not None and status not in (*jobs.ACTIVE, *jobs.FINISHED):
        fail("invalid_status", f"status must be one of {', '.join((*jobs.ACTIVE, *jobs.FINISHED))}")

    def _do(c: Container) -> list[dict[str, Any]]:
        with transaction(c.sessions) as s:
            return [presenters.job(j).model_dump(mode="json")
                    for j in jobs.recent(s, stale_after_s=c.settings.job_stale_s, status=status, limit=limit)]

    listed = run(data_dir, _do)
    if as_json:
        print_json(listed)
        return
    table = Table("job", "kind", "scope", "status", "by", "created", "progress", "error")
    for j in listed:
        p = j["progress"] or {}
        done = f"{p.get('versions', 0)}/{p['versions_total']}" if "versions_total" in p else ""
        cancelling = " (cancelling)" if j["cancel_requested"] and j["status"] in jobs.ACTIVE else ""
        table.add_row(j["job_id"], j["kind"], j["scope"], j["status"] + cancelling, j["requested_by"],
                      j["created_at"][:19], done, (j["error"] or {}).get("code", ""))
    out.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Ask a queued or running job to stop after its current batch (audited)."""

    def _do(c: Container) -> str:
        with transaction(c.sessions) as s:
            return jobs.request_cancel(s, job_id, actor=actor_id(actor), acting_for=None,
                                       stale_after_s=c.settings.job_stale_s).status

    status = run(data_dir, _do)
    if status == "cancelled":
        out.print(f"cancelled {job_id} (it had not started)", markup=False)
    elif status == "interrupted":
        out.print(f"ended {job_id}: its runner was lost (interrupted); start it again", markup=False)
    else:
        out.print(f"cancel requested for {job_id}: it stops after its current batch", markup=False)
