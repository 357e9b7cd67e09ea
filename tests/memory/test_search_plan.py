"""The search's plan (memory.search.plan): the API reads the policy in the transaction that authenticates the
caller and commits it, so no transaction is open while the query embeds and the vectors are searched (on
SQLite, no write lock); the search then runs under exactly that plan. Real SQL (SQLite and PostgreSQL) +
Qdrant Edge."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from memory import search as search_svc
from memory.principals import get_principal, resolve_effective

DOC = "# Leave\n\nParental leave is twelve weeks at full pay.\n"


def _write_lock_free(db: Path) -> bool:
    con = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def _no_open_transaction(url: str) -> Callable[[], bool]:
    """A check, from another connection, that no transaction of the service is open: on SQLite, that the write
    lock can be taken; on PostgreSQL, that no other session of this database is idle in a transaction."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = Path(str(parsed.database))
        return lambda: _write_lock_free(db)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def check() -> bool:
        with engine.connect() as con:
            return not con.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )).scalar_one()

    return check


class Probe:
    """Records, at each embed and each vector search, whether another connection could take the write lock."""

    def __init__(self, free: Callable[[], bool], embedder: Any, store: Any) -> None:
        self.free, self.embedder, self.store, self.seen = free, embedder, store, []
        self._rank_batch = store.rank_batch

    @property
    def model_id(self) -> str:
        return str(self.embedder.model_id)

    def count_tokens(self, text: str) -> int:
        return int(self.embedder.count_tokens(text))

    def embed_query(self, text: str) -> Any:
        self.seen.append(("embed", self.free()))
        return self.embedder.embed_query(text)

    def close(self) -> None:  # the container closes its query embedder at shutdown
        pass

    def rank_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(("vectors", self.free()))
        return self._rank_batch(*args, **kwargs)


@pytest.fixture
def probed(api: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Probe, dict[str, str]]:
    reader = api.principal("r", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "leave.md", DOC).status_code == 201
    c = api.container
    probe = Probe(_no_open_transaction(c.settings.sqlalchemy_url), c.embedder, c.store)
    c.__dict__["query_embedder"] = probe
    monkeypatch.setattr(c.store, "rank_batch", probe.rank_batch)
    return api, probe, reader


def test_the_api_holds_no_transaction_while_the_query_embeds_and_the_vectors_are_searched(probed) -> None:
    api, probe, reader = probed
    r = api.search(reader, "parental leave")
    assert r.status_code == 200, r.text
    assert r.json()["hits"] and probe.seen == [("embed", True), ("vectors", True)]


def test_the_probe_sees_the_transaction_of_a_search_that_reads_its_policy_after_embedding(probed) -> None:
    api, probe, _ = probed
    c = api.container
    with c.sessions() as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r"), acting_for=None)
        s.commit()
        search_svc.search(s, store=c.store, embedder=probe, who=who,
                          request=search_svc.SearchRequest(query="parental leave"))
        s.commit()
    # Unplanned (the CLI): embeds first, then its transaction (SQLite: the write lock) is open from the policy read.
    assert probe.seen == [("embed", True), ("vectors", False)]


def test_a_plan_serves_only_the_search_it_was_made_for(api: Any) -> None:
    api.principal("r", groups=["g"])
    c = api.container
    request = search_svc.SearchRequest(query="parental leave")
    with c.sessions() as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r"), acting_for=None)
        planned = search_svc.plan(s, who=who, request=request)
        s.commit()
        with pytest.raises(ValueError, match="another request"):
            search_svc.search(s, store=c.store, embedder=c.embedder, who=who, planned=planned,
                              request=search_svc.SearchRequest(query="something else"))
        res = search_svc.search(s, store=c.store, embedder=c.embedder, who=who, request=request, planned=planned)
        s.commit()
    assert res.rules_applied["transfer_rules_version"] == planned.rules.version
    assert res.timings_ms["policy"] == planned.policy_ms


def test_a_bad_request_is_refused_by_the_plan_with_its_stable_code(api: Any) -> None:
    reader = api.principal("r", groups=["g"])
    r = api.search(reader, "   ")
    assert r.status_code == 422 and r.json()["error"]["code"] == "empty_query"
    r = api.search(reader, "leave", top_k=0)
    assert r.status_code == 422
