"""The ingestion pipeline: bytes in -> parsed, chunked, classified, embedded records out.

Importing `ingest` is cheap: names resolve lazily (PEP 562), so torch and unstructured load only when a
parser or embedder is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.chunk import chunk_document, chunker_version
    from ingest.embedders import Embedder, EmbeddingCache, InMemoryEmbeddingCache, SentenceTransformerEmbedder
    from ingest.errors import (
        CorruptDocumentError,
        DocumentTooLargeError,
        EmbeddingError,
        EmptyDocumentError,
        EncodingError,
        EncryptedDocumentError,
        IngestError,
        ParseTimeoutError,
        UnsupportedFormatError,
    )
    from ingest.offline import NetworkBlockedError, ensure_offline, ensure_parser_offline, no_network
    from ingest.parse import AttachmentLimits, parse_document
    from ingest.pipeline import IngestItem, IngestPipeline, sha256_bytes
    from ingest.types import (
        ChunkDraft,
        ParsedDocument,
        ParsedElement,
        ParseWarning,
        PipelineVersions,
        ProcessedChunk,
        ProcessedDocument,
    )

_EXPORTS: dict[str, str] = {
    "chunk_document": "ingest.chunk",
    "chunker_version": "ingest.chunk",
    "Embedder": "ingest.embedders",
    "EmbeddingCache": "ingest.embedders",
    "InMemoryEmbeddingCache": "ingest.embedders",
    "SentenceTransformerEmbedder": "ingest.embedders",
    "CorruptDocumentError": "ingest.errors",
    "DocumentTooLargeError": "ingest.errors",
    "EmbeddingError": "ingest.errors",
    "EmptyDocumentError": "ingest.errors",
    "EncodingError": "ingest.errors",
    "EncryptedDocumentError": "ingest.errors",
    "IngestError": "ingest.errors",
    "ParseTimeoutError": "ingest.errors",
    "UnsupportedFormatError": "ingest.errors",
    "NetworkBlockedError": "ingest.offline",
    "ensure_offline": "ingest.offline",
    "ensure_parser_offline": "ingest.offline",
    "no_network": "ingest.offline",
    "parse_document": "ingest.parse",
    "AttachmentLimits": "ingest.parse",
    "IngestItem": "ingest.pipeline",
    "IngestPipeline": "ingest.pipeline",
    "sha256_bytes": "ingest.pipeline",
    "ChunkDraft": "ingest.types",
    "ParsedDocument": "ingest.types",
    "ParsedElement": "ingest.types",
    "ParseWarning": "ingest.types",
    "PipelineVersions": "ingest.types",
    "ProcessedChunk": "ingest.types",
    "ProcessedDocument": "ingest.types",
}

__all__ = [
    "AttachmentLimits",
    "ChunkDraft",
    "CorruptDocumentError",
    "DocumentTooLargeError",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingError",
    "EmptyDocumentError",
    "EncodingError",
    "EncryptedDocumentError",
    "InMemoryEmbeddingCache",
    "IngestError",
    "IngestItem",
    "IngestPipeline",
    "NetworkBlockedError",
    "ParseTimeoutError",
    "ParseWarning",
    "ParsedDocument",
    "ParsedElement",
    "PipelineVersions",
    "ProcessedChunk",
    "ProcessedDocument",
    "SentenceTransformerEmbedder",
    "UnsupportedFormatError",
    "chunk_document",
    "chunker_version",
    "ensure_offline",
    "ensure_parser_offline",
    "no_network",
    "parse_document",
    "sha256_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ingest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
