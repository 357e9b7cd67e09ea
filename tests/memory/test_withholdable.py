"""Source chunk summaries (max label, personal data) and the decision to skip the withheld-count search,
through the real ingestion path (SQL + Qdrant Edge + parsing; fake embedder and classifier)."""

from __future__ import annotations

from typing import Any

from memory import policy_store, withholdable
from memory.consent import NOTHING_BLOCKED, blocked_sources
from memory.db import transaction
from memory.models import Source
from memory.principals import get_principal, resolve_effective


def _summary(api: Any, sid: str) -> tuple[int | None, bool]:
    with api.container.sessions() as s:
        src = s.get(Source, sid)
        return src.max_label, src.has_personal


def _could_withhold(api: Any, pid: str, *, purpose: str | None = None, source_ids: Any = None) -> bool:
    with transaction(api.container.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id=pid), acting_for=None)
        consent = blocked_sources(s, purpose=purpose, groups=who.groups, source_ids=source_ids)
        return withholdable.could_withhold(s, who=who, rules=policy_store.transfer_rules(s), source_ids=source_ids,
                                           consent=consent)


def test_ingestion_raises_the_summary_and_new_versions_lower_nothing(api):
    api.source("s1", read_groups=["g"])
    assert _summary(api, "s1") == (None, False)
    assert api.upload("s1", "plain.md", "# Notes\n\nThe meeting moved to Tuesday.\n").status_code == 201
    plain = _summary(api, "s1")
    assert plain[0] is not None and plain[1] is False
    pii = "# Contact\n\nWrite to Ms Anna Berg at anna.berg@example.com.\n"
    assert api.upload("s1", "pii.md", pii).status_code == 201
    raised = _summary(api, "s1")
    assert raised[1] is True and raised[0] >= plain[0]
    # A new version without personal data, and a lower-label document, lower nothing.
    assert api.upload("s1", "pii.md", "# Contact\n\nAsk the front desk.\n").status_code == 201
    assert api.upload("s1", "other.md", "# Other\n\nNothing here.\n").status_code == 201
    assert _summary(api, "s1") == raised


def test_retraction_lowers_the_summary_and_restore_raises_it_again(api):
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.principal("in", groups=["g"], clearance="restricted", jurisdiction="IN")
    api.source("s1", read_groups=["g"], steward="st")
    plain = api.upload("s1", "plain.md", "# Notes\n\nThe meeting moved to Tuesday.\n", headers=steward).json()
    only_plain = _summary(api, "s1")
    pii = api.upload("s1", "pii.md", "# Contact\n\nWrite to anna.berg@example.com.\n", headers=steward).json()
    raised = _summary(api, "s1")
    assert raised[1] is True and _could_withhold(api, "in") is True  # IN callers: EU personal data denied

    def act(doc: dict, action: str) -> None:
        body = {"reason": "test", **({"version": 1} if action == "restore" else {})}
        r = api.client.post(f"/v1/documents/{doc['document_id']}/{action}", headers=steward, json=body)
        assert r.status_code == 200, r.text

    act(pii, "retract")  # the only personal data is out of every search's reach: no count search for IN
    assert _summary(api, "s1") == only_plain and _could_withhold(api, "in") is False
    act(pii, "restore")
    assert _summary(api, "s1") == raised and _could_withhold(api, "in") is True
    act(pii, "retract")
    act(plain, "retract")
    assert _summary(api, "s1") == (None, False)


def test_a_superseded_version_still_counts_while_time_travel_reaches_it(api):
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    api.upload("s1", "pii.md", "# Contact\n\nWrite to anna.berg@example.com.\n", headers=steward)
    v2 = api.upload("s1", "pii.md", "# Contact\n\nAsk the front desk.\n", headers=steward).json()
    r = api.client.post(f"/v1/documents/{v2['document_id']}/retract", headers=steward, json={"reason": "test"})
    assert r.status_code == 200, r.text
    assert _summary(api, "s1")[1] is True  # version 1, with the email, is still reachable with as_of


def test_could_withhold_follows_clearance_jurisdiction_consent_and_source_scope(api):
    api.principal("eu", groups=["g"], clearance="confidential", jurisdiction="EU")
    api.principal("in", groups=["g"], clearance="restricted", jurisdiction="IN")
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "a.md", "# Notes\n\nThe meeting moved to Tuesday.\n").status_code == 201
    assert _could_withhold(api, "eu") is False
    # Personal data in EU: the default rules deny IN callers EU personal data, so something is withheld.
    assert api.upload("s1", "b.md", "# Contact\n\nWrite to anna.berg@example.com.\n").status_code == 201
    assert _could_withhold(api, "in") is True
    assert _could_withhold(api, "eu") is False  # the email makes it confidential: within eu's clearance
    # A restricted source: above the EU reader's clearance, but not searched when the search names s1 only.
    api.source("s2", read_groups=["g"], floor="restricted")
    assert api.upload("s2", "c.md", "# Board\n\nMinutes.\n").status_code == 201
    assert _could_withhold(api, "eu") is True
    assert _could_withhold(api, "eu", source_ids=["s1"]) is False
    # Consent: personal data of a source that requires it is withheld without a consented purpose.
    r = api.client.patch("/v1/sources/s1", headers=api.admin,
                         json={"personal_data_requires_consent": True, "consent_purposes": ["support"]})
    assert r.status_code == 200, r.text
    assert _could_withhold(api, "eu", source_ids=["s1"]) is True
    assert _could_withhold(api, "eu", source_ids=["s1"], purpose="support") is False


def test_no_groups_could_withhold_nothing(api):
    api.principal("lonely", groups=[])
    with transaction(api.container.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="lonely"), acting_for=None)
        assert withholdable.could_withhold(s, who=who, rules=policy_store.transfer_rules(s), source_ids=None,
                                           consent=NOTHING_BLOCKED) is False
