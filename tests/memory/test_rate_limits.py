"""Per-caller rate limits (memory.rate_limits): each caller (principal + the user it acts for) and category counts
on its own, a spent limit is 429 `rate_limited` with Retry-After and nothing done, bad settings fail clearly.
Through the API on the real SQL + Qdrant Edge + parsing (model doubles)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from memory.errors import RateLimitedError, ValidationFailedError
from memory.rate_limits import RateLimits
from memory.settings import Settings
from tests.conftest import make_api, make_container


def test_each_caller_and_category_has_its_own_count():
    limits = RateLimits({"search": "3/minute", "other": "1/minute"})
    for _ in range(3):
        limits.check("search", "copilot", "alice")
    with pytest.raises(RateLimitedError) as err:
        limits.check("search", "copilot", "alice")
    assert err.value.status == 429 and err.value.code == "rate_limited"
    assert 1 <= err.value.retry_after_s <= 60
    assert err.value.details == {"category": "search", "limit": "3 per 1 minute",
                                 "retry_after_s": err.value.retry_after_s}
    limits.check("search", "copilot", "bob")  # the same agent acting for another user
    limits.check("search", "copilot", None)  # the agent on its own behalf
    limits.check("other", "copilot", "alice")  # another category
    limits.check("ingest", "copilot", "alice")  # no limit set: off
    assert not limits.enabled("ingest") and limits.enabled("search")


def test_every_part_of_a_rate_must_hold():
    limits = RateLimits({"search": "100/minute;2/second"})
    limits.check("search", "p", None)
    limits.check("search", "p", None)
    with pytest.raises(RateLimitedError) as err:
        limits.check("search", "p", None)
    assert err.value.details["limit"] == "2 per 1 second" and err.value.retry_after_s == 1


def test_bad_rates_and_storages_fail_clearly(tmp_path: Path):
    with pytest.raises(ValidationError) as bad:
        Settings(data_dir=tmp_path, rate_limit_search="lots")  # type: ignore[call-arg]
    assert "rate_limit_search" in str(bad.value)
    with pytest.raises(ValueError):
        RateLimits({"searches": "1/second"})
    with pytest.raises(ValidationFailedError) as err:  # redis:// needs the redis package, not installed here
        RateLimits({"search": "1/second"}, storage_uri="redis://localhost:6379")
    assert err.value.code == "invalid_settings"


@pytest.fixture
def limited_api(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_search="2/minute", rate_limit_ingest="1/minute", rate_limit_other="100/minute")
    yield from make_api(c)
    c.close()


def _audit_records(api: Any) -> int:
    from sqlalchemy import func, select

    from memory.models import AuditRecord

    with api.container.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)


def test_a_spent_search_limit_is_429_with_retry_after_and_nothing_audited(limited_api: Any):
    api = limited_api
    api.source("s1", read_groups=["g"])
    reader = api.principal("r1", groups=["g"])
    api.principal("r2", groups=["g"])
    agent = api.principal("agent", kind="agent", groups=["g"], may_act_for=["r1", "r2"])
    for _ in range(2):
        assert api.search(reader, "travel meals").status_code == 200
    before = _audit_records(api)
    r = api.search(reader, "travel meals")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["details"]["category"] == "search"
    assert _audit_records(api) == before  # refused before any work: no search, no record
    for user in ("r1", "r2"):  # an agent's count is per user it acts for, apart from the user's own
        assert api.search({**agent, "X-Acting-For": user}, "travel meals").status_code == 200
    assert api.client.get("/healthz").status_code == 200  # unauthenticated probes are never limited
    assert 'memory_rate_limited_total{category="search"}' in api.client.get("/metrics").text


def test_uploads_count_on_their_own_and_other_calls_on_theirs(limited_api: Any):
    api = limited_api
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "a.md", "Meals are reimbursed.", headers=steward).status_code == 201
    r = api.upload("s1", "b.md", "Taxis are reimbursed.", headers=steward)
    assert (r.status_code, r.json()["error"]["details"]["category"]) == (429, "ingest")
    assert api.client.get("/v1/sources/s1", headers=steward).status_code == 200  # `other`: its own count
    for _ in range(2):
        assert api.search(steward, "meals").status_code == 200
    assert api.search(steward, "meals").status_code == 429
    documents = api.client.get("/v1/sources/s1/documents", headers=steward).json()["documents"]
    assert [d["external_key"] for d in documents] == ["a.md"]  # the refused upload stored nothing
