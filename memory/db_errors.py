"""Which SQL database failures are the caller's to retry, as service errors with stable codes.

A request that meets a busy or unreachable database is not a bug: it gets 503 with `database_busy` (a lock
wait ran past `db_lock_timeout_s`, a deadlock or a serialization conflict: its transaction was rolled back,
nothing of it is kept, the same request may simply be sent again) or `database_unavailable` (the server
cannot be reached, refuses connections, is shutting down or out of resources; the SQLite file cannot be
opened or written), each with a Retry-After. Decided on the drivers' error codes (PostgreSQL SQLSTATE,
SQLite's extended result code), never on message text. Anything else (a constraint, a syntax error, a
missing table) stays an internal error: retrying it would fail again.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from memory.errors import DatabaseBusyError, DatabaseUnavailableError, ServiceError

# PostgreSQL SQLSTATE: the transaction lost to another one; sending it again can succeed.
_PG_BUSY = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57014",  # query_canceled (statement_timeout)
})
# Classes and codes that say the server cannot serve now: connection exceptions, insufficient resources,
# operator intervention (shutdown, cannot connect now), system errors.
_PG_UNAVAILABLE_CLASSES = ("08", "53", "58")
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "57P05"})

_SQLITE_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_SQLITE_UNAVAILABLE = frozenset({
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL,
})

BUSY_MESSAGE = "the database is busy (a lock wait timed out, or a conflicting transaction won); retry"
UNAVAILABLE_MESSAGE = "the database is unavailable; retry later"


def retryable(exc: BaseException) -> ServiceError | None:
    """The service error a database failure is reported as, or None when it is not one to retry."""
    if isinstance(exc, PoolTimeoutError):  # every pooled connection is in use past the pool's timeout
        return DatabaseBusyError(BUSY_MESSAGE, details={"reason": "pool_exhausted"})
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:  # the connection broke mid-statement (server gone, network)
        return DatabaseUnavailableError(UNAVAILABLE_MESSAGE, details={"reason": "connection_lost"})
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        primary = getattr(orig, "sqlite_errorcode", None)
        primary = primary & 0xFF if isinstance(primary, int) else None  # extended code -> primary result code
        if primary in _SQLITE_BUSY:
            return DatabaseBusyError(BUSY_MESSAGE, details={"reason": "locked"})
        if primary in _SQLITE_UNAVAILABLE:
            return DatabaseUnavailableError(UNAVAILABLE_MESSAGE, details={"reason": "storage"})
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _PG_BUSY:
        return DatabaseBusyError(BUSY_MESSAGE, details={"reason": "conflict" if state[:2] == "40" else "timeout"})
    if state in _PG_UNAVAILABLE or (state and state[:2] in _PG_UNAVAILABLE_CLASSES):
        return DatabaseUnavailableError(UNAVAILABLE_MESSAGE, details={"reason": "server"})
    if state is None and isinstance(exc, OperationalError):  # no SQLSTATE: the connection failed
        return DatabaseUnavailableError(UNAVAILABLE_MESSAGE, details={"reason": "connection"})
    return None
