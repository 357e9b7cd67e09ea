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


def test_an_upload_answers_201_for_a_new_version_and_200_when_unchanged(api):
    api.source("s1", read_groups=["g"])
    first = api.upload("s1", "notes.md", "# Travel\n\nTrain tickets and hotels.\n")
    again = api.upload("s1", "notes.md", "# Travel\n\nTrain tickets and hotels.\n")
    changed = api.upload("s1", "notes.md", "# Travel\n\nTrain tickets, hotels and taxis.\n")
    assert [(r.status_code, r.json()["status"], r.json()["version"]) for r in (first, again, changed)] == [
        (201, "created", 1), (200, "unchanged", 1), (201, "updated", 2)]
    documented = api.client.get("/openapi.json").json()["paths"]["/v1/sources/{source_id}/documents"]["post"]
    assert {"200", "201", "422"} <= set(documented["responses"])


def test_an_upload_with_two_files_is_422_and_stores_neither(api):
    api.source("s1", read_groups=["g"])
    two = [("file", ("a.md", b"# A\n\nFirst.\n")), ("file", ("b.md", b"# B\n\nSecond.\n"))]
    r = api.client.post("/v1/sources/s1/documents", headers=api.admin, files=two)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "multiple_files"), r.text
    keys = api.client.post("/v1/sources/s1/documents", headers=api.admin, files=two[:1],
                           data={"external_key": ["k1", "k2"]})
    assert (keys.status_code, keys.json()["error"]["code"]) == (422, "multiple_files"), keys.text
    assert api.container.store.count() == 0
    unauthenticated = api.client.post("/v1/sources/s1/documents", files=two)
    assert unauthenticated.status_code == 401, unauthenticated.text
    assert api.upload("s1", "a.md", "# A\n\nFirst.\n").status_code == 201
