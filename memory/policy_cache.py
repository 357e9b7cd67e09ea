"""What a search plan reads from SQL, kept per process while the policy epoch's token stays the same.

Every search plans from the transfer rules in force and the sources its caller's groups can read
(memory.search.plan). Those change rarely (an admin's rule, a steward's source, an ingest that raises a source's
worst label), while every search reads them. `policy_epoch` is one row that database triggers give a new random
token in the transaction of every change to `sources`, `source_read_groups` and `policy_versions`, whoever
writes it (migration 9d2e6f1a4c83). A plan reads that row first, one primary-key lookup; while it holds the
token the cached reads were made under, they are what SQL holds now, and the plan uses them instead of reading
them again.

Correctness does not depend on timing: the reads a miss makes come after its token read, so what is cached under
a token is at least that recent, and a change committed after them replaces the token and empties the cache for
the next plan. A token is random, never a count that history rolled back (a failover, a point-in-time recovery)
could bring back with another state. Anything the cache cannot vouch for is read from SQL and not kept: no epoch
row; triggers missing at the first plan (a SQLite table rebuild drops its table's triggers); a transaction that
has itself written (on PostgreSQL its own change is not yet in the token: the triggers fire at commit); a search
limited to `source_ids` (the request names them: keyed on them, a caller could fill the cache); a caller past
the readable sources' limit is kept as such (`None`). A source change committed between a plan and its hits'
SQL read is still caught on those rows (memory.search), as without the cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import cast

from cachetools import LRUCache
from sqlalchemy import Select, Table, func, select, text, true
from sqlalchemy.orm import Session

from memory import policy_store, readable_sources
from memory.metrics import POLICY_READS
from memory.models import PolicyEpoch
from memory.policy import TransferRules
from memory.readable_sources import ReadableSource

log = logging.getLogger(__name__)

_E = cast(Table, PolicyEpoch.__table__)
GOVERNED_TABLES = ("sources", "source_read_groups", "policy_versions")
# The triggers migration 9d2e6f1a4c83 creates, by dialect.
EXPECTED_TRIGGERS = {
    "sqlite": frozenset(f"policy_epoch_{t}_{op}" for t in GOVERNED_TABLES for op in ("insert", "update", "delete")),
    "postgresql": frozenset(n for t in GOVERNED_TABLES for n in (f"policy_epoch_{t}", f"policy_epoch_{t}_truncate")),
}
_TRIGGERS_SQL = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
    # Enabled triggers on this schema's tables (an operator may disable one: then nothing is kept).
    "postgresql": "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                  "JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE n.nspname = current_schema() AND t.tgenabled <> 'D'",
}
_MISSING = object()


def epoch_triggers_missing(session: Session) -> frozenset[str]:
    """The epoch triggers this database lacks (all of them on an unknown dialect)."""
    dialect = session.get_bind().dialect.name
    expected = EXPECTED_TRIGGERS.get(dialect)
    if expected is None:
        return frozenset({"*"})
    return expected - {str(name) for name in session.execute(text(_TRIGGERS_SQL[dialect])).scalars()}


class PolicyReads:
    """The plan's SQL reads (`read`: transfer rules, readable sources), through a cache keyed by the caller's
    groups (and the limit) that the policy epoch's token validates. Thread-safe; one per process and database
    (memory.bootstrap.Container). `maxsize`: distinct groups kept; 0 reads SQL every time. `postgresql`: the
    token read also asks whether the transaction has written. The first plan checks that the epoch triggers
    exist, and switches the cache off for good if one is missing."""

    def __init__(self, maxsize: int = 4096, *, postgresql: bool = False) -> None:
        self._lock = threading.Lock()
        self._enabled, self._verified = maxsize > 0, False
        self._token: str | None = None
        self._rules: TransferRules | None = None
        self._readable: LRUCache[tuple[frozenset[str], int], list[ReadableSource] | None] = LRUCache(
            maxsize=max(1, maxsize))
        clean = func.pg_current_xact_id_if_assigned().is_(None) if postgresql else true()
        self._epoch: Select[str, bool] = select(_E.c.token, clean).where(_E.c.id == 1)

    def _verify(self, session: Session) -> None:
        """Once, at the first plan (in its transaction): switch the cache off if the epoch triggers are missing."""
        missing = epoch_triggers_missing(session)
        if missing:
            log.error("policy_cache.off reason=epoch_triggers_missing missing=%s", ",".join(sorted(missing)))
            self._enabled = False
        self._verified = True

    @property
    def enabled(self) -> bool:
        return self._enabled

    def read(
        self, session: Session, *, groups: Collection[str], source_ids: Collection[str] | None, limit: int
    ) -> tuple[TransferRules, list[ReadableSource] | None]:
        """The rules in force now and `readable_sources.read(groups, source_ids, limit)`, from the cache when the
        token read in `session` is the one they were read under, else from SQL (kept when nothing forbids)."""
        if self._enabled and not self._verified:
            self._verify(session)
        row = session.execute(self._epoch).one_or_none() if self._enabled and source_ids is None else None
        if row is None or not row[1]:  # nothing vouches for a kept read, or this transaction wrote
            POLICY_READS.labels(source="sql").inc()
            return policy_store.transfer_rules(session), readable_sources.read(
                session, groups=groups, source_ids=source_ids, limit=limit)
        token, key = str(row[0]), (frozenset(groups), limit)
        with self._lock:
            if token != self._token:
                self._token, self._rules = token, None
                self._readable.clear()
            rules, readable = self._rules, self._readable.get(key, _MISSING)
        if rules is not None and readable is not _MISSING:
            POLICY_READS.labels(source="cache").inc()
            return rules, cast("list[ReadableSource] | None", readable)
        POLICY_READS.labels(source="sql").inc()
        if rules is None:
            rules = policy_store.transfer_rules(session)
        if readable is _MISSING:
            readable = readable_sources.read(session, groups=groups, limit=limit)
        with self._lock:
            if token == self._token:  # another plan may have seen another token meanwhile: keep nothing then
                self._rules = rules
                self._readable[key] = cast("list[ReadableSource] | None", readable)
        return rules, cast("list[ReadableSource] | None", readable)
