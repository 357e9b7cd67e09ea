"""The offline switches, unstructured's spaCy model resolving offline, and the scoped network guard."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from ingest.offline import (
    NetworkBlockedError,
    blocked_attempts,
    ensure_offline,
    ensure_parser_offline,
    network_guard_active,
    no_network,
)

# TEST-NET-3 (RFC 5737): documentation addresses, never routed. Blocked before any packet is sent anyway.
UNROUTABLE = ("203.0.113.7", 443)


def test_ensure_offline_sets_the_switches() -> None:
    ensure_offline()

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK", "SCARF_NO_ANALYTICS"):
        assert os.environ[key] == "1"
    assert os.environ["UNSTRUCTURED_DISABLE_NOTICE"] == "1"
    assert os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] == ""


def test_guard_blocks_a_real_connect() -> None:
    before = len(blocked_attempts())
    with no_network(), pytest.raises(NetworkBlockedError):
        socket.create_connection(UNROUTABLE, timeout=1)

    assert blocked_attempts()[before:] and "203.0.113.7" in blocked_attempts()[-1]


def test_guard_blocks_a_raw_socket_connect_and_dns() -> None:
    with no_network():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with pytest.raises(NetworkBlockedError):
                sock.connect(UNROUTABLE)
            with pytest.raises(NetworkBlockedError):
                sock.connect_ex(UNROUTABLE)
        finally:
            sock.close()
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("example.com", 443)
        with pytest.raises(NetworkBlockedError):
            socket.gethostbyname("example.com")


def test_guard_blocks_urllib() -> None:
    import urllib.error
    import urllib.request

    with no_network(), pytest.raises((NetworkBlockedError, urllib.error.URLError)):
        urllib.request.urlopen("https://example.com/", timeout=1)


def test_guard_allows_loopback() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with no_network():
            client = socket.create_connection(server.getsockname(), timeout=1)
            client.close()
    finally:
        server.close()


def test_guard_is_scoped_and_restored_after_errors() -> None:
    assert not network_guard_active()
    with pytest.raises(RuntimeError), no_network():
        assert network_guard_active()
        raise RuntimeError("boom")

    assert not network_guard_active()
    # Outside the guard nothing is blocked: the service talks to its database and vector store.
    socket.getaddrinfo("localhost", 5432)


def test_guard_does_not_leak_into_other_threads() -> None:
    seen: list[bool] = []
    with no_network():
        worker = threading.Thread(target=lambda: seen.append(network_guard_active()))
        worker.start()
        worker.join()

    assert seen == [False]


def test_unstructured_spacy_model_resolves_offline(socket_events: list[str]) -> None:
    ensure_parser_offline()
    from unstructured.nlp import tokenize

    with no_network():
        nlp = tokenize._get_nlp()
        sentences = tokenize.sent_tokenize("The budget is final. Hiring starts in March.")

    assert nlp.lang == "en" and nlp.meta["name"].startswith("core_web_sm") and nlp.meta["version"] == "3.8.0"
    assert sentences == ["The budget is final.", "Hiring starts in March."]
    assert socket_events == []
