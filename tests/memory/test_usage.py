"""Economics: usage per principal/team/source and embedding work saved by shared content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

TEXT = "# Onboarding\n\nEvery new hire gets a laptop, a badge and a buddy in the first week.\n"


def test_usage_meters_the_masked_texts_embedded_for_twins(api):
    api.source("hr-docs", read_groups=["hr"])
    api.source("eng-docs", read_groups=["eng"])
    personal = "# Payroll\n\nQuestions about payroll go to alice.smith@example.com this month.\n"
    assert api.upload("hr-docs", "payroll.md", personal).status_code == 201
    assert api.upload("eng-docs", "payroll.md", personal).status_code == 201
    u = api.client.get("/v1/usage", headers=api.admin).json()
    assert u["by_source"]["hr-docs"]["masked_texts_embedded"] == 1
    assert u["by_source"]["eng-docs"]["masked_texts_embedded"] == 0  # embedded once, metered where it was done


def test_usage_counts_queries_and_shared_content(api):
    alice = api.principal("alice", groups=["hr"], clearance="confidential")
    api.source("hr-docs", read_groups=["hr"])
    api.source("eng-docs", read_groups=["eng"])
    assert api.upload("hr-docs", "onboarding.md", TEXT).json()["embedded"] >= 1
    copy = api.upload("eng-docs", "onboarding.md", TEXT).json()
    assert copy["embedded"] == copy["chunks"]  # new to eng-docs: the cache hit on hr-docs' text is not revealed
    hits = api.search(alice, "laptop badge buddy").json()["hits"]
    assert {h["citation"]["source_id"] for h in hits} == {"hr-docs"}  # the copy keeps its own ACL

    r = api.client.get("/v1/usage", headers=api.admin)
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["by_principal"]["alice"]["queries"] == 1
    assert u["by_principal"]["alice"]["chunks_served"] == len(hits)
    assert u["by_group"]["hr"]["queries"] == 1
    assert u["by_source"]["hr-docs"]["chunks_served"] == len(hits)
    assert u["by_source"]["eng-docs"]["chunks_embedded"] == 0  # embedded once, metered where it was done
    assert u["duplicates"]["texts_shared_across_sources"] >= 1
    assert u["duplicates"]["embeddings_saved"] >= 1


def test_a_team_keeps_its_past_usage_when_a_member_moves(api):
    """Each search is charged to the groups it ran under (its record's), not to the user's groups today; an
    agent's search for a user, to what the two share; an agent searching for itself, to no team."""
    u1 = api.principal("u1", groups=["team-a"])
    bot = api.principal("bot", kind="agent", groups=["team-a", "team-c"], may_act_for=["u1"])
    api.source("docs", read_groups=["team-a", "team-b", "team-c"])
    assert api.upload("docs", "onboarding.md", TEXT).status_code == 201
    for _ in range(3):
        assert api.search(u1, "laptop badge").status_code == 200
    assert api.search({**bot, "X-Acting-For": "u1"}, "laptop badge").status_code == 200
    assert api.search(bot, "laptop badge").status_code == 200
    r = api.client.patch("/v1/principals/u1", headers=api.admin, json={"groups": ["team-b"]})
    assert r.status_code == 200, r.text
    assert api.search(u1, "laptop badge").status_code == 200
    by_group = api.client.get("/v1/usage", headers=api.admin).json()["by_group"]
    assert {g: row["queries"] for g, row in by_group.items() if "queries" in row} == {"team-a": 4, "team-b": 1}
    by_principal = api.client.get("/v1/usage", headers=api.admin).json()["by_principal"]
    assert (by_principal["u1"]["queries"], by_principal["bot"]["queries"]) == (5, 2)


def test_usage_is_admin_only(api):
    reader = api.principal("r", groups=["g"])
    assert api.client.get("/v1/usage", headers=reader).status_code == 403


@pytest.mark.parametrize("hours", [0, -5, 5, 13])
def test_usage_window_is_the_same_instant_in_any_zone(api, hours):
    reader = api.principal("r", groups=["g"])
    api.source("s1", read_groups=["g"])
    api.upload("s1", "onboarding.md", TEXT)
    for _ in range(2):
        api.search(reader, "laptop badge buddy")
    zone = timezone(timedelta(hours=hours))
    now = datetime.now(UTC)
    before, after = (now - timedelta(minutes=1)).astimezone(zone), (now + timedelta(minutes=1)).astimezone(zone)

    def queries(**window: datetime) -> float:
        r = api.client.get("/v1/usage", headers=api.admin, params={k: v.isoformat() for k, v in window.items()})
        assert r.status_code == 200, r.text
        return float(r.json()["totals"]["queries"])

    assert queries(since=before) == queries(until=after) == queries(since=before, until=after) == 2
    assert queries(since=after) == queries(until=before) == 0


@pytest.mark.parametrize(("since", "until", "status"), [
    ("2030-01-01T00:00:00", "2030-01-02T00:00:00+00:00", 200),
    ("2030-01-01T00:00:00+00:00", "2030-01-02T00:00:00", 200),
    ("2030-01-02T00:00:00", "2030-01-01T00:00:00+00:00", 422),
    ("2030-01-01T12:00:00", "2030-01-01T13:00:00+02:00", 422),  # 11:00 UTC: before since
])
def test_a_window_mixing_naive_and_zoned_times_compares_them_in_utc(api, since, until, status):
    """A naive time is UTC; one with an offset is converted: the two compare, never a 500 (found by review)."""
    r = api.client.get("/v1/usage", headers=api.admin, params={"since": since, "until": until})
    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["error"]["code"] == "invalid_window"


def test_a_vector_another_ingest_kept_meanwhile_does_not_fail_the_cache_write(container, monkeypatch):
    """Two ingests of one text at once both compute its vector; the second write finds it kept and leaves it (a
    check-then-insert failed there with a unique violation: a 500 on the upload, found by review)."""
    import numpy as np

    from memory.embedding_cache import SqlEmbeddingCache

    cache = SqlEmbeddingCache(container.sessions)
    first = np.arange(4, dtype=np.float32)
    cache.put_many("m", {"a" * 64: first})
    # The other ingest's check ran before this one's insert: what it saw is nothing kept yet.
    monkeypatch.setattr(SqlEmbeddingCache, "get_many", lambda self, model_id, shas: {})
    cache.put_many("m", {"a" * 64: first + 1, "b" * 64: first + 2})
    monkeypatch.undo()
    kept = cache.get_many("m", ["a" * 64, "b" * 64])
    assert kept["a" * 64].tolist() == first.tolist() and kept["b" * 64].tolist() == (first + 2).tolist()


def test_ingestion_is_charged_to_who_ingested_and_their_teams_in_tokens_too(api):
    """DESIGN "Economics": ingestion work per principal and team, embedding work in tokens. An upload is charged
    to the steward who made it and their teams as they were then (found missing by review)."""
    steward = api.principal("st", groups=["hr", "all-staff"], roles=["steward", "reader"])
    api.source("hr-docs", read_groups=["hr"], steward="st")
    up = api.upload("hr-docs", "onboarding.md", TEXT, headers=steward).json()
    r = api.client.patch("/v1/principals/st", headers=api.admin, json={"groups": ["eng"]})
    assert r.status_code == 200, r.text
    u = api.client.get("/v1/usage", headers=api.admin).json()
    st, source = u["by_principal"]["st"], u["by_source"]["hr-docs"]
    assert (st["versions_ingested"], st["chunks_ingested"], st["chunks_embedded"]) == (1, up["chunks"], up["chunks"])
    assert st["embedded_tokens"] == source["embedded_tokens"] > 0
    assert set(u["by_group"]) == {"hr", "all-staff"} and u["by_group"]["hr"]["versions_ingested"] == 1
    assert "eng" not in u["by_group"]  # charged to the teams of the time, not of today


def test_storage_counts_the_versions_kept_for_time_travel_and_the_masked_twins(api):
    api.source("hr-docs", read_groups=["hr"])
    personal = "# Payroll\n\nQuestions about payroll go to alice.smith@example.com this month.\n"
    assert api.upload("hr-docs", "payroll.md", personal).status_code == 201
    assert api.upload("hr-docs", "payroll.md", personal.replace("month", "week")).status_code == 201
    source = api.client.get("/v1/usage", headers=api.admin).json()["by_source"]["hr-docs"]
    assert (source["stored_chunks"], source["history_chunks"], source["masked_twins"]) == (2, 1, 2)
