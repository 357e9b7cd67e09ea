"""The search plan's policy reads kept per process while the policy epoch holds (memory.policy_cache).

The epoch is moved by database triggers, so these tests write the governed tables every way there is (the
services through the API, and raw SQL as a migration or an operator would) and check that the next search
plans from what SQL holds. Real SQL (SQLite and PostgreSQL) + Qdrant Edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, text

from memory import search as search_svc
from memory.policy_cache import PolicyReads
from memory.principals import get_principal, resolve_effective

PUBLIC = "# Leave\n\nParental leave is twelve weeks at full pay.\n"
IBAN = "# Payroll\n\nParental leave pay goes to DE89 3704 0044 0532 0130 00 each month.\n"


def _epoch(c: Any) -> int:
    with c.engine.connect() as con:
        return int(con.execute(text("SELECT n FROM policy_epoch WHERE id = 1")).scalar_one())


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


def _plan(c: Any, reads: PolicyReads, pid: str = "r") -> search_svc.SearchPlan:
    with c.sessions() as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id=pid), acting_for=None)
        planned = search_svc.plan(s, who=who, request=search_svc.SearchRequest(query="leave"), reads=reads)
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
    reads = PolicyReads()
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
    assert _epoch(c) > before


def test_a_raw_sql_change_reaches_the_next_plan(world) -> None:
    c = world[0].container
    reads = PolicyReads()
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
    assert _epoch(c) > before


def test_without_an_epoch_row_or_with_the_cache_off_every_plan_reads_sql(world) -> None:
    c = world[0].container
    for reads in (PolicyReads(maxsize=0), PolicyReads()):
        if reads._enabled:
            with c.engine.begin() as con:
                con.execute(text("DELETE FROM policy_epoch"))
        for _ in range(2):
            with _statements(c) as seen:
                _plan(c, reads)
            assert any("from sources" in q for q in seen)
