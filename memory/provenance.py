"""Citations: everything an auditor needs to trace a hit back to its source bytes."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import quote

from memory.clock import aware
from memory.models import Chunk, DocumentVersion, Source


@dataclass(frozen=True)
class Citation:
    chunk_id: str
    document_id: str
    version: int
    version_id: str
    # None on a masked hit (and for a caller only ever served the chunk masked): a hash of the clear text
    # would let the caller confirm guesses of the masked values offline. Auditors verify by chunk id.
    chunk_sha256: str | None
    # Also None when another chunk of the version is masked or withheld for this caller (`partial`).
    version_sha256: str | None
    source_id: str
    source_uri: str
    document_uri: str
    # None where version_sha256 is: the clear text's offsets measure it, so the length of the masked (or
    # withheld) text would follow.
    start: int | None
    end: int | None
    page_number: int | None
    attachment: str | None  # the email attachment the chunk was parsed from; None: the document itself
    ingested_at: str
    ingested_by: str
    pipeline_version: str
    parser_version: str
    chunker_version: str
    classifier_version: str
    label_map_version: str
    embedding_model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def masked(self, names_pii: NamesPii) -> Citation:
        """This citation for a caller who gets the chunk masked: without its CLEAR_TEXT_FIELDS (all of them),
        and the names shown beside the text masked as the text is (`hide_names`)."""
        return replace(self, chunk_sha256=None, version_sha256=None, start=None, end=None,
                       document_uri=hide_names(self.document_uri, names_pii) or "",
                       attachment=hide_names(self.attachment, names_pii))

    def partial(self) -> Citation:
        """This citation for a caller served the chunk in clear from a version they may not see whole (another
        chunk of it masked or withheld): without its VERSION_MEASURE_FIELDS."""
        return replace(self, version_sha256=None, start=None, end=None)

    def for_view(self, *, clear: bool, whole: bool, names_pii: NamesPii) -> Citation:
        """As a caller may see it: `clear` False, masked; clear but not `whole` (a neighbour masked or withheld),
        partial; else all of it."""
        return self.masked(names_pii) if not clear else self if whole else self.partial()


# Personal data found in the names shown beside a version's text (`document_versions.names_pii`).
NamesPii = Sequence[Mapping[str, Any]] | None


def hide_names(value: str | None, names_pii: NamesPii) -> str | None:
    """`value` (a file name, a key, an attachment's name, a URI built from them) with every piece of personal
    data found in a shown name replaced by `<ENTITY_TYPE>` wherever it occurs: as found, percent-encoded (URIs
    quote keys), in either Unicode normal form, in any case."""
    if not value or not names_pii:
        return value
    pieces = {(entry["name"][s["start"]:s["end"]], s["entity_type"]) for entry in names_pii for s in entry["spans"]}
    for piece, entity_type in sorted(pieces, key=lambda p: -len(p[0])):  # the longest first: none half-replaced
        if not piece.strip():
            continue
        forms = {unicodedata.normalize(form, piece) for form in ("NFC", "NFD")}
        forms |= {quote(f, safe=safe) for f in forms for safe in ("/", "")}
        pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)
        value = pattern.sub(f"<{entity_type}>", value)
    return value


# What a citation holds of the chunk's clear text (hashes, offsets): never shown to a caller who gets the chunk
# masked, nor compared when such a caller verifies one (a mismatch would answer a guess).
CLEAR_TEXT_FIELDS = ("chunk_sha256", "version_sha256", "start", "end")
# What measures the whole version's clear text: its hash (with the served texts, a guess of a neighbour's
# masked values could be confirmed offline) and the chunks' offsets (they give a masked or withheld
# neighbour's clear length). Shown only to a caller who may see every chunk of the version in clear.
VERSION_MEASURE_FIELDS = ("version_sha256", "start", "end")


def citation(chunk: Chunk, version: DocumentVersion, source: Source) -> Citation:
    return Citation(
        chunk_id=chunk.id,
        document_id=chunk.document_id,
        version=version.version,
        version_id=version.id,
        chunk_sha256=chunk.sha256,
        version_sha256=version.sha256,
        source_id=source.id,
        source_uri=source.uri,
        document_uri=version.uri,
        start=chunk.start,
        end=chunk.end,
        page_number=chunk.page_number,
        attachment=chunk.attachment,
        ingested_at=aware(version.ingested_at).isoformat(),
        ingested_by=version.ingested_by,
        pipeline_version=version.pipeline_version,
        parser_version=version.parser_version,
        chunker_version=version.chunker_version,
        classifier_version=version.classifier_version,
        label_map_version=version.label_map_version,
        embedding_model=version.embedding_model,
    )
