"""Citations: provenance lookup and verification through the API and the service."""

from __future__ import annotations

from sqlalchemy import update

from memory import verification
from memory.db import transaction
from memory.models import Chunk

DOC = "# Travel\n\nThe travel policy covers train tickets and hotels.\n"


def _served_citation(api, reader):
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "travel.md", DOC).status_code == 201
    res = api.search(reader, "train tickets policy")
    assert res.status_code == 200, res.text
    return res.json()["hits"][0]["citation"]


def test_a_served_citation_verifies_as_valid_and_current(api):
    reader = api.principal("r1", groups=["g"])
    cit = _served_citation(api, reader)
    r = api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True and body["problems"] == []
    assert body["status"]["state"] == "current"
    assert body["recomputed_chunk_sha256"] == cit["chunk_sha256"]
    assert [s["principal_id"] for s in body["served_by"]] == ["r1"]


def test_get_citation_gives_the_provenance_chain(api):
    reader = api.principal("r1", groups=["g"])
    auditor = api.principal("aud", roles=["auditor"])
    cit = _served_citation(api, reader)
    r = api.client.get(f"/v1/citations/{cit['chunk_id']}", headers=auditor)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["citation"] == cit
    assert body["source"]["id"] == "s1" and body["document"]["id"] == cit["document_id"]
    assert body["version"]["sha256"] == cit["version_sha256"] and body["chunk"]["text_sha256_matches"] is True
    assert body["served_total"] == 1 and body["served_by"][0]["principal_id"] == "r1"


def test_a_chunk_of_a_version_that_never_committed_is_not_called_current(api):
    """A pending version (an ingest in flight) or a failed one was never served: its status says so."""
    from memory.models import DocumentVersion

    reader = api.principal("r1", groups=["g"])
    auditor = api.principal("aud", roles=["auditor"])
    cit = _served_citation(api, reader)
    with transaction(api.container.sessions) as s:
        s.execute(update(DocumentVersion).where(DocumentVersion.id == cit["version_id"]).values(status="failed"))
    body = api.client.get(f"/v1/citations/{cit['chunk_id']}", headers=auditor).json()
    assert body["status"]["state"] == "uncommitted", body["status"]


def test_tampered_stored_text_is_invalid(api):
    reader = api.principal("r1", groups=["g"])
    cit = _served_citation(api, reader)
    with transaction(api.container.sessions) as s:
        s.execute(update(Chunk).where(Chunk.id == cit["chunk_id"]).values(text="The travel policy covers yachts."))
    body = api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit}).json()
    assert body["valid"] is False
    assert {p["code"] for p in body["problems"]} == {"stored_text_tampered", "chunk_hash_mismatch"}


def test_tampered_text_and_hash_together_still_fail_against_the_citation(api):
    reader = api.principal("r1", groups=["g"])
    cit = _served_citation(api, reader)
    forged = "The travel policy covers yachts."
    with transaction(api.container.sessions) as s:
        s.execute(update(Chunk).where(Chunk.id == cit["chunk_id"])
                  .values(text=forged, sha256=verification.sha256_text(forged)))
    body = api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit}).json()
    assert body["valid"] is False
    assert {p["code"] for p in body["problems"]} == {"chunk_hash_mismatch"}


def test_forged_hashes_and_fields_are_invalid(api):
    reader = api.principal("r1", groups=["g"])
    cit = _served_citation(api, reader)
    cases = {
        "chunk_sha256": ("0" * 64, "chunk_hash_mismatch"),
        "version_sha256": ("f" * 64, "version_hash_mismatch"),
        "start": (cit["start"] + 1, "field_mismatch"),
        "version": (cit["version"] + 1, "field_mismatch"),
        "source_id": ("other", "field_mismatch"),
        "document_id": ("d" * 24, "field_mismatch"),
    }
    for field, (value, code) in cases.items():
        body = api.client.post("/v1/citations/verify", headers=reader,
                               json={"citation": {**cit, field: value}}).json()
        assert body["valid"] is False, field
        assert [(p["code"], p["field"]) for p in body["problems"]] == [(code, field)], body


def test_unknown_chunk_is_404_on_get_and_invalid_on_verify(api):
    auditor = api.principal("aud", roles=["auditor"])
    r = api.client.get("/v1/citations/nope", headers=auditor)
    assert r.status_code == 404 and r.json()["error"]["code"] == "chunk_not_found"
    body = api.client.post("/v1/citations/verify", headers=auditor,
                           json={"citation": {"chunk_id": "nope", "chunk_sha256": "0" * 64}}).json()
    assert body["valid"] is False and body["status"]["state"] == "unknown"
    assert "unknown_chunk" in {p["code"] for p in body["problems"]}
    body = api.client.post("/v1/citations/verify", headers=auditor, json={"citation": {}}).json()
    assert body["valid"] is False and body["problems"][0]["code"] == "malformed_citation"


def test_superseded_after_re_upload_of_changed_content(api):
    reader = api.principal("r1", groups=["g"])
    auditor = api.principal("aud", roles=["auditor"])
    cit = _served_citation(api, reader)
    r = api.upload("s1", "travel.md", DOC + "\nFirst class is not covered.\n")
    assert r.json()["status"] == "updated", r.text
    body = api.client.post("/v1/citations/verify", headers=auditor, json={"citation": cit}).json()
    assert body["valid"] is True
    st = body["status"]
    assert st["state"] == "superseded" and st["superseded_by"] == r.json()["version_id"]
    assert st["superseded_by_version"] == 2 and st["superseded_at"]


def test_a_reader_may_only_look_up_what_they_were_served(api):
    reader = api.principal("r1", groups=["g"])
    other = api.principal("r2", groups=["g"])
    cit = _served_citation(api, reader)
    assert api.client.get(f"/v1/citations/{cit['chunk_id']}", headers=reader).status_code == 200
    for path, kw in ((f"/v1/citations/{cit['chunk_id']}", {}), ("/v1/citations/nope", {})):
        r = api.client.get(path, headers=other, **kw)
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_served_to_caller"
    r = api.client.post("/v1/citations/verify", headers=other, json={"citation": cit})
    assert r.status_code == 403
    # r2 is served it now, and sees only their own record, not r1's
    api.search(other, "train tickets policy")
    body = api.client.get(f"/v1/citations/{cit['chunk_id']}", headers=other).json()
    assert [s["principal_id"] for s in body["served_by"]] == ["r2"]


def test_verify_service_never_raises_on_garbage(container):
    with container.sessions() as s:
        for presented in ({}, {"chunk_id": 5}, {"chunk_id": ""}, {"chunk_id": "x", "version": "1"}):
            result = verification.verify_citation(s, presented=presented)
            assert result.valid is False and result.problems


def test_a_hit_from_an_email_attachment_cites_the_attachment(api):
    """The citation names the attachment a chunk was parsed from (None for the message body); verification
    checks that field like every other one."""
    import email.message

    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "bob@example.com", "Board minutes"
    msg.set_content("Hi Bob, the minutes of the board meeting are attached. Regards, Alice")
    minutes = "# Minutes\n\nThe board approved the warehouse lease renewal for three more years.\n"
    msg.add_attachment(minutes.encode(), maintype="text", subtype="markdown", filename="minutes.md")
    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "board.eml", msg.as_bytes()).status_code == 201

    hits = api.search(reader, "warehouse lease renewal approved by the board").json()["hits"]
    from_attachment = next(h for h in hits if "warehouse lease" in h["text"])
    assert from_attachment["citation"]["attachment"] == "minutes.md"
    body_hit = next(h for h in hits if "minutes of the board meeting are attached" in h["text"])
    assert body_hit["citation"]["attachment"] is None

    cit = from_attachment["citation"]
    ok = api.client.post("/v1/citations/verify", headers=reader, json={"citation": cit}).json()
    assert ok["valid"] is True, ok["problems"]
    forged = api.client.post("/v1/citations/verify", headers=reader,
                             json={"citation": {**cit, "attachment": "other.pdf"}}).json()
    assert forged["valid"] is False
    assert [(p["code"], p["field"]) for p in forged["problems"]] == [("field_mismatch", "attachment")]
    chain = api.client.get(f"/v1/citations/{cit['chunk_id']}", headers=reader).json()
    assert chain["chunk"]["attachment"] == "minutes.md"


def test_a_masked_citation_drops_every_clear_text_field():
    from memory.provenance import CLEAR_TEXT_FIELDS, Citation

    c = Citation(chunk_id="c", document_id="d", version=1, version_id="v", chunk_sha256="a" * 64,
                 version_sha256="b" * 64, source_id="s", source_uri="u", document_uri="f", start=3, end=9,
                 page_number=None, attachment=None, ingested_at="2026-01-01T00:00:00+00:00", ingested_by="x",
                 pipeline_version="p", parser_version="p", chunker_version="p", classifier_version="p",
                 label_map_version="1", embedding_model="m")
    masked = c.masked(None).to_dict()
    assert {f for f, v in masked.items() if v is None} - {"page_number", "attachment"} == set(CLEAR_TEXT_FIELDS)
    assert {f: v for f, v in masked.items() if f not in CLEAR_TEXT_FIELDS} == {
        f: v for f, v in c.to_dict().items() if f not in CLEAR_TEXT_FIELDS}


def test_hide_names_masks_a_name_however_a_uri_or_key_spells_it():
    """Percent-encoded (URIs quote keys), another Unicode normal form, another case: all masked; the longest
    piece first, and nothing else of the value touched."""
    import unicodedata

    from memory.provenance import hide_names

    name = "people/Ms Jürgen Weiß notes.md"
    pii = [{"name": name, "spans": [{"entity_type": "PERSON", "start": 10, "end": 21}]}]
    assert name[10:21] == "Jürgen Weiß"
    expected = "people/Ms <PERSON> notes.md"
    assert hide_names(name, pii) == expected
    assert hide_names("https://intranet.example/hr/people/Ms%20J%C3%BCrgen%20Wei%C3%9F%20notes.md", pii) == (
        "https://intranet.example/hr/people/Ms%20<PERSON>%20notes.md")
    assert hide_names(unicodedata.normalize("NFD", name), pii) == expected
    assert hide_names("PEOPLE/MS JÜRGEN WEISS NOTES.MD".replace("WEISS", "WEIß"), pii) == "PEOPLE/MS <PERSON> NOTES.MD"
    assert hide_names(None, pii) is None and hide_names("plain.md", None) == "plain.md"
