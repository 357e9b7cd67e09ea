"""The CLI gets the API's limits: they live in the services, so an oversized value is one `error: <code>` line and
exit 2 on every database (on PostgreSQL it used to be an internal error, the column refusing the row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from memory import cli, cli_access, cli_commands  # noqa: F401  (registers commands)
from memory.bootstrap import Container
from memory.models import AuditRecord, Document, Principal, Source
from memory.settings import Settings
from tests.conftest import invoke


def refused(r, code: str) -> None:
    assert r.exit_code == 2, r.output
    assert f"error: {code}: " in r.output and "internal_error" not in r.output, r.output


def count(model: type, *where) -> int:
    c = Container(Settings())
    try:
        with c.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)
    finally:
        c.close()


def _steward() -> None:
    assert invoke("principals", "create", "st", "--groups", "g", "--roles", "steward,reader").exit_code == 0


@pytest.mark.parametrize(("option", "value", "code"), [
    ("--name", "n" * 257, "invalid_source_name"),
    ("--name", "", "invalid_source_name"),
    ("--uri", "https://x/" + "u" * 1100, "invalid_uri"),
])
def test_a_source_past_the_apis_limits_is_refused(env: Path, option: str, value: str, code: str):
    _steward()
    spec = {"--name": "S", "--uri": "", option: value}
    r = invoke("sources", "add", "s1", "--steward", "st", "--jurisdiction", "EU", "--read-groups", "g",
               *[x for k, v in spec.items() for x in (k, v)])
    refused(r, code)
    assert count(Source) == 0


def test_a_source_name_at_the_limit_is_accepted(env: Path):
    _steward()
    r = invoke("sources", "add", "s1", "--name", "n" * 256, "--steward", "st", "--jurisdiction", "EU")
    assert r.exit_code == 0, r.output


def test_an_actor_longer_than_its_column_is_refused(env: Path):
    refused(invoke("principals", "create", "pgu1", "--actor", "a" * 300), "invalid_actor")
    assert count(Principal) == 0
    assert invoke("principals", "create", "pgu1", "--actor", "a" * 128).exit_code == 0


def test_a_uri_base_that_leaves_no_room_fails_the_ingest_before_any_work(env: Path):
    _steward()
    assert invoke("sources", "add", "s3", "--name", "S", "--steward", "st", "--jurisdiction", "EU").exit_code == 0
    (env / "a.txt").write_text("A short note about trains.")
    refused(invoke("ingest", "s3", str(env / "a.txt"), "--no-optimize", "--uri-base", "https://x/" + "u" * 2100),
            "invalid_uri_base")
    assert count(Document) == 0


def test_a_file_whose_uri_would_not_fit_fails_alone(env: Path):
    _steward()
    assert invoke("sources", "add", "s3", "--name", "S", "--steward", "st", "--jurisdiction", "EU").exit_code == 0
    (env / "d").mkdir()
    (env / "d" / "a.txt").write_text("A short note about trains.")
    (env / "d" / "b.txt").write_text("A short note about boats.")
    r = invoke("ingest", "s3", str(env / "d"), "--json", "--no-optimize", "--uri-base", "https://x/" + "u" * 2034)
    assert r.exit_code == 1, r.output
    assert {o["external_key"]: o.get("error_code") for o in json.loads(r.output)} == {
        "a.txt": "uri_too_long", "b.txt": "uri_too_long"}
    assert count(Document) == 0


def test_a_query_past_the_apis_limit_is_refused(env: Path):
    _steward()
    refused(invoke("search", "q" * 4001, "--as", "st"), "query_too_long")
    assert invoke("search", "q" * 4000, "--as", "st").exit_code == 0


def test_more_groups_than_the_api_takes_are_refused(env: Path):
    groups = ",".join(f"g{i}" for i in range(1001))
    refused(invoke("principals", "create", "u1", "--groups", groups), "too_many_names")
    assert count(Principal) == 0
    assert invoke("principals", "create", "u1").exit_code == 0
    refused(invoke("principals", "update", "u1", "--groups", groups), "too_many_names")


@pytest.mark.parametrize("body", [
    ["x"],
    {"rules": ["x"]},
    {"rules": [{"data": "EU", "caller": "US", "rule": "allow", "extra": 1}]},
    [{"data": "EU", "caller": 5, "rule": "allow"}],
    {"not_rules": []},
    "rules",
])
def test_malformed_transfer_rules_are_refused_with_their_code(env: Path, body: object):
    f = env / "rules.json"
    f.write_text(json.dumps(body))
    refused(invoke("policy", "set-jurisdictions", str(f)), "invalid_transfer_rule")


def test_transfer_rules_in_the_apis_body_shape_are_accepted(env: Path):
    f = env / "rules.json"
    f.write_text(json.dumps({"rules": [{"data": "EU", "caller": "US", "rule": "allow_masked"}]}))
    r = invoke("policy", "set-jurisdictions", str(f))
    assert r.exit_code == 0, r.output
    f.write_text(json.dumps({"rules": []}))
    assert invoke("policy", "set-jurisdictions", str(f)).exit_code == 0
    rules = json.loads(invoke("policy", "show").output)["jurisdictions"]["rules"]
    assert rules == []


def test_a_source_update_with_nothing_to_change_is_refused_and_not_audited(env: Path):
    _steward()
    assert invoke("sources", "add", "s7", "--name", "S", "--steward", "st", "--jurisdiction", "EU").exit_code == 0
    refused(invoke("sources", "update", "s7"), "nothing_to_change")
    assert count(AuditRecord, AuditRecord.event == "source.update") == 0


def test_the_api_refuses_an_empty_source_patch_and_audits_nothing(api):
    api.source("s")
    r = api.client.patch("/v1/sources/s", headers=api.admin, json={})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "nothing_to_change")
    with api.container.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditRecord).where(
            AuditRecord.event == "source.update")) == 0
