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
