"""Which file type a file is, and whether its container can be read safely (before any partitioning).

Detection trusts content first (PDF/OLE/zip signatures, libmagic via unstructured's `detect_filetype`) and
the filename extension second. A file whose extension promises a container (zip: docx/pptx/xlsx/odt/epub;
OLE: doc/ppt/xls/msg; PDF) but whose container is truncated, broken or holds no such document is a
CorruptDocumentError, never an UnsupportedFormatError.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest import legacy_office
from ingest.decode import decode_text
from ingest.errors import (
    CorruptDocumentError,
    DocumentTooComplexError,
    EmptyDocumentError,
    EncodingError,
    EncryptedDocumentError,
    UnsupportedFormatError,
)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
ZIP_SIGNATURES = (ZIP_MAGIC, b"PK\x05\x06", b"PK\x07\x08")  # local file header, empty archive, spanned
PDF_MAGIC = b"%PDF-"
ZIP_EXPANSION_LIMIT = 10  # a file and its attachments may unpack to at most this many times max_bytes
# Extensions that promise a container: such a file whose container is broken is corrupt, not unsupported.
CONTAINER_BY_EXTENSION: dict[str, tuple[bytes, ...]] = {
    **dict.fromkeys((".docx", ".docm", ".pptx", ".pptm", ".xlsx", ".xlsm", ".odt", ".epub"), ZIP_SIGNATURES),
    **dict.fromkeys((".doc", ".ppt", ".xls", ".msg"), (OLE_MAGIC,)),
    ".pdf": (PDF_MAGIC,),
}
# qpdf's warnings when it had to rebuild a PDF's cross-reference table (a truncated or damaged file).
_QPDF_REPAIRS = ("file is damaged", "can't find startxref", "reconstruct")


@dataclass(frozen=True)
class Route:
    """How one file type is partitioned."""

    function: str  # unstructured.partition.<module>.<function>
    module: str
    decode: bool = False  # decode the bytes here and hand over text (or UTF-8 bytes)
    text_kwarg: bool = False  # the function takes `text=`
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # A legacy format LibreOffice converts to this route's (`module`) first: its extension (ingest.legacy_office).
    convert_from: str | None = None


ROUTES: dict[str, Route] = {
    "PDF": Route(
        "partition_pdf",
        "pdf",
        kwargs={"strategy": "fast", "infer_table_structure": False, "extract_images_in_pdf": False},
    ),
    "DOCX": Route("partition_docx", "docx"),
    "PPTX": Route("partition_pptx", "pptx"),
    "DOC": Route("partition_docx", "docx", convert_from="doc"),
    "PPT": Route("partition_pptx", "pptx", convert_from="ppt"),
    "XLSX": Route("partition_xlsx", "xlsx"),
    "XLS": Route("partition_xlsx", "xlsx"),
    "ODT": Route("partition_odt", "odt"),
    "EPUB": Route("partition_epub", "epub"),
    # Attachments are parsed by ingest.parse through its own checks (see ingest.attachments), not by these.
    "MSG": Route("partition_msg", "msg", kwargs={"process_attachments": False}),
    # The email parser decodes each MIME part by its own charset, so it gets the raw bytes.
    "EML": Route("partition_email", "email", kwargs={"process_attachments": False}),
    "HTML": Route("partition_html", "html", decode=True, text_kwarg=True),
    "MD": Route("partition_md", "md", decode=True, text_kwarg=True),
    "TXT": Route("partition_text", "text", decode=True, text_kwarg=True),
    "XML": Route("partition_xml", "xml", decode=True, text_kwarg=True),
    "JSON": Route("partition_json", "json", decode=True, text_kwarg=True),
    "NDJSON": Route("partition_ndjson", "ndjson", decode=True, text_kwarg=True),
    "CSV": Route("partition_csv", "csv", decode=True, kwargs={"encoding": "utf-8"}),
    "TSV": Route("partition_tsv", "tsv", decode=True),
    "RTF": Route("partition_rtf", "rtf", decode=True),
    "RST": Route("partition_rst", "rst", decode=True),
    "ORG": Route("partition_org", "org", decode=True),
}


# Names that say "plain text" (or say nothing): a delimiter guess does not override them.
PLAIN_TEXT_EXTENSIONS = frozenset({"", ".txt", ".text", ".log"})


def detect_type(data: bytes, filename: str) -> tuple[Any, str | None]:
    """The unstructured FileType to partition `data` as, and its decoded text when it is a text file.

    Raises UnsupportedFormatError, EncryptedDocumentError, CorruptDocumentError or EncodingError.
    """
    from unstructured.file_utils.model import FileType

    ext = os.path.splitext(filename)[1].lower()
    if data[:1024].lstrip().startswith(PDF_MAGIC) or (PDF_MAGIC in data[:1024] and ext == ".pdf"):
        return FileType.PDF, None
    if data.startswith(OLE_MAGIC):
        _check_ole(data)
    text: str | None = None
    undecodable: EncodingError | None = None
    if not data.startswith((OLE_MAGIC, *ZIP_SIGNATURES)):
        try:
            text = decode_text(data)
        except EncodingError as exc:
            undecodable = exc
    # libmagic and unstructured's text differentiation see UTF-8 whatever the original encoding was.
    file_type = _detect(text.encode("utf-8") if text is not None else data, filename)
    if file_type.name in ("CSV", "TSV") and text is not None and ext in PLAIN_TEXT_EXTENSIONS:
        # unstructured guesses CSV from a text whose first lines hold as many commas each (a checklist, a list
        # of "Name, Title" lines): a file named as text is read as text, not split into cells by its commas.
        return FileType.TXT, text
    route = ROUTES.get(file_type.name)
    if route is not None:
        if route.decode and text is None:
            raise undecodable or EncodingError("the text could not be decoded")
        if route.convert_from and not legacy_office.available():
            raise UnsupportedFormatError(f"legacy .{route.convert_from} is not supported here: it needs LibreOffice "
                                         "(soffice) with util-linux's unshare and prlimit, not installed here")
        return file_type, text
    if data.startswith(CONTAINER_BY_EXTENSION.get(ext, ())):
        # e.g. a .docx whose zip lacks [Content_Types].xml, or an empty zip: a damaged file, not another format.
        raise CorruptDocumentError(f"the {ext} container holds no readable {ext} document ({file_type.name.lower()})")
    if file_type.name == "EMPTY":
        raise EmptyDocumentError("the file is empty")
    raise UnsupportedFormatError(f"unsupported file type {file_type.name.lower()} ({ext or 'no extension'})")


def _detect(data: bytes, filename: str) -> Any:
    from unstructured.file_utils.filetype import detect_filetype

    try:
        return detect_filetype(file=io.BytesIO(data), metadata_file_path=filename)
    except Exception as exc:  # detection reads zip/OLE directories and can trip on damaged ones
        raise CorruptDocumentError(f"could not determine the file type ({type(exc).__name__})") from exc


def check_markup_depth(text: str) -> None:
    """Refuse HTML nested deeper than libxml2 reads (256 levels; `partition_html` parses with lxml):
    past it the parser drops everything below and after silently, and the document would be stored cut short
    as if whole. (XML past that depth already fails to parse: corrupt_document.)"""
    from lxml import etree

    # As UTF-8 bytes: lxml refuses a str that declares an encoding (XHTML saved with `<?xml ... encoding=?>`,
    # closed or not), and the text is decoded already.
    parser = etree.HTMLParser(encoding="utf-8")
    try:
        etree.fromstring(text.encode("utf-8"), parser)
    except etree.LxmlError:
        return  # not markup lxml can read at all: the partitioner decides
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise DocumentTooComplexError("the markup is nested deeper than 256 levels: it cannot be read in full")


def check_pdf(data: bytes) -> bool:
    """Refuse encrypted and unreadable PDFs; True when qpdf had to rebuild it (truncated or damaged)."""
    import pikepdf

    try:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            repairs = pdf.get_warnings()
    except pikepdf.PasswordError as exc:
        raise EncryptedDocumentError("the PDF is password-protected") from exc
    except pikepdf.PdfError as exc:
        raise CorruptDocumentError("the PDF could not be read") from exc
    return any(marker in str(w) for w in repairs for marker in _QPDF_REPAIRS)


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
