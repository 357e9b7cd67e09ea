"""Legacy .doc and .ppt files, converted by a real LibreOffice (ingest.legacy_office) and read as .docx / .pptx:
through parse_document, the parse worker and the API on the real stack. The legacy files are made here from our
own .docx / .pptx fixtures by the same LibreOffice. Without soffice such files are `unsupported_format`, saying
why; a conversion that hangs is killed with its whole process tree."""

from __future__ import annotations

import http.server
import itertools
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ingest import legacy_office
from ingest.errors import DocumentTooLargeError, ParseTimeoutError, UnsupportedFormatError
from ingest.parse import parse_document

MAX = 10 * 1024 * 1024


def _needs_soffice() -> None:
    if shutil.which("soffice") is None:
        why = "LibreOffice is not installed (apt-get install libreoffice-writer-nogui libreoffice-impress-nogui)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def legacy(fixture_dir: Path) -> dict[str, bytes]:
    """report.doc and deck.ppt, written by LibreOffice from the report.docx and deck.pptx fixtures."""
    _needs_soffice()
    return {
        "report.doc": legacy_office.convert((fixture_dir / "report.docx").read_bytes(), source_ext="docx",
                                            target_ext="doc"),
        "deck.ppt": legacy_office.convert((fixture_dir / "deck.pptx").read_bytes(), source_ext="pptx",
                                          target_ext="ppt"),
    }


@pytest.mark.parametrize(("name", "mime_type", "expected", "converted"), [
    ("report.doc", "application/msword", "Vendor contracts expire in March", "doc->docx+unstructured=="),
    ("deck.ppt", "application/vnd.ms-powerpoint", "Ship the memory service in Q3.", "ppt->pptx+unstructured=="),
])
def test_legacy_office_files_are_read(legacy: dict[str, bytes], name: str, mime_type: str, expected: str,
                                      converted: str) -> None:
    assert legacy[name].startswith(b"\xd0\xcf\x11\xe0")  # a real OLE compound file
    doc = parse_document(legacy[name], name, max_bytes=MAX)
    assert expected in doc.text and doc.mime_type == mime_type
    assert doc.parser.startswith("libreoffice==") and converted in doc.parser  # provenance names the conversion
    for element in doc.elements:
        assert doc.text[element.start:element.end] == element.text


def test_the_parse_worker_reads_them_within_its_budget(legacy: dict[str, bytes]) -> None:
    from ingest.workers import ProcessParser

    with ProcessParser(timeout_s=60) as parser:
        results = list(parser.parse_many([(data, name) for name, data in legacy.items()], max_bytes=MAX))
    assert all(not isinstance(doc, Exception) for doc, _ in results), results
    assert "Vendor contracts expire in March" in results[0][0].text  # type: ignore[union-attr]


def test_without_libreoffice_they_are_unsupported_saying_why(legacy: dict[str, bytes], monkeypatch: Any) -> None:
    monkeypatch.setattr(legacy_office, "available", lambda: False)
    with pytest.raises(UnsupportedFormatError, match="needs LibreOffice"):
        parse_document(legacy["report.doc"], "report.doc", max_bytes=MAX)


def test_a_conversion_that_hangs_is_killed_with_its_process_tree(tmp_path: Path, monkeypatch: Any) -> None:
    """A stand-in soffice that starts a child (as the real launcher starts the office process) and hangs."""
    pids = tmp_path / "pids"
    fake = tmp_path / "soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(legacy_office, "SOFFICE", str(fake))
    started = time.monotonic()
    with pytest.raises(ParseTimeoutError, match="longer than 1 s"):
        legacy_office.convert(b"\xd0\xcf\x11\xe0 not really a document", source_ext="doc", target_ext="docx",
                              timeout_s=1)
    assert time.monotonic() - started < 10
    for pid in map(int, pids.read_text().split()):  # the launcher and its child are both gone
        assert _dead(pid), pid


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it (a container's init may reap late)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_an_uploaded_doc_is_ingested_and_cited(api: Any, legacy: dict[str, bytes]) -> None:
    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    r = api.upload("s1", "report.doc", legacy["report.doc"])
    assert r.status_code == 201, r.text
    hits = api.search(reader, "when do vendor contracts expire").json()["hits"]
    assert hits and hits[0]["citation"]["parser_version"].startswith("libreoffice==")


# -- what a conversion may not do: fetch, overrun its time or its size, outlive its worker -----------------------

_LINKED_FODT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" xmlns:xlink="http://www.w3.org/1999/xlink"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" office:version="1.2"
 office:mimetype="application/vnd.oasis.opendocument.text">
 <office:body><office:text>
  <text:p>Quarterly vendor review with a linked chart.</text:p>
  <text:p><draw:frame draw:name="chart" svg:width="2cm" svg:height="2cm" text:anchor-type="as-char">
   <draw:image xlink:href="{url}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame></text:p>
 </office:text></office:body>
</office:document>
"""


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_linked_image_is_not_fetched_while_converting(tmp_path: Path) -> None:
    """A .doc whose image is a link to a URL: LibreOffice fetches it when it converts the file with network (the
    control, run here with a plain soffice), and never through legacy_office (its own network namespace)."""
    _needs_soffice()
    _Recorder.paths = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/chart.png"
        doc = legacy_office.convert(_LINKED_FODT.format(url=url).encode(), source_ext="fodt", target_ext="doc")
        assert _Recorder.paths == []  # made in the namespace too
        (tmp_path / "linked.doc").write_bytes(doc)
        subprocess.run(["soffice", f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}", "--headless",
                        "--convert-to", "docx", "--outdir", str(tmp_path / "out"), str(tmp_path / "linked.doc")],
                       capture_output=True, timeout=120, check=True)
        assert _Recorder.paths == ["/chart.png"]  # the control: the link is in the file, and followed with network
        parsed = parse_document(doc, "linked.doc", max_bytes=MAX)
        assert "Quarterly vendor review" in parsed.text
        assert _Recorder.paths == ["/chart.png"]  # nothing more asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_converted_file_over_the_size_limit_is_refused_before_it_is_read(legacy: dict[str, bytes]) -> None:
    with pytest.raises(DocumentTooLargeError, match="converts to more than the limit of 2000 bytes"):
        legacy_office.convert(legacy["report.doc"], source_ext="doc", target_ext="docx", max_output_bytes=2000)
    with pytest.raises(DocumentTooLargeError):  # parse_document passes its byte limit on
        parse_document(legacy["report.doc"], "report.doc", max_bytes=len(legacy["report.doc"]) // 4 + 1)


def test_no_time_left_is_a_timeout_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(ParseTimeoutError, match="no time was left"):
        legacy_office.convert(b"\xd0\xcf\x11\xe0", source_ext="doc", target_ext="docx", timeout_s=0)
    assert time.monotonic() - started < 1


def test_an_emails_conversions_share_one_deadline(legacy: dict[str, bytes], fixture_dir: Path,
                                                 monkeypatch: Any) -> None:
    """Three .doc attachments whose conversions take 0.8 s each, in a 2 s conversion budget: each gets what the
    ones before it left, not the whole budget again, so the third runs out of time (skipped, said so)."""
    calls: list[tuple[float, float]] = []  # (the budget it was given, the time it took)
    docx = (fixture_dir / "report.docx").read_bytes()

    def slow_convert(data: bytes, *, source_ext: str, target_ext: str, timeout_s: float,
                     max_output_bytes: int) -> bytes:
        spent = min(max(timeout_s, 0.0), 0.8)
        time.sleep(spent)
        calls.append((timeout_s, spent))
        if spent < 0.8:  # as the real one would be: killed at its limit
            raise ParseTimeoutError("converting took longer than its limit")
        return docx

    parse_document(docx, "report.docx", max_bytes=MAX)  # the docx parser loaded before the clock starts
    monkeypatch.setattr(legacy_office, "convert", slow_convert)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Contracts"
    message.set_content("Three reports attached.")
    for i in range(3):
        message.add_attachment(legacy["report.doc"], maintype="application", subtype="msword",
                               filename=f"report-{i}.doc")
    doc = parse_document(message.as_bytes(), "contracts.eml", max_bytes=MAX, convert_timeout_s=2.0)
    assert len(calls) == 3 and calls[0][0] <= 2.0
    for (budget, spent), (after, _) in itertools.pairwise(calls):
        assert after <= budget - spent  # one deadline, spent in turn
    skipped = [w.attachment for w in doc.warnings if w.code == "parse_timeout"]
    assert "report-2.doc" in skipped and "report-0.doc" not in skipped


def test_leftovers_of_a_killed_worker_are_swept(tmp_path: Path) -> None:
    """A conversion directory whose owner is dead (its name: pid namespace, pid, start time) goes, with any
    process still running from it; one whose owner lives, another namespace's, one named otherwise stay, and so
    does a process that only names a sibling path (`<dir>.bak`)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    namespace = os.stat("/proc/self/ns/pid").st_ino
    stale = tmp_path / f"{legacy_office.DIR_PREFIX}{namespace}-{dead.pid}-12345-abcd"
    stale.mkdir()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(stale / "document.doc")],
                              start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", f"{stale}.bak/x"],
                                 start_new_session=True)
    kept = [tmp_path / f"{legacy_office._owner_prefix()}live",
            tmp_path / f"{legacy_office.DIR_PREFIX}{namespace + 1}-{dead.pid}-12345-other-namespace",
            tmp_path / f"{legacy_office.DIR_PREFIX}new"]
    for path in kept:
        path.mkdir()
    try:
        assert legacy_office.sweep_stale(tmp_path) == 1
        assert not stale.exists() and all(path.exists() for path in kept)
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for process in (orphan, bystander):
            if process.poll() is None:
                process.kill()


def test_a_worker_stopped_mid_conversion_takes_its_conversion_along(
    legacy: dict[str, bytes], tmp_path: Path, monkeypatch: Any
) -> None:
    """The parse budget runs out inside a conversion that outlasts it: the worker is stopped (SIGTERM), and the
    stand-in soffice's process tree and its conversion directory go with it."""
    from ingest import workers

    pids, bin_dir, tmp = tmp_path / "pids", tmp_path / "bin", tmp_path / "tmp"
    bin_dir.mkdir()
    tmp.mkdir()
    fake = bin_dir / "soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")  # the spawned worker finds the stand-in
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(workers, "CONVERT_SHARE", 10.0)  # the conversion's own limit would come after the worker's
    with workers.ProcessParser(timeout_s=3) as parser:
        parser.wait_ready()
        [(result, _)] = list(parser.parse_many([(legacy["report.doc"], "report.doc")], max_bytes=MAX))
        assert isinstance(result, ParseTimeoutError)
        deadline = time.monotonic() + 10
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in map(int, pids.read_text().split()):
            assert _dead(pid), pid
        assert list(tmp.glob(f"{legacy_office.DIR_PREFIX}*")) == []
