"""Fixtures for the ingest tests: small documents of every format, generated here, once per session.

Nothing is downloaded; binary formats are written with their own libraries (python-docx, python-pptx,
openpyxl, pikepdf, msoffcrypto, pandoc via pypandoc), text formats by hand.
"""

from __future__ import annotations

import email.message
import io
import ipaddress
import random
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PARAGRAPH = (
    "The quarterly planning review covers revenue forecasts, hiring plans and vendor contracts. "
    "Each business unit reports its risks, the mitigations agreed with finance, and the open decisions. "
)
PDF_PAGES = ["Quarterly Report", "Revenue grew in every region this quarter.", "Page two discusses hiring plans."]


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Planning Review", level=1)
    document.add_paragraph(PARAGRAPH * 3)
    document.add_heading("Risks", level=2)
    document.add_paragraph("Vendor contracts expire in March and need a renewal decision.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Unit", "Budget"
    table.cell(1, 0).text, table.cell(1, 1).text = "Sales", "1200"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    for title, body in [("Roadmap", "Ship the memory service in Q3."), ("Budget", "Hiring two engineers.")]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def _xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Budget"
    for row in [("Unit", "Budget", "Owner"), ("Sales", 1200, "North"), ("Support", 800, "South")]:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _pdf(pages: list[list[str]], *, password: str | None = None) -> bytes:
    """A text PDF with a standard (base-14) font, one list of lines per page."""
    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    )
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for line in lines:
            ops.append(f"({line}) Tj T*")
        ops.append("ET")
        page = pikepdf.Page(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Page,
                MediaBox=[0, 0, 612, 792],
                Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
                Contents=pdf.make_stream("\n".join(ops).encode("latin-1")),
            )
        )
        pdf.pages.append(page)
    buffer = io.BytesIO()
    if password:
        pdf.save(buffer, encryption=pikepdf.Encryption(user=password, owner=password + "-owner"))
    else:
        pdf.save(buffer)
    return buffer.getvalue()


def _eml() -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "Alice Example <alice@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = "Vendor renewal"
    message["Date"] = "Mon, 03 Mar 2025 10:00:00 +0000"
    message.set_content("Hi Bob,\n\nThe vendor contract renewal is due in March. Please review the terms.\n\nAlice\n")
    return message.as_bytes()


def _encrypted_docx(plain: bytes) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt("secret", out)
    return out.getvalue()


def _pandoc(markdown: str, to: str, directory: Path) -> bytes:
    import pypandoc

    target = directory / f"generated.{to}"
    pypandoc.convert_text(markdown, to, format="md", outputfile=str(target), extra_args=["--sandbox"])
    return target.read_bytes()


def _wav() -> bytes:
    rng = random.Random(7)
    samples = bytes(rng.getrandbits(8) for _ in range(2000))
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8) + b"data" + struct.pack("<I", len(samples))
    return header + samples


def _png() -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


MARKDOWN = (
    "# Planning Review\n\n" + PARAGRAPH + "\n\n## Risks\n\n- Vendor contracts expire in March\n- Hiring is slow\n"
)


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one small file per case; file names carry the extension the case needs."""
    root = tmp_path_factory.mktemp("ingest-fixtures")
    rng = random.Random(42)
    docx_bytes = _docx()
    files: dict[str, bytes] = {
        "report.docx": docx_bytes,
        "deck.pptx": _pptx(),
        "budget.xlsx": _xlsx(),
        "report.pdf": _pdf([PDF_PAGES[:2], PDF_PAGES[2:]]),
        "mail.eml": _eml(),
        "page.html": (
            "<html><head><title>t</title></head><body><h1>Planning Review</h1>"
            f"<p>{PARAGRAPH}</p><ul><li>Vendor contracts</li><li>Hiring</li></ul></body></html>"
        ).encode(),
        "notes.md": MARKDOWN.encode(),
        "notes.txt": ("Planning Review\n\n" + PARAGRAPH + "\n\nVendor contracts expire in March.\n").encode(),
        "table.csv": b"unit,budget,owner\nSales,1200,North\nSupport,800,South\n",
        "table.tsv": b"unit\tbudget\towner\nSales\t1200\tNorth\nSupport\t800\tSouth\n",
        "records.json": b'[{"unit": "Sales", "note": "Vendor contracts expire in March"}]',
        "feed.xml": b"<?xml version='1.0'?><report><unit>Sales</unit><note>Vendor contracts expire</note></report>",
        "notes.rst": b"Planning Review\n===============\n\nVendor contracts expire in March.\n",
        "notes.org": b"* Planning Review\nVendor contracts expire in March.\n",
        "memo.rtf": rb"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\pard Vendor contracts expire in March.\par}",
        "memo.odt": _pandoc(MARKDOWN, "odt", root),
        "utf16.txt": "Zürich office: the vendor contract renewal is due.\n".encode("utf-16"),
        "latin1.txt": "Café crème budget: déjà approved for the Zürich office.\n".encode("latin-1"),
        # Bad inputs
        "encrypted.pdf": _pdf([PDF_PAGES], password="secret"),
        "encrypted.docx": _encrypted_docx(docx_bytes),
        "corrupt.docx": bytes(rng.getrandbits(8) for _ in range(4096)),
        "corrupt.pdf": b"%PDF-1.7\n" + bytes(rng.getrandbits(8) for _ in range(2048)),
        "empty.txt": b"",
        "blank.txt": b"   \n\n\t  \n",
        "image-only.pdf": _pdf([[]]),
        "sound.wav": _wav(),
        "program.exe": b"MZ\x90\x00" + bytes(rng.getrandbits(8) for _ in range(4096)),
        "picture.png": _png(),
        "binary.txt": bytes(rng.getrandbits(8) for _ in range(4096)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="session")
def read_fixture(fixture_dir: Path) -> Any:
    def read(name: str) -> bytes:
        return (fixture_dir / name).read_bytes()

    return read


class SocketRecorder:
    """Records socket audit events (never blocks) while `recording()` is active, in any thread.

    Creating a socket object and binding it to loopback send nothing; urllib3 does both at import time
    to probe for IPv6 support, so those two are ignored. Everything else (connect, DNS lookups, sends,
    any non-loopback bind) is recorded, loopback included.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self._active = False
        self._lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._active or not event.startswith("socket.") or event == "socket.__new__":
            return
        if event == "socket.bind" and _is_loopback_address(args[1]):
            return
        with self._lock:
            self.events.append(event)

    def recording(self) -> Iterator[list[str]]:
        self.events = []
        self._active = True
        try:
            yield self.events
        finally:
            self._active = False


def _is_loopback_address(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX path
    try:
        return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except ValueError:
        return False


_RECORDER = SocketRecorder()
sys.addaudithook(_RECORDER.hook)  # audit hooks cannot be removed; inert unless recording


@pytest.fixture
def socket_events() -> Iterator[list[str]]:
    """Every socket audit event (socket creation, connect, DNS lookups...) raised during the test."""
    yield from _RECORDER.recording()


# `real_embedder` (all-MiniLM-L6-v2, loaded once per session) comes from tests/conftest.py.
