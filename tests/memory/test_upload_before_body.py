"""A document upload is answered before its body is received when it is refused: a wrong key (401), a caller
without the steward role (403), another team's source (404), a caller over its ingest limit (429). Only an
upload the caller may make is read. Through the API on the real SQL + Qdrant Edge + parsing (model doubles),
counting the body bytes the app pulls from the ASGI server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import make_api, make_container, uvicorn_in_thread

FILE = b"# Travel\n\n" + b"Train tickets and hotels are reimbursed. " * 50_000  # ~2 MB: refused, never read
SMALL = b"# Travel\n\nTrain tickets and hotels are reimbursed.\n" * 50  # admitted: read and ingested


class BodyMeter:
    """The app behind an ASGI wrapper that counts the request body bytes the app reads."""

    def __init__(self, app: Any) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def metered() -> Message:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, metered, send)

    def post(self, path: str, headers: dict[str, str], **kwargs: Any) -> tuple[Any, int]:
        """(the answer, the body bytes the app read for it)."""
        self.read = 0
        # The app was started by the fixture's client (lifespan); this client only sends requests through the meter.
        response = TestClient(self, raise_server_exceptions=False).post(path, headers=headers, **kwargs)
        return response, self.read


@pytest.fixture
def limited(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_ingest="1/hour")
    yield from make_api(c)
    c.close()


def _code(r: Any) -> str:
    return str(r.json()["error"]["code"])


def test_refused_uploads_are_answered_without_reading_the_file(limited: Any):
    api = limited
    meter = BodyMeter(api.client.app)
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    other = api.principal("other", roles=["steward", "reader"], groups=["elsewhere"])
    reader = api.principal("reader", groups=["g"])
    third = api.principal("third", roles=["steward", "reader"], groups=["g"])
    fourth = api.principal("fourth", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    url, files = "/v1/sources/s1/documents", {"file": ("travel.md", FILE)}

    refusals = [
        ({"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong"}, 401, "invalid_api_key"),
        (reader, 403, "missing_role"),
        (other, 404, "source_not_found"),  # another team's source is unknown to it
        (third, 403, "not_source_steward"),  # a steward who reads the source but does not steward it
    ]
    for headers, status, code in refusals:
        r, read = meter.post(url, headers, files=files)
        assert (r.status_code, _code(r), read) == (status, code, 0), r.text
    r, read = meter.post("/v1/sources/nope/documents", fourth, files=files)  # (each caller counts its own)
    assert (r.status_code, _code(r), read) == (404, "source_not_found", 0)

    r, read = meter.post(url, steward, files={"file": ("travel.md", SMALL)})  # the one upload the limit admits
    assert r.status_code == 201, r.text
    assert read > len(SMALL)  # the file and its multipart envelope
    r, read = meter.post(url, steward, files={"file": ("hotels.md", FILE)})
    assert (r.status_code, _code(r), read) == (429, "rate_limited", 0)
    assert r.headers["Retry-After"]
    documents = api.client.get("/v1/sources/s1/documents", headers=steward).json()["documents"]
    assert [d["external_key"] for d in documents] == ["travel.md"]


def test_an_upload_form_is_still_checked_after_the_caller(api: Any):
    """What FastAPI checked when it read the form itself: a `file` part, one of each, a string key."""
    api.source("s1", read_groups=["g"])
    url = "/v1/sources/s1/documents"
    r = api.client.post(url, headers=api.admin, data={"external_key": "k"})
    assert (r.status_code, _code(r)) == (422, "invalid_request"), r.text
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "file"]
    r = api.client.post(url, headers=api.admin, data={"file": "not a file"})
    assert (r.status_code, _code(r)) == (422, "invalid_request"), r.text
    r = api.client.post(url, headers=api.admin, files=[("file", ("a.md", b"# A\n")), ("external_key", ("k", b"x"))])
    assert (r.status_code, _code(r)) == (422, "invalid_request"), r.text
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "external_key"]
    r = api.client.post(url, headers=api.admin, json={"file": "x"})  # not a form at all
    assert (r.status_code, _code(r)) == (422, "invalid_request"), r.text
    many = [("file", (f"{i}.md", b"# A\n")) for i in range(3)]
    r = api.client.post(url, headers=api.admin, files=many)
    assert (r.status_code, _code(r)) == (422, "multiple_files"), r.text
    r = api.client.post(url, headers=api.admin, files=many * 6)  # past what the form parser takes
    assert (r.status_code, _code(r)) == (422, "invalid_request"), r.text
    r = api.client.post(url, headers=api.admin, files={"file": ("a.md", b"# A\n\nMeals.\n")},
                        data={"external_key": "travel/a", "comment": "an unknown field is ignored"})
    assert (r.status_code, r.json()["external_key"]) == (201, "travel/a"), r.text
    assert api.container.store.count() > 0


def test_the_upload_body_stays_documented(api: Any):
    op = api.client.get("/openapi.json").json()["paths"]["/v1/sources/{source_id}/documents"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert op["requestBody"]["required"] is True
    assert schema["required"] == ["file"] and set(schema["properties"]) == {"file", "external_key"}


def test_over_real_http_a_refused_upload_closes_the_connection_instead_of_draining_the_body(
    tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any
):
    """uvicorn keeps a connection alive by reading and discarding a body the app did not read, up to its whole
    declared length: an early refusal says `Connection: close`, so the server stops taking the file."""
    import socket
    import threading

    from memory.api.app import create_app

    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier)
    try:
        with uvicorn_in_thread(create_app(container=c, warm=False)) as port:
            declared = 100 * 1024 * 1024 // 2  # 50 MB, within the upload limit
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            head = (f"POST /v1/sources/s1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    f"gm_0123456789abcdef_wrongwrongwrongwrongwrong\r\n"
                    f"Content-Type: multipart/form-data; boundary=b\r\n"
                    f"Content-Length: {declared}\r\n\r\n").encode()
            answer = bytearray()

            def read() -> None:
                try:
                    while chunk := sock.recv(65536):
                        answer.extend(chunk)
                except OSError:
                    pass

            reader = threading.Thread(target=read)
            reader.start()
            sent = 0
            try:
                sock.sendall(head)
                block = b"x" * 65536
                while sent < declared:
                    sent += sock.send(block[: declared - sent])
            except OSError:  # the server closed the connection: the rest of the body was never taken
                pass
            reader.join(10)
            sock.close()
            text = bytes(answer).decode("latin-1").lower()
            assert text.startswith("http/1.1 401"), text[:200]
            assert "connection: close" in text
            assert sent < declared // 2, sent
    finally:
        c.close()
