"""The shipped demo corpus: a few principals, four sources in two jurisdictions, documents we wrote.

Demo keys are fixed so the README's curl lines work; seed_demo refuses to run when MEMORY_ENV=prod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from memory import documents, principals, sources
from memory.bootstrap import Container
from memory.db import transaction
from memory.errors import ForbiddenError
from memory.models import Principal, Source

CORPUS = Path(__file__).parent / "corpus"
DEMO_ADMIN_KEY = "gm_demoadmin0000000_demo-admin-key-not-for-production"

PRINCIPALS = [
    principals.NewPrincipal("steward-hr", "user", ("hr",), "restricted", "EU", ("steward", "reader")),
    principals.NewPrincipal("auditor", "user", ("audit",), "restricted", "EU", ("auditor",)),
    principals.NewPrincipal("alice", "user", ("hr", "legal", "sales"), "confidential", "EU", ("reader",),
                            display_name="Alice (EU, HR and legal)"),
    principals.NewPrincipal("bob", "user", ("eng", "legal", "sales"), "confidential", "US", ("reader",),
                            display_name="Bob (US engineer)"),
    principals.NewPrincipal("carol", "user", ("hr", "legal"), "internal", "IN", ("reader",),
                            display_name="Carol (India, internal clearance)"),
    principals.NewPrincipal("copilot", "agent", ("hr", "eng", "legal", "sales"), "confidential", "EU", ("reader",),
                            display_name="Company copilot", may_act_for=("alice", "bob", "carol")),
]
DEMO_KEYS = {p.id: f"gm_demo{p.id.replace('-', '')[:7]:0<7}{'0' * 5}_demo-{p.id}-key-not-for-production"
             for p in PRINCIPALS}

SOURCES = [
    sources.NewSource("legal-policies", "Legal and privacy policies", "steward-hr", "EU", ("legal", "hr", "eng"),
                      floor="internal", uri="https://intranet.example.com/legal"),
    sources.NewSource("hr-eu", "HR records (EU)", "steward-hr", "EU", ("hr",), floor="confidential",
                      uri="https://hr.example.com/eu"),
    sources.NewSource("eng-wiki", "Engineering wiki", "steward-hr", "US", ("eng",), floor="internal",
                      uri="https://wiki.example.com/eng"),
    sources.NewSource("customer-data", "EU customer data", "steward-hr", "EU", ("sales",), floor="confidential",
                      uri="https://crm.example.com/exports", personal_data_requires_consent=True,
                      # What the customers agreed to: a search for another purpose (or none) is told that
                      # their personal data was withheld for consent, and whom to ask.
                      consent_purposes=("support", "billing")),
]


@dataclass
class DemoSummary:
    created: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def render(self, port: int) -> str:
        lines = ["Demo memory loaded: " + ", ".join(f"{k} {v}" for k, v in sorted(self.created.items()))]
        lines += [f"  failed: {f}" for f in self.failed]
        lines.append("Demo API keys (never use outside a demo):")
        lines.append(f"  {'admin':<12}{DEMO_ADMIN_KEY}")
        lines += [f"  {pid:<12}{key}" for pid, key in DEMO_KEYS.items()]
        lines.append("Try:")
        lines.append(
            f"  curl -s localhost:{port}/v1/search -H 'Authorization: Bearer {DEMO_KEYS['copilot']}' "
            "-H 'X-Acting-For: bob' -H 'Content-Type: application/json' "
            "-d '{\"query\": \"can I share the EU customer dataset with our US partner?\"}'"
        )
        return "\n".join(lines)


def seed_demo(container: Container) -> DemoSummary:
    """Idempotent: principals and sources are created once; documents re-ingest as `unchanged`."""
    if container.settings.env == "prod":
        raise ForbiddenError("the demo corpus is refused when MEMORY_ENV=prod", code="demo_in_prod")
    summary = DemoSummary()
    with transaction(container.sessions) as s:
        for spec in PRINCIPALS:
            if s.get(Principal, spec.id) is None:
                principals.create_principal(s, spec=spec, actor="demo")
                principals.issue_key(s, principal_id=spec.id, actor="demo", token=DEMO_KEYS[spec.id])
        for src in SOURCES:
            if s.get(Source, src.id) is None:
                sources.register(s, spec=src, actor="demo")
    for src in SOURCES:
        outcomes = documents.ingest_paths(
            container.sessions, container.store, container.ingest_pipeline, source_id=src.id,
            paths=[str(CORPUS / src.id)], actor="steward-hr", max_bytes=container.settings.max_upload_bytes,
            uri_base=src.uri,  # citations name the source's (fictional) home, not this host's install path
        )
        for o in outcomes:
            summary.created[o.status] = summary.created.get(o.status, 0) + 1
            if o.status == "failed":
                summary.failed.append(f"{src.id}/{o.external_key}: {o.error_code}")
    container.store.flush()
    return summary

