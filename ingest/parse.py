"""Bytes -> ParsedDocument: detect the format, refuse what we cannot read safely, partition with unstructured.

Detection trusts content first (PDF/OLE/zip signatures, libmagic via unstructured's `detect_filetype`) and
the filename extension second. Encrypted PDFs (pikepdf) and encrypted Office files (msoffcrypto: OLE/CDF
containers with an EncryptedPackage) are refused before partitioning. Text formats are decoded here
(BOM, UTF-8, then charset detection) so an undecodable file is an EncodingError, not a mojibake document.

Element texts are stripped and joined with "\n\n" into `ParsedDocument.text`; every element keeps its
[start, end) offsets into that text, its unstructured category and its page number.
"""

from __future__ import annotations

import codecs
import importlib
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import (
    CorruptDocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncodingError,
    EncryptedDocumentError,
    IngestError,
    UnsupportedFormatError,
)
from ingest.offline import ensure_parser_offline, no_network
from ingest.types import ParsedDocument, ParsedElement

logger = logging.getLogger(__name__)

SEPARATOR = "\n\n"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_EXPANSION_LIMIT = 10  # a zip container may unpack to at most this many times max_bytes
# (BOM, codec) with UTF-32 first: the UTF-32-LE BOM begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_BOM_PREFIXES = tuple(bom for bom, _ in _BOMS)
_MAX_CONTROL_RATIO = 0.02  # decoded "text" with more control characters than this is binary


@dataclass(frozen=True)
class _Route:
    """How one file type is partitioned."""

    function: str  # unstructured.partition.<module>.<function>
    module: str
    decode: bool = False  # decode the bytes here and hand over text (or UTF-8 bytes)
    text_kwarg: bool = False  # the function takes `text=`
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_ROUTES: dict[str, _Route] = {
    "PDF": _Route(
        "partition_pdf",
        "pdf",
        kwargs={"strategy": "fast", "infer_table_structure": False, "extract_images_in_pdf": False},
    ),
    "DOCX": _Route("partition_docx", "docx"),
    "PPTX": _Route("partition_pptx", "pptx"),
    "XLSX": _Route("partition_xlsx", "xlsx"),
    "XLS": _Route("partition_xlsx", "xlsx"),
    "ODT": _Route("partition_odt", "odt"),
    "EPUB": _Route("partition_epub", "epub"),
    "MSG": _Route("partition_msg", "msg", kwargs={"process_attachments": False}),
    # The email parser decodes each MIME part by its own charset, so it gets the raw bytes.
    "EML": _Route("partition_email", "email", kwargs={"process_attachments": False}),
    "HTML": _Route("partition_html", "html", decode=True, text_kwarg=True),
    "MD": _Route("partition_md", "md", decode=True, text_kwarg=True),
    "TXT": _Route("partition_text", "text", decode=True, text_kwarg=True),
    "XML": _Route("partition_xml", "xml", decode=True, text_kwarg=True),
    "JSON": _Route("partition_json", "json", decode=True, text_kwarg=True),
    "NDJSON": _Route("partition_ndjson", "ndjson", decode=True, text_kwarg=True),
    "CSV": _Route("partition_csv", "csv", decode=True, kwargs={"encoding": "utf-8"}),
    "TSV": _Route("partition_tsv", "tsv", decode=True),
    "RTF": _Route("partition_rtf", "rtf", decode=True),
    "RST": _Route("partition_rst", "rst", decode=True),
    "ORG": _Route("partition_org", "org", decode=True),
}
# Legacy binary Office formats need LibreOffice (not installed); images need OCR (never used).
_REFUSED_REASONS = {
    "DOC": "legacy .doc needs LibreOffice",
    "PPT": "legacy .ppt needs LibreOffice",
}


def parser_version(function: str) -> str:
    """The provenance string of a partition function, e.g. 'unstructured==0.27.32:partition_docx'."""
    from unstructured.__version__ import __version__

    return f"unstructured=={__version__}:{function}"


def parse_document(data: bytes, filename: str, *, max_bytes: int) -> ParsedDocument:
    """Extract structured text from one file's bytes. Raises a typed IngestError for bad input."""
    if len(data) > max_bytes:
        raise DocumentTooLargeError(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise EmptyDocumentError("the file is empty")
    if data.startswith(_ZIP_MAGIC):
        _check_zip(data, max_uncompressed=_ZIP_EXPANSION_LIMIT * max_bytes)
    ensure_parser_offline()
    with no_network():
        file_type, text = detect_type(data, filename)
        route = _ROUTES[file_type.name]
        elements = _partition(route, data, text, filename)
    doc = _assemble(elements, mime_type=file_type.mime_type, parser=parser_version(route.function))
    if not doc.elements:
        raise EmptyDocumentError("no extractable text")
    return doc


def detect_type(data: bytes, filename: str) -> tuple[Any, str | None]:
    """The unstructured FileType to partition `data` as, and its decoded text when it is a text file.

    Raises UnsupportedFormatError, EncryptedDocumentError, CorruptDocumentError or EncodingError.
    """
    from unstructured.file_utils.model import FileType

    ext = os.path.splitext(filename)[1].lower()
    if data[:1024].lstrip().startswith(b"%PDF-") or (b"%PDF-" in data[:1024] and ext == ".pdf"):
        _check_pdf(data)
        return FileType.PDF, None
    if data.startswith(_OLE_MAGIC):
        _check_ole(data)
    text: str | None = None
    undecodable: EncodingError | None = None
    if not data.startswith((_OLE_MAGIC, _ZIP_MAGIC)):
        try:
            text = decode_text(data)
        except EncodingError as exc:
            undecodable = exc
    # libmagic and unstructured's text differentiation see UTF-8 whatever the original encoding was.
    file_type = _detect(text.encode("utf-8") if text is not None else data, filename)
    route = _ROUTES.get(file_type.name)
    if route is not None:
        if route.decode and text is None:
            raise undecodable or EncodingError("the text could not be decoded")
        return file_type, text
    if file_type.name in _REFUSED_REASONS:
        raise UnsupportedFormatError(f"{file_type.name.lower()} is not supported: {_REFUSED_REASONS[file_type.name]}")
    if file_type.name == "EMPTY":
        raise EmptyDocumentError("the file is empty")
    raise UnsupportedFormatError(f"unsupported file type {file_type.name.lower()} ({ext or 'no extension'})")


def _detect(data: bytes, filename: str) -> Any:
    from unstructured.file_utils.filetype import detect_filetype

    try:
        return detect_filetype(file=io.BytesIO(data), metadata_file_path=filename)
    except Exception as exc:  # detection reads zip/OLE directories and can trip on damaged ones
        raise CorruptDocumentError(f"could not determine the file type ({type(exc).__name__})") from exc


def _check_zip(data: bytes, *, max_uncompressed: int) -> None:
    """Refuse zip bombs (OOXML, ODT and EPUB are zip containers): the byte limit must hold unpacked too."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CorruptDocumentError("the zip container could not be read") from exc
    if unpacked > max_uncompressed:
        raise DocumentTooLargeError(f"{unpacked} bytes once unpacked exceeds the limit of {max_uncompressed} bytes")


def _check_pdf(data: bytes) -> None:
    import pikepdf

    try:
        with pikepdf.open(io.BytesIO(data)):
            pass
    except pikepdf.PasswordError as exc:
        raise EncryptedDocumentError("the PDF is password-protected") from exc
    except pikepdf.PdfError as exc:
        raise CorruptDocumentError("the PDF could not be read") from exc


def _check_ole(data: bytes) -> None:
    """Refuse encrypted OLE/CDF containers: password-protected docx/xlsx/pptx and legacy doc/xls/ppt."""
    import msoffcrypto

    try:
        office_file = msoffcrypto.OfficeFile(io.BytesIO(data))
        encrypted = bool(office_file.is_encrypted())
    except Exception:  # not an Office container msoffcrypto knows (e.g. .msg): leave it to detection
        return
    if encrypted:
        raise EncryptedDocumentError("the Office document is password-protected")


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOM, UTF-16/32 by NUL pattern, strict UTF-8, then charset detection.

    Raises EncodingError when nothing yields text (binary data, or an encoding we cannot recognise).
    """
    text = _decode(data)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if controls > _MAX_CONTROL_RATIO * max(len(text), 1):
        raise EncodingError("the file is not text in any encoding we can recognise")
    return text


def _decode(data: bytes) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise EncodingError(f"invalid {codec} text after a byte-order mark") from exc
    if b"\x00" in data:
        # UTF-8 text never holds NUL; BOM-less UTF-16/32 of mostly-ASCII text is full of them.
        wide = _wide_codec(data)
        if wide is not None:
            try:
                return data.decode(wide)
            except UnicodeDecodeError:
                pass
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _detect_and_decode(data)


def _wide_codec(data: bytes) -> str | None:
    sample = data[:4096]
    n = len(sample)
    if n >= 4 and n % 4 == 0 and sample[2::4].count(0) > 0.9 * (n // 4) and sample[3::4].count(0) > 0.9 * (n // 4):
        return "utf-32-le"
    if n >= 4 and n % 4 == 0 and sample[0::4].count(0) > 0.9 * (n // 4) and sample[1::4].count(0) > 0.9 * (n // 4):
        return "utf-32-be"
    if sample[1::2].count(0) > 0.6 * (n // 2):
        return "utf-16-le"
    if sample[0::2].count(0) > 0.6 * (n // 2):
        return "utf-16-be"
    return None


def _detect_and_decode(data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise EncodingError("the text is not in any encoding we can recognise")
    best = min(matches, key=lambda m: m.chaos)
    # Short Western text is ambiguous between cp1250/cp1252/cp1257/cp775...; when cp1252 reads it as
    # cleanly as the best guess, take it: it is by far the most common legacy encoding of such files.
    chosen = next((m for m in matches if m.encoding == "cp1252" and m.chaos <= best.chaos + 0.005), best)
    logger.debug("decoded text with detected charset=%s", chosen.encoding)
    return str(chosen)


def _partition(route: _Route, data: bytes, text: str | None, filename: str) -> list[Any]:
    module = importlib.import_module(f"unstructured.partition.{route.module}")
    function = getattr(module, route.function)
    kwargs: dict[str, Any] = dict(route.kwargs)
    if route.decode and text is not None:
        if route.text_kwarg:
            kwargs["text"] = text
        else:
            kwargs["file"] = io.BytesIO(text.encode("utf-8"))
    elif route.module == "email" and text is not None and (b"\x00" in data[:4096] or data.startswith(_BOM_PREFIXES)):
        # A UTF-16/32 (or BOM-prefixed) .eml: the email parser reads byte-oriented messages. Plain 8-bit
        # messages keep their bytes, since each MIME part declares its own charset.
        kwargs["file"] = io.BytesIO(text.encode("utf-8"))
    else:
        kwargs["file"] = io.BytesIO(data)
    if route.module not in ("text", "html", "xml", "json", "ndjson", "csv", "tsv"):
        kwargs["metadata_filename"] = os.path.basename(filename) or None
    try:
        return list(function(**kwargs))
    except IngestError:
        raise
    except Exception as exc:
        if _looks_encrypted(exc):
            raise EncryptedDocumentError("the document is password-protected") from exc
        # Log the exception type only: messages from parsers can quote document content.
        logger.info("partition failed: function=%s error=%s", route.function, type(exc).__name__)
        raise CorruptDocumentError(f"{route.function} could not read the file ({type(exc).__name__})") from exc


def _looks_encrypted(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Password" in name or "Encrypt" in name or "NotAllowed" in name


def _assemble(raw_elements: list[Any], *, mime_type: str, parser: str) -> ParsedDocument:
    elements: list[ParsedElement] = []
    parts: list[str] = []
    cursor = 0
    for raw in raw_elements:
        # NUL cannot be stored in PostgreSQL text columns and is never meaningful content.
        text = str(getattr(raw, "text", "") or "").replace("\x00", "").strip()
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
            )
        )
    return ParsedDocument(elements=tuple(elements), text=SEPARATOR.join(parts), mime_type=mime_type, parser=parser)
