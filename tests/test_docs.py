"""Every CLI command and every setting is documented in README.md (as sqlite-utils tests its docs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main

from memory.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def _commands() -> list[str]:
    from memory import cli, cli_access, cli_audit, cli_commands, cli_documents, cli_jobs  # noqa: F401  (registers commands)
    root = typer.main.get_command(cli.app)
    out: list[str] = []

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}")
        else:
            out.append(prefix)

    walk(root, "memory")
    return sorted(out)


@pytest.mark.parametrize("command", _commands())
def test_cli_command_is_documented(command):
    assert f"`{command}" in README, f"README.md does not document `{command}`"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_setting_is_documented(field):
    assert f"`MEMORY_{field.upper()}`" in README


def test_readme_opens_with_the_two_commands():
    head = README.split("```")[1]
    assert "bash scripts/demo" in head and "bash scripts/test" in head
