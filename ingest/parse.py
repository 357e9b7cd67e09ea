"""Bytes -> ParsedDocument: detect the format, refuse what we cannot read safely, partition with unstructured.

Detection trusts content first (PDF/OLE/zip signatures, libmagic via unstructured's `detect_filetype`) and
the filename extension second. A file whose extension promises a container (zip: docx/pptx/xlsx/odt/epub;
OLE: doc/ppt/xls/msg; PDF) but whose container is truncated, broken or holds no such document is
`corrupt_document`, never `unsupported_format`. Encrypted PDFs (pikepdf) and encrypted Office files
(msoffcrypto: OLE/CDF containers with an EncryptedPackage) are refused before partitioning. A PDF that
qpdf had to reconstruct (typically truncated) is corrupt when no text comes out of it, else parsed with a
warning. Text formats are decoded first (ingest.decode), so an undecodable file is an EncodingError. pandoc
(odt, epub, rst, org, rtf) runs under a heap limit (ingest.pandoc): a file that needs more is document_too_complex.

Emails (.eml, .msg): unstructured partitions the body; then each attachment (ingest.attachments) is parsed
as a file of its own, through the same checks and byte limit, sharing the file's zip-expansion budget,
within AttachmentLimits (count, nesting depth). An attachment that cannot be parsed becomes a ParseWarning
with its error code and never fails the message.

Element texts are stripped and joined with "\n\n" into `ParsedDocument.text`; every element keeps its
[start, end) offsets into that text, its unstructured category, its page number and, when it comes from an
attachment, the attachment's name (a path for nested ones: "forwarded.eml/report.pdf").
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import importlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

from ingest import legacy_office, pandoc
from ingest.attachments import AttachmentLimits, email_attachments, msg_attachments
from ingest.decode import BOM_PREFIXES, decode_text, noise_ratio
from ingest.errors import (
    CorruptDocumentError,
    DocumentTooComplexError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    IngestError,
)
from ingest.formats import (
    CONTAINER_BY_EXTENSION,
    ROUTES,
    ZIP_EXPANSION_LIMIT,
    ZIP_SIGNATURES,
    Route,
    check_markup_depth,
    check_pdf,
    detect_type,
)
from ingest.offline import ensure_parser_offline, no_network
from ingest.types import ParsedDocument, ParsedElement, ParseWarning
from ingest.zip_bombs import check_zip

__all__ = ["SEPARATOR", "AttachmentLimits", "decode_text", "detect_type", "parse_document", "parser_version"]

logger = logging.getLogger(__name__)

SEPARATOR = "\n\n"
_MAX_BODY_NOISE = 0.1  # an email body with more control/U+FFFD characters than this is binary, not a message
_EMAIL_MODULES = frozenset({"email", "msg"})
_TABLE_MODULES = frozenset({"csv", "tsv"})
_ZIP_MODULES = frozenset({"docx", "pptx", "xlsx", "odt", "epub"})  # partitioners that read a zip container


def _plain_text_route() -> tuple[Any, Route]:
    from unstructured.file_utils.model import FileType

    return FileType.TXT, ROUTES["TXT"]


@dataclass
class _Budget:
    """What is left for one file and everything attached to it."""

    attachments: int
    unpacked_bytes: int
    # When LibreOffice conversions must be done (time.monotonic()), shared by the file and its attachments: an
    # email with several .doc attachments gets one conversion budget, not one each (ingest.legacy_office).
    convert_deadline: float


@dataclass
class _Parsed:
    file_type: Any
    route: Route
    elements: list[tuple[str | None, Any]]  # (attachment path or None, unstructured element)
    warnings: list[ParseWarning] = field(default_factory=list)


def parser_version(function: str) -> str:
    """The provenance string of a partition function, e.g. 'unstructured==0.27.32:partition_docx'."""
    from unstructured.__version__ import __version__

    return f"unstructured=={__version__}:{function}"


def parse_document(
    data: bytes, filename: str, *, max_bytes: int, attachment_limits: AttachmentLimits | None = None,
    convert_timeout_s: float = legacy_office.DEFAULT_TIMEOUT_S, pandoc_max_heap_mb: int = pandoc.DEFAULT_MAX_HEAP_MB,
) -> ParsedDocument:
    """Extract structured text from one file's bytes. Raises a typed IngestError for bad input.
    `convert_timeout_s`: the time all its LibreOffice conversions share (a .doc or .ppt, attached ones too).
    `pandoc_max_heap_mb`: the heap each pandoc run may use (odt, epub, rst, org, rtf; attached ones too)."""
    limits = attachment_limits or AttachmentLimits()
    budget = _Budget(attachments=limits.max_count, unpacked_bytes=ZIP_EXPANSION_LIMIT * max_bytes,
                     convert_deadline=time.monotonic() + convert_timeout_s)
    if len(data) > max_bytes:  # before anything is loaded
        raise DocumentTooLargeError(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")
    ensure_parser_offline()
    with no_network(), pandoc.heap_limited(pandoc_max_heap_mb):
        parsed = _parse(data, filename, max_bytes=max_bytes, limits=limits, budget=budget, depth=0, path=None)
    parser = parser_version(parsed.route.function)
    if parsed.route.convert_from:  # e.g. libreoffice==7.4.7.2:doc->docx+unstructured==0.27.32:partition_docx
        parser = f"{legacy_office.version()}:{parsed.route.convert_from}->{parsed.route.module}+{parser}"
    return _assemble(
        parsed.elements,
        mime_type=parsed.file_type.mime_type,
        parser=parser,
        warnings=tuple(parsed.warnings),
    )


def _parse(
    data: bytes,
    filename: str,
    *,
    max_bytes: int,
    limits: AttachmentLimits,
    budget: _Budget,
    depth: int,
    path: str | None,
) -> _Parsed:
    """One file or attachment -> its elements (attachments included) and warnings; raises IngestError."""
    if len(data) > max_bytes:
        raise DocumentTooLargeError(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise EmptyDocumentError("the file is empty")
    ext = os.path.splitext(filename)[1].lower()
    if any(len(data) < len(sig) and sig.startswith(data) for sig in CONTAINER_BY_EXTENSION.get(ext, ())):
        raise CorruptDocumentError(f"the file is truncated: {len(data)} bytes, less than a {ext} signature")
    if data.startswith(ZIP_SIGNATURES):
        budget.unpacked_bytes -= check_zip(data, max_unpacked=budget.unpacked_bytes)
    file_type, text = detect_type(data, filename)
    route = ROUTES[file_type.name]
    if route.module in _ZIP_MODULES and not route.convert_from and not data.startswith(ZIP_SIGNATURES):
        # Read as a zip container although bytes come before it (zipfile and detection find a zip by its
        # directory at the end): checked as one. A PDF or message that merely carries a zip is not read as one.
        budget.unpacked_bytes -= check_zip(data, max_unpacked=budget.unpacked_bytes)
    if route.convert_from:  # read as the .docx / .pptx LibreOffice makes of it, within the same unpacked budget
        data = legacy_office.convert(data, source_ext=route.convert_from, target_ext=route.module,
                                     timeout_s=budget.convert_deadline - time.monotonic(), max_output_bytes=max_bytes)
        budget.unpacked_bytes -= check_zip(data, max_unpacked=budget.unpacked_bytes)
    warnings: list[ParseWarning] = []
    damaged = route.module == "pdf" and check_pdf(data)
    if route.module == "html" and text is not None:
        check_markup_depth(text)
    source = _email_bytes(route, data, text)
    message = _check_email(source, path, warnings) if route.module == "email" else None
    try:
        partitioned = _partition(route, data, text, filename, source)
    except CorruptDocumentError:
        if route.module not in _TABLE_MODULES or text is None:
            raise
        # A delimited file whose rows have different numbers of fields (pandas refuses it): its text is kept,
        # read as plain text, and the result says so.
        warnings.append(_warning("read_as_text", f"the {route.module} could not be read as a table (rows of "
                                 "different lengths, or broken quoting): read as plain text", path))
        file_type, route = _plain_text_route()
        partitioned = _partition(route, data, text, filename, source)
    elements: list[tuple[str | None, Any]] = [(path, e) for e in partitioned]
    if route.module in _EMAIL_MODULES:
        _refuse_binary_body([e for _, e in elements])
        elements += _attachments(
            route.module,
            source,
            message,
            max_bytes=max_bytes,
            limits=limits,
            budget=budget,
            depth=depth,
            path=path,
            warnings=warnings,
        )
    if not any(_text(e) for _, e in elements):
        if damaged:
            raise CorruptDocumentError("the PDF is damaged (truncated?) and no text could be read from it")
        raise EmptyDocumentError("no extractable text")
    if damaged:
        warnings.insert(
            0,
            _warning("corrupt_document", "the PDF is damaged (truncated?): read as far as qpdf could rebuild it", path),
        )
    return _Parsed(file_type, route, elements, warnings)


def _attachments(
    kind: str,
    source: bytes,
    message: EmailMessage | None,
    *,
    max_bytes: int,
    limits: AttachmentLimits,
    budget: _Budget,
    depth: int,
    path: str | None,
    warnings: list[ParseWarning],
) -> list[tuple[str | None, Any]]:
    """Elements of every attachment that parses; a warning for each one that does not."""
    elements: list[tuple[str | None, Any]] = []
    found = email_attachments(message) if message is not None else msg_attachments(source)
    names: set[str] = set()  # a chunk never spans two attachments: each one's path is unique in its message
    while True:
        try:
            attachment = next(found, None)
        except Exception as exc:  # a damaged attachment table: the body was read, the rest is lost
            warnings.append(
                _warning("corrupt_document", f"the attachments could not be read ({type(exc).__name__})", path)
            )
            break
        if attachment is None:
            break
        shown = _unique_name(attachment.name, names)
        where = f"{path}/{shown}" if path else shown
        if budget.attachments <= 0:  # said once per message; the remaining ones are not even decoded
            warnings.append(
                _warning(
                    "attachment_limit",
                    f"over the limit of {limits.max_count} attachments per file: this one and any after it not parsed",
                    where,
                )
            )
            break
        budget.attachments -= 1
        if depth + 1 > limits.max_depth:
            warnings.append(
                _warning("attachment_limit", f"nested more than {limits.max_depth} levels deep: not parsed", where)
            )
        elif attachment.data is None:
            warnings.append(_warning("unsupported_format", attachment.reason, where))
        else:
            try:
                sub = _parse(
                    attachment.data,
                    attachment.name,
                    max_bytes=max_bytes,
                    limits=limits,
                    budget=budget,
                    depth=depth + 1,
                    path=where,
                )
            except IngestError as exc:
                warnings.append(_warning(exc.code, exc.message, where))
                continue
            except Exception as exc:  # one attachment must never fail the message
                logger.warning("attachment parse failed: error=%s", type(exc).__name__)
                warnings.append(
                    _warning("corrupt_document", f"the attachment could not be read ({type(exc).__name__})", where)
                )
                continue
            elements += sub.elements
            warnings += sub.warnings
    return elements


def _unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `stem (2).ext`, `stem (3).ext` ... when an earlier attachment of the message has it (mail
    clients name many `image001.png` or `ATT00001.txt`): chunks split where the attachment path changes, so two
    attachments must never share one. Added to `taken`."""
    shown, n = name, 1
    stem, ext = os.path.splitext(name)
    while shown in taken:
        n += 1
        shown = f"{stem} ({n}){ext}"
    taken.add(shown)
    return shown


def _warning(code: str, message: str, attachment: str | None) -> ParseWarning:
    logger.info("parse warning: code=%s attachment_level=%d", code, attachment.count("/") + 1 if attachment else 0)
    return ParseWarning(code, message, attachment)


def _check_email(raw: bytes, path: str | None, warnings: list[ParseWarning]) -> EmailMessage:
    """Refuse bytes that are no message at all; warn when MIME boundaries are missing (a truncated message)."""
    message = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
    if not message.keys():
        raise CorruptDocumentError("not an email message: no header fields")
    boundary_defects = (email.errors.CloseBoundaryNotFoundDefect, email.errors.StartBoundaryNotFoundDefect)
    if any(isinstance(d, boundary_defects) for part in message.walk() for d in part.defects):
        warnings.append(
            _warning("corrupt_document", "the message is truncated or damaged (a MIME boundary is missing)", path)
        )
    return message


def _refuse_binary_body(elements: list[Any]) -> None:
    body = "".join(_text(e) for e in elements)
    if body and noise_ratio(body) > _MAX_BODY_NOISE:
        raise CorruptDocumentError("the message body is binary data, not text")


def _email_bytes(route: Route, data: bytes, text: str | None) -> bytes:
    """The bytes the email parser gets: a UTF-16/32 (or BOM-prefixed) .eml re-encoded as UTF-8.

    Plain 8-bit messages keep their bytes, since each MIME part declares its own charset."""
    if route.module == "email" and text is not None and (b"\x00" in data[:4096] or data.startswith(BOM_PREFIXES)):
        return text.encode("utf-8")
    return data


def _partition(route: Route, data: bytes, text: str | None, filename: str, source: bytes) -> list[Any]:
    module = importlib.import_module(f"unstructured.partition.{route.module}")
    function = getattr(module, route.function)
    kwargs: dict[str, Any] = dict(route.kwargs)
    if route.decode and text is not None:
        if route.text_kwarg:
            kwargs["text"] = text
        else:
            kwargs["file"] = io.BytesIO(text.encode("utf-8"))
    else:
        kwargs["file"] = io.BytesIO(source)
    if route.module not in ("text", "html", "xml", "json", "ndjson", "csv", "tsv"):
        kwargs["metadata_filename"] = os.path.basename(filename) or None
    try:
        return list(function(**kwargs))
    except (IngestError, MemoryError, RecursionError, ImportError):
        raise  # not the file being corrupt: exhausted or broken parsers are told apart where parsing runs (workers)
    except Exception as exc:
        if _looks_encrypted(exc):
            raise EncryptedDocumentError("the document is password-protected") from exc
        if pandoc.heap_exhausted(exc):
            limit_mb = pandoc.heap_limit_mb() or 0
            logger.warning("pandoc heap exhausted: limit_mb=%d", limit_mb)  # never its stderr: it quotes the file
            raise DocumentTooComplexError(
                f"converting the document needs more memory than the limit of {limit_mb} MB") from exc
        # Log the exception type only: messages from parsers can quote document content.
        logger.info("partition failed: function=%s error=%s", route.function, type(exc).__name__)
        raise CorruptDocumentError(f"{route.function} could not read the file ({type(exc).__name__})") from exc


def _looks_encrypted(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Password" in name or "Encrypt" in name or "NotAllowed" in name


def _text(raw: Any) -> str:
    # NUL cannot be stored in PostgreSQL text columns and is never meaningful content.
    return str(getattr(raw, "text", "") or "").replace("\x00", "").strip()


def _assemble(
    raw_elements: list[tuple[str | None, Any]], *, mime_type: str, parser: str, warnings: tuple[ParseWarning, ...]
) -> ParsedDocument:
    elements: list[ParsedElement] = []
    parts: list[str] = []
    cursor = 0
    for attachment, raw in raw_elements:
        text = _text(raw)
        if not text:
            continue
        if parts:
            cursor += len(SEPARATOR)
        start = cursor
        cursor += len(text)
        parts.append(text)
        page = getattr(getattr(raw, "metadata", None), "page_number", None)
        elements.append(
            ParsedElement(
                text=text,
                element_type=str(getattr(raw, "category", type(raw).__name__)),
                start=start,
                end=cursor,
                page_number=int(page) if isinstance(page, int) else None,
                attachment=attachment,
            )
        )
    return ParsedDocument(
        elements=tuple(elements), text=SEPARATOR.join(parts), mime_type=mime_type, parser=parser, warnings=warnings
    )
