"""Per-caller rate limits (memory.rate_limits): each caller (principal + the user it acts for) and category counts
on its own, a spent limit is 429 `rate_limited` with Retry-After and nothing done, bad settings fail clearly.
Through the API on the real SQL + Qdrant Edge + parsing (model doubles)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from memory.errors import RateLimitedError, ValidationFailedError
from memory.rate_limits import RateLimits
from memory.settings import Settings
from tests.conftest import make_api, make_container


def _fresh_window(period_s: float, margin_s: float) -> None:
    """Sliding windows weigh the previous window's count: a test that must see a limit spent starts where no
    window boundary falls within `margin_s` (its own duration, with room)."""
    if time.time() % period_s > period_s - margin_s:
        time.sleep(period_s - time.time() % period_s + 0.01)


def test_each_caller_and_category_has_its_own_count():
    _fresh_window(3600, 30)
    limits = RateLimits({"search": "3/hour", "other": "1/hour"})
    for _ in range(3):
        limits.check("search", "copilot", "alice")
    with pytest.raises(RateLimitedError) as err:
        limits.check("search", "copilot", "alice")
    assert err.value.status == 429 and err.value.code == "rate_limited"
    assert 1 <= err.value.retry_after_s <= 3600
    assert err.value.details == {"category": "search", "scope": "search", "limit": "3 per 1 hour",
                                 "retry_after_s": err.value.retry_after_s}
    limits.check("search", "copilot", "bob")  # the same agent acting for another user
    limits.check("search", "copilot", None)  # the agent on its own behalf
    limits.check("other", "copilot", "alice")  # another category
    limits.check("ingest", "copilot", "alice")  # no limit set: off
    assert not limits.enabled("ingest") and limits.enabled("search")


def test_every_part_of_a_rate_must_hold():
    _fresh_window(1, 0.5)
    limits = RateLimits({"search": "100/hour;2/second"})
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
    with pytest.raises(ValidationFailedError) as err:  # memcached:// needs pymemcache, not a dependency
        RateLimits({"search": "1/second"}, storage_uri="memcached://localhost:11211")
    assert err.value.code == "invalid_settings"
    with pytest.raises(ValidationFailedError) as err:  # a mistyped scheme: the URI's password is not repeated
        RateLimits({"search": "1/second"}, storage_uri="rediss+x://:hunter2@cache:6379/0")
    assert "hunter2" not in err.value.message and "unrecognised scheme" in err.value.message


@pytest.mark.parametrize(("uri", "why"), [
    ("redis://:hunter2@cache:6379/abc", "database number"),  # redis-py: database 0, silently
    ("redis://:hunter2@cache:6379/0?sockettimeout=1", "unknown query parameters ['sockettimeout']"),
    ("redis://:hunter2@/0", "names no host"),  # an empty variable in a compose file: redis-py tries localhost
    ("redis+cluster://", "names no host"),
    ("redis+unix://", "names no socket path"),
    ("memory://hunter2", "nothing after memory://"),
    ("mongodb://hunter2@db", "unrecognised scheme"),
    ("hunter2", "unrecognised scheme"),  # a password pasted alone: never quoted back as a "scheme"
    ("REDIS://:hunter2@cache", "unrecognised scheme"),
    # A password's unencoded `?` or `#` starts the query or fragment inside it: its parts are never named.
    ("redis+sentinel://:pw?hunter2@s1:26379/mymaster", "unknown query parameters (1;"),
    ("redis://:1234?hunter2@cache:6379/0", "unknown query parameters (1;"),
    ("redis+sentinel://:pw?hunter2#x@s1:26379/mymaster", "percent-encode a password's `#`"),
    ("valkey://:hunter2@cache:6379/0", "redis:// reaches a Valkey server"),  # redis-py's errors and bounds only
    ("valkeys://:hunter2@cache:6380/0", "rediss:// reaches a Valkey server"),
    ("valkey+cluster://:hunter2@c1:7000,c2:7000", "redis+cluster:// reaches a Valkey server"),
])
def test_storage_uris_the_clients_would_take_silently_are_refused(uri: str, why: str):
    with pytest.raises(ValidationFailedError) as err:
        RateLimits({"search": "1/second"}, storage_uri=uri)
    assert err.value.code == "invalid_settings" and why in err.value.message
    assert "hunter2" not in err.value.message and err.value.__cause__ is None


@pytest.mark.parametrize("uri", [
    "redis://:p%40ss@cache:6379", "redis://cache/15?socket_timeout=1&health_check_interval=30", "rediss://cache:6380/0",
    "redis+sentinel://:pw@s1:26379,s2:26379/mymaster", "redis+unix:///run/redis.sock?db=2",
    "redis://cache:6379/0?username=api&password=x&client_name=memory-api",  # redis-py's own connection options
])
def test_usable_storage_uris_are_built(uri: str):
    RateLimits({"search": "1/second"}, storage_uri=uri)  # built, not yet asked (nothing listens)


@pytest.fixture
def limited_api(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    _fresh_window(3600, 60)
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_search="2/hour", rate_limit_ingest="1/hour", rate_limit_other="100/hour")
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


def test_a_refused_request_spends_nothing():
    """'3/hour;1/second': the requests the per-second part refuses do not spend the hour's slots."""
    _fresh_window(3600, 30)
    limits = RateLimits({"search": "3/hour;1/second"})
    limits.check("search", "p", None)
    for _ in range(5):
        with pytest.raises(RateLimitedError) as err:
            limits.check("search", "p", None)
        assert err.value.details["limit"] == "1 per 1 second"
    time.sleep(1.1)
    limits.check("search", "p", None)  # the second of three in the hour
    time.sleep(1.1)
    limits.check("search", "p", None)  # the third
    time.sleep(1.1)
    with pytest.raises(RateLimitedError) as err:
        limits.check("search", "p", None)
    assert err.value.details["limit"] == "3 per 1 hour"


def test_a_principal_has_one_total_whoever_it_acts_for():
    _fresh_window(3600, 30)
    limits = RateLimits({"search": "2/hour", "other": "2/hour", "principal": "3/hour"})
    limits.check("search", "bot", "u1")
    limits.check("search", "bot", "u2")
    limits.check("other", "bot", "u3")
    for category, user in (("search", "u4"), ("other", None)):
        with pytest.raises(RateLimitedError) as err:
            limits.check(category, "bot", user)
        assert (err.value.details["scope"], err.value.details["category"]) == ("principal", category)
        assert "requests from this principal in all" in err.value.message
    limits.check("search", "other-bot", "u4")  # another principal: its own total


def test_idle_callers_cost_no_memory():
    """The sliding-window counters expire after two windows: 5000 callers seen once leave nothing behind."""
    limits = RateLimits({"search": "5/second"})
    storage = limits._limiter.storage
    for i in range(5000):
        limits.check("search", "copilot", f"user{i}")
    assert len(storage.storage) >= 5000
    time.sleep(2.3)
    limits.check("search", "copilot", "user0")  # schedules the expiry pass
    time.sleep(0.3)
    assert len(storage.storage) <= 4, len(storage.storage)


def test_a_failing_shared_storage_serves_requests_unlimited_and_says_so(monkeypatch, caplog):
    from limits.errors import StorageError

    limits = RateLimits({"search": "1/hour"})

    def down(*_a: Any, **_k: Any) -> bool:
        raise StorageError(ConnectionError("redis down"))

    monkeypatch.setattr(limits._limiter, "test", down)
    for _ in range(3):
        limits.check("search", "p", None)  # fail open: a limit guards capacity, not data
    assert "api.rate_limit_unavailable" in caplog.text and "ConnectionError" in caplog.text
    assert "redis down" not in caplog.text
    assert limits.state() == "unavailable: ConnectionError (requests not limited)"
    monkeypatch.setattr("memory.rate_limits.FAILURE_MEMORY_S", 0.0)
    assert limits.state() == "ok"  # no failure in the last minute


def test_a_shared_storage_gets_timeouts_so_a_hung_one_counts_as_down(monkeypatch):
    """redis-py waits forever by default: the limiter passes a connect and read timeout to a shared storage."""
    import memory.rate_limits as rl

    seen: dict[str, Any] = {}
    real = rl.storage_from_string

    def fake_storage(uri: str, **options: Any) -> Any:
        seen.update(options, uri=uri)
        return real("memory://")

    monkeypatch.setattr(rl, "storage_from_string", fake_storage)
    RateLimits({"search": "1/second"}, storage_uri="redis://cache:6379/0")
    retry = seen.pop("retry")
    assert seen == {"uri": "redis://cache:6379/0", "wrap_exceptions": True,
                    "socket_timeout": rl.STORAGE_TIMEOUT_S, "socket_connect_timeout": rl.STORAGE_TIMEOUT_S}
    assert retry.get_retries() == 0  # redis-py's Retry: no second attempt, so no backoff
    seen.clear()
    RateLimits({"search": "1/second"}, storage_uri="redis+sentinel://s1:26379/mymaster")
    sentinels = seen["sentinel_kwargs"]  # the sentinels' own connections are bounded too
    assert sentinels["socket_timeout"] == rl.STORAGE_TIMEOUT_S and sentinels["retry"].get_retries() == 0
    seen.clear()
    RateLimits({"search": "1/second"})
    assert seen == {"uri": "memory://", "wrap_exceptions": True}


def test_concurrent_requests_never_pass_a_spent_limit(monkeypatch):
    """Requests that all passed the read-only test() while one took the last slot are refused by hit(), the
    library's atomic acquire (a shared storage's round trips widen that race)."""
    _fresh_window(3600, 30)
    limits = RateLimits({"search": "1/hour"})
    storage = limits._limiter.storage
    real = storage.get_sliding_window

    def slow(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        time.sleep(0.05)
        return out

    monkeypatch.setattr(storage, "get_sliding_window", slow)
    served: list[int] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        try:
            limits.check("search", "p", None)
            served.append(1)
        except RateLimitedError:
            pass

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(served) == 1


def test_an_unusable_storage_stops_the_start_not_every_request(tmp_path: Path, db_url: str, fake_embedder: Any,
                                                                fake_classifier: Any):
    from fastapi.testclient import TestClient

    from memory.api.app import create_app

    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_search="10/second", rate_limit_storage="memcached://localhost:11211")
    try:
        with pytest.raises(ValidationFailedError) as err, TestClient(create_app(container=c, warm=False)):
            pass
        assert err.value.code == "invalid_settings"
    finally:
        c.close()


def test_memory_serve_refuses_an_unusable_storage_in_one_line(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from memory.cli import app

    monkeypatch.setenv("MEMORY_RATE_LIMIT_STORAGE", "nosuch://localhost:6379")
    r = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 2
    assert "invalid_settings" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_readyz_reports_the_rate_storage_without_leaving_the_balancer(limited_api: Any, monkeypatch):
    api = limited_api
    api.client.get("/v1/sources", headers=api.admin)
    body = api.client.get("/readyz").json()
    assert body["checks"]["rate_limits"] == "ok"
    hang = threading.Event()
    monkeypatch.setattr(api.container.rate_limits._limiter.storage, "check", lambda: hang.wait(30))  # never probed
    monkeypatch.setattr(api.container.rate_limits, "_failed_at", time.monotonic())
    t0 = time.perf_counter()
    r = api.client.get("/readyz")
    assert time.perf_counter() - t0 < 2
    assert r.json()["checks"]["rate_limits"].startswith("unavailable")
    assert r.json()["status"] == body["status"]  # readiness is decided without it
    hang.set()


def test_a_search_refused_for_its_role_or_values_still_counts(limited_api: Any):
    api = limited_api
    user = api.principal("u", groups=["g"], roles=[])  # no reader role
    assert [api.search(user, "x").status_code for _ in range(3)] == [403, 403, 429]


def test_the_search_rate_check_runs_outside_sqlites_write_lock(limited_api: Any, monkeypatch):
    """A shared rate storage is a round trip away: counting a search must not hold the write lock every other
    request's transaction needs (SQLite begins every transaction IMMEDIATE)."""
    from sqlalchemy import select

    from memory.db import transaction
    from memory.models import Job

    api = limited_api
    api.source("s1", read_groups=["g"])
    reader = api.principal("r1", groups=["g"])
    c = api.container
    in_check = threading.Event()
    real = c.rate_limits.check

    def slow_check(*a: Any, **k: Any) -> None:
        in_check.set()
        time.sleep(1.5)
        real(*a, **k)

    monkeypatch.setattr(c.rate_limits, "check", slow_check)
    t = threading.Thread(target=lambda: api.search(reader, "meals"))
    t.start()
    assert in_check.wait(10)
    t0 = time.perf_counter()
    with transaction(c.sessions) as s:  # any writer
        s.execute(select(Job.id)).all()
    waited = time.perf_counter() - t0
    t.join()
    assert waited < 1.0, waited


def test_an_agent_acting_for_many_users_meets_its_total(api: Any):
    api.source("s1", read_groups=["g"])
    for u in ("u1", "u2", "u3", "u4"):
        api.principal(u, groups=["g"])
    bot = api.principal("bot", kind="agent", groups=["g"], may_act_for_any=True)
    # The limits from here on (the admin's set-up above would count against the admin's own total).
    _fresh_window(3600, 30)
    api.container.__dict__["rate_limits"] = RateLimits({"search": "1/hour", "principal": "3/hour"})
    codes = [api.search({**bot, "X-Acting-For": u}, "meals").status_code for u in ("u1", "u2", "u3", "u4")]
    assert codes == [200, 200, 200, 429]
    r = api.search({**bot, "X-Acting-For": "u4"}, "meals")
    assert (r.status_code, r.json()["error"]["details"]["scope"]) == (429, "principal")
    assert api.search(api.client.headers | {"Authorization": api.admin["Authorization"]}, "meals").status_code == 200


def test_an_address_with_too_many_refused_keys_is_refused_before_any_key_is_looked_up():
    _fresh_window(3600, 30)
    limits = RateLimits({"auth_failures": "3/hour"})
    limits.refuse_failing_client("10.0.0.9")  # nothing refused yet: not even tested
    for _ in range(3):
        limits.refuse_failing_client("10.0.0.9")
        limits.count_auth_failure("10.0.0.9")
    with pytest.raises(RateLimitedError) as err:
        limits.refuse_failing_client("10.0.0.9")
    assert err.value.details["scope"] == "auth_failures" and "refused API keys" in err.value.message
    limits.refuse_failing_client("10.0.0.10")  # another address: its own count
    limits.refuse_failing_client(None)  # no address known (not over HTTP): never limited
    RateLimits({"auth_failures": ""}).count_auth_failure("10.0.0.9")  # '' turns it off


def _wrong(i: int) -> dict[str, str]:
    return {"Authorization": f"Bearer gm_{i:016x}_wrongwrongwrongwrongwrong"}


@pytest.fixture
def address_limited(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    _fresh_window(3600, 60)
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_auth_failures="3/hour")
    yield from make_api(c)
    c.close()


def test_refused_keys_lock_their_address_out_for_a_while(address_limited: Any, monkeypatch, caplog):
    """Three made-up keys from one address: its next request is 429 and no key of it is looked up (no SQL), on
    every route kind (JSON, search, upload, a body that cannot be parsed), unless the key authenticated lately in
    this process (a copilot behind the same NAT) and its own id was not refused as often."""
    from memory import principals

    api = address_limited
    reader = api.principal("r1", groups=["g"])
    fresh = api.principal("fresh", groups=["g"], roles=["reader", "steward"])  # a valid key never used yet
    api.source("s1", read_groups=["g"])
    assert api.search(reader, "travel").status_code == 200
    codes = [api.client.get("/v1/sources", headers=_wrong(i)).status_code for i in range(2)]
    codes.append(api.search(_wrong(3), "x").status_code)
    assert codes == [401, 401, 401]
    looked_up: list[str] = []
    real = principals.who_for_token

    def spy(session: Any, **kwargs: Any) -> Any:
        looked_up.append(kwargs["token"])
        return real(session, **kwargs)

    monkeypatch.setattr(principals, "who_for_token", spy)
    answers = [
        api.search(fresh, "travel"),
        api.client.get("/v1/sources", headers=fresh),
        api.upload("s1", "a.md", "# A\n\nMeals.\n", headers=fresh),
        api.client.post("/v1/search", headers={**fresh, "Content-Type": "application/json"}, content=b"{broken"),
    ]
    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [(429, "rate_limited")] * 4
    assert all(r.json()["error"]["details"]["scope"] == "auth_failures" for r in answers)
    assert answers[0].headers["Retry-After"]
    assert looked_up == []
    assert api.search(reader, "travel").status_code == 200  # vouched: it authenticated a moment ago
    assert api.client.get("/v1/sources", headers=api.admin).status_code == 200
    key_id = reader["Authorization"].split("_")[1]
    for i in range(3):  # its key id with guessed secrets: not the key that authenticated, blocked, never looked up
        forged = {"Authorization": f"Bearer gm_{key_id}_forgedforgedforgedforged{i}"}
        assert api.client.get("/v1/sources", headers=forged).status_code == 429
    assert looked_up.count(reader["Authorization"].removeprefix("Bearer ")) == 1  # its one search since the block
    assert api.search(reader, "travel").status_code == 200  # and they did not cost the real key its exemption
    assert "testclient" not in caplog.text  # the address is logged as a keyed hash, like a caller
    assert api.client.get("/healthz").status_code == 200  # routes without a key: untouched
    assert 'memory_rate_limited_total{category="auth_failures"}' in api.client.get("/metrics").text


def test_valid_keys_and_other_refusals_never_count_against_the_address(address_limited: Any):
    """Only refused keys count: a 403 (role, delegation), a 404 or a 422 from a valid key does not."""
    api = address_limited
    user = api.principal("u", groups=["g"], roles=[])
    api.principal("bob", groups=["g"])
    answers = [api.search(user, "x").status_code,  # no reader role
               api.search({**user, "X-Acting-For": "bob"}, "x").status_code,  # a user acting for a user
               api.client.get("/v1/principals/nobody", headers=api.admin).status_code,
               api.search(api.admin, "").status_code] * 3
    assert answers == [403, 403, 404, 422] * 3
    fresh = api.principal("fresh", groups=["g"])
    for i in range(3):
        assert api.client.get("/v1/sources", headers=_wrong(i)).status_code == 401
    assert api.client.get("/v1/sources", headers=fresh).status_code == 429  # a key not yet seen here
    assert api.client.get("/v1/sources", headers=api.admin).status_code == 200  # one that authenticated lately


def test_an_ipv6_client_is_counted_by_its_64():
    """One host commonly holds a whole IPv6 /64: its addresses count as one client."""
    _fresh_window(3600, 30)
    limits = RateLimits({"auth_failures": "2/hour"})
    limits.count_auth_failure("2001:db8:1:2::10")
    limits.count_auth_failure("2001:db8:1:2:ffff::99")
    with pytest.raises(RateLimitedError):
        limits.refuse_failing_client("2001:db8:1:2::abcd")
    limits.refuse_failing_client("2001:db8:1:3::10")  # another /64
    limits.count_auth_failure("::ffff:10.0.0.7")  # an IPv4 client seen through an IPv6 socket is that IPv4 address
    limits.count_auth_failure("10.0.0.7")
    with pytest.raises(RateLimitedError):
        limits.refuse_failing_client("10.0.0.7")


def test_after_a_failure_one_request_at_a_time_tries_the_storage_again(monkeypatch):
    """A storage that hangs: for RETRY_AFTER_FAILURE_S it is left alone, then one request tries it while the
    others go on without waiting (under load the thread pool never stalls on it together)."""
    from limits.errors import StorageError

    import memory.rate_limits as rl

    monkeypatch.setattr(rl, "RETRY_AFTER_FAILURE_S", 0.2)
    limits = RateLimits({"search": "1/hour"})
    calls: list[int] = []

    def hangs(*_a: Any, **_k: Any) -> bool:
        calls.append(1)
        time.sleep(0.3)
        raise StorageError(TimeoutError("timed out"))

    monkeypatch.setattr(limits._limiter, "test", hangs)
    limits.check("search", "p", None)  # the first failure
    assert len(calls) == 1
    time.sleep(0.25)  # the window is over: the next requests race to try it
    barrier = threading.Barrier(8)
    waited: list[float] = []

    def one() -> None:
        barrier.wait()
        t = time.perf_counter()
        limits.check("search", "p", None)
        waited.append(time.perf_counter() - t)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 2  # one probe
    assert sorted(waited)[-2] < 0.2  # all but the probe went on at once
    assert limits.state().startswith("unavailable: TimeoutError")


def test_requests_served_unlimited_are_counted_once_each(monkeypatch):
    from limits.errors import StorageError

    from memory.metrics import RATE_LIMIT_ERRORS

    limits = RateLimits({"search": "1/hour", "auth_failures": "5/hour"})

    def down(*_a: Any, **_k: Any) -> bool:
        raise StorageError(ConnectionError("down"))

    monkeypatch.setattr(limits._limiter, "test", down)
    monkeypatch.setattr(limits._limiter, "hit", down)
    before = RATE_LIMIT_ERRORS._value.get()
    for _ in range(3):  # as an authenticated request runs them: the address check, then the caller's count
        limits.count_auth_failure("10.0.0.1")
        limits.refuse_failing_client("10.0.0.1")
        limits.check("search", "p", None)
    assert RATE_LIMIT_ERRORS._value.get() - before == 3


def test_a_storage_that_cannot_be_built_never_shows_its_uri_in_a_traceback():
    with pytest.raises(ValidationFailedError) as err:
        RateLimits({"search": "1/second"}, storage_uri="rediss+x://:hunter2@cache:6379/0")
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    with pytest.raises(ValidationFailedError) as err:  # a password with a '/', not percent-encoded
        RateLimits({"search": "1/second"}, storage_uri="redis://:s3c/ret@cache:6379/0")
    assert "s3c" not in err.value.message and "percent-encode" in err.value.message
    assert RateLimits({"search": "1/second"}).verify() is None  # memory://: nothing to ask


def test_a_cluster_that_cannot_be_reached_as_it_is_built_is_a_storage_failure(caplog):
    """The cluster client connects as it is built: unreachable, the limits start anyway, serve unlimited, say so,
    and never show the URI (tests/memory/test_rate_limits_redis.py: the cluster coming back)."""
    limits = RateLimits({"search": "1/second"}, storage_uri="redis+cluster://:hunter2@nowhere.invalid:7000")
    limits.verify()
    for _ in range(3):
        limits.check("search", "p", None)
    assert limits.state() == "unavailable: RedisClusterException (requests not limited)"
    assert "hunter2" not in caplog.text and "nowhere" not in caplog.text


def test_a_probe_refused_for_its_rate_ends_the_storage_failure(monkeypatch):
    """The storage answered (a 429 is an answer): the requests after it count there again, never unlimited."""
    from limits.errors import StorageError

    import memory.rate_limits as rl

    _fresh_window(3600, 30)
    monkeypatch.setattr(rl, "RETRY_AFTER_FAILURE_S", 0.05)
    limits = RateLimits({"search": "1/hour"})
    limits.check("search", "p", None)  # the hour's one request
    real = limits._limiter.test
    monkeypatch.setattr(limits._limiter, "test", lambda *a, **k: (_ for _ in ()).throw(StorageError(OSError("x"))))
    limits.check("search", "p", None)  # a blip: served unlimited
    monkeypatch.setattr(limits._limiter, "test", real)
    time.sleep(0.1)
    with pytest.raises(RateLimitedError):
        limits.check("search", "p", None)  # the probe: refused
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            limits.check("search", "p", None)


def test_a_known_key_id_with_a_guessed_secret_gets_no_exemption():
    """Key ids are no secret (logs name them): only the whole key that authenticated is exempt from the block."""
    _fresh_window(3600, 30)
    limits = RateLimits({"auth_failures": "2/hour"})
    good = "gm_00000000000000aa_the-real-secret-0123456789"
    limits.vouch(good)
    for _ in range(2):
        limits.count_auth_failure("10.0.0.5")
    limits.refuse_failing_client("10.0.0.5", "00000000000000aa", good)  # the real key: exempt
    with pytest.raises(RateLimitedError):
        limits.refuse_failing_client("10.0.0.5", "00000000000000aa", "gm_00000000000000aa_a-guess-0000000000000")
