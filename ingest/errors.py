"""Errors of the ingestion pipeline, each with a stable `code` (reported per file, never fatal to a batch).

IngestError
 ├── UnsupportedFormatError   file type not handled (e.g. .wav, .exe)
 ├── EmptyDocumentError       zero bytes, or no extractable text
 ├── CorruptDocumentError     the parser could not read the file
 ├── EncryptedDocumentError   password-protected / encrypted
 ├── DocumentTooLargeError    over the configured byte limit
 ├── TooManyChunksError       more chunks than the per-document limit (a budget on classify + embed work)
 ├── DocumentTooComplexError  markup nested too deep, the parser's memory or recursion exhausted, pandoc's heap limit
 ├── EncodingError            text in an encoding that cannot be decoded
 ├── ParseTimeoutError        the parser ran past the per-file time budget (its worker process was killed)
 └── EmbeddingError           embedding model failed or unavailable

Not an error: a ParseWarning (ingest.types) with one of these codes, or `attachment_limit`, reports an email
attachment that was skipped while the message itself was parsed.
"""

from __future__ import annotations


class IngestError(Exception):
    code = "ingest_error"
    # The file's fault (422), unless the service's (ParserUnavailableError: 503).
    http_status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormatError(IngestError):
    code = "unsupported_format"


class EmptyDocumentError(IngestError):
    code = "empty_document"


class CorruptDocumentError(IngestError):
    code = "corrupt_document"


class EncryptedDocumentError(IngestError):
    code = "encrypted_document"


class DocumentTooLargeError(IngestError):
    code = "document_too_large"


class TooManyChunksError(IngestError):
    code = "too_many_chunks"


class DocumentTooComplexError(IngestError):
    code = "document_too_complex"


class ParserUnavailableError(IngestError):
    """The parser could not run at all (a broken install: a module it needs does not import): not the file's
    fault, so not `corrupt_document`; the same file succeeds once the install is repaired."""

    code = "parser_unavailable"
    http_status = 503


class EncodingError(IngestError):
    code = "undecodable_text"


class ParseTimeoutError(IngestError):
    code = "parse_timeout"


class EmbeddingError(IngestError):
    """The embedding model failed: the service's fault, not the file's (503: the same file succeeds later)."""

    code = "embedding_failed"
    http_status = 503
