"""The API end to end on the real SQL + Qdrant Edge + unstructured, with fast model doubles."""

from __future__ import annotations


def test_upload_then_search_returns_cited_hits(api):
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"])
    r = api.upload("s1", "notes.md", "# Travel\n\nThe travel policy covers train tickets and hotels.\n")
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "created"
    res = api.search(reader, "train tickets policy")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["hits"], body
    cit = body["hits"][0]["citation"]
    assert cit["source_id"] == "s1" and cit["version"] == 1 and len(cit["chunk_sha256"]) == 64
