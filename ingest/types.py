"""Value types that flow through the ingestion pipeline: bytes -> elements -> chunks -> records."""

from __future__ import annotations

from dataclasses import dataclass, field

from classifiers.types import Finding, Label


@dataclass(frozen=True, slots=True)
class ParsedElement:
    """One structural element from `unstructured` (Title, NarrativeText, Table, ListItem ...).

    `start`/`end` are character offsets of `text` in the document's extracted text (elements joined
    by "\n\n"), so a chunk can point back into the document.
    """

    text: str
    element_type: str
    start: int
    end: int
    page_number: int | None = None  # within the attachment when `attachment` is set
    attachment: str | None = None  # the email attachment it came from, see ParseWarning.attachment


@dataclass(frozen=True, slots=True)
class ParseWarning:
    """Something skipped or only partly read while the file itself was still parsed.

    `code` is a stable IngestError code (a skipped attachment keeps the code it failed with, e.g.
    `unsupported_format`, `encrypted_document`), or `attachment_limit` for an attachment left out by the
    count or depth limit. `attachment` names the attachment concerned, nested ones as a path
    ("forwarded.eml/report.pdf"); None when the warning is about the file itself (e.g. a damaged PDF that
    could be read in part).
    """

    code: str
    message: str
    attachment: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """The text and elements extracted from one file (for an email: its body, then its attachments)."""

    elements: tuple[ParsedElement, ...]
    text: str
    mime_type: str
    parser: str  # e.g. "unstructured==0.27.32:partition_docx"
    warnings: tuple[ParseWarning, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A deterministic slice of a document, before classification and embedding."""

    ordinal: int
    text: str
    sha256: str  # of the chunk text, UTF-8
    start: int  # offsets into ParsedDocument.text
    end: int
    page_number: int | None
    element_types: tuple[str, ...]
    token_count: int
    attachment: str | None = None  # set when the chunk comes from an email attachment (never spans two)


@dataclass(frozen=True, slots=True)
class ProcessedChunk:
    """A chunk with its findings, label and embedding: what the memory stores."""

    draft: ChunkDraft
    findings: tuple[Finding, ...]
    label: Label  # max(source floor, label implied by findings)
    entity_types: tuple[str, ...]
    has_personal_data: bool
    vector: tuple[float, ...]
    embedding_cached: bool  # True when the vector came from the content-addressed cache
    # A chunk with personal data: the vector of its masked text (classifiers.masking over its findings: exactly
    # the text a caller who reads it masked is served), stored as the chunk's masked twin. None otherwise.
    masked_vector: tuple[float, ...] | None = None
    masked_embedding_cached: bool = True  # as embedding_cached, for masked_vector (True when there is none)


@dataclass(frozen=True, slots=True)
class NamePii:
    """Personal data found in a name the memory shows beside a chunk's text (the file's name, an email
    attachment's name): findings of personal entity types, [start, end) offsets into `name`."""

    name: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class PipelineVersions:
    """Versions of every stage, recorded on each document version for provenance."""

    pipeline: str
    parser: str
    chunker: str
    classifier: str
    label_map: str
    embedding_model: str


@dataclass(frozen=True)
class ProcessedDocument:
    """Everything the pipeline produced for one file."""

    sha256: str  # of the raw bytes
    size_bytes: int
    mime_type: str
    text_length: int
    chunks: tuple[ProcessedChunk, ...]
    versions: PipelineVersions
    timings_s: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    warnings: tuple[ParseWarning, ...] = ()  # skipped attachments, partly readable file
    # The file's and its attachments' names that hold personal data (their chunks carry it too: entity types,
    # label, personal flag), so that a caller who gets those chunks masked gets the names masked as well.
    names_pii: tuple[NamePii, ...] = ()

    @property
    def entity_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for chunk in self.chunks:
            for finding in chunk.findings:
                counts[finding.entity_type] = counts.get(finding.entity_type, 0) + 1
        return counts
