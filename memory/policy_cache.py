"""What a search plan reads from SQL, kept per process while the policy epoch stays the same.

Every search plans from the transfer rules in force and the sources its caller's groups can read
(memory.search.plan). Those change rarely (an admin's rule, a steward's source, an ingest that raises a source's
worst label), while every search reads them. `policy_epoch` is one row that database triggers move in the
transaction of every change to `sources`, `source_read_groups` and `policy_versions`, whoever writes it
(migration 9d2e6f1a4c83). A plan reads that row first, one indexed lookup; while it holds the value the cached
reads were made under, they are what SQL holds now, and the plan uses them instead of reading them again.

Correctness does not depend on timing: the reads a miss makes come after its epoch read, so what is cached under
an epoch is at least that recent, and a change committed after them moves the epoch and empties the cache for
the next plan. Anything the cache cannot vouch for is read from SQL: no epoch row, a caller past the readable
sources' limit. A source change committed between a plan and its hits' SQL read is still caught on those rows
(memory.search), as without the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable
from typing import cast

from cachetools import LRUCache
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from memory import policy_store, readable_sources
from memory.metrics import POLICY_READS
from memory.models import PolicyEpoch
from memory.policy import TransferRules
from memory.readable_sources import ReadableSource

_E = cast(Table, PolicyEpoch.__table__)
_EPOCH = select(_E.c.n).where(_E.c.id == 1)
_MISSING = object()


class PolicyReads:
    """The plan's SQL reads (`transfer_rules`, `readable`), through a cache keyed by caller groups and source ids
    that the policy epoch validates. Thread-safe; one per process and database (memory.bootstrap.Container).
    `maxsize`: distinct (groups, source ids) scopes kept; 0 reads SQL every time."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._lock = threading.Lock()
        self._enabled = maxsize > 0
        self._epoch: int | None = None
        self._rules: TransferRules | None = None
        self._readable: LRUCache[Hashable, list[ReadableSource] | None] = LRUCache(maxsize=max(1, maxsize))

    def read(
        self, session: Session, *, groups: Collection[str], source_ids: Collection[str] | None, limit: int
    ) -> tuple[TransferRules, list[ReadableSource] | None]:
        """The rules in force now and `readable_sources.read(groups, source_ids, limit)`, from the cache when the
        epoch read in `session` is the one they were read under, else from SQL (and kept)."""
        epoch = session.execute(_EPOCH).scalar_one_or_none() if self._enabled else None
        if epoch is None:  # no epoch row (or caching off): nothing vouches for a kept read
            return policy_store.transfer_rules(session), readable_sources.read(
                session, groups=groups, source_ids=source_ids, limit=limit)
        key = (frozenset(groups), frozenset(source_ids) if source_ids is not None else None, limit)
        with self._lock:
            if epoch != self._epoch:
                self._epoch, self._rules = epoch, None
                self._readable.clear()
            rules, readable = self._rules, self._readable.get(key, _MISSING)
        if rules is not None and readable is not _MISSING:
            POLICY_READS.labels(source="cache").inc()
            return rules, cast("list[ReadableSource] | None", readable)
        POLICY_READS.labels(source="sql").inc()
        if rules is None:
            rules = policy_store.transfer_rules(session)
        if readable is _MISSING:
            readable = readable_sources.read(session, groups=groups, source_ids=source_ids, limit=limit)
        with self._lock:
            if epoch == self._epoch:  # another plan may have seen a newer epoch meanwhile: keep nothing then
                self._rules = rules
                self._readable[key] = cast("list[ReadableSource] | None", readable)
        return rules, cast("list[ReadableSource] | None", readable)
