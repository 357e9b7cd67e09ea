"""Deployment files: docker-compose.yml against the Compose Specification, its secrets and its wiring to
the settings class, the Dockerfile's install order, and CI's entry point.

No Docker engine is needed: compose cannot run here, so the file is validated, not started. The schema is
the Compose Specification's own JSON schema as vendored (and kept current) by check-jsonschema.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from memory.rate_limits import RateLimits
from memory.settings import DEV_BOOTSTRAP_KEY, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Variables that carry secrets: compose must refuse to start without them (`${VAR:?message}`).
SECRETS = {"POSTGRES_PASSWORD", "QDRANT_API_KEY", "MEMORY_BOOTSTRAP_ADMIN_KEY", "REDIS_PASSWORD"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$|API_KEY")
# Settings fields with no safe default in prod: the api service must set each of them.
PROD_REQUIRED = ("database_url", "qdrant_url", "qdrant_api_key", "bootstrap_admin_key")

# Compose interpolation: $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ...
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
STRONG = {
    "POSTGRES_PASSWORD": "pg" + "a" * 40,
    "QDRANT_API_KEY": "qd" + "b" * 40,
    "REDIS_PASSWORD": "rd" + "d" * 40,
    "MEMORY_BOOTSTRAP_ADMIN_KEY": "gm_0123456789abcdef_" + "c" * 40,  # the shape `memory keygen` prints
}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation, enough for this file; a missing `:?` variable raises KeyError."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["name"] or m["bare"]
        value = env.get(name)
        op, arg = m["op"], m["arg"] or ""
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return INTERPOLATION.sub(one, text)


@cache
def raw_text() -> str:
    return COMPOSE.read_text()


@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(raw_text())
    assert isinstance(doc, dict)
    return doc


def service(name: str) -> dict[str, Any]:
    svc = compose()["services"][name]
    assert isinstance(svc, dict)
    return svc


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def compose_spec_schema() -> dict[str, Any]:
    path = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(path.read_text())
    assert isinstance(schema, dict)
    return schema


# --------------------------------------------------------------------------- the Compose Specification


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_after_interpolation(tmp_path: Path) -> None:
    rendered = tmp_path / "compose.rendered.yml"
    rendered.write_text(interpolate(raw_text(), STRONG))
    schema = compose_spec_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(rendered.read_text()))]
    assert errors == []


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d["services"]["api"].update(stop_grace_periodd="30s"), "misspelt key"),
        (lambda d: d["services"]["api"]["depends_on"]["postgres"].update(condition="healthy"), "bad condition"),
        (lambda d: d["services"]["api"].update(restart=True), "wrong type"),
        (lambda d: d.update(servics=d.pop("services")), "misspelt top-level key"),
    ],
)
def test_the_schema_catches_mistakes(mutate: Any, why: str) -> None:
    """The vendored schema is strict: these mistakes would otherwise only surface at `docker compose up`."""
    validator = jsonschema.Draft202012Validator(compose_spec_schema())
    broken = copy.deepcopy(compose())
    mutate(broken)
    assert not validator.is_valid(broken), why


# --------------------------------------------------------------------------------------------- secrets


def test_every_secret_is_required_and_has_no_default() -> None:
    seen: dict[str, set[str]] = {}
    for m in INTERPOLATION.finditer(raw_text()):
        name = m["name"] or m["bare"]
        if name is None:
            continue
        if name in SECRETS or SECRET_NAME.search(name):
            seen.setdefault(name, set()).add(m["op"] or "")
            assert m["op"] == ":?" and m["arg"], f"secret {m.group(0)} must be ${{{name}:?message}}, never defaulted"
    assert set(seen) == SECRETS, "every secret is used, and no other secret-looking variable exists"


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_render_without_each_secret(secret: str) -> None:
    env = {k: v for k, v in STRONG.items() if k != secret}
    with pytest.raises(KeyError, match=secret):
        interpolate(raw_text(), env)


def test_no_secret_is_written_into_the_file() -> None:
    for name in compose()["services"]:
        for key, value in environment(name).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{name}.{key} must come from a variable"
    db_url = environment("api")["MEMORY_DATABASE_URL"]
    password = re.match(r"postgresql\+psycopg://[^:]+:(?P<pw>.+)@", db_url)
    assert password and password["pw"].startswith("${POSTGRES_PASSWORD:?"), db_url


# ---------------------------------------------------------------------------------- settings wiring


def test_every_memory_variable_is_a_settings_field() -> None:
    names = {key for svc in compose()["services"] for key in environment(svc) if key.startswith("MEMORY_")}
    names |= set(re.findall(r"\b(MEMORY_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    unknown = sorted(n for n in names if n.removeprefix("MEMORY_").lower() not in Settings.model_fields)
    assert names and unknown == []


@pytest.mark.parametrize("field", PROD_REQUIRED)
def test_prod_settings_without_a_safe_default_are_wired_for_the_api(field: str) -> None:
    assert field in Settings.model_fields
    value = environment("api").get(f"MEMORY_{field.upper()}", "")
    assert value.strip(), f"api must set MEMORY_{field.upper()}"


def test_api_talks_to_the_compose_services_with_the_same_secrets() -> None:
    api, pg, qd = environment("api"), environment("postgres"), environment("qdrant")
    assert api["MEMORY_ENV"] == "prod"
    db_url = api["MEMORY_DATABASE_URL"]
    assert db_url.startswith(f"postgresql+psycopg://{pg['POSTGRES_USER']}:")
    assert db_url.endswith(f"@postgres:5432/{pg['POSTGRES_DB']}")
    assert "${POSTGRES_PASSWORD:?" in db_url and pg["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert api["MEMORY_QDRANT_URL"] == "http://qdrant:6333"
    assert api["MEMORY_QDRANT_API_KEY"] == qd["QDRANT__SERVICE__API_KEY"]
    rd = environment("redis")
    assert api["MEMORY_RATE_LIMIT_STORAGE"] == "redis://:" + rd["REDIS_PASSWORD"] + "@redis:6379/0"
    assert rd["REDISCLI_AUTH"] == rd["REDIS_PASSWORD"]
    assert '--requirepass "$$REDIS_PASSWORD"' in raw_text()  # the server takes the password the api sends


def isolate_from_memory_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MEMORY_")]:
        monkeypatch.delenv(key)


def test_api_environment_gives_valid_prod_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: interpolate(v, STRONG) for k, v in environment("api").items()}
    isolate_from_memory_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.env == "prod"
    assert settings.sqlalchemy_url == f"postgresql+psycopg://memory:{STRONG['POSTGRES_PASSWORD']}@postgres:5432/memory"
    assert not settings.is_embedded_vectors
    assert settings.qdrant_api_key and settings.qdrant_api_key.get_secret_value() == STRONG["QDRANT_API_KEY"]
    key = settings.bootstrap_admin_key
    assert key and key.get_secret_value() == STRONG["MEMORY_BOOTSTRAP_ADMIN_KEY"]
    assert settings.rate_limit_storage == f"redis://:{STRONG['REDIS_PASSWORD']}@redis:6379/0"
    RateLimits({}, storage_uri=settings.rate_limit_storage)  # a storage the api can build (it connects lazily)


@pytest.mark.parametrize("weak", ["short", DEV_BOOTSTRAP_KEY])
def test_a_weak_admin_key_is_refused_in_prod(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    env = {k: interpolate(v, {**STRONG, "MEMORY_BOOTSTRAP_ADMIN_KEY": weak}) for k, v in environment("api").items()}
    isolate_from_memory_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="BOOTSTRAP_ADMIN_KEY"):
        Settings()


# ------------------------------------------------------------------------------------- start-up order


def test_api_waits_for_healthy_dependencies() -> None:
    depends = service("api")["depends_on"]
    assert depends == {name: {"condition": "service_healthy"} for name in ("postgres", "qdrant", "redis")}


def test_api_migrates_then_serves() -> None:
    command = service("api")["command"]
    script = command if isinstance(command, str) else " ".join(command)
    assert re.search(r"memory db upgrade\s*&&\s*exec memory serve\b", script), script
    assert "--host 0.0.0.0" in script and "--workers" in script


@pytest.mark.parametrize("name", ["api", "postgres", "qdrant", "redis"])
def test_every_service_restarts_checks_health_and_stops_gracefully(name: str) -> None:
    svc = service(name)
    assert svc["restart"] in {"unless-stopped", "always"}
    assert svc["healthcheck"]["test"]
    assert svc["stop_grace_period"]


def test_api_health_is_readiness() -> None:
    assert "/readyz" in " ".join(service("api")["healthcheck"]["test"])


def test_images_are_pinned() -> None:
    assert service("postgres")["image"] == "postgres:15"
    image = service("qdrant")["image"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", image), image
    assert service("redis")["image"] == "redis:7.2-alpine"


def test_state_lives_in_named_volumes() -> None:
    declared = set(compose()["volumes"])
    used = {v.split(":", 1)[0] for svc in compose()["services"].values() for v in svc.get("volumes", [])}
    assert used == declared
    assert {"postgres-data", "qdrant-storage"} <= used


def test_only_the_api_is_published() -> None:
    published = {name for name, svc in compose()["services"].items() if svc.get("ports")}
    assert published == {"api"}


# ------------------------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and heredoc bodies skipped."""
    out: list[tuple[str, str]] = []
    lines = iter(DOCKERFILE.read_text().splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        while stripped.endswith("\\"):
            nxt = next(lines).strip()
            if not nxt.startswith("#"):
                stripped = stripped[:-1].rstrip() + " " + nxt
        heredoc = re.search(r"<<-?'?(\w+)'?", stripped)
        if heredoc:
            body = []
            for inner in lines:
                if inner.strip() == heredoc.group(1):
                    break
                body.append(inner)
            stripped += "\n" + "\n".join(body)
        keyword, _, args = stripped.partition(" ")
        out.append((keyword.upper(), args))
    return out


def test_dockerfile_installs_cpu_torch_first_then_everything_under_constraints() -> None:
    pip_runs = [args for kw, args in dockerfile_instructions() if kw == "RUN" and "pip install" in args]
    assert pip_runs, "no pip install in the Dockerfile"
    assert "torch==2.13.0" in pip_runs[0]
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()
    for args in pip_runs:
        for command in re.findall(r"pip install[^&]*", args):
            assert "-c constraints.txt" in command, command
    assert any("--no-deps" in a and "unstructured-inference==1.6.14" in a for a in pip_runs)
    assert any("scripts/install --check" in a for kw, a in dockerfile_instructions() if kw == "RUN")


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    kinds = [kw for kw, _ in instructions]
    assert kinds[0] in {"ARG", "FROM"}
    froms = [a for kw, a in instructions if kw == "FROM"]
    assert "python:3.11-slim" in DOCKERFILE.read_text() and froms
    health = [a for kw, a in instructions if kw == "HEALTHCHECK"]
    assert len(health) == 1 and "/readyz" in health[0]
    users = [a.strip() for kw, a in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [a.strip() for kw, a in instructions if kw == "EXPOSE"] == ["8080"]
    assert json.loads(next(a for kw, a in reversed(instructions) if kw == "CMD")) == ["memory", "serve"]


def test_dockerfile_never_reaches_a_model_hub_at_run_time() -> None:
    text = DOCKERFILE.read_text()
    for flag in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", 'TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""'):
        assert flag in text


# ------------------------------------------------------------------------------------------------- CI


def test_ci_runs_the_same_command_as_the_readme() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert re.search(r"^bash scripts/test\b", ci, re.MULTILINE)
    assert "bash scripts/test" in (ROOT / "README.md").read_text()
