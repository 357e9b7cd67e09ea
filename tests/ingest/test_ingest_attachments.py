"""Email attachments: parsed as part of the message, named on every element and chunk, skipped with a
warning (never failing the message) when they cannot be read, and bounded in count, depth and size."""

from __future__ import annotations

import email.message
import io
import itertools
import zipfile
from pathlib import Path
from typing import Any

import pytest

from classifiers.types import Label
from ingest.attachments import AttachmentLimits, safe_name
from ingest.parse import parse_document
from tests.ingest.test_ingest_pipeline import make_pipeline

MAX = 10 * 1024 * 1024
BODY = "Hi Bob, the signed contract and the budget are attached. Alice"
MSG_WITH_ATTACHMENT = Path("/work/shared/data/documents/fake-email-attachment.msg")


def message(*attachments: tuple[str, bytes, str], body: str = BODY) -> email.message.EmailMessage:
    """A message with a plain-text body and (filename, bytes, content type) attachments."""
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "bob@example.com", "Contract"
    msg.set_content(body)
    for name, data, content_type in attachments:
        maintype, subtype = content_type.split("/")
        if isinstance(data, email.message.EmailMessage):
            msg.add_attachment(data, filename=name)
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def codes(doc: Any) -> dict[str | None, str]:
    return {w.attachment: w.code for w in doc.warnings}


def test_supported_attachments_are_parsed_and_named(read_fixture: Any, socket_events: list[str]) -> None:
    data = message(
        ("report.docx", read_fixture("report.docx"), "application/octet-stream"),
        ("report.pdf", read_fixture("report.pdf"), "application/pdf"),
        ("notes.txt", read_fixture("latin1.txt"), "application/octet-stream"),
    ).as_bytes()

    doc = parse_document(data, "mail.eml", max_bytes=MAX)

    assert socket_events == []
    assert doc.warnings == ()
    assert doc.parser.endswith(":partition_email")
    by_attachment = {e.attachment for e in doc.elements}
    assert by_attachment == {None, "report.docx", "report.pdf", "notes.txt"}
    body = [e for e in doc.elements if e.attachment is None]
    assert "signed contract" in " ".join(e.text for e in body)
    pdf = [e for e in doc.elements if e.attachment == "report.pdf"]
    assert [e.page_number for e in pdf if "hiring" in e.text] == [2]  # pages within the attachment
    assert any("Vendor contracts expire in March" in e.text for e in doc.elements if e.attachment == "report.docx")
    assert any("Café crème" in e.text for e in doc.elements if e.attachment == "notes.txt")
    for element in doc.elements:
        assert doc.text[element.start : element.end] == element.text


def test_unreadable_attachments_are_skipped_with_their_code(read_fixture: Any) -> None:
    data = message(
        ("picture.png", read_fixture("picture.png"), "image/png"),
        ("locked.docx", read_fixture("encrypted.docx"), "application/octet-stream"),
        ("broken.docx", read_fixture("report.docx")[:2000], "application/octet-stream"),
        ("locked.pdf", read_fixture("encrypted.pdf"), "application/pdf"),
        ("empty.txt", b"", "text/plain"),
        ("report.docx", read_fixture("report.docx"), "application/octet-stream"),
    ).as_bytes()

    doc = parse_document(data, "mail.eml", max_bytes=MAX)

    assert codes(doc) == {
        "picture.png": "unsupported_format",
        "locked.docx": "encrypted_document",
        "broken.docx": "corrupt_document",
        "locked.pdf": "encrypted_document",
        "empty.txt": "empty_document",
    }
    assert {e.attachment for e in doc.elements} == {None, "report.docx"}


def test_an_email_whose_only_text_is_in_an_attachment_is_not_empty(read_fixture: Any) -> None:
    data = message(("report.docx", read_fixture("report.docx"), "application/octet-stream"), body=" ").as_bytes()

    doc = parse_document(data, "mail.eml", max_bytes=MAX)

    assert doc.elements and {e.attachment for e in doc.elements} == {"report.docx"}


def test_attached_messages_are_parsed_to_a_fixed_depth(read_fixture: Any) -> None:
    level3 = message(("deep.docx", read_fixture("report.docx"), "application/octet-stream"), body="Third level.")
    level2 = message(("inner.eml", level3, "message/rfc822"), body="Second level message text.")
    level1 = message(("fwd.eml", level2, "message/rfc822"), body="First level message text.")

    doc = parse_document(level1.as_bytes(), "mail.eml", max_bytes=MAX)

    assert {e.attachment for e in doc.elements} == {None, "fwd.eml", "fwd.eml/inner.eml"}
    assert codes(doc) == {"fwd.eml/inner.eml/deep.docx": "attachment_limit"}
    deeper = parse_document(
        level1.as_bytes(), "mail.eml", max_bytes=MAX, attachment_limits=AttachmentLimits(max_depth=3)
    )
    assert "fwd.eml/inner.eml/deep.docx" in {e.attachment for e in deeper.elements}


def test_attachment_count_is_capped(read_fixture: Any) -> None:
    data = message(*[(f"n{i}.txt", f"Attachment number {i}.".encode(), "text/plain") for i in range(5)]).as_bytes()

    doc = parse_document(data, "mail.eml", max_bytes=MAX, attachment_limits=AttachmentLimits(max_count=3))

    assert {e.attachment for e in doc.elements} == {None, "n0.txt", "n1.txt", "n2.txt"}
    assert codes(doc) == {"n3.txt": "attachment_limit"}  # said once, not for every attachment left out


def test_zip_bomb_attachment_is_refused_and_the_message_kept() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"0" * 5_000_000)
    data = message(("bomb.docx", buffer.getvalue(), "application/octet-stream")).as_bytes()

    doc = parse_document(data, "mail.eml", max_bytes=100_000)

    assert len(data) < 100_000
    assert codes(doc) == {"bomb.docx": "document_too_large"}
    assert "signed contract" in doc.text


def test_chunks_say_which_attachment_they_come_from(read_fixture: Any) -> None:
    data = message(
        ("report.docx", read_fixture("report.docx"), "application/octet-stream"),
        ("deck.pptx", read_fixture("deck.pptx"), "application/octet-stream"),
        ("picture.png", read_fixture("picture.png"), "image/png"),
    ).as_bytes()

    doc = make_pipeline(max_tokens=500).process(data, "mail.eml", floor=Label.INTERNAL)
    parsed = parse_document(data, "mail.eml", max_bytes=MAX)

    assert [k for k, _ in itertools.groupby(c.draft.attachment for c in doc.chunks)] == [
        None,
        "report.docx",
        "deck.pptx",
    ]
    for chunk in doc.chunks:  # max_tokens holds the whole message, yet no chunk mixes two parts
        inside = [e for e in parsed.elements if e.start < chunk.draft.end and e.end > chunk.draft.start]
        assert {e.attachment for e in inside} == {chunk.draft.attachment}
    assert [(w.code, w.attachment) for w in doc.warnings] == [("unsupported_format", "picture.png")]


def test_attachments_with_one_name_are_chunked_apart() -> None:
    """Mail clients name many attachments alike (`ATT00001.txt`, `image001.png`): each keeps its own chunks, the
    later ones shown as `name (2).ext`, so one's personal data never labels the other's text."""
    salary = b"The salary of Jonas Weber is 82,000 EUR per year. This note is confidential."
    lunch = b"The lunch menu for Friday is pasta and salad. Everyone is welcome in the canteen."
    taken = b"A third note, attached under the name the second one is shown with."
    data = message(("notes.txt", salary, "text/plain"), ("notes.txt", lunch, "text/plain"),
                   ("notes (2).txt", taken, "text/plain")).as_bytes()

    doc = make_pipeline(max_tokens=500).process(data, "mail.eml", floor=Label.INTERNAL)

    by_attachment = {c.draft.attachment: c for c in doc.chunks}
    assert list(by_attachment) == [None, "notes.txt", "notes (2).txt", "notes (2) (2).txt"]
    assert "Jonas Weber" in by_attachment["notes.txt"].draft.text
    assert "Jonas Weber" not in by_attachment["notes (2).txt"].draft.text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\a\\report.docx", "report.docx"),
        ("bad\x00name\x1f.txt", "badname.txt"),
        ("..", "fallback.bin"),
        (None, "fallback.bin"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_attachment_names_are_made_safe(raw: str | None, expected: str) -> None:
    assert safe_name(raw, fallback="fallback.bin") == expected


@pytest.mark.skipif(not MSG_WITH_ATTACHMENT.exists(), reason="needs the shared Outlook .msg sample")
def test_outlook_msg_attachments_are_parsed(socket_events: list[str]) -> None:
    doc = parse_document(MSG_WITH_ATTACHMENT.read_bytes(), MSG_WITH_ATTACHMENT.name, max_bytes=MAX)

    assert socket_events == []
    assert [e.text for e in doc.elements if e.attachment == "fake-attachment.txt"] == ["Hey this is a fake attachment!"]


def test_an_attachment_whose_name_cannot_be_decoded_is_named_by_its_position(monkeypatch: Any) -> None:
    """A malformed Content-Disposition (the email package raises decoding it) names that attachment
    `attachment-N.ext`; it no longer ends the message's attachments."""
    data = message(("bad.txt", b"The first note is about the parking rules.", "text/plain"),
                   ("good.txt", b"The second note is about the canteen hours.", "text/plain")).as_bytes()
    real = email.message.Message.get_filename

    def get_filename(self: Any, failobj: Any = None) -> Any:
        name = real(self, failobj)
        if name == "bad.txt":
            raise ValueError("malformed header")
        return name

    monkeypatch.setattr(email.message.Message, "get_filename", get_filename)
    parsed = parse_document(data, "mail.eml", max_bytes=MAX)
    assert [e.attachment for e in parsed.elements if e.attachment] == ["attachment-1.txt", "good.txt"]
    assert parsed.warnings == ()
