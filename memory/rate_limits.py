"""Per-caller request rate limits: one copilot's runaway loop must not take the shared service from every other
team (on the reference machine the whole service answers ~40 searches a second).

A caller is the authenticated principal together with the user it acts for (`X-Acting-For`): a copilot's service
principal serving thousands of users is limited per user, and a user's own calls separately. Three categories with
their own limits: `search` (POST /v1/search), `ingest` (document uploads) and `other` (every other authenticated
request). On top, every principal has one total over all its calls, whoever it acts for (`principal`): an agent
acting for many users still takes no more than its share. Each limit is a `limits` rate string, e.g.
`30/second;1200/minute` (every part must hold); an empty one turns it off. A request is counted only when every
limit it falls under admits it, so a refused request spends nothing (but for a request that loses a race for a
limit's last slot after its other limits counted it).

Counted in sliding windows (the `limits` library's sliding-window counter: two counters per caller and limit,
which expire after two windows, so an idle caller costs nothing and memory follows the callers of the last
minutes, not every caller ever seen) in the storage its URI names: `memory://` keeps the counts in this process
(each API replica counts its own); `redis://...` shares them between replicas (a Redis or Valkey server). The
storage is built and checked when the API starts (a bad URI or refused credentials stop it there; a storage that
cannot be reached does not, a cluster client that could not connect as it was built included: it is built again
when the storage is next tried). When a shared storage cannot be
reached, requests are served unlimited (a rate limit protects the service's capacity, not its data: failing
closed would turn a Redis outage into an outage of every copilot), each such request logged and counted
(memory_rate_limit_errors_total), and /readyz reports it for a minute after the last failure. A shared storage
that does not answer within 0.25 s counts as failed, and after a failure it is left alone for 5 s (requests
served unlimited without trying it), so a hung Redis costs one request in 5 s a 0.25 s wait, not every request.
A refused request is 429 `rate_limited` with
`Retry-After`.

Before a caller is known, its client address is: keys refused (401: unknown, revoked, expired, an inactive
principal) are counted per address (`auth_failures`), and an address past that limit is refused 429 before its
key is even looked up, whatever the key (a flood of made-up keys costs a counter, not a SQL read and, on SQLite,
the write lock). Behind a reverse proxy the address is the proxy's unless MEMORY_FORWARDED_ALLOW_IPS names it
(memory.api.serving): docs/operations.md.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import cast

from cachetools import TTLCache
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from memory.errors import RateLimitedError, ValidationFailedError
from memory.metrics import RATE_LIMIT_ERRORS, RATE_LIMITED
from memory.rate_limit_storage import check_storage_uri

log = logging.getLogger(__name__)

CATEGORIES = ("search", "ingest", "other")
PRINCIPAL = "principal"  # the total over a principal's calls, whoever it acts for
AUTH_FAILURES = "auth_failures"  # keys refused (401) per client address
STORAGE_TIMEOUT_S = 0.25  # a shared storage's connect and read timeout
FAILURE_MEMORY_S = 60.0  # /readyz reports a storage failure this long after the last one
RETRY_AFTER_FAILURE_S = 5.0  # after a storage failure, requests leave it alone (served unlimited) this long
VOUCHED_S = 600.0  # a key id that authenticated is exempt from its address's refused-key block this long
VOUCHED_MAX = 100_000  # key ids remembered (the oldest forgotten first)
# Logs name a refused caller by a keyed hash: a SIEM can group one process's refusals without user ids in the
# logs, and the hash cannot be reversed by hashing candidate ids (the key never leaves the process).
_LOG_KEY = secrets.token_bytes(16)


def _shared_storage_options() -> dict[str, object]:
    """A connect and read timeout, and no retries: redis-py 6+ retries a timed-out call 3 times (8.x: 10) with a
    backoff of up to 10 s by default, so a hung Redis would hold each request for seconds before failing open."""
    options: dict[str, object] = {"socket_timeout": STORAGE_TIMEOUT_S, "socket_connect_timeout": STORAGE_TIMEOUT_S}
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:  # (a dependency; without it the storage itself says so: invalid_settings)
        return options
    options["retry"] = Retry(NoBackoff(), 0)
    return options


def parse_rates(text: str) -> list[RateLimitItem]:
    """The limits a rate string sets ([] for an empty one); ValueError for a malformed one."""
    return list(parse_many(text)) if text.strip() else []


class RateLimits:
    """The limits per category and per principal, checked (and counted) once per request after its caller is
    authenticated."""

    def __init__(self, rates: Mapping[str, str], *, storage_uri: str = "memory://") -> None:
        unknown = set(rates) - {*CATEGORIES, PRINCIPAL, AUTH_FAILURES}
        if unknown:
            raise ValueError(f"unknown rate limit categories: {sorted(unknown)}")
        self._items = {c: parse_rates(rates.get(c, "")) for c in (*CATEGORIES, PRINCIPAL, AUTH_FAILURES)}
        check_storage_uri(storage_uri)  # invalid_settings: what the library would take silently
        self._scheme = storage_uri.split(":", 1)[0]
        # A shared storage answers within a bound or counts as down: redis-py waits forever by default, and a
        # blackholed Redis would then hold every request (fail open needs a failure to open on).
        options = _shared_storage_options() if self._scheme.startswith("redis") else {}
        if "sentinel" in self._scheme:  # the sentinels' own connections: the same bounds as the master's
            options["sentinel_kwargs"] = dict(options)
        self._failed_at: float | None = None
        self._failure = ""
        self._down_until: float | None = None  # a failed storage is left alone until then (monotonic)
        self._probe = threading.Lock()  # after that, one request tries it again; the others do not wait
        self._storage_uri, self._options = storage_uri, options
        self._limiter: SlidingWindowCounterRateLimiter | None = None
        try:
            self._limiter = self._connect()
        except _Unreachable as exc:
            # A cluster client connects as it is built: a cluster down at start is an outage like any later one
            # (served unlimited, built again when it is next tried), not a configuration mistake.
            self._storage_failed(exc.__cause__ or exc)
        # A refused key in this process within the auth_failures windows (a sliding window weighs the previous
        # one too): until then no address can be past that limit here, and the per-request test is skipped. With a
        # shared storage, a replica that has seen none tests from its first refusal on (one request late).
        self._failure_horizon_s = 2 * max((i.get_expiry() for i in self._items[AUTH_FAILURES]), default=0)
        self._last_auth_failure: float | None = None
        # Keys that authenticated in this process lately (keyed hashes of the whole key): a blocked address does not
        # block them (a copilot behind the same NAT as a client retrying a revoked key) unless their key id's own
        # refusals are past the limit. The whole key, since key ids are no secret (logs name them).
        self._vouched: TTLCache[str, bool] = TTLCache(maxsize=VOUCHED_MAX, ttl=VOUCHED_S)
        self._vouched_lock = threading.Lock()

    def _connect(self) -> SlidingWindowCounterRateLimiter:
        """The limiter on its storage. ValidationFailedError (invalid_settings) for what no retry can fix: an
        unknown scheme, a missing client library, a URI that does not parse, credentials refused; `_Unreachable`
        for a storage that cannot be reached (a Redis cluster client connects as it is built)."""
        from redis.exceptions import AuthenticationError, RedisClusterException
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:  # (`retry` is a redis Retry object, passed through to the client: not in the library's annotation)
            storage = storage_from_string(self._storage_uri, wrap_exceptions=True,
                                          **self._options)  # type: ignore[arg-type]
        except (RedisClusterException, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if isinstance(exc, AuthenticationError):
                raise self._invalid(exc) from None
            raise _Unreachable() from exc
        except Exception as exc:  # an unknown scheme, memcached:// without pymemcache, a URI that does not parse
            raise self._invalid(exc) from None
        return SlidingWindowCounterRateLimiter(storage)

    def _invalid(self, exc: Exception) -> ValidationFailedError:
        # The URI may hold a password (redis://:secret@host): never in the message, nor in a chained traceback.
        reason = ("the URI does not parse (percent-encode a password's reserved characters)"
                  if isinstance(exc, ValueError) else str(exc).replace(self._storage_uri, f"{self._scheme}://..."))
        return ValidationFailedError(f"rate limit storage {self._scheme!r}: {type(exc).__name__}: {reason}",
                                     code="invalid_settings")

    def _ready_limiter(self) -> SlidingWindowCounterRateLimiter:
        """The limiter; built now if its storage could not be reached when this was made (StorageError if still
        not: a storage failure like any other)."""
        if self._limiter is None:
            try:
                self._limiter = self._connect()
            except _Unreachable as exc:
                raise StorageError(cast(Exception, exc.__cause__ or exc)) from None
        return self._limiter

    def verify(self) -> None:
        """Ask a shared storage once, at start. One that refuses the service (a wrong password, a command it does
        not allow) is a configuration mistake: invalid_settings, the service does not start, rather than serving
        every request unlimited for good. One that cannot be reached is logged and left alone like any failure
        (requests served unlimited until it answers: fail open)."""
        if self._limiter is None:  # not reachable as it was built: already logged, tried again later
            return
        connection: Callable[[], object] | None = getattr(self._limiter.storage, "get_connection", None)
        if connection is None:  # memory://
            return
        try:
            connection().ping()  # type: ignore[attr-defined]
        except Exception as exc:
            from redis.exceptions import AuthenticationError, ResponseError

            if isinstance(exc, AuthenticationError | ResponseError):
                raise ValidationFailedError(
                    f"rate limit storage {self._scheme!r} refused the service ({type(exc).__name__}): check the "
                    "credentials in MEMORY_RATE_LIMIT_STORAGE", code="invalid_settings") from None
            self._storage_failed(exc)

    def enabled(self, category: str) -> bool:
        return bool(self._items[category])

    def state(self) -> str:
        """`ok`, or `unavailable: <error>` when a storage call failed in the last `FAILURE_MEMORY_S` (/readyz: read
        from the requests' own outcomes, never a probe that could hang the readiness check)."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < FAILURE_MEMORY_S:
            return f"unavailable: {self._failure} (requests not limited)"
        return "ok"

    def refuse_failing_client(self, address: str | None, key_id: str | None = None, token: str | None = None) -> None:
        """429 `rate_limited` (scope `auth_failures`) when keys from this client address were refused more often
        than its limit allows, unless this very key (`token`, whole: a key id alone is no secret) authenticated in
        this process lately and its id's own refusals are within the limit; counts nothing. Called before a key is
        looked up."""
        items = self._items[AUTH_FAILURES]
        last = self._last_auth_failure
        if not items or not address or last is None or time.monotonic() - last > self._failure_horizon_s:
            return
        where = _address_key(address)

        def test() -> None:
            limiter = self._ready_limiter()
            for item in items:
                if not limiter.test(item, AUTH_FAILURES, where):
                    if key_id is not None and token is not None and self._is_vouched(token) and all(
                            limiter.test(i, AUTH_FAILURES, f"key:{key_id}") for i in items):
                        return
                    self._refuse(AUTH_FAILURES, item, (AUTH_FAILURES, where))

        self._with_storage(test, counted=False)

    def count_auth_failure(self, address: str | None, key_id: str | None = None) -> None:
        """One key refused (401) for a request from this client address (and, when the key was well formed, for
        its key id: a vouched key id refused too often loses its exemption)."""
        items = self._items[AUTH_FAILURES]
        if not address or not items:
            return
        self._last_auth_failure = time.monotonic()
        keys = [_address_key(address)] + ([f"key:{key_id}"] if key_id else [])

        def hit() -> None:
            limiter = self._ready_limiter()
            for item in items:
                for key in keys:
                    limiter.hit(item, AUTH_FAILURES, key)

        self._with_storage(hit, counted=False)

    def vouch(self, token: str) -> None:
        """The key `token` authenticated: exempt from its address's refused-key block for VOUCHED_S (kept as a keyed
        hash of the whole key, never the key)."""
        if self._items[AUTH_FAILURES]:
            with self._vouched_lock:
                self._vouched[_keyed_hash(token)] = True

    def _is_vouched(self, token: str) -> bool:
        proof = _keyed_hash(token)
        with self._vouched_lock:
            return proof in self._vouched

    def check(self, category: str, principal_id: str, acting_for: str | None) -> None:
        """Count one request of this caller; 429 `rate_limited` when a limit it falls under is spent (and then
        nothing is counted)."""
        parts: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (item, (category, principal_id, acting_for or "")) for item in self._items[category]]
        parts += [(item, (PRINCIPAL, principal_id)) for item in self._items[PRINCIPAL]]
        if not parts:
            return

        def count() -> None:
            limiter = self._ready_limiter()
            for item, key in parts:
                if not limiter.test(item, *key):
                    self._refuse(category, item, key)
            for item, key in parts:
                # hit() counts and checks at once (the library's atomic acquire): a request that passed the tests
                # above while others took the last slot is refused here. The parts it already hit stay counted.
                if not limiter.hit(item, *key):
                    self._refuse(category, item, key)

        self._with_storage(count, counted=True)

    def _with_storage(self, work: Callable[[], None], *, counted: bool) -> None:
        """Run `work` on the storage, unless it failed lately: for RETRY_AFTER_FAILURE_S after a failure it is left
        alone, then one request at a time tries it again while the others go on without it. A failure is served
        unlimited (`counted`: the request is counted in memory_rate_limit_errors_total, once per request)."""
        probe = False
        down_until = self._down_until
        if down_until is not None:
            if time.monotonic() < down_until or not self._probe.acquire(blocking=False):
                if counted:
                    RATE_LIMIT_ERRORS.inc()
                return
            probe = True
        failed = False
        try:
            work()  # (a refusal, RateLimitedError, is the storage answering)
        except StorageError as exc:
            failed = True
            if counted:
                RATE_LIMIT_ERRORS.inc()
            self._storage_failed(exc.storage_error)
        finally:
            if probe:
                if not failed:
                    self._down_until = None
                self._probe.release()

    def _storage_failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self._failed_at, self._failure = now, type(error).__name__
        self._down_until = now + RETRY_AFTER_FAILURE_S
        log.warning("api.rate_limit_unavailable storage=%s error=%s: requests are served unlimited, the storage "
                    "tried again in %.0f s", self._scheme, self._failure, RETRY_AFTER_FAILURE_S)

    def _refuse(self, category: str, item: RateLimitItem, key: tuple[str, ...]) -> None:
        reset = self._ready_limiter().get_window_stats(item, *key).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        scope = key[0] if key[0] in (PRINCIPAL, AUTH_FAILURES) else category
        RATE_LIMITED.labels(category=scope).inc()
        caller = _keyed_hash("\x00".join(key[1:]))[:12]
        log.warning("api.rate_limited category=%s scope=%s limit=%s caller=%s retry_after_s=%d", category, scope, item,
                    caller, retry)
        whose = {PRINCIPAL: "requests from this principal in all",
                 AUTH_FAILURES: "refused API keys from this client address"}.get(scope, f"{category} requests")
        raise RateLimitedError(
            f"too many {whose}: the limit is {item}; retry after {retry} s",
            retry_after_s=retry,
            details={"category": category, "scope": scope, "limit": str(item), "retry_after_s": retry},
        )


class _Unreachable(Exception):
    """The storage could not be reached while its client was built (the cause: the client's error)."""


def _keyed_hash(text: str) -> str:
    """HMAC-SHA256 under this process's own key: names a caller in logs, or a key in memory, irreversibly."""
    return hmac.new(_LOG_KEY, text.encode(), hashlib.sha256).hexdigest()


def _address_key(address: str) -> str:
    """What refused keys are counted on: an IPv4 address, or an IPv6 address's /64 (one host commonly holds a
    whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP (a unix socket's peer, a test client's name): as it is
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
