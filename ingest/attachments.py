"""The files attached to an email message (.eml via the standard library, .msg via python-oxmsg).

Extraction only: each attachment is then parsed by `ingest.parse` as a file of its own, with the same byte
limit, zip-bomb, encryption and type checks, and within `AttachmentLimits`. unstructured's own
`process_attachments` is not used: it hands attachments to `partition()` (strategy "auto", which may pick
hi_res OCR for a PDF and so reach for a model hub), applies no size limit, recurses into attached messages
without a depth bound, and lets one unexpected attachment error fail the whole message.
"""

from __future__ import annotations

import copy
import email
import email.policy
import io
import mimetypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Any, cast

_MAX_NAME = 200
# Detached signatures of signed messages: no content to read.
_SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)


@dataclass(frozen=True)
class AttachmentLimits:
    """Bounds on attachment work for one file (shared by all of its nested messages)."""

    max_count: int = 20  # attachments parsed per file, nested ones included; the rest are skipped
    max_depth: int = 2  # file -> its attachments (1) -> attachments of an attached message (2); deeper: skipped


@dataclass(frozen=True)
class Attachment:
    """One attached file: a safe file name (no path) and its bytes, or None when they cannot be had."""

    name: str
    data: bytes | None
    reason: str = ""  # why `data` is None


def email_attachments(message: EmailMessage | bytes) -> Iterator[Attachment]:
    """The attachments of an RFC 5322 message, in order, each decoded only when reached.

    Inline parts of the body (e.g. the images of an HTML body) are not attachments."""
    if isinstance(message, bytes):
        message = cast(EmailMessage, email.message_from_bytes(message, policy=email.policy.default))
    for n, part in enumerate(message.iter_attachments(), 1):
        yield _mime_attachment(part, n)


def msg_attachments(raw: bytes) -> Iterator[Attachment]:
    """The attachments of an Outlook .msg file, in order, each read only when reached."""
    from oxmsg import Message as OutlookMessage

    message = OutlookMessage.load(io.BytesIO(raw))
    for n, item in enumerate(message.attachments, 1):
        yield _outlook_attachment(item, n)


def _mime_attachment(part: Message, n: int) -> Attachment:
    content_type = part.get_content_type()
    name = safe_name(_filename(part), fallback=f"attachment-{n}{_extension(content_type)}")
    if content_type in _SIGNATURE_TYPES:
        return Attachment(name, None, "a detached message signature, no content")
    try:
        if content_type.startswith("multipart/"):
            # e.g. a signed forwarded message: its raw serialisation, re-parsed as a message of its own.
            # Without its Content-Disposition, so the copy's body is found again.
            detached = copy.deepcopy(part)
            del detached["Content-Disposition"]
            return Attachment(name, detached.as_bytes())
        if content_type == "message/rfc822":
            inner = part.get_payload(0)
            return Attachment(name, inner.as_bytes() if isinstance(inner, Message) else None, "no message inside")
        if part.get_content_maintype() == "text":
            try:
                # The declared charset decodes it; re-encoded as UTF-8 for the parser.
                return Attachment(name, cast(EmailMessage, part).get_content().encode("utf-8"))
            except (LookupError, UnicodeError, KeyError):
                pass  # unknown or wrong charset: the raw bytes go to charset detection instead
        payload = part.get_payload(decode=True)
    except Exception as exc:  # a damaged MIME part: reported, never fatal to the message
        return Attachment(name, None, f"the attachment could not be decoded ({type(exc).__name__})")
    if not isinstance(payload, bytes):
        return Attachment(name, None, "the attachment has no content")
    return Attachment(name, payload)


def _outlook_attachment(item: Any, n: int) -> Attachment:
    try:
        mime_type = item.mime_type or "application/octet-stream"
        name = safe_name(item.file_name, fallback=f"attachment-{n}{_extension(mime_type)}")
    except Exception:
        name = f"attachment-{n}"
    try:
        if not item.attached_by_value:
            return Attachment(name, None, "attached by reference or as an embedded object, not as file bytes")
        data = item.file_bytes
    except Exception as exc:
        return Attachment(name, None, f"the attachment could not be read ({type(exc).__name__})")
    if data is None:
        return Attachment(name, None, "the attachment has no content")
    return Attachment(name, bytes(data))


def _filename(part: Message) -> str | None:
    """The part's file name, or None when its header cannot be decoded (one malformed Content-Disposition must
    not end the message's attachments)."""
    try:
        return part.get_filename()
    except Exception:  # the email package raises several types on malformed parameters
        return None


def safe_name(raw: str | None, *, fallback: str) -> str:
    """A file name without directories or control characters (attachment names are attacker-controlled)."""
    name = os.path.basename((raw or "").replace("\\", "/"))
    name = "".join(ch for ch in name if ord(ch) >= 32 and ch != "\x7f").strip()
    if not name or name in (".", ".."):
        return fallback
    if len(name) <= _MAX_NAME:
        return name
    stem, ext = os.path.splitext(name)
    ext = ext if len(ext) <= 16 else ""
    return stem[: _MAX_NAME - len(ext)] + ext


def _extension(content_type: str) -> str:
    return mimetypes.guess_extension(content_type, strict=False) or ""
