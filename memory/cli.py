"""The `memory` command for people: serve, principals, sources, ingest, search, verify, audit, usage.

A thin edge: parse options, call one service function inside one transaction, print. Errors print one
line `error: <code>: <message>` and exit 2.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from classifiers.errors import ClassifierError
from ingest.errors import IngestError
from memory import db_errors
from memory.bootstrap import Container
from memory.db import transaction
from memory.errors import ServiceError
from memory.settings import Settings

try:  # typer carries its own copy of click since 0.2x (typer.BadParameter is one of these); older ones used click's
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment,no-redef]

app = typer.Typer(help="Governed enterprise memory.", no_args_is_help=True, pretty_exceptions_enable=False)
principals_app = typer.Typer(help="Principals and API keys (admin).", no_args_is_help=True)
sources_app = typer.Typer(help="Sources (stewards).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
policy_app = typer.Typer(help="Admin policy: jurisdiction rules, label map.", no_args_is_help=True)
app.add_typer(principals_app, name="principals")
app.add_typer(sources_app, name="sources")
app.add_typer(db_app, name="db")
app.add_typer(policy_app, name="policy")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Overrides MEMORY_DATA_DIR.", show_default=False)]
Actor = Annotated[str | None, typer.Option("--actor", help="Principal id recorded in the audit log "
                                           "(default: MEMORY_CLI_ACTOR or cli:<user>).")]


def _settings(data_dir: Path | None) -> Settings:
    try:
        return Settings(data_dir=data_dir) if data_dir else Settings()  # type: ignore[call-arg]
    except ValidationError as exc:  # one line naming each bad setting's variable; never the value (secrets)
        fail("invalid_settings", "; ".join(
            (f"MEMORY_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "") + e["msg"]
            for e in exc.errors()
        ))
        raise
    except Exception as exc:
        fail("invalid_settings", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise


def fail(code: str, message: str) -> None:
    err.print(f"error: {code}: {message}", markup=False, highlight=False, soft_wrap=True)  # one line, unwrapped
    raise typer.Exit(2)


@contextmanager
def container_for(data_dir: Path | None, **overrides: Any) -> Iterator[Container]:
    c = Container(_settings(data_dir), **overrides)
    try:
        c.prepare_database()
        yield c
    except ServiceError as exc:
        fail(exc.code, exc.message)
    except (ClassifierError, IngestError) as exc:
        fail(exc.code, str(exc))
    except (DBAPIError, PoolTimeoutError) as exc:
        mapped = db_errors.retryable(exc)
        if mapped is None:
            raise
        fail(mapped.code, mapped.message)
    finally:
        c.close()


def run(data_dir: Path | None, fn: Callable[[Container], T]) -> T:
    with container_for(data_dir) as c:
        return fn(c)


def actor_id(actor: str | None) -> str:
    return actor or os.environ.get("MEMORY_CLI_ACTOR") or f"cli:{getpass.getuser()}"


def csv_list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def print_ids_table(table: Table, ids: list[str]) -> None:
    """Print a table whose first column holds ids another command takes, never cut to `0b1f…`: piped, at its
    natural width, every cell whole; on a terminal, the ids whole and the other columns giving way."""
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(i) for i in ids), default=0)
    if out.is_terminal:
        out.print(table)
    else:  # no terminal to fit: a console as wide as the table, whose cells need not give way
        Console(file=out.file, width=100_000, color_system=None).print(table)


@app.command()
def keygen() -> None:
    """Print a fresh random API key in the accepted format (e.g. for MEMORY_BOOTSTRAP_ADMIN_KEY)."""
    out.print(f"gm_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}", markup=False, highlight=False)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply migrations up to head (also runs at every start)."""
    run(data_dir, lambda c: None)
    out.print("database at head")


@db_app.command("check")
def db_check(data_dir: DataDir = None) -> None:
    """Fail if the models and the migrations differ (alembic check)."""
    from memory import migrate

    run(data_dir, lambda c: migrate.check(c.engine))
    out.print("no drift")


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address (MEMORY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MEMORY_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (server backends only).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Load the shipped demo corpus if the store is empty.")] = False,
) -> None:
    """Run the API (embedded default: SQLite + Qdrant Edge under the data dir)."""
    import uvicorn

    from memory import logging_setup

    settings = _settings(data_dir)
    updates: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items()
                               if v is not None}  # --port 0 is a value to refuse, not "unset"
    if demo:
        updates["seed_demo"] = True
    try:  # validated as the settings are (model_copy would not): --port 70000 is refused here, not by uvicorn
        settings = Settings.model_validate({**settings.model_dump(), **updates})
    except ValidationError as exc:
        fail("invalid_arguments", "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                            for e in exc.errors()))
    if settings.workers > 1 and (settings.is_embedded_vectors or settings.sqlalchemy_url.startswith("sqlite")):
        fail("embedded_single_process", "the embedded store (Qdrant Edge + SQLite) is owned by one process; "
             "use --workers 1, or set MEMORY_DATABASE_URL (PostgreSQL) and MEMORY_QDRANT_URL for more workers")
    from memory.errors import ValidationFailedError
    from memory.rate_limits import RateLimits

    try:  # the storage's URI and credentials, checked before the server starts (the API checks its own at startup)
        RateLimits({}, storage_uri=settings.rate_limit_storage).verify()
    except ValidationFailedError as exc:
        fail(exc.code, exc.message)
    if "FORWARDED_ALLOW_IPS" in os.environ and "MEMORY_FORWARDED_ALLOW_IPS" not in os.environ:
        # uvicorn's own variable: a deployment that relied on it would silently lose its proxy's client addresses.
        fail("invalid_settings", "FORWARDED_ALLOW_IPS is not read by memory serve: name the trusted proxies in "
             "MEMORY_FORWARDED_ALLOW_IPS")
    logging_setup.configure(settings.log_level, settings.log_json, access_log=settings.access_log)
    os.environ.update({f"MEMORY_{k.upper()}": str(v) for k, v in updates.items()})
    if data_dir:
        os.environ["MEMORY_DATA_DIR"] = str(data_dir)
    from memory.api.serving import uvicorn_options

    if settings.workers > 1:
        uvicorn.run("memory.api.asgi:app", workers=settings.workers, factory=False, **uvicorn_options(settings))
    else:
        from memory.api.app import create_app

        # The store is opened here, not first in the server's startup, so that a store another process holds is
        # one `store_locked` line rather than uvicorn's startup traceback; the app then uses this open store.
        container = Container(settings)
        try:
            _ = container.store
        except ServiceError as exc:
            container.close()
            fail(exc.code, exc.message)
        uvicorn.run(create_app(settings, container=container), **uvicorn_options(settings))


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the demo store lives.")] = Path(".memory-demo"),
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Load the demo corpus and exit.")] = False,
) -> None:
    """Load the shipped demo corpus (principals, sources, documents) and serve the API on it."""
    from memory.demo import DEMO_ADMIN_KEY, seed_demo

    os.environ.setdefault("MEMORY_BOOTSTRAP_ADMIN_KEY", DEMO_ADMIN_KEY)
    with container_for(data_dir) as c:
        summary = seed_demo(c)
    out.print(summary.render(port), markup=False, highlight=False, soft_wrap=True)
    if not no_serve:
        serve(data_dir=data_dir, host=None, port=port, workers=1, demo=False)


# ----------------------------------------------------------------------------------------------- principals


@principals_app.command("create")
def principals_create(
    principal_id: Annotated[str, typer.Argument(help="Principal id.")],
    kind: Annotated[str, typer.Option(help="user | service | agent")] = "user",
    groups: Annotated[str, typer.Option(help="Comma-separated groups.")] = "",
    clearance: Annotated[str, typer.Option(help="public | internal | confidential | restricted")] = "internal",
    jurisdiction: Annotated[str, typer.Option(help="Where the principal is, e.g. EU, US, UK, IN.")] = "EU",
    roles: Annotated[str, typer.Option(help="Comma-separated: reader, steward, auditor, admin.")] = "reader",
    may_act_for: Annotated[str, typer.Option(help="Comma-separated user ids this agent may act for.")] = "",
    may_act_for_any: Annotated[bool, typer.Option(help="Agent may act for any user.")] = False,
    expires: Annotated[datetime | None, typer.Option(help="Expiry of the first key (ISO 8601).")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Create a principal and print its API key (shown once)."""
    from memory import principals

    def _do(c: Container) -> str:
        with transaction(c.sessions) as s:
            spec = principals.NewPrincipal(
                id=principal_id, kind=kind, groups=csv_list(groups), clearance=clearance, jurisdiction=jurisdiction,
                roles=csv_list(roles) or ("reader",), may_act_for=csv_list(may_act_for),
                may_act_for_any=may_act_for_any,
            )
            principals.create_principal(s, spec=spec, actor=actor_id(actor))
            return principals.issue_key(s, principal_id=principal_id, actor=actor_id(actor), expires_at=expires).token

    token = run(data_dir, _do)
    out.print(f"created {principal_id}; API key (shown once):", markup=False)
    out.print(token, markup=False, highlight=False)


@principals_app.command("list")
def principals_list(data_dir: DataDir = None) -> None:
    """List principals."""
    from memory import principals
    from memory.api import presenters

    def _do(c: Container) -> list[dict[str, Any]]:
        with c.sessions() as s:
            return [presenters.principal(p).model_dump(mode="json") for p in principals.list_principals(s)]

    rows = run(data_dir, _do)
    table = Table("id", "kind", "groups", "clearance", "jurisdiction", "roles", "active")
    for p in rows:
        table.add_row(p["id"], p["kind"], ",".join(p["groups"]), p["clearance"], p["jurisdiction"],
                      ",".join(p["roles"]), str(p["active"]))
    print_ids_table(table, [p["id"] for p in rows])


@principals_app.command("update")
def principals_update(
    principal_id: Annotated[str, typer.Argument(help="Principal id.")],
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Reactivate or deactivate.",
                                                show_default=False)] = None,
    groups: Annotated[str | None, typer.Option(help="Comma-separated groups (replaces; '' = none).")] = None,
    clearance: Annotated[str | None, typer.Option(help="public | internal | confidential | restricted")] = None,
    roles: Annotated[str | None, typer.Option(help="Comma-separated roles (replaces; '' = none).")] = None,
    may_act_for: Annotated[str | None, typer.Option(
        help="Comma-separated user ids this agent/service may act for (replaces; '' = none).")] = None,
    may_act_for_any: Annotated[bool | None, typer.Option(
        "--may-act-for-any/--no-may-act-for-any", help="Agent/service may act for any user.",
        show_default=False)] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Change a principal: active, groups, clearance, roles, delegations (each change audited; roles and
    delegations apply from its next request)."""
    from memory import principal_changes
    from memory.api import presenters

    change = principal_changes.PrincipalChange(
        active=active, groups=None if groups is None else csv_list(groups), clearance=clearance,
        roles=None if roles is None else csv_list(roles),
        may_act_for=None if may_act_for is None else csv_list(may_act_for), may_act_for_any=may_act_for_any,
    )
    if change == principal_changes.PrincipalChange():
        fail("nothing_to_change", "give at least one option to change (see --help)")

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            p = principal_changes.update_principal(s, principal_id=principal_id, change=change, actor=actor_id(actor))
            return presenters.principal(p).model_dump(mode="json")

    print_json(run(data_dir, _do))


@principals_app.command("issue-key")
def principals_issue_key(
    principal_id: str,
    expires: Annotated[datetime | None, typer.Option(help="Expiry (ISO 8601).")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Issue another API key for a principal (key rotation)."""
    from memory import principals

    def _do(c: Container) -> str:
        with transaction(c.sessions) as s:
            return principals.issue_key(s, principal_id=principal_id, actor=actor_id(actor), expires_at=expires).token

    out.print(run(data_dir, _do), markup=False, highlight=False)


@principals_app.command("revoke-key")
def principals_revoke_key(key_id: str, data_dir: DataDir = None, actor: Actor = None) -> None:
    """Revoke an API key by its id (the part after gm_)."""
    from memory import principals

    def _do(c: Container) -> None:
        with transaction(c.sessions) as s:
            principals.revoke_key(s, key_id=key_id, actor=actor_id(actor))

    run(data_dir, _do)
    out.print(f"revoked {key_id}")


def main() -> None:
    """The `memory` entry point: run the command; every failure, a usage error included, ends as one line."""
    # registers sources/ingest/search/... and verify/audit/retract/restore/explain commands
    from memory import cli_access, cli_audit, cli_commands, cli_documents, cli_jobs  # noqa: F401

    try:
        # not standalone: click would print its usage box for a bad argument and typer turns Ctrl-C into a
        # silent exit 130; both are handled below as one line. A closed pipe still exits 1 silently (typer).
        rc = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `memory` or `memory audit` alone: the help, as before
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except UsageError as exc:
        err.print(usage_error_line(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        interrupted()
    except ServiceError as exc:
        err.print(f"error: {exc.code}: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("MEMORY_CLI_TRACEBACK") == "1":
            raise
        err.print(unexpected_error_line(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    if rc == INTERRUPTED:  # typer's answer to a KeyboardInterrupt in a command
        interrupted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)


INTERRUPTED = 130


def interrupted() -> None:
    err.print("error: interrupted: stopped by the user (Ctrl-C)", markup=False, highlight=False, soft_wrap=True)
    sys.exit(INTERRUPTED)


def usage_error_line(exc: UsageError) -> str:
    """One line for a bad command line (missing or unknown option, a value of the wrong type or range), with
    the command whose --help tells more."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
    return f"error: invalid_arguments: {message}{where}"


def unexpected_error_line(exc: BaseException) -> str:
    """One line for an exception no command maps to an error code: its type and where it was raised, never its
    message (written by whatever raised it: a driver quoting values, a parser quoting a document), which a
    terminal's scrollback, a cron mail or a CI log would keep."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (f"error: internal_error: unexpected {type(exc).__name__}{where} (its message is not shown, it may quote "
            "stored data; MEMORY_CLI_TRACEBACK=1 shows the whole traceback)")


if __name__ == "__main__":  # python -m memory.cli, as the `memory` script
    # through the imported module: the commands register on memory.cli.app, not on this __main__ copy's
    from memory.cli import main as _main

    _main()
