"""Legacy binary Office files (.doc, .ppt) converted by LibreOffice to .docx / .pptx, then read as those.

unstructured's own `partition_doc` / `partition_ppt` run `soffice` without a time limit, in the user's
LibreOffice profile (one soffice per profile at a time) and leave its process tree behind when their caller is
killed. Here each conversion runs in a private, throwaway directory (its profile, its temporary files and its
output: no lock shared with another soffice, no user settings or macros), in a process group of its own that is
killed whole at `timeout_s` (a ParseTimeoutError before the parse worker's own budget runs out, so the worker is
not killed around it). Available where `soffice`, `unshare` and `prlimit` are on PATH (scripts/test installs
Debian's `libreoffice-writer-nogui` and `libreoffice-impress-nogui`; the Dockerfile too); elsewhere such files
are `unsupported_format`, saying so.

LibreOffice reads untrusted files here, so each conversion is bounded:
- no network: it runs in a network namespace of its own (`unshare --net --map-root-user`), so a document's
  linked images or OLE links cannot make the host fetch URLs (without it LibreOffice 7.4 fetched a linked image
  from loopback; tests/ingest/test_legacy_office.py serves one and checks nothing asks for it);
- no macros: headless conversion runs none (its default macro security);
- memory: `prlimit --as` caps its address space (MEMORY_LIMIT_BYTES; a conversion needs ~0.5 GiB of it);
- output: `prlimit --fsize` caps every file it writes (the caller's `max_output_bytes` plus a headroom for its
  profile), and a converted file past `max_output_bytes` is `document_too_large`, refused before it is read;
- leftovers: when the parse worker is stopped mid-way (SIGTERM: `abandon_active`), the conversion's process
  group and directory go with it; when it is killed outright (SIGKILL, the OOM killer), the next worker to start
  removes them (`sweep_stale`: each directory is named for its owner: pid namespace, pid, start time).
- core dumps: none (`prlimit --core=0`: a crash at a limit would write the document's text to disk)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from ingest.errors import CorruptDocumentError, DocumentTooLargeError, ParseTimeoutError

logger = logging.getLogger(__name__)

SOFFICE = "soffice"
UNSHARE = "unshare"  # util-linux: the conversion runs in a network namespace of its own (no network at all)
PRLIMIT = "prlimit"  # util-linux: its address space and file sizes are capped
DEFAULT_TIMEOUT_S = 60.0
MEMORY_LIMIT_BYTES = 2 * 1024**3  # address space; LibreOffice 7.4 failed to write a .pptx under 384 MiB
# Any file it writes may exceed the output limit by this much (its profile's registry and temporary files are
# written beside the output; a cap at the limit itself failed every conversion of small limits).
FILE_SIZE_HEADROOM_BYTES = 32 * 1024 * 1024
DIR_PREFIX = "memory-soffice-"
# A conversion directory is named for its owner: memory-soffice-<pid namespace>-<pid>-<start time>-<random>, so a
# sweep knows a dead owner from a live one (a pid alone can be reused) and leaves other namespaces' alone.
_OWNED = re.compile(rf"^{re.escape(DIR_PREFIX)}(\d+)-(\d+)-(\d+)-")

# The conversions running in this process (one at a time in a parse worker), by launcher pid: what SIGTERM must
# remove. No lock: a signal handler reads it, and single dict operations are atomic.
_active: dict[int, Path] = {}


def available() -> bool:
    """Whether LibreOffice can convert here: `soffice`, `unshare` and `prlimit` on PATH (a document can link
    remote images, which LibreOffice fetches while converting: without a namespace to cut it off, or without
    its limits, no conversion)."""
    return all(shutil.which(tool) is not None for tool in (SOFFICE, UNSHARE, PRLIMIT))


@cache
def version() -> str:
    """`libreoffice==<version>` for provenance (`soffice --version`, once per process), `libreoffice` if unknown."""
    try:
        out = subprocess.run([SOFFICE, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "libreoffice"
    words = out.split()
    return f"libreoffice=={words[1]}" if len(words) > 1 and words[0] == "LibreOffice" else "libreoffice"


def convert(
    data: bytes, *, source_ext: str, target_ext: str, timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_bytes: int = 100 * 1024 * 1024,
) -> bytes:
    """The file converted to `target_ext` (docx, pptx). CorruptDocumentError when LibreOffice produces nothing
    (not a document it reads), DocumentTooLargeError when what it produces exceeds `max_output_bytes`,
    ParseTimeoutError past `timeout_s` (its whole process tree killed; at once when no time is left)."""
    if timeout_s <= 0:
        raise ParseTimeoutError(f"no time was left to convert the .{source_ext} file")
    # A cleanup that fails (a killed office process's files) must not replace this call's own error: what is left
    # is swept once this process is gone (sweep_stale).
    with tempfile.TemporaryDirectory(prefix=_owner_prefix(), ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        source = work / f"document.{source_ext}"
        source.write_bytes(data)
        out = work / "out"
        command = [
            # No core dump either (a crash at a limit would write the document's text to disk).
            PRLIMIT, f"--as={MEMORY_LIMIT_BYTES}", f"--fsize={max_output_bytes + FILE_SIZE_HEADROOM_BYTES}", "--core=0",
            "--",
            UNSHARE, "--net", "--map-root-user",
            SOFFICE, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless", "--norestore",
            "--nolockcheck", "--nodefault", "--convert-to", target_ext, "--outdir", str(out), str(source),
        ]
        # Its temporary files in its own directory (removed with it); its own session: soffice's launcher forks
        # the real office process, and a timeout kills both.
        env = {**os.environ, "TMPDIR": str(work), "TMP": str(work), "TEMP": str(work)}
        # SIGTERM held until the conversion is registered, so that its handler (abandon_active) knows about it.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True, cwd=work, env=env)
            _active[process.pid] = work
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _active.pop(process.pid, None)
            _kill_group(process)  # the whole tree, before the launcher is reaped (its group id is still its own)
            logger.info("soffice timeout: budget_s=%s", round(timeout_s, 3))
            raise ParseTimeoutError(f"converting the .{source_ext} file took longer than {timeout_s:g} s") from None
        except BaseException:  # interrupted: nothing of it may outlive the caller
            _active.pop(process.pid, None)
            _kill_group(process)
            raise
        _active.pop(process.pid, None)  # (reaped a moment ago: a SIGTERM in between kills an empty group)
        converted = out / f"document.{target_ext}"
        if not converted.is_file() or converted.stat().st_size == 0:
            logger.info("soffice conversion failed: returncode=%s", process.returncode)
            raise CorruptDocumentError(f"LibreOffice could not read the .{source_ext} file")
        size = converted.stat().st_size
        if size > max_output_bytes:  # refused before it is read
            logger.info("soffice output too large: limit_bytes=%d", max_output_bytes)
            raise DocumentTooLargeError(
                f"the .{source_ext} file converts to more than the limit of {max_output_bytes} bytes")
        if process.returncode != 0:
            logger.info("soffice conversion failed: returncode=%s", process.returncode)
            raise CorruptDocumentError(f"LibreOffice could not read the .{source_ext} file")
        return converted.read_bytes()


def abandon_active() -> None:
    """Kill the conversion running in this process, if any, and remove its directory: for a SIGTERM handler
    (the parse worker stopped mid-way), before the process exits without unwinding. The launcher is not reaped
    here (the interrupted code may be waiting for it), so its group id is still its own when it is killed."""
    for pid, work in list(_active.items()):
        _active.pop(pid, None)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(work, ignore_errors=True)


def sweep_stale(tmp: Path | None = None) -> int:
    """Remove the conversion directories whose owner is dead (a parse worker killed outright mid-way), first
    killing any process still running from one (found by its arguments, which name paths inside it). Only this pid
    namespace's directories are looked at; those of live owners, and names that are not ours, are left alone.
    Returns how many were removed."""
    base = tmp or Path(tempfile.gettempdir())
    namespace = _pid_namespace()
    removed = 0
    for work in base.glob(f"{DIR_PREFIX}*"):
        owned = _OWNED.match(work.name)
        if owned is None or int(owned[1]) != namespace:
            continue
        pid, started = int(owned[2]), int(owned[3])
        if _start_time(pid) == started:  # its owner lives
            continue
        _kill_running_in(work)
        shutil.rmtree(work, ignore_errors=True)
        removed += 1
    if removed:
        logger.warning("soffice leftovers removed: directories=%d", removed)
    return removed


def _owner_prefix() -> str:
    return f"{DIR_PREFIX}{_pid_namespace()}-{os.getpid()}-{_start_time(os.getpid())}-"


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot: /proc/<pid>/stat field 22), None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def _kill_running_in(work: Path) -> None:
    """SIGKILL every process one of whose arguments is a path inside `work` (or its profile's file: URI)."""
    inside = (f"{work}/".encode(), f"={work.as_uri()}/".encode())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if any(arg.startswith(inside[0]) or inside[1] in arg for arg in args):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
