"""How `memory serve` runs uvicorn: its options from the settings, in one place (the CLI and the tests)."""

from __future__ import annotations

import ipaddress
from typing import Any

from memory.settings import Settings

GRACEFUL_SHUTDOWN_S = 20  # uvicorn's drain of open requests; docker-compose.yml's stop_grace_period counts on it


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` (everything but the app and the workers).

    Forwarded headers are believed only from the proxies MEMORY_FORWARDED_ALLOW_IPS names. uvicorn's own default
    believes X-Forwarded-For from 127.0.0.1 and ::1, so any process on the API's host could claim any client
    address (and escape the refused-key limit, which counts by address); with no proxy named, uvicorn's proxy
    middleware is off and the address is the TCP peer's."""
    trusted = _with_mapped_ipv4(settings.forwarded_allow_ips)
    return {
        "host": settings.host, "port": settings.port, "http": settings.http_impl, "loop": settings.event_loop,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        # uvicorn's access line carries the path and query (principal ids, external keys) and the client's address:
        # the service writes its own (memory.api.app.RequestContextMiddleware, MEMORY_ACCESS_LOG).
        "access_log": False,
        "proxy_headers": bool(trusted), "forwarded_allow_ips": trusted,  # a string: uvicorn never reads its env
        # uvicorn's loggers go to the service's handler (memory.logging_setup: JSON, request and trace ids, no
        # exception messages) instead of handlers of its own, which print an exception's message.
        "log_config": None,
    }


def _with_mapped_ipv4(trusted: str) -> str:
    """Each IPv4 proxy also in its IPv4-mapped IPv6 form: on a dual-stack socket (`--host ::`) an IPv4 peer is
    seen as ::ffff:a.b.c.d, which the plain form would silently never match."""
    items = [i for i in trusted.split(",") if i]
    mapped = []
    for item in items:
        network = ipaddress.ip_network(item)  # an address is its own /32 or /128
        if network.version == 4:
            address = f"::ffff:{network.network_address}"
            mapped.append(address if network.prefixlen == 32 else f"{address}/{96 + network.prefixlen}")
    return ",".join([*items, *mapped])
