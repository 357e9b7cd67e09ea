"""Per-caller request rate limits: one copilot's runaway loop must not take the shared service from every other
team (on the reference machine the whole service answers ~40 searches a second).

A caller is the authenticated principal together with the user it acts for (`X-Acting-For`): a copilot's service
principal serving thousands of users is limited per user, and a user's own calls separately. Three categories with
their own limits: `search` (POST /v1/search), `ingest` (document uploads) and `other` (every other authenticated
request). Each limit is a `limits` rate string, e.g. `30/second;1200/minute` (every part must hold); an empty one
turns the category's limit off. Counted in a moving window (the `limits` library) in the storage its URI names:
`memory://` keeps the counts in this process (each API replica counts its own); `redis://...` shares them between
replicas (needs the `redis` package). A refused request is 429 `rate_limited` with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from memory.errors import RateLimitedError, ValidationFailedError
from memory.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

CATEGORIES = ("search", "ingest", "other")


def parse_rates(text: str) -> list[RateLimitItem]:
    """The limits a rate string sets ([] for an empty one); ValueError for a malformed one."""
    return list(parse_many(text)) if text.strip() else []


class RateLimits:
    """The limits per category, checked (and counted) once per request after its caller is authenticated."""

    def __init__(self, rates: Mapping[str, str], *, storage_uri: str = "memory://") -> None:
        unknown = set(rates) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown rate limit categories: {sorted(unknown)}")
        self._items = {c: parse_rates(rates.get(c, "")) for c in CATEGORIES}
        try:
            self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        except ConfigurationError as exc:  # e.g. redis:// without the redis package
            raise ValidationFailedError(f"rate limit storage {storage_uri.split(':', 1)[0]!r}: {exc}",
                                        code="invalid_settings") from exc

    def enabled(self, category: str) -> bool:
        return bool(self._items[category])

    def check(self, category: str, principal_id: str, acting_for: str | None) -> None:
        """Count one request of this caller; 429 `rate_limited` when a limit of its category is spent."""
        for item in self._items[category]:
            key = (category, principal_id, acting_for or "")
            if self._limiter.hit(item, *key):
                continue
            reset = self._limiter.get_window_stats(item, *key).reset_time
            retry = max(1, math.ceil(reset - time.time()))
            RATE_LIMITED.labels(category=category).inc()
            # The caller as a short hash: a SIEM can group refusals without user ids in the logs.
            caller = hashlib.sha256("\x00".join(key[1:]).encode()).hexdigest()[:12]
            log.warning("api.rate_limited category=%s limit=%s caller=%s retry_after_s=%d", category, item, caller,
                        retry)
            raise RateLimitedError(
                f"too many {category} requests: the limit is {item}; retry after {retry} s",
                retry_after_s=retry, details={"category": category, "limit": str(item), "retry_after_s": retry},
            )
