"""The access policy as pure functions: no I/O, table-tested.

(effective principal, transfer rules, as_of, consent-blocked sources) -> one AccessFilter applied INSIDE the
vector search. Fail closed everywhere: no groups -> nothing; unknown jurisdiction pair -> deny; acting for a
user -> the intersection of the user's access with the agent's ceiling (groups ∩, min clearance, every caller
jurisdiction must admit the transfer, roles ∩); personal data of a source that requires consent -> only for a
search whose purpose the source's data subjects consented to (no purpose -> not served).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from classifiers.types import Label
from memory.errors import PolicyError
from memory.stores.base import AccessFilter, ChunkPayload, JurisdictionGrant, SourceScope

ROLES = frozenset({"reader", "steward", "auditor", "admin"})
KINDS = frozenset({"user", "service", "agent"})


class Transfer(enum.IntEnum):
    """What may cross from a data jurisdiction to a caller jurisdiction; higher admits more."""

    DENY = 0
    DENY_PERSONAL = 1
    ALLOW_MASKED = 2
    ALLOW = 3

    @property
    def slug(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Transfer:
        try:
            return cls[value.strip().upper()]
        except KeyError as exc:
            raise PolicyError(
                f"unknown transfer rule {value!r}; expected allow, allow_masked, deny_personal or deny",
                code="unknown_transfer_rule",
            ) from exc


@dataclass(frozen=True)
class Identity:
    """One principal as the policy sees it (no ORM objects cross into this module)."""

    id: str
    kind: str
    groups: frozenset[str]
    clearance: Label
    jurisdiction: str
    roles: frozenset[str]
    active: bool = True


@dataclass(frozen=True)
class EffectivePrincipal:
    """Who is asking, after delegation: access = user's access ∩ agent's ceiling."""

    principal_id: str
    acting_for: str | None
    groups: frozenset[str]
    clearance: Label
    jurisdictions: tuple[str, ...]  # every caller jurisdiction the data would reach
    roles: frozenset[str]

    @property
    def chain(self) -> list[str]:
        return [self.principal_id] + ([self.acting_for] if self.acting_for else [])


def effective(caller: Identity, user: Identity | None = None) -> EffectivePrincipal:
    """Combine the authenticated caller with the user it acts for (delegation checked by the caller)."""
    if user is None:
        return EffectivePrincipal(
            principal_id=caller.id,
            acting_for=None,
            groups=caller.groups,
            clearance=caller.clearance,
            jurisdictions=(caller.jurisdiction,),
            roles=caller.roles,
        )
    jurisdictions = tuple(dict.fromkeys((user.jurisdiction, caller.jurisdiction)))
    return EffectivePrincipal(
        principal_id=caller.id,
        acting_for=user.id,
        groups=caller.groups & user.groups,
        clearance=min(caller.clearance, user.clearance),
        jurisdictions=jurisdictions,
        roles=caller.roles & user.roles,
    )


_RULE_KEYS = frozenset({"data", "caller", "rule"})


@dataclass(frozen=True)
class TransferRules:
    """Admin-managed (data jurisdiction, caller jurisdiction) -> Transfer. Unknown pair -> DENY."""

    rules: Mapping[tuple[str, str], Transfer] = field(default_factory=dict)
    version: int = 0

    def mode(self, data_j: str, caller_j: str) -> Transfer:
        return self.rules.get((data_j, caller_j), Transfer.DENY)

    def mode_for(self, data_j: str, caller_js: Iterable[str]) -> Transfer:
        """The strictest rule over every caller jurisdiction the data would reach."""
        modes = [self.mode(data_j, cj) for cj in caller_js]
        return min(modes) if modes else Transfer.DENY

    @property
    def data_jurisdictions(self) -> frozenset[str]:
        return frozenset(d for d, _ in self.rules)

    def to_json(self) -> list[dict[str, str]]:
        return [
            {"data": d, "caller": c, "rule": m.slug} for (d, c), m in sorted(self.rules.items())
        ]

    @classmethod
    def from_json(cls, items: object, version: int = 0) -> TransferRules:
        """Rules from `[{data, caller, rule}, ...]`; anything else (not a list, an item not an object, a key
        missing, unknown or not a string) is 422 `invalid_transfer_rule`, as the API's schema refuses it."""
        if not isinstance(items, list | tuple):
            raise PolicyError("transfer rules are a list of {data, caller, rule} objects",
                              code="invalid_transfer_rule")
        rules: dict[tuple[str, str], Transfer] = {}
        for item in items:
            if not isinstance(item, Mapping):
                raise PolicyError(f"a transfer rule is a {{data, caller, rule}} object, not {type(item).__name__}",
                                  code="invalid_transfer_rule")
            unknown = sorted(str(k) for k in set(item) - _RULE_KEYS)
            if unknown:
                raise PolicyError(f"unknown keys in a transfer rule: {unknown}", code="invalid_transfer_rule")
            try:
                values = {k: item[k] for k in sorted(_RULE_KEYS)}
            except KeyError as exc:
                raise PolicyError(f"transfer rule is missing {exc}", code="invalid_transfer_rule") from exc
            if not all(isinstance(v, str) for v in values.values()):
                raise PolicyError("a transfer rule's data, caller and rule are strings", code="invalid_transfer_rule")
            data_j = normalise_jurisdiction(str(values["data"]))
            caller_j = normalise_jurisdiction(str(values["caller"]))
            mode = Transfer.parse(str(values["rule"]))
            if (data_j, caller_j) in rules:
                raise PolicyError(f"duplicate rule for {data_j}->{caller_j}", code="duplicate_transfer_rule")
            rules[(data_j, caller_j)] = mode
        return cls(rules=rules, version=version)


DEFAULT_TRANSFER_RULES: list[dict[str, str]] = [
    # Same jurisdiction: allowed. EU<->UK adequacy: allowed. EU personal data to the US: masked;
    # to India: personal data withheld. Anything unlisted is denied.
    {"data": j, "caller": j, "rule": "allow"} for j in ("EU", "US", "UK", "IN")
] + [
    {"data": "EU", "caller": "UK", "rule": "allow"},
    {"data": "UK", "caller": "EU", "rule": "allow"},
    {"data": "EU", "caller": "US", "rule": "allow_masked"},
    {"data": "UK", "caller": "US", "rule": "allow_masked"},
    {"data": "EU", "caller": "IN", "rule": "deny_personal"},
    {"data": "US", "caller": "EU", "rule": "allow"},
    {"data": "US", "caller": "UK", "rule": "allow"},
    {"data": "US", "caller": "IN", "rule": "deny_personal"},
    {"data": "IN", "caller": "US", "rule": "deny_personal"},
]


# The jurisdiction a source's vectors carry while its residence changes (memory.sources.update): reserved, so
# no transfer rule can name it, and an unknown pair is denied: nobody is served the source's chunks under a mix
# of its old and new residence.
JURISDICTION_IN_TRANSIT = "IN-TRANSIT"


_JURISDICTION = re.compile(r"[A-Z0-9][A-Z0-9-]{0,15}")


def normalise_jurisdiction(value: str) -> str:
    """An upper-case ASCII code of letters, digits and dashes, at most 16 characters (`EU`, `US-CA`): no other
    script (a Cyrillic `ЕU` would be a look-alike jurisdiction; `ıı` upper-cases to `II`)."""
    v = value.strip()
    if not v.isascii() or not _JURISDICTION.fullmatch(v.upper()) or v.upper() == JURISDICTION_IN_TRANSIT:
        raise PolicyError(f"invalid jurisdiction {value[:40]!r}", code="invalid_jurisdiction")
    return v.upper()


def consent_blocks(requires_consent: bool, consented: Iterable[str], purpose: str | None) -> bool:
    """True when a source's personal data is withheld from a search for `purpose`: the source requires
    consent and `purpose` is not one its data subjects consented to. No purpose never qualifies."""
    return requires_consent and (purpose is None or purpose not in set(consented))


def build_filter(
    who: EffectivePrincipal,
    rules: TransferRules,
    *,
    as_of: float,
    source_ids: Iterable[str] | None = None,
    latest: bool = False,
    consent_blocked: Iterable[str] = (),
    readable: Mapping[str, str] | None = None,
    above_clearance: Iterable[str] = (),
) -> AccessFilter:
    """The one filter the vector search runs with. `latest`: the search has no as_of (as_of is now), so
    the version clause is "current version" (same points, cheaper for the engine). `consent_blocked`: the
    sources whose personal data this search's purpose may not see (memory.consent reads them from SQL);
    their chunks with personal data are excluded, others are not. `readable`: the sources `who`'s groups can
    read, by id, with their jurisdiction (SQL's rows, read with the plan): the filter then carries its
    group, jurisdiction, consent and source clauses resolved per source (`SourceScope`). `above_clearance`:
    the sources `who`'s groups can read whose floor is above its clearance (`floors_above`; SQL's, read with the
    plan): none of their points matches, whatever labels its stored chunks still carry (a raised floor holds from
    its commit, before the relabel that brings the chunks to it has run, and if that relabel fails).

    Data read masked (allow_masked) is searched through the masked twins of its chunks with personal data, so
    such a hit is ranked on the masked text the caller is served, never on the clear one (docs/operations.md)."""
    grants = []
    for data_j in sorted(rules.data_jurisdictions):
        mode = rules.mode_for(data_j, who.jurisdictions)
        if mode >= Transfer.ALLOW_MASKED:
            grants.append(JurisdictionGrant(data_j, personal_ok=True, masked=mode == Transfer.ALLOW_MASKED))
        elif mode == Transfer.DENY_PERSONAL:
            grants.append(JurisdictionGrant(data_j, personal_ok=False))
    above = frozenset(above_clearance)
    scope = _scope(who, rules, readable, frozenset(consent_blocked), above) if readable is not None else None
    return AccessFilter(
        groups=who.groups,
        max_label=int(who.clearance),
        grants=tuple(grants),
        as_of=as_of,
        source_ids=frozenset(source_ids) if source_ids is not None else None,
        latest=latest,
        consent_blocked_sources=frozenset(consent_blocked),
        scope=scope,
        excluded_sources=above if scope is None else frozenset(),  # a scope leaves them out itself
    )


def _scope(
    who: EffectivePrincipal, rules: TransferRules, readable: Mapping[str, str], consent_blocked: frozenset[str],
    above_clearance: frozenset[str],
) -> SourceScope:
    """Each readable source admitted in full, masked (allow_masked: its chunks with personal data through their
    masked twins), for its chunks without personal data only (deny_personal, or its personal data
    consent-blocked), or not at all (deny, or no rule, or a floor above the caller's clearance). `source_ids`
    is applied by the filter."""
    if not who.groups:
        return SourceScope(frozenset())
    full, masked, non_personal = set(), set(), set()
    for sid, jurisdiction in readable.items():
        if sid in above_clearance:  # every chunk of it is at least its floor
            continue
        mode = rules.mode_for(jurisdiction, who.jurisdictions)
        if mode == Transfer.ALLOW and sid not in consent_blocked:
            full.add(sid)
        elif mode == Transfer.ALLOW_MASKED and sid not in consent_blocked:
            masked.add(sid)
        elif mode >= Transfer.DENY_PERSONAL:
            non_personal.add(sid)
    return SourceScope(frozenset(full), frozenset(non_personal), frozenset(masked))


def readable_filter(
    who: EffectivePrincipal, *, as_of: float, source_ids: Iterable[str] | None = None, latest: bool = False,
    readable: Iterable[str] | None = None,
) -> AccessFilter:
    """Only the group/version/retraction clauses: what the caller's groups could read. Used to count
    hits withheld for clearance, jurisdiction or consent (the recourse path), never to serve text.
    `readable`: the ids of the sources `who`'s groups can read (SQL's, read with the plan), as in
    `build_filter`. Chunks with personal data are counted through their masked twins (every readable source
    "read masked"): a count never depends on a personal chunk's clear text (memory.search)."""
    scope = SourceScope(frozenset(), masked=frozenset(readable)) if readable is not None else None
    return AccessFilter(
        groups=who.groups,
        max_label=None,
        grants=None,
        as_of=as_of,
        source_ids=frozenset(source_ids) if source_ids is not None else None,
        latest=latest,
        scope=scope,
    )


def must_mask(who: EffectivePrincipal, rules: TransferRules, payload: ChunkPayload) -> bool:
    """True when this hit is served only with its PII spans masked."""
    return masks(who, rules, jurisdiction=payload.jurisdiction, personal=payload.personal)


def masks(who: EffectivePrincipal, rules: TransferRules, *, jurisdiction: str, personal: bool) -> bool:
    """must_mask on the two fields it reads (the search renders from SQL rows, not vector payloads)."""
    return personal and rules.mode_for(jurisdiction, who.jurisdictions) == Transfer.ALLOW_MASKED


# The recourse reasons, in the order one is picked when several withhold a hit.
WITHHELD_REASONS = ("clearance", "jurisdiction", "consent")


@dataclass(frozen=True)
class RuleCheck:
    # group_grant | clearance | jurisdiction | consent | version | retraction | committed (| delegation, active)
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    visible: bool
    masked: bool
    checks: tuple[RuleCheck, ...]

    @property
    def withheld_reason(self) -> str | None:
        """'clearance', 'jurisdiction' or 'consent' when the caller's groups could read it but policy withheld
        it; when several apply, the first of that order (one reason per hit)."""
        failed = {c.rule for c in self.checks if not c.passed}
        # Only these are recourse reasons; any other failed check (group, version, retraction, a
        # delegation or inactive principal in an explanation) means the hit is not "withheld".
        if not failed or not failed <= set(WITHHELD_REASONS):
            return None
        return first_withheld_reason(self.checks)


def explain(
    who: EffectivePrincipal,
    rules: TransferRules,
    payload: ChunkPayload,
    *,
    as_of: float,
    consent_blocked: Collection[str] = frozenset(),
    purpose: str | None = None,
) -> Decision:
    """Every rule that decides whether `who` sees this chunk at `as_of`, and how. `consent_blocked` is the
    same set `build_filter` takes (`purpose` only words the consent check's detail)."""
    shared = sorted(who.groups & set(payload.read_groups))
    checks = (
        RuleCheck("committed", payload.committed, "version fully stored" if payload.committed else "version pending"),
        RuleCheck("group_grant", bool(shared), f"shared groups: {shared}" if shared else "no shared read group"),
        *recourse_checks(who, rules, label=payload.label, jurisdiction=payload.jurisdiction,
                         personal=payload.personal, source_id=payload.source_id, consent_blocked=consent_blocked,
                         purpose=purpose),
        RuleCheck(
            "version",
            payload.valid_from <= as_of < payload.valid_to,
            f"valid [{payload.valid_from}, {payload.valid_to}) at {as_of}",
        ),
        RuleCheck("retraction", not payload.retracted, "retracted" if payload.retracted else "not retracted"),
    )
    visible = all(c.passed for c in checks)
    return Decision(visible=visible, masked=visible and must_mask(who, rules, payload), checks=checks)


def recourse_checks(
    who: EffectivePrincipal, rules: TransferRules, *, label: int, jurisdiction: str, personal: bool, source_id: str,
    consent_blocked: Collection[str] = frozenset(), purpose: str | None = None,
) -> tuple[RuleCheck, RuleCheck, RuleCheck]:
    """The clearance, jurisdiction and consent checks of one chunk: the rules that can withhold from a caller
    what its groups can read (the recourse reasons, in WITHHELD_REASONS order). `explain` runs them on a
    payload; the search classifies its withheld candidates with them on SQL's fields."""
    lab = Label(label)
    mode = rules.mode_for(jurisdiction, who.jurisdictions)
    juris_ok = mode >= Transfer.ALLOW_MASKED or (mode == Transfer.DENY_PERSONAL and not personal)
    return (
        RuleCheck("clearance", who.clearance >= lab, f"clearance {who.clearance.slug} vs label {lab.slug}"),
        RuleCheck(
            "jurisdiction",
            juris_ok,
            f"{jurisdiction}->{'+'.join(who.jurisdictions)}: {mode.slug}"
            + (" (chunk has personal data)" if personal else ""),
        ),
        _consent_check(personal, source_id, consent_blocked, purpose),
    )


def floors_above(who: EffectivePrincipal, floors: Mapping[str, int]) -> frozenset[str]:
    """The sources (of `floors`, by id) whose floor is above `who`'s clearance: `build_filter`'s
    `above_clearance`."""
    return frozenset(sid for sid, floor in floors.items() if floor > who.clearance)


def effective_label(label: int, floor: int | None) -> int:
    """A chunk's label as the policy applies it: at least its source's floor now. A chunk's stored label already
    holds the floor it was ingested under; a floor raised since holds from its commit, before `memory relabel`
    (run by the floor's PATCH) brings the stored label to it."""
    return label if floor is None or floor <= label else floor


def first_withheld_reason(checks: Iterable[RuleCheck]) -> str | None:
    """The first failed check among the recourse reasons, in WITHHELD_REASONS order (None: none failed)."""
    failed = {c.rule for c in checks if not c.passed}
    return next((r for r in WITHHELD_REASONS if r in failed), None)


@dataclass(frozen=True)
class WorstCase:
    """The most any chunk of some readable sources can be: jurisdiction, highest label, personal data; and
    whether those sources' personal data is consent-blocked for this search (memory.withholdable)."""

    jurisdiction: str
    max_label: int
    has_personal: bool
    consent_blocked: bool = False


def may_withhold(who: EffectivePrincipal, rules: TransferRules, worst: Iterable[WorstCase]) -> bool:
    """Whether clearance, jurisdiction or consent could withhold any chunk these worst cases cover. Decided by
    `explain` on each worst case, and sound because every rule is monotone: a higher label, or personal data,
    never makes a chunk more visible. False means the withheld count is zero without searching for it."""
    if not who.groups:
        return False  # reads nothing, so nothing is withheld
    group = min(who.groups)
    for w in worst:
        payload = ChunkPayload(
            chunk_id="", source_id="", document_id="", version_id="", read_groups=(group,), label=w.max_label,
            jurisdiction=w.jurisdiction, personal=w.has_personal, entity_types=(), valid_from=float("-inf"),
            committed=True,
        )
        blocked = frozenset({""}) if w.consent_blocked else frozenset()
        if explain(who, rules, payload, as_of=0.0, consent_blocked=blocked).withheld_reason is not None:
            return True
    return False


def _consent_check(personal: bool, source_id: str, consent_blocked: Collection[str], purpose: str | None) -> RuleCheck:
    stated = f"purpose {purpose!r}" if purpose is not None else "no purpose stated"
    if not personal:
        return RuleCheck("consent", True, "no personal data")
    if source_id in consent_blocked:
        return RuleCheck("consent", False, f"personal data of a source requiring consent; {stated} is not consented")
    return RuleCheck("consent", True, f"personal data; {stated}: the source requires no consent or consented to it")
