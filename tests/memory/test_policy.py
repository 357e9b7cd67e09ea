"""The pure policy module, table-tested."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifiers.types import Label
from memory.errors import PolicyError
from memory.policy import (
    Identity,
    Transfer,
    TransferRules,
    WorstCase,
    build_filter,
    consent_blocks,
    effective,
    effective_label,
    explain,
    first_withheld_reason,
    floors_above,
    may_withhold,
    must_mask,
    readable_filter,
    recourse_checks,
)
from memory.stores.base import OPEN_END, ChunkPayload

RULES = TransferRules.from_json([
    {"data": "EU", "caller": "EU", "rule": "allow"},
    {"data": "EU", "caller": "US", "rule": "allow_masked"},
    {"data": "EU", "caller": "IN", "rule": "deny_personal"},
    {"data": "US", "caller": "US", "rule": "allow"},
    {"data": "US", "caller": "EU", "rule": "allow"},
])


def ident(pid="u", *, kind="user", groups=("g",), clearance=Label.CONFIDENTIAL, j="EU", roles=("reader",)):
    return Identity(pid, kind, frozenset(groups), clearance, j, frozenset(roles))


def payload(**kw):
    base = dict(chunk_id="c", source_id="s", document_id="d", version_id="v", read_groups=("g",),
                label=int(Label.INTERNAL), jurisdiction="EU", personal=False, entity_types=(), valid_from=100.0,
                valid_to=OPEN_END, retracted=False, committed=True)
    base.update(kw)
    return ChunkPayload(**base)


@pytest.mark.parametrize(("data", "caller", "expected"), [
    ("EU", "EU", Transfer.ALLOW),
    ("EU", "US", Transfer.ALLOW_MASKED),
    ("EU", "IN", Transfer.DENY_PERSONAL),
    ("US", "IN", Transfer.DENY),  # unknown pair -> deny
    ("XX", "EU", Transfer.DENY),
])
def test_transfer_rule_lookup_fails_closed(data, caller, expected):
    assert RULES.mode(data, caller) == expected


def test_acting_for_intersects_user_access_with_agent_ceiling():
    agent = ident("agent", kind="agent", groups=("g", "h"), clearance=Label.INTERNAL, j="EU")
    user = ident("alice", groups=("g", "x"), clearance=Label.RESTRICTED, j="US", roles=("reader", "steward"))
    who = effective(agent, user)
    assert who.groups == {"g"}
    assert who.clearance == Label.INTERNAL
    assert who.jurisdictions == ("US", "EU")
    assert who.roles == {"reader"}
    assert who.chain == ["agent", "alice"]


@pytest.mark.parametrize(("case", "p", "visible", "reason"), [
    ("readable", payload(), True, None),
    ("no shared group", payload(read_groups=("other",)), False, None),
    ("empty read groups", payload(read_groups=()), False, None),
    ("label above clearance", payload(label=int(Label.RESTRICTED)), False, "clearance"),
    ("unknown jurisdiction pair", payload(jurisdiction="CN"), False, "jurisdiction"),
    ("retracted", payload(retracted=True), False, None),
    ("not yet committed", payload(committed=False), False, None),
    ("superseded before as_of", payload(valid_to=150.0), False, None),
    ("not yet valid", payload(valid_from=250.0), False, None),
])
def test_explain_and_filter_agree(case, p, visible, reason):
    who = effective(ident())
    decision = explain(who, RULES, p, as_of=200.0)
    assert decision.visible is visible, case
    assert decision.withheld_reason == reason, case
    assert build_filter(who, RULES, as_of=200.0).matches(p) is visible, case


@pytest.mark.parametrize(("caller_j", "personal", "visible", "masked"), [
    ("EU", True, True, False),
    ("US", True, True, True),
    ("US", False, True, False),
    ("IN", True, False, False),
    ("IN", False, True, False),
    ("CN", False, False, False),
])
def test_jurisdiction_modes(caller_j, personal, visible, masked):
    who = effective(ident(j=caller_j))
    p = payload(personal=personal)
    flt = build_filter(who, RULES, as_of=200.0)
    # A chunk served masked is searched as its masked twin, never as its clear point; any other as itself.
    assert flt.matches(p.twin() if masked else p) is visible
    assert (visible and must_mask(who, RULES, p)) is masked
    readable = build_filter(who, RULES, as_of=200.0, readable={"s": "EU"})
    assert readable.matches(p.twin() if masked else p) is visible
    if personal:  # never both: one chunk, one point admitted (a chunk without personal data has no twin)
        assert not flt.matches(p if masked else p.twin())
        assert not readable.matches(p if masked else p.twin())
    # The withheld count ranks a chunk with personal data through its twin only, never its clear text.
    for counting in (readable_filter(who, as_of=200.0), readable_filter(who, as_of=200.0, readable={"s"})):
        assert counting.matches(p.twin() if personal else p)
        if personal:
            assert not counting.matches(p)


@pytest.mark.parametrize(("floor", "clearance", "admitted"), [
    (None, Label.CONFIDENTIAL, True),  # no floor known for the source
    (int(Label.PUBLIC), Label.CONFIDENTIAL, True),
    (int(Label.CONFIDENTIAL), Label.CONFIDENTIAL, True),
    (int(Label.RESTRICTED), Label.CONFIDENTIAL, False),  # raised above the caller, stored labels not yet
    (int(Label.RESTRICTED), Label.RESTRICTED, True),
])
def test_a_source_floor_above_the_callers_clearance_admits_nothing_of_it(floor, clearance, admitted):
    """The chunk's stored label (internal) is below the floor: the floor holds before any relabel reaches it."""
    who = effective(ident(clearance=clearance))
    floors = {} if floor is None else {"s": floor}
    flt = build_filter(who, RULES, as_of=200.0, readable={"s": "EU", "other": "EU"},
                       above_clearance=floors_above(who, floors))
    assert flt.matches(payload()) is admitted
    assert flt.matches(payload(source_id="other"))  # another source is not touched by it
    # What is counted still sees it (the hit is then withheld for clearance, with the steward to ask).
    assert readable_filter(who, as_of=200.0, readable={"s", "other"}).matches(payload())


@pytest.mark.parametrize(("label", "floor", "expected"), [
    (Label.INTERNAL, None, Label.INTERNAL), (Label.INTERNAL, Label.PUBLIC, Label.INTERNAL),
    (Label.INTERNAL, Label.RESTRICTED, Label.RESTRICTED), (Label.RESTRICTED, Label.RESTRICTED, Label.RESTRICTED),
])
def test_a_chunks_effective_label_is_at_least_its_sources_floor(label, floor, expected):
    assert effective_label(int(label), None if floor is None else int(floor)) == expected


def test_agent_in_another_jurisdiction_takes_the_stricter_rule():
    agent = ident("agent", kind="agent", j="IN")
    user = ident("alice", j="EU")
    who = effective(agent, user)
    assert not build_filter(who, RULES, as_of=200.0).matches(payload(personal=True))
    assert build_filter(who, RULES, as_of=200.0).matches(payload(personal=False))


def test_no_groups_matches_nothing():
    who = effective(ident(groups=()))
    assert not build_filter(who, RULES, as_of=200.0).matches(payload())


def test_source_restriction():
    flt = build_filter(effective(ident()), RULES, as_of=200.0, source_ids=["other"])
    assert not flt.matches(payload())


@pytest.mark.parametrize("bad", [
    [{"data": "EU", "caller": "US", "rule": "maybe"}],
    [{"data": "EU", "rule": "allow"}],
    [{"data": "EU", "caller": "US", "rule": "allow"}, {"data": "eu", "caller": "us", "rule": "deny"}],
    [{"data": "", "caller": "US", "rule": "allow"}],
])
def test_malformed_rules_are_refused(bad):
    with pytest.raises(PolicyError):
        TransferRules.from_json(bad)


@pytest.mark.parametrize(("requires", "consented", "purpose", "blocks"), [
    (False, (), None, False),  # no flag: purposes never matter
    (False, ("support",), "marketing", False),
    (True, ("support", "billing"), "support", False),
    (True, ("support",), "marketing", True),
    (True, ("support",), None, True),  # no purpose stated: never consented
    (True, (), "support", True),  # flag without purposes: nothing is consented
])
def test_consent_blocks(requires, consented, purpose, blocks):
    assert consent_blocks(requires, consented, purpose) is blocks


@pytest.mark.parametrize(("case", "p", "blocked", "visible", "reason"), [
    ("personal, source blocked", payload(personal=True), {"s"}, False, "consent"),
    ("not personal, source blocked", payload(personal=False), {"s"}, True, None),
    ("personal, another source blocked", payload(personal=True), {"other"}, True, None),
    ("personal, nothing blocked", payload(personal=True), set(), True, None),
    ("clearance wins over consent", payload(personal=True, label=int(Label.RESTRICTED)), {"s"}, False, "clearance"),
    ("jurisdiction wins over consent", payload(personal=True, jurisdiction="CN"), {"s"}, False, "jurisdiction"),
    ("outside the groups: no reason", payload(personal=True, read_groups=("other",)), {"s"}, False, None),
])
def test_consent_in_explain_and_filter(case, p, blocked, visible, reason):
    who = effective(ident())
    decision = explain(who, RULES, p, as_of=200.0, consent_blocked=frozenset(blocked), purpose="support")
    assert decision.visible is visible, case
    assert decision.withheld_reason == reason, case
    assert [c.passed for c in decision.checks if c.rule == "consent"] == [not (p.personal and "s" in blocked)]
    assert build_filter(who, RULES, as_of=200.0, consent_blocked=blocked).matches(p) is visible, case
    # the count of withheld hits runs without consent: what the caller's groups could read
    counted = p.twin() if p.personal else p  # the count ranks a personal chunk through its twin
    assert readable_filter(who, as_of=200.0).matches(counted) is (p.read_groups == ("g",))


@pytest.mark.parametrize(("case", "caller_j", "clearance", "worst", "expected"), [
    ("labels within clearance, home jurisdiction", "EU", Label.CONFIDENTIAL,
     [WorstCase("EU", int(Label.CONFIDENTIAL), True)], False),
    ("a label above clearance", "EU", Label.INTERNAL, [WorstCase("EU", int(Label.CONFIDENTIAL), False)], True),
    ("masked transfer withholds nothing", "US", Label.CONFIDENTIAL, [WorstCase("EU", 0, True)], False),
    ("deny_personal with personal data", "IN", Label.CONFIDENTIAL, [WorstCase("EU", 0, True)], True),
    ("deny_personal without personal data", "IN", Label.CONFIDENTIAL, [WorstCase("EU", 0, False)], False),
    ("unknown pair", "EU", Label.CONFIDENTIAL, [WorstCase("CN", 0, False)], True),
    ("consent-blocked personal data", "EU", Label.CONFIDENTIAL, [WorstCase("EU", 0, True, True)], True),
    ("consent-blocked, no personal data", "EU", Label.CONFIDENTIAL, [WorstCase("EU", 0, False, True)], False),
    ("nothing readable", "EU", Label.PUBLIC, [], False),
])
def test_may_withhold(case, caller_j, clearance, worst, expected):
    assert may_withhold(effective(ident(j=caller_j, clearance=clearance)), RULES, worst) is expected, case


_JS = ("EU", "US", "IN", "CN")


@settings(max_examples=300, deadline=None)
@given(
    caller_j=st.sampled_from(_JS[:3]),
    clearance=st.sampled_from(list(Label)),
    chunks=st.lists(st.tuples(st.sampled_from(_JS), st.sampled_from(list(Label)), st.booleans(), st.booleans()),
                    max_size=8),
)
def test_may_withhold_is_sound(caller_j, clearance, chunks):
    """Whenever explain withholds one of a set of readable chunks, may_withhold on their worst cases (per
    jurisdiction and consent gate, as memory.withholdable builds them) says something could be withheld."""
    who = effective(ident(j=caller_j, clearance=clearance))
    worst: dict[tuple[str, bool], WorstCase] = {}
    withheld = False
    for j, label, personal, gated in chunks:
        p = payload(jurisdiction=j, label=int(label), personal=personal, source_id="gated" if gated else "open")
        withheld |= explain(who, RULES, p, as_of=200.0, consent_blocked={"gated"}).withheld_reason is not None
        w = worst.get((j, gated), WorstCase(j, int(Label.PUBLIC), False, gated))
        worst[(j, gated)] = WorstCase(j, max(w.max_label, int(label)), w.has_personal or personal, gated)
    if withheld:
        assert may_withhold(who, RULES, worst.values())


@settings(max_examples=300, deadline=None)
@given(
    caller_j=st.sampled_from(_JS[:3]),
    clearance=st.sampled_from(list(Label)),
    chunk=st.tuples(st.sampled_from(_JS), st.sampled_from(list(Label)), st.booleans(), st.booleans()),
)
def test_recourse_checks_on_fields_agree_with_explain(caller_j, clearance, chunk):
    """The search classifies its withheld candidates (readable to the caller's groups) on SQL's fields with
    recourse_checks: the same reason, or none, as explain on the payload, and 'none' exactly when visible."""
    j, label, personal, gated = chunk
    who = effective(ident(j=caller_j, clearance=clearance))
    p = payload(jurisdiction=j, label=int(label), personal=personal, source_id="gated" if gated else "open")
    decision = explain(who, RULES, p, as_of=200.0, consent_blocked={"gated"})
    reason = first_withheld_reason(recourse_checks(
        who, RULES, label=int(label), jurisdiction=j, personal=personal, source_id=p.source_id,
        consent_blocked={"gated"},
    ))
    assert reason == decision.withheld_reason
    assert (reason is None) is decision.visible


# -- the source scope: the same filter, resolved against SQL's sources ------------------------------------------

SOURCES = ("s1", "s2", "s3")
_SOURCE_FACTS = st.fixed_dictionaries({
    s: st.tuples(st.frozensets(st.sampled_from(["g", "h", "x"]), max_size=2), st.sampled_from(["EU", "US", "CN"]))
    for s in SOURCES
})


@settings(max_examples=300, deadline=None)
@given(
    facts=_SOURCE_FACTS,
    groups=st.frozensets(st.sampled_from(["g", "h", "x"]), max_size=2),
    caller_js=st.lists(st.sampled_from(["EU", "US", "IN"]), min_size=1, max_size=2),
    clearance=st.sampled_from(list(Label)),
    blocked=st.frozensets(st.sampled_from(SOURCES)),
    source_ids=st.one_of(st.none(), st.frozensets(st.sampled_from(SOURCES))),
    latest=st.booleans(),
    points=st.lists(st.tuples(st.sampled_from(SOURCES), st.sampled_from(list(Label)), st.booleans(),
                              st.sampled_from([50.0, 100.0, 300.0]), st.booleans()), min_size=1, max_size=8),
)
def test_scoped_filter_admits_what_the_group_filter_admits(
    facts, groups, caller_js, clearance, blocked, source_ids, latest, points
):
    """Where the vectors' read groups and jurisdiction agree with SQL's sources, the scoped filter
    (build_filter / readable_filter with `readable`) matches exactly the points the group-based one does."""
    agent = ident("agent", kind="agent", groups=groups, clearance=clearance, j=caller_js[-1])
    user = ident("alice", groups=groups, clearance=clearance, j=caller_js[0])
    who = effective(agent, user)
    readable = {s: j for s, (gs, j) in facts.items() if gs & who.groups}
    kw = dict(as_of=200.0, source_ids=source_ids, latest=latest)
    plain = build_filter(who, RULES, consent_blocked=blocked, **kw)
    scoped = build_filter(who, RULES, consent_blocked=blocked, readable=readable, **kw)
    assert scoped.scope is not None
    count_plain, count_scoped = readable_filter(who, **kw), readable_filter(who, readable=readable, **kw)
    for sid, label, personal, valid_from, current in points:
        gs, j = facts[sid]
        p = payload(source_id=sid, read_groups=tuple(sorted(gs)), jurisdiction=j, label=int(label),
                    personal=personal, valid_from=valid_from, valid_to=OPEN_END if current else 250.0)
        for q in (p, p.twin()) if personal else (p,):  # a personal chunk's clear point and its masked twin
            assert scoped.matches(q) is plain.matches(q)
            assert count_scoped.matches(q) is count_plain.matches(q)


def test_scope_of_a_caller_without_groups_admits_nothing():
    who = effective(ident(groups=()))
    assert build_filter(who, RULES, as_of=200.0, readable={"s": "EU"}).scope.full == frozenset()
    assert not readable_filter(who, as_of=200.0, readable=["s"]).matches(payload())
