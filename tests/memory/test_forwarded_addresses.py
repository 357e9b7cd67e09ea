"""Whose X-Forwarded-For `memory serve` believes: only the proxies MEMORY_FORWARDED_ALLOW_IPS names (uvicorn's
own default believes 127.0.0.1 and ::1, so any process on the host could claim any client address and escape
the refused-key limit, which counts by address). Settings, the options `memory serve` hands uvicorn, and real
uvicorn with the real SQL + Qdrant Edge stack (model doubles)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from memory.api.serving import uvicorn_options
from memory.settings import Settings
from tests.conftest import make_container, uvicorn_in_thread

BAD_KEY = "gm_0123456789abcdef_wrongwrongwrongwrongwrong"


@pytest.mark.parametrize(("value", "kept"), [
    ("", ""),
    ("10.0.0.7", "10.0.0.7"),
    (" 10.0.0.0/8 , ::1,fd00::/8 ", "10.0.0.0/8,::1,fd00::/8"),
])
def test_proxies_are_addresses_or_networks(value: str, kept: str):
    assert Settings(forwarded_allow_ips=value).forwarded_allow_ips == kept  # type: ignore[call-arg]


@pytest.mark.parametrize("value", [
    "10.0.0.1/8",      # host bits set: uvicorn would take it as a host name and never match it
    "proxy.internal",  # a name: never matches a peer address
    "10.0.0.300",
    "*,10.0.0.1",      # uvicorn's wildcard only works alone: beside an address it trusts nobody
    "*",               # alone, uvicorn takes the left-most X-Forwarded-For entry: the client's own words
    "0.0.0.0/0",
    "::/0",
])
def test_what_uvicorn_would_silently_never_match_is_refused(value: str):
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings(forwarded_allow_ips=value)  # type: ignore[call-arg]


def test_no_proxy_named_turns_uvicorns_proxy_headers_off():
    options = uvicorn_options(Settings())  # type: ignore[call-arg]
    assert options["proxy_headers"] is False and options["forwarded_allow_ips"] == ""
    options = uvicorn_options(Settings(forwarded_allow_ips="10.0.0.0/8,10.9.0.1,fd00::1"))  # type: ignore[call-arg]
    assert options["proxy_headers"] is True
    # On a dual-stack socket (--host ::) an IPv4 proxy is seen as ::ffff:a.b.c.d: both forms are trusted.
    assert options["forwarded_allow_ips"] == "10.0.0.0/8,10.9.0.1,fd00::1,::ffff:10.0.0.0/104,::ffff:10.9.0.1"
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    trusted = _TrustedHosts(options["forwarded_allow_ips"])
    assert "::ffff:10.200.3.4" in trusted and "::ffff:10.9.0.1" in trusted and "::ffff:11.0.0.1" not in trusted


@contextmanager
def _served(tmp_path: Path, db_url: str, embedder: Any, classifier: Any, trusted: str) -> Iterator[str]:
    from memory.api.app import create_app

    c = make_container(tmp_path, db_url, embedder=embedder, classifier=classifier,
                       rate_limit_auth_failures="2/minute", forwarded_allow_ips=trusted)
    options = {**uvicorn_options(c.settings), "host": "127.0.0.1", "port": 0}
    try:
        with uvicorn_in_thread(create_app(container=c, warm=False), **options) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        c.close()


def _statuses(base: str, claimed: list[str]) -> list[int]:
    """A wrong key from each claimed client address in turn (all sent from 127.0.0.1)."""
    with httpx.Client(base_url=base, timeout=10) as client:
        return [client.get("/v1/sources", headers={"Authorization": f"Bearer {BAD_KEY}",
                                                   "X-Forwarded-For": ip}).status_code for ip in claimed]


def test_a_local_process_cannot_claim_another_address(
    tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any
):
    """Default: the header is not believed, so three addresses claimed from one peer are one address."""
    with _served(tmp_path, db_url, fake_embedder, fake_classifier, trusted="") as base:
        assert _statuses(base, ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) == [401, 401, 429]


def test_a_named_proxy_is_believed(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any):
    """127.0.0.1 named as the proxy: each forwarded client is counted on its own."""
    with _served(tmp_path, db_url, fake_embedder, fake_classifier, trusted="127.0.0.1") as base:
        assert _statuses(base, ["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"]) == [401, 401, 429, 401]
