"""The search plan's policy reads kept per process while the policy epoch holds (memory.policy_cache).

The epoch is moved by database triggers, so these tests write the governed tables every way there is (the
services through the API, and raw SQL as a migration or an operator would) and check that the next search
plans from what SQL holds. Real SQL (SQLite and PostgreSQL) + Qdrant Edge."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, text

from memory import readable_sources
from memory import search as search_svc
from memory.policy_cache import PolicyReads, epoch_triggers_missing
from memory.principals import get_principal, resolve_effective

PUBLIC = "# Leave\n\nParental leave is twelve weeks at full pay.\n"
IBAN = "# Payroll\n\nParental leave pay goes to DE89 3704 0044 0532 0130 00 each month.\n"


def _epoch(c: Any) -> tuple[int, str]:
    with c.engine.connect() as con:
        n, token = con.execute(text("SELECT n, token FROM policy_epoch WHERE id = 1")).one()
    return int(n), str(token)


def _from_cache() -> float:
    return REGISTRY.get_sample_value("memory_search_policy_reads_total", {"source": "cache"}) or 0.0


@contextmanager
def _statements(c: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(c.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(c.engine, "before_cursor_execute", record)


def _plan(
    c: Any, reads: PolicyReads, pid: str = "r", source_ids: tuple[str, ...] | None = None
) -> search_svc.SearchPlan:
    with c.sessions() as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id=pid), acting_for=None)
        request = search_svc.SearchRequest(query="leave", source_ids=source_ids)
        planned = search_svc.plan(s, who=who, request=request, reads=reads)
        s.commit()
    return planned


@pytest.fixture
def world(api: Any) -> tuple[Any, dict[str, str]]:
    reader = api.principal("r", groups=["g"], clearance="internal", jurisdiction="EU")
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "leave.md", PUBLIC).status_code == 201
    return api, reader


def test_a_repeated_plan_reads_the_epoch_and_nothing_else_of_the_policy(world) -> None:
    api, _ = world
    c = api.container
    reads = PolicyReads(postgresql=c.engine.dialect.name == "postgresql")
    first = _plan(c, reads)
    with _statements(c) as seen:
        again = _plan(c, reads)
    assert again.flt.scope == first.flt.scope and again.rules == first.rules and again.blocked == first.blocked
    policy_reads = [q for q in seen if "from sources" in q or "from policy_versions" in q]
    assert policy_reads == [] and any("from policy_epoch" in q for q in seen)


def test_every_search_after_a_change_plans_from_what_sql_holds(world) -> None:
    api, reader = world
    r = api.search(reader, "parental leave")
    assert r.status_code == 200 and len(r.json()["hits"]) == 1
    assert r.json()["policy"]["rules_applied"]["withheld_counted"] is False  # nothing in s1 could be withheld yet
    before = _from_cache()
    assert len(api.search(reader, "parental leave").json()["hits"]) == 1
    assert _from_cache() == before + 1  # the unchanged policy came from the cache

    # An ingest that raises the source's worst label: the next plan counts what clearance withholds.
    assert api.upload("s1", "pay.md", IBAN).status_code == 201
    body = api.search(reader, "parental leave pay").json()
    assert body["policy"]["rules_applied"]["withheld_counted"] is True
    assert [(w["reason"], w["count"]) for w in body["policy"]["withheld"]] == [("clearance", 1)]

    # A transfer rule that denies EU data to EU callers, then back.
    rules = api.client.get("/v1/policy/jurisdictions", headers=api.admin).json()["rules"]
    deny = [x for x in rules if (x["data"], x["caller"]) != ("EU", "EU")] + [
        {"data": "EU", "caller": "EU", "rule": "deny"}]
    assert api.client.put("/v1/policy/jurisdictions", headers=api.admin, json={"rules": deny}).status_code == 200
    assert api.search(reader, "parental leave").json()["hits"] == []
    assert api.client.put("/v1/policy/jurisdictions", headers=api.admin, json={"rules": rules}).status_code == 200
    assert len(api.search(reader, "parental leave").json()["hits"]) == 1

    # The source's read groups no longer include the reader's.
    r = api.client.patch("/v1/sources/s1", headers=api.admin, json={"read_groups": ["h"]})
    assert r.status_code == 200, r.text
    body = api.search(reader, "parental leave").json()
    assert body["hits"] == [] and body["policy"]["withheld"] == []


@pytest.mark.parametrize("statement", [
    "UPDATE sources SET description = 'edited' WHERE id = 's1'",
    "UPDATE sources SET jurisdiction = 'US' WHERE id = 's1'",
    "INSERT INTO source_read_groups (source_id, \"group\") VALUES ('s1', 'h')",
    "UPDATE source_read_groups SET \"group\" = 'h' WHERE source_id = 's1'",
    "DELETE FROM source_read_groups WHERE source_id = 's1'",
    "UPDATE policy_versions SET effective_from = effective_from WHERE kind = 'jurisdictions'",
    "DELETE FROM policy_versions WHERE kind = 'labels'",
])
def test_any_write_to_the_governed_tables_moves_the_epoch_when_it_commits(world, statement: str) -> None:
    c = world[0].container
    before = _epoch(c)
    with c.engine.connect() as con:
        con.execute(text(statement))
        con.rollback()
    assert _epoch(c) == before  # a rolled-back change leaves it
    with c.engine.begin() as con:
        con.execute(text(statement))
    after = _epoch(c)
    assert after[0] > before[0] and after[1] != before[1]


def test_a_raw_sql_change_reaches_the_next_plan(world) -> None:
    c = world[0].container
    reads = PolicyReads(postgresql=c.engine.dialect.name == "postgresql")
    assert "s1" in (_plan(c, reads).flt.scope.full | _plan(c, reads).flt.scope.non_personal)
    with c.engine.begin() as con:
        con.execute(text("DELETE FROM source_read_groups WHERE source_id = 's1'"))
    assert _plan(c, reads).flt.scope.full == frozenset() == _plan(c, reads).flt.scope.non_personal


def test_an_ingest_that_raises_nothing_leaves_the_epoch(world) -> None:
    api, _ = world
    c = api.container
    before = _epoch(c)
    assert api.upload("s1", "more.md", "# More\n\nLeave can be split in two blocks.\n").status_code == 201
    assert _epoch(c) == before
    assert api.upload("s1", "pay.md", IBAN).status_code == 201
    assert _epoch(c)[1] != before[1]


def _scope(p: search_svc.SearchPlan) -> frozenset[str]:
    return p.flt.scope.full | p.flt.scope.non_personal


def _reads_sql(c: Any, reads: PolicyReads, **plan: Any) -> bool:
    """Whether two plans in a row both read the sources from SQL (nothing was kept or served from the cache)."""
    for _ in range(2):
        with _statements(c) as seen:
            _plan(c, reads, **plan)
        if not any("from sources" in q for q in seen):
            return False
    return True


def test_without_an_epoch_row_or_with_the_cache_off_every_plan_reads_sql(world) -> None:
    c = world[0].container
    assert _reads_sql(c, PolicyReads(maxsize=0))
    with c.engine.begin() as con:
        con.execute(text("DELETE FROM policy_epoch"))
    assert _reads_sql(c, PolicyReads(postgresql=c.engine.dialect.name == "postgresql"))


def test_a_search_limited_to_named_sources_is_never_kept(world) -> None:
    """The request names them: were they a key, any caller could fill the process's memory."""
    assert _reads_sql(world[0].container, world[0].container.policy_reads, source_ids=("s1",))


def test_missing_epoch_triggers_switch_the_cache_off_at_start(world, caplog) -> None:
    c = world[0].container
    assert epoch_triggers_missing_now(c) == frozenset()
    name = "policy_epoch_policy_versions_insert" if c.engine.dialect.name == "sqlite" else None
    with c.engine.begin() as con:
        if name:  # what a SQLite table rebuild (an Alembic batch migration) does to a table's triggers
            con.execute(text(f"DROP TRIGGER {name}"))
        else:  # an operator disabling one
            name = "policy_epoch_policy_versions"
            con.execute(text(f"ALTER TABLE policy_versions DISABLE TRIGGER {name}"))
    assert epoch_triggers_missing_now(c) == {name}
    reads = PolicyReads(16, postgresql=c.engine.dialect.name == "postgresql")
    assert reads.enabled
    assert _reads_sql(c, reads)
    assert not reads.enabled and "epoch_triggers_missing" in caplog.text


def epoch_triggers_missing_now(c: Any) -> frozenset[str]:
    with c.sessions() as s:
        return epoch_triggers_missing(s)


def test_a_token_that_history_rolled_back_is_never_seen_again(world) -> None:
    """A failover to a replica that lost the last commit, or a point-in-time recovery, sets the epoch back; the
    next change moves it forward again. A count would come back to a value a process kept another state under;
    a random token does not."""
    api, _ = world
    c = api.container
    reads = PolicyReads(postgresql=c.engine.dialect.name == "postgresql")
    with c.engine.connect() as con:  # the replica's epoch row, as it will be after the failover
        saved = con.execute(text("SELECT n, token FROM policy_epoch WHERE id = 1")).one()
    with c.engine.begin() as con:  # the commit the replica never got
        con.execute(text("UPDATE sources SET description = 'lost' WHERE id = 's1'"))
    assert _scope(_plan(c, reads)) == {"s1"}  # kept under the lost commit's token
    with c.engine.begin() as con:  # the failover: the epoch as the replica had it ...
        con.execute(text("UPDATE policy_epoch SET n = :n, token = :t WHERE id = 1"), {"n": saved[0], "t": saved[1]})
        # ... then the new primary's first change: the reader's group loses the source
        con.execute(text("DELETE FROM source_read_groups WHERE source_id = 's1'"))
    assert _epoch(c)[0] == saved[0] + 1  # the count is back where the process kept its state ...
    assert _scope(_plan(c, reads)) == frozenset()  # ... the token is not


def test_a_plan_in_a_transaction_that_wrote_is_not_kept(world) -> None:
    api, _ = world
    c = api.container
    api.source("s2", read_groups=["h"])
    reads = PolicyReads(postgresql=c.engine.dialect.name == "postgresql")
    assert _scope(_plan(c, reads)) == {"s1"}
    with c.sessions() as s:
        s.execute(text("INSERT INTO source_read_groups (source_id, \"group\") VALUES ('s2', 'g')"))
        who = resolve_effective(s, caller=get_principal(s, principal_id="r"), acting_for=None)
        planned = search_svc.plan(s, who=who, request=search_svc.SearchRequest(query="leave"), reads=reads)
        assert _scope(planned) == {"s1", "s2"}  # its own write, read from SQL
        s.rollback()
    with c.engine.begin() as con:  # an unrelated change after the rollback
        con.execute(text("UPDATE sources SET description = 'later' WHERE id = 's1'"))
    assert _scope(_plan(c, reads)) == {"s1"}  # never the rolled-back state


def test_rules_a_rolled_back_transaction_read_never_come_back_under_the_next_versions_id(world) -> None:
    """A rules version inserted, read back (as an access grant's resolve does) and rolled back leaves its row id
    free; the next committed version takes it (SQLite, a restored PostgreSQL). What is read is the committed one."""
    from memory import policy_store
    from memory.policy import Transfer

    api, _ = world
    c = api.container
    reads = PolicyReads(postgresql=c.engine.dialect.name == "postgresql")
    with c.sessions() as s:
        policy_store.set_transfer_rule(s, data="EU", caller="IN", rule="allow", actor="admin")
        assert policy_store.transfer_rules(s).mode("EU", "IN") == Transfer.ALLOW  # read in its own transaction
        s.rollback()
    with c.sessions() as s:
        version = policy_store.set_transfer_rule(s, data="EU", caller="IN", rule="deny", actor="admin").version
        s.commit()
    with c.sessions() as s:
        rules = policy_store.transfer_rules(s)
    assert (rules.version, rules.mode("EU", "IN")) == (version, Transfer.DENY)
    assert _plan(c, reads).rules.mode("EU", "IN") == Transfer.DENY
    assert _plan(c, PolicyReads(maxsize=0)).rules.mode("EU", "IN") == Transfer.DENY


def test_an_operators_own_client_moves_the_deployments_epoch(db_url: str) -> None:
    """An operator's shell, not the service's engine: on SQLite the sqlite3 module; on PostgreSQL a session whose
    search_path does not name the deployment's schema (the trigger function keeps the search_path of the
    migration that made it, so it still moves that schema's epoch)."""
    from sqlalchemy import create_engine

    from memory import migrate
    from memory.db import make_engine

    insert = ("INSERT INTO {s}policy_versions (kind, version, body, created_at, created_by, effective_from) "
              "VALUES ('labels', 99, '{{}}', CURRENT_TIMESTAMP, 'operator', 0)")
    if db_url.startswith("sqlite"):
        import sqlite3

        app = make_engine(db_url)
        migrate.upgrade(app)
        app.dispose()
        path = db_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as shell:
            before = shell.execute("SELECT token FROM policy_epoch").fetchone()[0]
            shell.execute(insert.format(s=""))
        with sqlite3.connect(path) as shell:
            assert shell.execute("SELECT token FROM policy_epoch").fetchone()[0] != before
        return
    plain = create_engine(db_url)  # an operator's psql: search_path "$user", public
    with plain.begin() as con:
        con.execute(text("CREATE SCHEMA m"))
    app = make_engine(f"{db_url}?options=-csearch_path%3Dm")
    try:
        migrate.upgrade(app)
        with plain.begin() as con:
            before = con.execute(text("SELECT token FROM m.policy_epoch")).scalar_one()
            con.execute(text(insert.format(s="m.")))
        with plain.connect() as con:
            assert con.execute(text("SELECT token FROM m.policy_epoch")).scalar_one() != before
    finally:
        app.dispose()
        plain.dispose()


def _postgresql_only(c: Any) -> None:
    if c.engine.dialect.name != "postgresql":
        # SQLite: a plan's transaction holds the write lock (BEGIN IMMEDIATE), so no change can commit between
        # its token read and its reads: these interleavings cannot happen there.
        pytest.skip("interleaving only PostgreSQL allows")


def _revoke_while_a_stalls(
    c: Any, reads: PolicyReads, stalled: threading.Event, go: threading.Event
) -> frozenset[str]:
    """Thread A plans until it signals `stalled`; s1 is then taken from the reader's group, a plan in this
    thread must see that, and A resumes (`go`). Returns A's plan scope."""
    got: dict[str, frozenset[str]] = {}
    a = threading.Thread(target=lambda: got.setdefault("a", _scope(_plan(c, reads))), name="A")
    a.start()
    assert stalled.wait(10)
    with c.engine.begin() as con:
        con.execute(text("DELETE FROM source_read_groups WHERE source_id = 's1'"))
    assert _scope(_plan(c, reads)) == frozenset()
    go.set()
    a.join(10)
    return got["a"]


def test_a_plan_that_read_before_a_change_never_keeps_what_it_read_after_it(world, monkeypatch) -> None:
    """Thread A reads the token and the old sources, then stalls before keeping them; a change commits and
    another plan sees it; A resumes. A's plan may be the old one (it began first), no later plan is."""
    api, _ = world
    c = api.container
    _postgresql_only(c)
    reads = c.policy_reads
    real = readable_sources.read
    a_read, go = threading.Event(), threading.Event()

    def stalls_in_a(session: Any, **kw: Any) -> Any:
        out = real(session, **kw)
        if threading.current_thread().name == "A":
            a_read.set()
            go.wait(10)
        return out

    monkeypatch.setattr("memory.policy_cache.readable_sources.read", stalls_in_a)
    a_planned = _revoke_while_a_stalls(c, reads, a_read, go)
    assert a_planned == {"s1"} and _scope(_plan(c, reads)) == frozenset()


def test_a_plan_that_read_an_older_token_cannot_bring_back_its_state(world) -> None:
    """Thread A reads the token, then stalls before it takes the cache's lock; a change commits and another plan
    keeps the new state; A resumes with the older token (it resets the cache to it and reads SQL again). No
    later plan sees the state before the change."""
    api, _ = world
    c = api.container
    _postgresql_only(c)
    reads = c.policy_reads
    _plan(c, reads)
    real_lock = reads._lock
    entered, go = threading.Event(), threading.Event()

    class StallsA:
        def __enter__(self) -> Any:
            if threading.current_thread().name == "A" and not entered.is_set():
                entered.set()
                go.wait(10)
            return real_lock.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            return real_lock.__exit__(*exc)

    reads._lock = StallsA()  # type: ignore[assignment]
    _revoke_while_a_stalls(c, reads, entered, go)
    assert _scope(_plan(c, reads)) == frozenset()
