"""parse_document: every supported format, offsets into the joined text, typed errors for bad input."""

from __future__ import annotations

import email.message
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import (
    CorruptDocumentError,
    DocumentTooComplexError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncodingError,
    EncryptedDocumentError,
    IngestError,
    UnsupportedFormatError,
)
from ingest.parse import SEPARATOR, decode_text, parse_document

MAX = 10 * 1024 * 1024
MSG_PATH = Path("/work/shared/data/documents/fake-email.msg")


@pytest.mark.parametrize(
    ("name", "function", "mime_type", "expected_text"),
    [
        ("report.docx", "partition_docx", "wordprocessingml", "Vendor contracts expire in March"),
        ("deck.pptx", "partition_pptx", "presentationml", "Ship the memory service in Q3."),
        ("budget.xlsx", "partition_xlsx", "spreadsheetml", "Support"),
        ("report.pdf", "partition_pdf", "application/pdf", "Revenue grew in every region"),
        ("mail.eml", "partition_email", "message/rfc822", "vendor contract renewal is due"),
        ("page.html", "partition_html", "text/html", "Planning Review"),
        ("notes.md", "partition_md", "text/markdown", "Hiring is slow"),
        ("notes.txt", "partition_text", "text/plain", "Vendor contracts expire in March."),
        ("table.csv", "partition_csv", "text/csv", "Support"),
        ("table.tsv", "partition_tsv", "text/tsv", "Support"),
        ("records.json", "partition_json", "application/json", "Vendor contracts expire in March"),
        ("feed.xml", "partition_xml", "application/xml", "Vendor contracts expire"),
        ("notes.rst", "partition_rst", "text/x-rst", "Vendor contracts expire in March."),
        ("notes.org", "partition_org", "text/org", "Vendor contracts expire in March."),
        ("memo.rtf", "partition_rtf", "text/rtf", "Vendor contracts expire in March."),
        ("memo.odt", "partition_odt", "opendocument.text", "Hiring is slow"),
        ("utf16.txt", "partition_text", "text/plain", "Zürich office"),
        ("latin1.txt", "partition_text", "text/plain", "Café crème budget: déjà approved"),
    ],
)
def test_each_format_parses_without_opening_a_socket(
    read_fixture: Any, socket_events: list[str], name: str, function: str, mime_type: str, expected_text: str
) -> None:
    doc = parse_document(read_fixture(name), name, max_bytes=MAX)

    assert socket_events == []
    assert doc.parser.endswith(":" + function)
    assert doc.parser.startswith("unstructured==")
    assert mime_type in doc.mime_type
    assert expected_text in doc.text
    assert doc.elements


@pytest.mark.parametrize("name", ["report.docx", "report.pdf", "notes.md", "mail.eml", "budget.xlsx"])
def test_element_offsets_point_into_the_joined_text(read_fixture: Any, name: str) -> None:
    doc = parse_document(read_fixture(name), name, max_bytes=MAX)

    assert doc.text == SEPARATOR.join(e.text for e in doc.elements)
    for element in doc.elements:
        assert doc.text[element.start : element.end] == element.text
        assert element.text == element.text.strip() and element.text


def test_structure_and_pages_are_kept(read_fixture: Any) -> None:
    docx = parse_document(read_fixture("report.docx"), "report.docx", max_bytes=MAX)
    pdf = parse_document(read_fixture("report.pdf"), "report.pdf", max_bytes=MAX)
    pptx = parse_document(read_fixture("deck.pptx"), "deck.pptx", max_bytes=MAX)

    assert {"Title", "Table"} <= {e.element_type for e in docx.elements}
    assert [e.page_number for e in pdf.elements if "hiring" in e.text] == [2]
    assert {e.page_number for e in pptx.elements} == {1, 2}


def test_detection_trusts_content_over_a_wrong_extension(read_fixture: Any) -> None:
    doc = parse_document(read_fixture("report.docx"), "misnamed.txt", max_bytes=MAX)

    assert doc.parser.endswith(":partition_docx")


@pytest.mark.skipif(not MSG_PATH.exists(), reason="needs the shared Outlook .msg sample")
def test_outlook_msg_parses(socket_events: list[str]) -> None:
    doc = parse_document(MSG_PATH.read_bytes(), MSG_PATH.name, max_bytes=MAX)

    assert doc.parser.endswith(":partition_msg")
    assert "test email" in doc.text
    assert socket_events == []


@pytest.mark.parametrize(
    ("name", "error", "code"),
    [
        ("empty.txt", EmptyDocumentError, "empty_document"),
        ("blank.txt", EmptyDocumentError, "empty_document"),
        ("image-only.pdf", EmptyDocumentError, "empty_document"),
        ("corrupt.docx", CorruptDocumentError, "corrupt_document"),
        ("corrupt.pdf", CorruptDocumentError, "corrupt_document"),
        ("encrypted.pdf", EncryptedDocumentError, "encrypted_document"),
        ("encrypted.docx", EncryptedDocumentError, "encrypted_document"),
        ("sound.wav", UnsupportedFormatError, "unsupported_format"),
        ("program.exe", UnsupportedFormatError, "unsupported_format"),
        ("picture.png", UnsupportedFormatError, "unsupported_format"),
        ("binary.txt", EncodingError, "undecodable_text"),
    ],
)
def test_bad_input_raises_a_typed_error(read_fixture: Any, name: str, error: type[IngestError], code: str) -> None:
    with pytest.raises(error) as caught:
        parse_document(read_fixture(name), name, max_bytes=MAX)

    assert caught.value.code == code


def test_too_large_is_refused_before_parsing(read_fixture: Any) -> None:
    data = read_fixture("report.docx")

    with pytest.raises(DocumentTooLargeError) as caught:
        parse_document(data, "report.docx", max_bytes=len(data) - 1)

    assert caught.value.code == "document_too_large"


def test_zip_bomb_is_refused_by_its_unpacked_size(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"0" * 5_000_000)
    data = buffer.getvalue()

    with pytest.raises(DocumentTooLargeError):
        parse_document(data, "bomb.docx", max_bytes=100_000)
    assert len(data) < 100_000


@pytest.mark.parametrize("name", ["checklist.txt", "checklist", "checklist.log"])
def test_a_text_file_with_commas_is_read_as_text(name: str) -> None:
    """unstructured guesses CSV from lines holding as many commas each; a file named as text stays text: its
    commas kept, and a later line with another count is no 'corrupt' table."""
    lines = [f"Step {i}, check item {i}." for i in range(1, 11)] + ["Finally, sign, date, and return it, please."]
    parsed = parse_document(("\n".join(lines) + "\n").encode(), name, max_bytes=MAX)
    assert (parsed.mime_type, parsed.warnings) == ("text/plain", ())
    assert "Step 1, check item 1." in parsed.text and "Finally, sign, date, and return it, please." in parsed.text


def test_a_table_with_ragged_rows_is_kept_as_text_with_a_warning() -> None:
    ragged = "Lorem, ipsum\ndolor sit\nadipiscing, elit\nsed, do, eiusmod\n"
    parsed = parse_document(ragged.encode(), "notes.csv", max_bytes=MAX)
    assert [w.code for w in parsed.warnings] == ["read_as_text"]
    assert parsed.mime_type == "text/plain" and "partition_text" in parsed.parser
    assert "adipiscing, elit" in parsed.text
    table = parse_document(b"a,b,c\n1,2,3\n4,5,6\n", "table.csv", max_bytes=MAX)
    assert (table.mime_type, table.warnings) == ("text/csv", ())


def _declaring(data: bytes, member: str, size: int) -> bytes:
    """The zip with `member`'s unpacked size declared as `size` in its local header and the directory."""
    import struct

    out = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    struct.pack_into("<I", out, info.header_offset + 22, size)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", out, at + 28)[0]
        if bytes(out[at + 46:at + 46 + name_len]) == member.encode():
            struct.pack_into("<I", out, at + 24, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


@pytest.mark.parametrize("name", ["bomb.docx", "bomb.odt"])
def test_a_zip_bomb_is_measured_not_taken_at_its_word(read_fixture: Any, name: str) -> None:
    """The directory's sizes are the sender's: a member declaring 1 KB that inflates to 5 MB is refused (pandoc,
    which reads ODT and EPUB, inflates the whole stream). So is a zip behind leading bytes, which zipfile and
    detection still open as the document."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("content.xml", b"<p>lorem ipsum</p>" * 300_000)
    lying = _declaring(buffer.getvalue(), "content.xml", 1_000)
    assert sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(lying)).infolist()) == 1_000
    with pytest.raises(DocumentTooLargeError):
        parse_document(lying, name, max_bytes=100_000)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"0" * 5_000_000)
    with pytest.raises(DocumentTooLargeError):
        parse_document(b"\x00" * 16 + bomb.getvalue(), name, max_bytes=100_000)
    report = read_fixture("report.docx")  # an honest document within the budget still parses
    assert "Vendor contracts" in parse_document(report, "report.docx", max_bytes=MAX).text


def test_a_pdf_carrying_a_zip_is_not_taken_for_one(read_fixture: Any) -> None:
    """zipfile finds a zip by its directory at the end: a PDF with a zip attached ends with one. The PDF is read
    as a PDF, and what it carries (never unpacked) is not charged to the unpacked budget, nor refused as a bomb."""
    from pypdf import PdfWriter

    carried = io.BytesIO()
    with zipfile.ZipFile(carried, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.csv", b"0,0,0,0\n" * 500_000)  # 4 MB unpacked
    writer = PdfWriter(clone_from=io.BytesIO(read_fixture("report.pdf")))
    writer.add_attachment("export.zip", carried.getvalue())
    pdf = io.BytesIO()
    writer.write(pdf)
    assert zipfile.is_zipfile(io.BytesIO(pdf.getvalue()))
    parsed = parse_document(pdf.getvalue(), "report.pdf", max_bytes=100_000)
    assert parsed.mime_type == "application/pdf" and "Revenue grew in every region" in parsed.text


def test_pandoc_include_directives_cannot_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    rst = f"Title\n=====\n\nHello.\n\n.. include:: {secret}\n".encode()
    org = f'* Title\nHello.\n#+INCLUDE: "{secret}"\n'.encode()

    assert "TOP-SECRET" not in parse_document(rst, "a.rst", max_bytes=MAX).text
    assert "TOP-SECRET" not in parse_document(org, "a.org", max_bytes=MAX).text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("naïve café".encode(), "naïve café"),
        ("naïve café".encode("utf-8-sig"), "naïve café"),
        ("naïve café".encode("utf-16"), "naïve café"),
        ("naïve café".encode("utf-16-le"), "naïve café"),
        ("naïve café".encode("utf-16-be"), "naïve café"),
        ("naïve café".encode("utf-32"), "naïve café"),
        ("Café crème, déjà vu. Ça coûte 5€.".encode("cp1252"), "Café crème, déjà vu. Ça coûte 5€."),
        ("Привет, как дела? Москва столица России.".encode("cp1251"), "Привет, как дела? Москва столица России."),
    ],
)
def test_decode_text(data: bytes, expected: str) -> None:
    assert decode_text(data) == expected


def test_decode_text_refuses_binary() -> None:
    with pytest.raises(EncodingError):
        decode_text(bytes(range(256)) * 8)


def _cut_points(size: int) -> list[int]:
    """Where a download or copy might have stopped: inside the signature, early, midway, near the end."""
    return sorted({1, 2, 3, 4, 10, 100, size // 4, size // 2, 3 * size // 4, size - 22, size - 1})


@pytest.mark.parametrize("name", ["report.docx", "deck.pptx", "budget.xlsx", "memo.odt"])
def test_truncated_zip_container_is_corrupt_not_unsupported(read_fixture: Any, name: str) -> None:
    data = read_fixture(name)

    for cut in _cut_points(len(data)):
        with pytest.raises(CorruptDocumentError):
            parse_document(data[:cut], name, max_bytes=MAX)


def _rezip(data: bytes, *, drop: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            if info.filename != drop:
                target.writestr(info, source.read(info))
    return buffer.getvalue()


def test_ooxml_named_zip_without_its_parts_is_corrupt_but_a_plain_zip_is_unsupported(read_fixture: Any) -> None:
    empty_zip = io.BytesIO()
    zipfile.ZipFile(empty_zip, "w").close()
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("notes.txt", "Vendor contracts expire in March.")
    no_content_types = _rezip(read_fixture("report.docx"), drop="[Content_Types].xml")

    with pytest.raises(CorruptDocumentError):
        parse_document(no_content_types, "report.docx", max_bytes=MAX)
    with pytest.raises(CorruptDocumentError):
        parse_document(empty_zip.getvalue(), "deck.pptx", max_bytes=MAX)
    with pytest.raises(CorruptDocumentError):
        parse_document(plain_zip.getvalue(), "budget.xlsx", max_bytes=MAX)
    with pytest.raises(UnsupportedFormatError):
        parse_document(plain_zip.getvalue(), "archive.zip", max_bytes=MAX)


@pytest.mark.parametrize("name", ["legacy.xls", "mail.msg", "legacy.doc", "deck.ppt"])
def test_truncated_ole_container_is_corrupt(read_fixture: Any, name: str) -> None:
    # msoffcrypto writes an encrypted .docx as an OLE (compound file) container: a generated OLE file.
    # Cut before its encryption header, so what is left is a broken container and nothing more.
    data = read_fixture("encrypted.docx")

    for cut in [1, 4, 7, 100, 512, 1024, 2048, 4096]:
        with pytest.raises(CorruptDocumentError):
            parse_document(data[:cut], name, max_bytes=MAX)


def test_truncated_pdf_is_corrupt_when_nothing_can_be_read(read_fixture: Any) -> None:
    data = read_fixture("report.pdf")

    for cut in [3, 4, 20, len(data) // 3]:
        with pytest.raises(CorruptDocumentError):
            parse_document(data[:cut], "report.pdf", max_bytes=MAX)


def test_damaged_pdf_that_still_reads_is_parsed_with_a_warning(read_fixture: Any) -> None:
    data = read_fixture("report.pdf")
    cut = data[: data.rindex(b"startxref")]  # no cross-reference pointer, no %%EOF: qpdf rebuilds the table

    doc = parse_document(cut, "report.pdf", max_bytes=MAX)

    assert "Revenue grew in every region" in doc.text
    assert [(w.code, w.attachment) for w in doc.warnings] == [("corrupt_document", None)]
    assert parse_document(data, "report.pdf", max_bytes=MAX).warnings == ()


def test_garbage_named_eml_is_corrupt(read_fixture: Any) -> None:
    noise = read_fixture("binary.txt")
    headers_then_noise = b"From: a@example.com\r\nSubject: x\r\n\r\n" + noise

    with pytest.raises(CorruptDocumentError):
        parse_document(noise, "mail.eml", max_bytes=MAX)
    with pytest.raises(CorruptDocumentError):
        parse_document(headers_then_noise, "mail.eml", max_bytes=MAX)


def test_truncated_multipart_email_keeps_its_body_and_warns(read_fixture: Any) -> None:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Contract"
    message.set_content("The vendor contract renewal is due in March.")
    message.add_attachment(read_fixture("report.docx"), maintype="application", subtype="octet-stream",
                           filename="report.docx")
    data = message.as_bytes()
    cut = data[: data.rindex(b"--")]  # the closing boundary is gone

    doc = parse_document(cut, "mail.eml", max_bytes=MAX)

    assert "vendor contract renewal" in doc.text
    assert ("corrupt_document", None) in [(w.code, w.attachment) for w in doc.warnings]


def test_html_nested_past_the_parsers_depth_is_refused_not_stored_cut_short() -> None:
    """libxml2 stops at 256 levels and drops everything below and after without an error; such a file is
    refused (document_too_complex) instead of being stored as if whole. 250 levels still read in full."""
    from ingest.errors import DocumentTooComplexError

    def nested(n: int) -> bytes:
        return ("<html><body><p>Top</p>" + "<div>" * n + "<p>deep text</p>" + "</div>" * n
                + "<p>Bottom</p></body></html>").encode()

    doc = parse_document(nested(250), "ok.html", max_bytes=MAX)
    assert "deep text" in doc.text and "Bottom" in doc.text
    with pytest.raises(DocumentTooComplexError):
        parse_document(nested(300), "deep.html", max_bytes=MAX)


def test_xhtml_with_an_xml_declaration_is_read() -> None:
    """lxml refuses a decoded str that declares an encoding; the markup depth check must not fail on it."""
    page = ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            "<body><h1>Quarterly filing</h1><p>Revenue grew in every region this quarter.</p></body></html>")
    doc = parse_document(page.encode(), "filing.html", max_bytes=MAX)
    assert "Revenue grew in every region" in doc.text


def test_an_unclosed_xml_declaration_does_not_skip_the_depth_check() -> None:
    deep = ('<?xml version="1.0" encoding="utf-8">' + "<p>HEAD</p>" + "<div>" * 400 + "deep" + "</div>" * 400
            + "<p>TAIL</p>")
    with pytest.raises(DocumentTooComplexError):
        parse_document(deep.encode(), "x.html", max_bytes=MAX)
