"""Legacy .doc and .ppt files, converted by a real LibreOffice (ingest.legacy_office) and read as .docx / .pptx:
through parse_document, the parse worker and the API on the real stack. The legacy files are made here from our
own .docx / .pptx fixtures by the same LibreOffice. Without soffice such files are `unsupported_format`, saying
why; a conversion that hangs is killed with its whole process tree."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from ingest import legacy_office
from ingest.errors import ParseTimeoutError, UnsupportedFormatError
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
