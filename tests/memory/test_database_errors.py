"""A busy or unreachable SQL database: 503 with a stable code and Retry-After, nothing of the request kept
(memory.db_errors). The classification on driver error codes is table-tested with driver-error doubles; the
API and CLI paths run on the real databases (SQLite, and PostgreSQL in its pass)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from typer.testing import CliRunner

from memory import cli, cli_commands  # noqa: F401  (registers commands)
from memory.db import make_engine, make_sessionmaker
from memory.db_errors import retryable
from memory.errors import DatabaseBusyError, DatabaseUnavailableError

DOC = "# Leave\n\nParental leave is twelve weeks at full pay.\n"


def _sqlite(code: int) -> sqlite3.Error:
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


class _PgError(Exception):
    """A psycopg error's shape: its SQLSTATE (None when the connection itself failed)."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("x")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("exc", "expected"), [
    (OperationalError("SELECT 1", None, _sqlite(sqlite3.SQLITE_BUSY)), DatabaseBusyError),
    (OperationalError("SELECT 1", None, _sqlite(517)), DatabaseBusyError),  # SQLITE_BUSY_SNAPSHOT
    (OperationalError("SELECT 1", None, _sqlite(sqlite3.SQLITE_LOCKED)), DatabaseBusyError),
    (OperationalError("SELECT 1", None, _sqlite(sqlite3.SQLITE_CANTOPEN)), DatabaseUnavailableError),
    (OperationalError("SELECT 1", None, _sqlite(sqlite3.SQLITE_FULL)), DatabaseUnavailableError),
    (OperationalError("SELECT 1", None, _sqlite(266)), DatabaseUnavailableError),  # SQLITE_IOERR_READ
    (OperationalError("SELECT 1", None, _sqlite(sqlite3.SQLITE_ERROR)), None),  # no such table: a bug
    (IntegrityError("INSERT", None, _sqlite(sqlite3.SQLITE_CONSTRAINT)), None),
    (OperationalError("SELECT 1", None, _PgError("40P01")), DatabaseBusyError),  # deadlock_detected
    (OperationalError("SELECT 1", None, _PgError("40001")), DatabaseBusyError),  # serialization_failure
    (OperationalError("SELECT 1", None, _PgError("55P03")), DatabaseBusyError),  # lock_not_available
    (OperationalError("SELECT 1", None, _PgError("08006")), DatabaseUnavailableError),  # connection_failure
    (OperationalError("SELECT 1", None, _PgError("57P01")), DatabaseUnavailableError),  # admin_shutdown
    (OperationalError("SELECT 1", None, _PgError("53300")), DatabaseUnavailableError),  # too_many_connections
    (OperationalError("SELECT 1", None, _PgError(None)), DatabaseUnavailableError),  # connection refused
    (IntegrityError("INSERT", None, _PgError("23505")), None),  # unique_violation: not retryable as is
    (DBAPIError("SELECT 1", None, _PgError("42P01")), None),  # undefined_table
    (DBAPIError("SELECT 1", None, _PgError(None), connection_invalidated=True), DatabaseUnavailableError),
    (PoolTimeoutError("QueuePool limit reached"), DatabaseBusyError),
    (ValueError("not a database error"), None),
])
def test_retryable_database_failures_by_driver_code(exc: BaseException, expected: type | None) -> None:
    mapped = retryable(exc)
    if expected is None:
        assert mapped is None
        return
    assert mapped is not None
    assert type(mapped) is expected and mapped.status == 503 and mapped.retry_after_s
    assert mapped.code == ("database_busy" if expected is DatabaseBusyError else "database_unavailable")
    assert "SELECT" not in mapped.message  # the statement is never echoed to the caller


def test_the_lock_timeout_setting_reaches_each_backend(db_url: str) -> None:
    engine = make_engine(db_url, lock_timeout_s=0.25)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 250
            else:
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar_one() == "250ms"
    finally:
        engine.dispose()


@contextmanager
def _lock_held(db_url: str) -> Iterator[None]:
    """Another client holds what every search must lock: SQLite's write lock (every transaction of the service
    begins IMMEDIATE), or on PostgreSQL the audit chain's head row, which every search's audit append locks."""
    if make_url(db_url).get_backend_name() == "sqlite":
        con = sqlite3.connect(str(make_url(db_url).database), isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE audit_head IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                holder.rollback()
    finally:
        engine.dispose()


@pytest.fixture
def short_wait_api(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    from tests.conftest import make_api, make_container

    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier, db_lock_timeout_s=0.3)
    try:
        yield from make_api(c)
    finally:
        c.close()


def _audit_head(api: Any) -> int:
    with api.container.sessions() as s:
        return int(s.execute(text("SELECT seq FROM audit_head WHERE id = 1")).scalar_one())


def test_a_search_that_waits_too_long_for_a_lock_is_503_database_busy_and_keeps_nothing(
    short_wait_api: Any, db_url: str
) -> None:
    api = short_wait_api
    reader = api.principal("r", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "leave.md", DOC).status_code == 201
    before = _audit_head(api)
    with _lock_held(db_url):
        r = api.search(reader, "parental leave")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "database_busy" and r.headers["Retry-After"] == "1"
    assert _audit_head(api) == before  # no audit record, no half-written read
    ok = api.search(reader, "parental leave")  # the same request, retried once the lock is gone
    assert ok.status_code == 200 and ok.json()["hits"]
    assert _audit_head(api) == before + 1


def _unreachable(db_url: str, tmp_path: Path) -> str:
    if make_url(db_url).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / 'gone' / 'memory.sqlite3'}"  # its directory does not exist
    return make_url(db_url).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)  # nothing listens


def test_an_unreachable_database_is_503_database_unavailable_and_not_ready(
    api: Any, db_url: str, tmp_path: Path
) -> None:
    reader = api.principal("r", groups=["g"])
    c = api.container
    gone = create_engine(_unreachable(db_url, tmp_path))  # not make_engine: that would create SQLite's directory
    good_engine, good_sessions = c.engine, c.sessions
    c.__dict__["engine"], c.__dict__["sessions"] = gone, make_sessionmaker(gone)
    try:
        r = api.search(reader, "parental leave")
        ready = api.client.get("/readyz")
    finally:
        c.__dict__["engine"], c.__dict__["sessions"] = good_engine, good_sessions
        gone.dispose()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "database_unavailable" and r.headers["Retry-After"] == "5"
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
    assert api.search(reader, "parental leave").status_code == 200


def test_the_cli_reports_an_unreachable_database_in_one_line(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _unreachable(db_url, tmp_path)
    if url.startswith("sqlite"):  # the CLI creates the SQLite file's directory: make it a file instead
        (tmp_path / "gone").write_text("not a directory")
    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMORY_DATABASE_URL", url)
    monkeypatch.setenv("MEMORY_ENV", "test")
    r = CliRunner().invoke(cli.app, ["sources", "list"])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: database_unavailable: "), r.output


def test_concurrent_searches_queue_on_the_lock_within_the_timeout(api: Any, db_url: str) -> None:
    """The default wait (60 s) outlasts a short hold: a search that meets a held lock waits and is served."""
    reader = api.principal("r", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "leave.md", DOC).status_code == 201
    released = threading.Event()
    with _lock_held(db_url):
        timer = threading.Timer(0.3, released.set)
        timer.start()
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(api.search(reader, "parental leave")))
        t.start()
        released.wait(5)
    t.join(30)
    assert result and result[0].status_code == 200
