"""Error behaviour of the API: stable codes, fail closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from memory.models import ApiKey, Chunk, Document


def code(r):
    return r.json()["error"]["code"]


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, "missing_api_key"),
    ({"Authorization": "Bearer nonsense"}, "invalid_api_key"),
    ({"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong"}, "invalid_api_key"),
])
def test_bad_keys_are_401(api, headers, expected):
    r = api.search(headers, "anything")
    assert r.status_code == 401
    assert code(r) == expected
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_key_is_401(api):
    h = api.principal("r", groups=["g"])
    key_id = h["Authorization"].split("_")[1]
    assert api.search(h, "x").status_code == 200
    assert api.client.delete(f"/v1/keys/{key_id}", headers=api.admin).status_code == 200
    r = api.search(h, "x")
    assert r.status_code == 401 and code(r) == "revoked_api_key"


def test_expired_key_is_401(api):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    h = api.principal("r", groups=["g"], key_expires_at=soon)
    with api.container.sessions() as s:  # the hour passes
        s.execute(update(ApiKey).where(ApiKey.principal_id == "r").values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    r = api.search(h, "x")
    assert r.status_code == 401 and code(r) == "expired_api_key"


def test_a_key_that_would_be_born_expired_is_refused(api):
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    r = api.client.post("/v1/principals", headers=api.admin, json={
        "id": "r", "kind": "user", "clearance": "internal", "jurisdiction": "EU", "key_expires_at": past})
    assert r.status_code == 422 and code(r) == "expiry_in_past"
    assert api.client.get("/v1/principals/r", headers=api.admin).status_code == 404  # nothing half-created
    api.principal("r", groups=["g"])
    r = api.client.post("/v1/principals/r/keys", headers=api.admin, json={"expires_at": past})
    assert r.status_code == 422 and code(r) == "expiry_in_past"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v1/principals", {"id": "u9", "kind": "user", "clearance": "internal", "jurisdiction": "US",
                                "key_expires_at": "0001-01-01T00:00:00+05:00"}),
    ("post", "/v1/principals/admin/keys", {"expires_at": "9999-12-31T23:59:59-05:00"}),
    ("get", "/v1/audit?since=0001-01-01T00:00:00%2B05:00", None),
    ("get", "/v1/audit?until=9999-12-31T23:59:59-05:00", None),
    ("get", "/v1/audit/export?since=9999-12-31T23:59:59-05:00", None),
    ("get", "/v1/usage?since=0001-01-01T00:00:00%2B05:00", None),
    ("get", "/v1/usage?until=9999-12-31T23:59:59-05:00", None),
])
def test_an_instant_outside_years_1_to_9999_in_utc_is_422(api, method, path, body):
    r = api.client.request(method.upper(), path, headers=api.admin, json=body)
    assert r.status_code == 422 and code(r) == "invalid_request", r.text


def test_deactivated_principal_is_401(api):
    h = api.principal("r", groups=["g"])
    assert api.client.patch("/v1/principals/r", headers=api.admin, json={"active": False}).status_code == 200
    r = api.search(h, "x")
    assert r.status_code == 401 and code(r) == "inactive_principal"


def test_missing_role_is_403(api):
    reader = api.principal("r", groups=["g"])
    r = api.client.post("/v1/sources", headers=reader, json={"id": "s", "name": "s", "jurisdiction": "EU"})
    assert r.status_code == 403 and code(r) == "missing_role"
    r = api.client.get("/v1/policy/jurisdictions", headers=reader)
    assert r.status_code == 403


def test_acting_for_without_delegation_is_403(api):
    api.principal("alice", groups=["g"])
    agent = api.principal("bot", kind="agent", groups=["g"])
    r = api.search({**agent, "X-Acting-For": "alice"}, "x")
    assert r.status_code == 403 and code(r) == "delegation_not_allowed"


def test_user_cannot_act_for_another_user(api):
    api.principal("alice", groups=["g"])
    bob = api.principal("bob", groups=["g"])
    r = api.search({**bob, "X-Acting-For": "alice"}, "x")
    assert r.status_code == 403 and code(r) == "delegation_not_allowed"


def test_acting_for_unknown_user_is_403(api):
    agent = api.principal("bot", kind="agent", groups=["g"], may_act_for_any=True)
    r = api.search({**agent, "X-Acting-For": "ghost"}, "x")
    assert r.status_code == 403


@pytest.mark.parametrize("body", [
    {},
    {"query": ""},
    {"query": "x", "top_k": 0},
    {"query": "x", "top_k": "many"},
    {"query": "x", "unexpected": 1},
    {"query": "x", "source_ids": [f"s{i}" for i in range(1001)]},  # more than one search may name
    {"query": "x", "source_ids": [""]},
    {"query": "x", "source_ids": ["s" * 129]},
])
def test_malformed_search_body_is_422(api, body):
    h = api.principal("r", groups=["g"])
    r = api.client.post("/v1/search", headers=h, json=body)
    assert r.status_code == 422 and code(r) == "invalid_request"


def test_unknown_source_is_404(api):
    r = api.upload("nope", "a.txt", "hello")
    assert r.status_code == 404 and code(r) == "source_not_found"
    r = api.client.get("/v1/sources/nope", headers=api.admin)
    assert r.status_code == 404 and code(r) == "source_not_found"


def test_duplicate_source_is_409(api):
    api.source("s")
    r = api.client.post("/v1/sources", headers=api.admin, json={"id": "s", "name": "s", "jurisdiction": "EU"})
    assert r.status_code == 409 and code(r) == "source_exists"


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("empty.txt", b"", "empty_document"),
    ("sound.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64), "unsupported_format"),
    ("broken.docx", bytes(range(256)) * 8, "corrupt_document"),
])
def test_bad_uploads_are_422_and_write_nothing(api, name, content, expected):
    api.source("s")
    r = api.upload("s", name, content)
    assert r.status_code == 422, r.text
    assert code(r) == expected
    assert api.container.store.count() == 0


def test_an_upload_the_parser_cannot_run_for_is_503_and_writes_nothing(api, monkeypatch):
    """A broken install (a module the parser needs does not import) is the service's fault, not the file's."""
    from ingest import workers

    def broken(data, filename, **kwargs):
        raise ModuleNotFoundError("No module named 'docx'")

    monkeypatch.setattr(workers, "_parse_document", lambda: broken)
    api.source("s")
    r = api.upload("s", "a.txt", "hello world")
    assert r.status_code == 503 and code(r) == "parser_unavailable", r.text
    assert api.container.store.count() == 0


def test_an_upload_the_embedder_fails_on_is_503_and_writes_nothing(api, monkeypatch):
    """A failing embedding model is the service's fault: 503, not the 422 that tells a client its file is bad."""
    from ingest.errors import EmbeddingError

    def failing(texts, *args, **kwargs):
        raise EmbeddingError("the model failed")

    monkeypatch.setattr(api.container.pipeline.embedder, "embed", failing)
    api.source("s")
    r = api.upload("s", "a.txt", "hello world")
    assert r.status_code == 503 and code(r) == "embedding_failed", r.text
    assert api.container.store.count() == 0


def test_only_the_steward_uploads(api):
    api.principal("other-steward", groups=["g"], roles=["steward"])
    api.source("s")
    h = api.principal("st2", groups=["g"], roles=["steward"])
    r = api.upload("s", "a.txt", "hello world", headers=h)
    assert r.status_code == 403 and code(r) == "not_source_steward"


def test_a_steward_of_another_team_gets_a_sources_write_routes_as_for_an_unknown_id(api):
    """A steward whose groups do not read a source (and who does not steward it) learns nothing of it from the
    write routes: the same 404 `source_not_found` as for an id that does not exist, not a 403."""
    api.source("s", read_groups=["hr"])
    outsider = api.principal("st-other", groups=["eng"], roles=["steward"])
    for sid in ("s", "ghost"):
        r = api.upload(sid, "a.txt", "hello world", headers=outsider)
        assert (r.status_code, code(r)) == (404, "source_not_found"), r.text
        r = api.client.patch(f"/v1/sources/{sid}", headers=outsider, json={"name": "x"})
        assert (r.status_code, code(r)) == (404, "source_not_found"), r.text
    assert api.container.store.count() == 0


def test_a_body_past_its_limit_is_413_before_it_is_read(tmp_path, db_url, fake_embedder, fake_classifier):
    """JSON bodies past MEMORY_MAX_REQUEST_BYTES and uploads past the document limit (plus the multipart
    envelope) are refused with 413 request_too_large: from Content-Length before the app reads a byte (a
    made-up key included), and from the bytes counted when the body comes chunked."""
    from tests.conftest import make_api, make_container

    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       max_request_bytes=4096, max_upload_bytes=2048)
    try:
        for api in make_api(c):
            h = api.principal("r", groups=["g"])
            bogus = {"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong"}
            big = b'{"query": "' + b"a" * 8000 + b'"}'
            for headers in (h, bogus):
                r = api.client.post("/v1/search", headers={**headers, "Content-Type": "application/json"},
                                    content=big)
                assert (r.status_code, code(r)) == (413, "request_too_large"), r.text
            chunked = api.client.post("/v1/search", headers={**h, "Content-Type": "application/json"},
                                      content=iter([big[:3000], big[3000:]]))
            assert (chunked.status_code, code(chunked)) == (413, "request_too_large"), chunked.text
            for headers in (h, bogus):  # a multipart header buys a JSON route no more than the JSON limit
                r = api.client.post("/v1/search", headers={**headers, "Content-Type": "multipart/form-data; b=x"},
                                    content=big)
                assert (r.status_code, code(r)) == (413, "request_too_large"), r.text
            assert api.search(h, "small enough").status_code == 200
            api.source("s")
            assert api.upload("s", "a.txt", "hello world").status_code == 201
            r = api.upload("s", "b.txt", "word " * 300_000)
            assert (r.status_code, code(r)) == (413, "request_too_large"), r.text
    finally:
        c.close()


def test_a_document_past_the_chunk_limit_is_422_and_nothing_is_stored(
        tmp_path, db_url, real_embedder, real_classifier):
    """Real pipeline (unstructured, the model's tokenizer, Presidio): a file that makes more chunks than
    MEMORY_MAX_DOCUMENT_CHUNKS is refused with too_many_chunks before anything is classified, embedded or
    stored; a file within the limit is stored."""
    from tests.conftest import make_api, make_container

    c = make_container(tmp_path, db_url, embedder=real_embedder, classifier=real_classifier, max_document_chunks=3)
    try:
        for api in make_api(c):
            api.source("s")
            paragraph = "The vendor review covers contracts, renewals and the budget of every region. " * 12
            r = api.upload("s", "long.txt", "\n\n".join([paragraph] * 6))
            assert (r.status_code, code(r)) == (422, "too_many_chunks"), r.text
            assert "limit of 3" in r.json()["error"]["message"]
            assert api.container.store.count() == 0
            with api.container.sessions() as session:
                assert [session.scalar(select(func.count()).select_from(m)) for m in (Document, Chunk)] == [0, 0]
            assert api.upload("s", "short.txt", paragraph).status_code == 201
            assert api.container.store.count() == 1
    finally:
        c.close()


def test_look_alike_and_loosely_typed_values_are_422(api):
    """A trailing newline makes no new group or id ("hr\n" would look like hr and match nobody); booleans and
    integers are JSON's own, not "0", "yes", true-as-1 or "5"; a jurisdiction is ASCII (a Cyrillic "ЕU" would
    be a look-alike jurisdiction)."""
    api.principal("alice", groups=["g"])
    cases = [
        ("post", "/v1/sources", {"id": "s9", "name": "S", "jurisdiction": "EU", "read_groups": ["hr\n"]}),
        ("post", "/v1/sources", {"id": "s9\n", "name": "S", "jurisdiction": "EU"}),
        ("patch", "/v1/principals/alice", {"groups": ["hr\n"]}),
        ("patch", "/v1/principals/alice", {"active": "0"}),
        ("post", "/v1/sources", {"id": "s9", "name": "S", "jurisdiction": "EU",
                                 "personal_data_requires_consent": "yes"}),
        ("post", "/v1/sources", {"id": "s9", "name": "S", "jurisdiction": "\u0415U"}),
        ("post", "/v1/sources", {"id": "s9", "name": "S", "jurisdiction": "\u0131\u0131"}),
        ("post", "/v1/search", {"query": "x", "top_k": "5"}),
        ("post", "/v1/search", {"query": "x", "top_k": True}),
    ]
    for method, path, body in cases:
        r = getattr(api.client, method)(path, headers=api.admin, json=body)
        assert r.status_code == 422, (path, body, r.status_code, r.text)
    api.source("s1")
    doc = api.upload("s1", "a.md", "# A\n\nParental leave is twelve weeks.\n").json()["document_id"]
    r = api.client.post(f"/v1/documents/{doc}/retract", headers=api.admin, json={"reason": "x", "version": True})
    assert r.status_code == 422 and code(r) == "invalid_request", r.text
    assert api.client.get("/v1/principals/alice", headers=api.admin).json()["active"] is True


def test_filters_and_keys_that_cannot_mean_anything_are_422(api):
    """An unknown audit event (was: 200 with nothing), a usage window that ends before it starts, a document key
    with a control character (it would reach URIs and citations)."""
    r = api.client.get("/v1/audit", headers=api.admin, params={"event": "bogus"})
    assert (r.status_code, code(r)) == (422, "invalid_request")
    r = api.client.get("/v1/usage", headers=api.admin,
                       params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert (r.status_code, code(r)) == (422, "invalid_window"), r.text
    api.source("s")
    r = api.client.post("/v1/sources/s/documents", headers=api.admin, data={"external_key": "line1\nline2"},
                        files={"file": ("a.txt", b"hello world")})
    assert (r.status_code, code(r)) == (422, "invalid_external_key"), r.text
    r = api.client.post("/v1/sources/s/documents", headers=api.admin, data={"external_key": "short.txt"},
                        files={"file": ("n" * 1100 + ".txt", b"hello world")})
    assert (r.status_code, code(r)) == (422, "invalid_filename"), r.text
    assert api.container.store.count() == 0


def test_unknown_route_has_a_stable_code(api):
    r = api.client.get("/v1/nothing-here")
    assert r.status_code == 404 and code(r) == "route_not_found"


def test_openapi_documents_every_endpoint_and_error(api):
    spec = api.client.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"]
    search = spec["paths"]["/v1/search"]["post"]
    for status in ("401", "403", "422"):
        assert status in search["responses"]
    assert "ErrorResponse" in spec["components"]["schemas"]


def test_numbers_too_large_for_their_columns_are_422(api):
    r = api.client.get("/v1/audit", headers=api.admin, params={"after_seq": 2**63})
    assert r.status_code == 422 and code(r) == "invalid_request"
    api.source("s1")
    doc = api.upload("s1", "a.md", "# A\n\nParental leave is twelve weeks.\n").json()["document_id"]
    for action in ("retract", "restore"):
        r = api.client.post(f"/v1/documents/{doc}/{action}", headers=api.admin,
                            json={"reason": "x", "version": 99999999999999999999})
        assert r.status_code == 422 and code(r) == "invalid_request", r.text


def test_a_body_that_cannot_be_parsed_is_422_and_a_wrong_key_still_401(api):
    h = api.principal("r", groups=["g"])
    raw = b'{"query":"\xff\xfe"}'
    r = api.client.post("/v1/search", headers={**h, "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 422 and code(r) == "invalid_request", r.text
    wrong = {"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong"}
    r = api.client.post("/v1/search", headers={**wrong, "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 401 and code(r) == "invalid_api_key"
    api.source("s1")
    r = api.client.post("/v1/sources/s1/documents", headers={**api.admin, "Content-Type": "multipart/form-data"},
                        content=b"--x\r\n")
    assert r.status_code == 422 and code(r) == "invalid_request", r.text


def test_a_refused_delegation_is_403_whatever_the_body(api):
    """401, then 403 for the delegation, then 422: an agent acting for a user it may not act for learns that
    before anything about its body."""
    api.principal("bob", groups=["g"])
    bot = api.principal("bot", kind="agent", groups=["g"], may_act_for=[])
    for body in ({"query": "x", "top_k": 0}, {"query": 5}):
        r = api.client.post("/v1/search", headers={**bot, "X-Acting-For": "bob"}, json=body)
        assert (r.status_code, code(r)) == (403, "delegation_not_allowed"), r.text
        r = api.client.post("/v1/search", headers=bot, json=body)  # on its own: the body's 422
        assert (r.status_code, code(r)) == (422, "invalid_request"), r.text
    r = api.client.post("/v1/search", headers={**bot, "X-Acting-For": "ghost"}, json={"query": 5})
    assert (r.status_code, code(r)) == (403, "delegation_not_allowed"), r.text


def test_a_repeated_identity_header_is_refused(api):
    bob = api.principal("bob", groups=["g"])
    alice = api.principal("alice", groups=["g"])
    bot = api.principal("bot", kind="agent", groups=["g"], may_act_for_any=True)
    twice = [("Authorization", bot["Authorization"]), ("X-Acting-For", "bob"), ("X-Acting-For", "alice")]
    r = api.client.post("/v1/search", headers=twice, json={"query": "x"})
    assert r.status_code == 422 and code(r) == "duplicate_header", r.text
    keys = [("Authorization", bob["Authorization"]), ("Authorization", alice["Authorization"])]
    r = api.client.get("/v1/principals/bob", headers=keys)
    assert r.status_code == 422 and code(r) == "duplicate_header"
    assert api.client.get("/healthz", headers=keys).status_code == 200  # routes without a key: untouched


def test_a_source_is_stewarded_only_by_an_active_steward(api):
    api.principal("bob", groups=["g"])  # a reader
    st = api.principal("st", groups=["g"], roles=["steward"])
    body = {"id": "s1", "name": "S", "steward": "bob", "jurisdiction": "EU", "read_groups": ["g"]}
    r = api.client.post("/v1/sources", headers=api.admin, json=body)
    assert r.status_code == 422 and code(r) == "invalid_steward"
    assert api.client.post("/v1/sources", headers=api.admin, json={**body, "steward": "st"}).status_code == 201
    r = api.client.patch("/v1/sources/s1", headers=st, json={"steward": "bob"})  # handing it to a reader
    assert r.status_code == 422 and code(r) == "invalid_steward"
    assert api.client.get("/v1/sources/s1", headers=st).json()["steward"] == "st"  # nothing changed


def test_a_steward_naming_a_steward_cannot_tell_unknown_ids_from_readers(api):
    """Only admins read principals: to a steward, an unknown id and a principal who cannot steward get one answer
    (else naming guesses lists the principal ids); an admin is told the id is unknown."""
    api.principal("bob", groups=["g"])  # exists, cannot steward
    st = api.principal("st", groups=["g"], roles=["steward"])
    body = {"id": "s1", "name": "S", "jurisdiction": "EU", "read_groups": ["g"]}
    answers = [api.client.post("/v1/sources", headers=st, json={**body, "steward": who}) for who in ("bob", "ghost")]
    assert [(r.status_code, code(r)) for r in answers] == [(422, "invalid_steward")] * 2
    assert answers[0].json()["error"]["message"].replace("bob", "X") == answers[1].json()["error"]["message"].replace(
        "ghost", "X")
    assert api.client.post("/v1/sources", headers=st, json=body).status_code == 201
    answers = [api.client.patch("/v1/sources/s1", headers=st, json={"steward": who}) for who in ("bob", "ghost")]
    assert [(r.status_code, code(r)) for r in answers] == [(422, "invalid_steward")] * 2
    r = api.client.patch("/v1/sources/s1", headers=api.admin, json={"steward": "ghost"})
    assert (r.status_code, code(r)) == (404, "principal_not_found")
    r = api.client.post("/v1/sources", headers=api.admin, json={**body, "id": "s2", "steward": "ghost"})
    assert (r.status_code, code(r)) == (404, "principal_not_found")
    assert api.client.get("/v1/sources/s1", headers=st).json()["steward"] == "st"  # nothing changed


def test_auditors_read_every_source_and_readers_none(api):
    api.source("s1", read_groups=["other"])
    auditor = api.principal("aud", roles=["auditor"])
    assert [s["id"] for s in api.client.get("/v1/sources", headers=auditor).json()] == ["s1"]
    assert api.client.get("/v1/sources/s1", headers=auditor).status_code == 200
    reader = api.principal("r", groups=["other"])
    r = api.client.get("/v1/sources", headers=reader)
    assert r.status_code == 403 and code(r) == "missing_role"


def test_lists_of_names_are_bounded(api):
    many = [f"g{i}" for i in range(1001)]
    r = api.client.post("/v1/principals", headers=api.admin, json={
        "id": "u", "kind": "user", "clearance": "internal", "jurisdiction": "EU", "groups": many})
    assert r.status_code == 422 and code(r) == "invalid_request"
    r = api.client.post("/v1/sources", headers=api.admin, json={
        "id": "s", "name": "S", "jurisdiction": "EU", "read_groups": many})
    assert r.status_code == 422 and code(r) == "invalid_request"
    api.source("s1")
    r = api.client.patch("/v1/sources/s1", headers=api.admin, json={"consent_purposes": many})
    assert r.status_code == 422 and code(r) == "invalid_request"
