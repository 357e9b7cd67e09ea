"""Legacy binary Office files (.doc, .ppt) converted by LibreOffice to .docx / .pptx, then read as those.

unstructured's own `partition_doc` / `partition_ppt` run `soffice` without a time limit, in the user's
LibreOffice profile (one soffice per profile at a time) and leave its process tree behind when their caller is
killed. Here each conversion runs in a private, throwaway profile (no lock shared with another soffice, no user
settings or macros), in a process group of its own that is killed whole at `timeout_s` (a ParseTimeoutError
before the parse worker's own budget runs out, so the worker is not killed around it). Available where `soffice`
is on PATH (scripts/test installs Debian's `libreoffice-writer-nogui` and `libreoffice-impress-nogui`; the
Dockerfile too); elsewhere such files are `unsupported_format`, saying so.

LibreOffice reads untrusted files here: headless conversion runs no macros (its default macro security), and it
runs in a network namespace of its own (`unshare --net --map-root-user`): a document's linked images or OLE links
cannot make the host fetch URLs (measured: without it LibreOffice 7.4 fetched a linked image from loopback).
Not yet bounded: its memory and output size (no rlimits) and, when the parse worker itself is killed mid-way,
its process tree and temporary copy (docs/operations.md, "Parsing")."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from ingest.errors import CorruptDocumentError, ParseTimeoutError

logger = logging.getLogger(__name__)

SOFFICE = "soffice"
DEFAULT_TIMEOUT_S = 60.0


UNSHARE = "unshare"  # util-linux: the conversion runs in a network namespace of its own (no network at all)


def available() -> bool:
    """Whether LibreOffice can convert here: `soffice` and `unshare` on PATH (a document can link remote images,
    which LibreOffice fetches while converting: without a namespace to cut it off, no conversion)."""
    return shutil.which(SOFFICE) is not None and shutil.which(UNSHARE) is not None


@cache
def version() -> str:
    """`libreoffice==<version>` for provenance (`soffice --version`, once per process), `libreoffice` if unknown."""
    try:
        out = subprocess.run([SOFFICE, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "libreoffice"
    words = out.split()
    return f"libreoffice=={words[1]}" if len(words) > 1 and words[0] == "LibreOffice" else "libreoffice"


def convert(data: bytes, *, source_ext: str, target_ext: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """The file converted to `target_ext` (docx, pptx). CorruptDocumentError when LibreOffice produces nothing
    (not a document it reads), ParseTimeoutError past `timeout_s` (its whole process tree killed)."""
    with tempfile.TemporaryDirectory(prefix="memory-soffice-") as tmp:
        work = Path(tmp)
        source = work / f"document.{source_ext}"
        source.write_bytes(data)
        out = work / "out"
        command = [
            UNSHARE, "--net", "--map-root-user",
            SOFFICE, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless", "--norestore",
            "--nolockcheck", "--nodefault", "--convert-to", target_ext, "--outdir", str(out), str(source),
        ]
        # Its own session: soffice's launcher forks the real office process, and a timeout kills both.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, cwd=work)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)  # the whole tree, before the launcher is reaped (its group id is still its own)
            logger.info("soffice timeout: budget_s=%s", timeout_s)
            raise ParseTimeoutError(f"converting the .{source_ext} file took longer than {timeout_s:g} s") from None
        except BaseException:  # interrupted: nothing of it may outlive the caller
            _kill_group(process)
            raise
        converted = out / f"document.{target_ext}"
        if process.returncode != 0 or not converted.is_file() or converted.stat().st_size == 0:
            logger.info("soffice conversion failed: returncode=%s", process.returncode)
            raise CorruptDocumentError(f"LibreOffice could not read the .{source_ext} file")
        return converted.read_bytes()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
