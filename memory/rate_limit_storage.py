"""Checks on MEMORY_RATE_LIMIT_STORAGE beyond what the `limits` library and redis-py refuse themselves: each would
otherwise take some mistakes silently (redis-py reads `/abc` as database 0 and passes an unknown query
parameter on to the connection, which then fails every check: every request served unlimited). Messages never
repeat the URI, which may hold a password."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from memory.errors import ValidationFailedError

REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
VALKEY_SCHEMES = ("valkey", "valkeys", "valkey+unix", "valkey+sentinel", "valkey+cluster")
# redis-py's URL options (redis.connection.URL_QUERY_ARGUMENT_PARSERS) plus the sentinel's service name, which
# `limits` reads from the query too.
_QUERY_OPTIONS = frozenset({
    "db", "socket_timeout", "socket_connect_timeout", "socket_read_size", "socket_keepalive", "retry_on_timeout",
    "retry_on_error", "max_connections", "health_check_interval", "ssl_check_hostname", "ssl_include_verify_flags",
    "ssl_exclude_verify_flags", "ssl_min_version", "timeout", "protocol", "legacy_responses", "ssl_cert_reqs",
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "service_name",
    # redis-py hands these on to the connection as they are (its constructor's keywords).
    "password", "username", "client_name", "ssl_ca_path", "ssl_ciphers", "ssl_password",
})
_OPTION_NAME = re.compile(r"[a-z_]{1,40}")


def _refuse(scheme: str, reason: str) -> ValidationFailedError:
    return ValidationFailedError(f"rate limit storage {scheme!r}: {reason}", code="invalid_settings")


def check_storage_uri(uri: str) -> None:
    """invalid_settings unless `uri` is `memory://` or a Redis URI (for a Redis or Valkey server) the service can
    use as written.
    Only known words of the URI are ever quoted back: its scheme when it is one of the known schemes (a value
    without one may be a password pasted alone), and unknown query parameters only by name when they look like
    one (a password's unencoded `?` starts the query early)."""
    scheme = uri.split(":", 1)[0] if "://" in uri else ""
    if uri == "memory://":
        return
    if scheme not in (*REDIS_SCHEMES, *VALKEY_SCHEMES, "memory"):
        raise ValidationFailedError(
            "rate limit storage: unrecognised scheme: use memory:// (this process) or "
            "redis://[:password@]host:port/db (rediss://, redis+sentinel://, redis+cluster://, redis+unix://)",
            code="invalid_settings")
    if scheme in VALKEY_SCHEMES:
        # The `valkey` client raises exceptions of its own, which the limits could not tell apart (an unreachable
        # storage from refused credentials), and takes none of redis-py's bounds: redis-py speaks to Valkey too.
        raise _refuse(scheme, f"is not supported: redis{scheme.removeprefix('valkey')}:// reaches a Valkey server "
                      "(with redis-py, whose errors and time bounds the limits know)")
    plain = scheme in ("redis", "rediss")  # one host (sentinel and cluster: a list)
    try:
        parts = urlsplit(uri)
        if plain:
            parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise _refuse(scheme, "the URI does not parse (percent-encode a password's reserved characters)") from None
    if scheme == "memory":
        raise _refuse(scheme, "takes nothing after memory://")
    if parts.fragment or "#" in uri:  # a password's unencoded `#` ends the URI's query early, at a part of it
        raise _refuse(scheme, "the URI holds a `#`: percent-encode a password's `#` (%23)")
    unknown = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)} - _QUERY_OPTIONS
    if unknown:
        named = sorted(k for k in unknown if _OPTION_NAME.fullmatch(k))
        what = f"{named}" if len(named) == len(unknown) else f"({len(unknown)}; percent-encode a password's `?`)"
        raise _refuse(scheme, f"unknown query parameters {what}: redis-py would fail every connection")
    if scheme.endswith("+unix"):
        if not parts.path:
            raise _refuse(scheme, "names no socket path")
    elif not (parts.hostname if plain else parts.netloc.rpartition("@")[2]):
        raise _refuse(scheme, "names no host")
    if plain and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise _refuse(scheme, "the path must be a database number (/0): redis-py would use database 0 silently")
