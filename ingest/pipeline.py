"""The ingestion pipeline: bytes -> parse -> chunk -> classify -> embed -> ProcessedDocument.

Pure: no database, no vector store. The service decides what to store; it calls `sha256_bytes` first to
skip unchanged files before any parsing.

Labels: chunk label = max(source floor, label the classifier derived from its findings). Personal data:
`LabelMap.is_personal` over the chunk's entity types. The LabelMap is the one the classifier exposes as a
`label_map` attribute when it has one (so label and personal flag come from the same map); otherwise the
`label_map` argument, else the default map. Passing a map that differs from the classifier's is an error.

Parsing runs in a worker process with a per-file time budget when `parse_timeout_s` > 0 (ingest.workers:
a file that hangs the parser fails with `parse_timeout`, the others go on), else in this process. The
pipeline owns that worker: `close()` it (or use the pipeline as a context manager).

Embedding work is done once per distinct chunk text: vectors come from the cache when present, texts are
deduplicated within a document and across a `process_many` batch, and new vectors are written back.
`ProcessedChunk.embedding_cached` is False on exactly one chunk per vector computed by the call (its first
occurrence) and True on every chunk whose vector was reused, so summing `token_count` over chunks with
`embedding_cached=False` gives the embedding work done.

A chunk with personal data also gets the vector of its masked text (`ProcessedChunk.masked_vector`: its PII
spans replaced by `<ENTITY_TYPE>` with `classifiers.masking`, as a masked caller is served it), embedded in the
same batch, through the same cache and deduplication (`masked_embedding_cached` counts its work the same way):
one more embedding per personal chunk, none when its masked text equals a text already embedded.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from classifiers.base import Classifier
from classifiers.labels import LabelMap
from classifiers.lexicon import Lexicon
from classifiers.masking import mask
from classifiers.types import Classification, Finding, Label
from ingest import shown_names
from ingest.chunk import DEFAULT_MAX_TOKENS, chunk_document, chunker_version
from ingest.embedders import Embedder, EmbeddingCache, Vector
from ingest.errors import EmbeddingError, IngestError
from ingest.offline import no_network
from ingest.types import (
    ChunkDraft,
    NamePii,
    ParsedDocument,
    PipelineVersions,
    ProcessedChunk,
    ProcessedDocument,
)
from ingest.versioning import PIPELINE_VERSION
from ingest.workers import Parser, make_parser

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# Chunks one document may make. Classifying and embedding take ~43 ms a chunk on two cores (23 chunks/s),
# so the byte limit alone lets one 50 MB text file hold an ingest for an hour: 5,000 chunks (about a
# million tokens, a 2,000-page book) take ~3.6 minutes.
DEFAULT_MAX_CHUNKS = 5_000


def _shown_names(staged: _Staged) -> list[str]:
    """The names citations show beside the document's chunks: its own (file name, key, URI) and its
    attachments'."""
    attachments = sorted({d.attachment for d in staged.drafts if d.attachment})
    return [n for n in dict.fromkeys([*staged.shown, *attachments]) if n]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of raw file bytes: the document-version identity (unchanged bytes = no new version)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One file for `process_many`."""

    data: bytes
    filename: str
    floor: Label
    # Other names citations show beside the document (its key, its URI): classified with its file name.
    shown_names: tuple[str, ...] = ()


@dataclass(slots=True)
class _Staged:
    """A document between chunking and embedding."""

    sha256: str
    size: int
    parsed: ParsedDocument
    drafts: list[ChunkDraft]
    classifications: list[Classification]
    timings: dict[str, float]
    floor: Label
    shown: tuple[str, ...] = ()  # the document's own names: file name, key, URI
    names_pii: dict[str, tuple[Finding, ...]] = field(default_factory=dict)  # name -> vetted findings
    # Per draft: the masked text's (sha256, text) for a chunk with personal data, else None (`_mask_personal`).
    masked: list[tuple[str, str] | None] = field(default_factory=list)
    findings: list[tuple[Finding, ...]] = field(default_factory=list)  # per draft (`_findings`), made once


class IngestPipeline:
    """Runs the stages with injected classifier, embedder and (optional) embedding cache."""

    def __init__(
        self,
        classifier: Classifier,
        embedder: Embedder,
        cache: EmbeddingCache | None,
        *,
        label_map: LabelMap | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        parse_timeout_s: float = 0.0,
        parser: Parser | None = None,
    ) -> None:
        exposed = getattr(classifier, "label_map", None)
        if isinstance(exposed, LabelMap):
            if label_map is not None and label_map.version != exposed.version:
                raise ValueError("label_map differs from the classifier's label map")
            label_map = exposed
        self.label_map = label_map or LabelMap()
        self.classifier = classifier
        # The words that vet a person in a name (ingest.shown_names): the classifier's own lexicon when it
        # exposes one (dictionary + census names), else the census names alone.
        lexicon = getattr(classifier, "lexicon", None)
        self._names_lexicon = lexicon if isinstance(lexicon, Lexicon) else Lexicon.from_nlp(None)
        self.embedder = embedder
        self.cache = cache
        self.max_bytes = max_bytes
        self.max_tokens = max_tokens
        if max_chunks < 1:
            raise ValueError("max_chunks must be positive")
        self.max_chunks = max_chunks
        self.parser = parser or make_parser(timeout_s=parse_timeout_s)

    def with_label_map(self, label_map: LabelMap) -> IngestPipeline:
        """This pipeline labelling with `label_map`, sharing its classifier's engine, embedder, cache and parser
        (close the original only). The classifier must hold a label map and take another (`with_label_map`):
        labels, personal flags and the recorded map version never come from two maps (a classifier labelling
        by rules of its own would keep its labels while the pipeline's personal flags followed the new map)."""
        relabel = getattr(self.classifier, "with_label_map", None)
        if not isinstance(getattr(self.classifier, "label_map", None), LabelMap) or relabel is None:
            raise TypeError("the classifier cannot label with another label map")
        relabelled = copy.copy(self)
        relabelled.classifier = relabel(label_map)
        relabelled.label_map = label_map
        return relabelled

    def wait_ready(self) -> None:
        """Block until the parser is loaded (the parse worker, when there is one)."""
        self.parser.wait_ready()

    def close(self) -> None:
        """Stop the parse worker process, if one was started."""
        self.parser.close()

    def __enter__(self) -> IngestPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, data: bytes, filename: str, *, floor: Label) -> ProcessedDocument:
        """Process one file; raises an IngestError subclass for bad input."""
        result = self.process_many([IngestItem(data=data, filename=filename, floor=floor)])[0]
        if isinstance(result, IngestError):
            raise result
        return result

    def process_many(self, items: Iterable[IngestItem]) -> list[ProcessedDocument | IngestError]:
        """Process several files, classifying and embedding them in shared batches for throughput.

        Returns one entry per item, in order: the ProcessedDocument, or the IngestError that file raised.
        Bad files never fail the batch; a broken embedder (EmbeddingError) or classifier does.
        """
        items = list(items)
        with no_network():
            parsed = self.parser.parse_many(((i.data, i.filename) for i in items), max_bytes=self.max_bytes)
            staged: list[_Staged | IngestError] = [
                self._chunk(item, result, seconds) for item, (result, seconds) in zip(items, parsed, strict=True)
            ]
            ready = [s for s in staged if isinstance(s, _Staged)]
            self._classify(ready)
            self._mask_personal(ready)
            vectors, computed, embed_seconds = self._embed(ready)
        results: list[ProcessedDocument | IngestError] = []
        seen: set[str] = set()
        total_computed = max(len(computed), 1)
        for entry in staged:
            if isinstance(entry, IngestError):
                results.append(entry)
                continue
            shas = [d.sha256 for d in entry.drafts] + [m[0] for m in entry.masked if m is not None]
            new_here = {sha for sha in shas if sha in computed and sha not in seen}
            # The batch's embedding time is shared out by the number of vectors each document caused.
            entry.timings["embed"] = embed_seconds * len(new_here) / total_computed
            results.append(self._assemble(entry, vectors, computed, seen))
        return results

    def _chunk(self, item: IngestItem, parsed: ParsedDocument | IngestError, parse_s: float) -> _Staged | IngestError:
        sha = sha256_bytes(item.data)
        if isinstance(parsed, IngestError):
            logger.info("file rejected: sha256=%s size=%d code=%s", sha, len(item.data), parsed.code)
            return parsed
        t0 = time.perf_counter()
        try:
            # Past max_chunks, refused before its chunks are classified or embedded (that work, not parsing, is
            # the cost), and as soon as chunking reaches the limit (ingest.chunk).
            drafts = chunk_document(parsed, count_tokens=self.embedder.count_tokens, max_tokens=self.max_tokens,
                                    max_chunks=self.max_chunks)
        except EmbeddingError:
            raise
        except IngestError as exc:
            logger.info("file rejected: sha256=%s size=%d code=%s", sha, len(item.data), exc.code)
            return exc
        timings = {"parse": parse_s, "chunk": time.perf_counter() - t0}
        return _Staged(sha, len(item.data), parsed, drafts, [], timings, item.floor,
                       (item.filename, *item.shown_names))

    def _classify(self, ready: Sequence[_Staged]) -> None:
        """The chunks' texts, and in the same batch the names shown beside them, each in its two readings
        (ingest.shown_names: what a name's findings may add to its chunks is vetted strictly)."""
        chunk_texts = [d.text for s in ready for d in s.drafts]
        names = [(s, n) for s in ready for n in _shown_names(s)]
        texts = chunk_texts + [t for _, n in names for t in shown_names.readings(n)]
        t0 = time.perf_counter()
        results = self.classifier.classify(texts) if texts else []
        elapsed = time.perf_counter() - t0
        if len(results) != len(texts):
            raise RuntimeError(f"classifier returned {len(results)} results for {len(texts)} texts")
        offset = 0
        for staged in ready:
            n = len(staged.drafts)
            staged.classifications = list(results[offset : offset + n])
            offset += n
            staged.timings["classify"] = elapsed * n / max(len(texts), 1)
        of_names = iter(results[len(chunk_texts):])  # two readings per name, in order
        for staged, name in names:
            as_is, spaced = next(of_names), next(of_names)
            found = shown_names.vetted(name, (*as_is.findings, *spaced.findings), self._names_lexicon)
            if found:
                staged.names_pii[name] = found

    def _entity_types(self, staged: _Staged, draft: ChunkDraft, result: Classification) -> tuple[str, ...]:
        """The chunk's entity types: its text's, and those found in the names shown beside it."""
        entity_types = result.entity_types or tuple(sorted({f.entity_type for f in result.findings}))
        in_names = self._in_names(staged, draft)
        return tuple(sorted(set(entity_types) | in_names)) if in_names else entity_types

    @staticmethod
    def _findings(staged: _Staged, draft: ChunkDraft, result: Classification) -> tuple[Finding, ...]:
        """The chunk's findings: its text's, and the occurrences in its text of personal data found in the names
        shown beside it that its text's classifier missed (ingest.shown_names.in_text): stored as its PII spans,
        masked when it is served masked and in its masked twin's text."""
        extra = [f for name in (*staged.shown, draft.attachment) if name and name in staged.names_pii
                 for f in shown_names.in_text(name, staged.names_pii[name], draft.text)]
        own = result.findings
        # Kept beside the text's own findings even where they overlap (a name read in part, "maria" of
        # "maria-garcia"): masking settles overlaps (presidio-anonymizer), so the union is masked.
        missed = [f for f in extra if not any(o.start <= f.start and f.end <= o.end for o in own)]
        if not missed:
            return own
        kept: list[Finding] = []
        for f in sorted(missed, key=lambda f: (f.start, -f.end)):  # overlapping occurrences: the first, longest
            if not kept or f.start >= kept[-1].end:
                kept.append(f)
        return tuple(sorted((*own, *kept), key=lambda f: (f.start, f.end)))

    @staticmethod
    def _in_names(staged: _Staged, draft: ChunkDraft) -> set[str]:
        return {f.entity_type for name in (*staged.shown, draft.attachment) if name
                for f in staged.names_pii.get(name, ())}

    def _mask_personal(self, ready: Sequence[_Staged]) -> None:
        """Each chunk's findings (`_findings`), and the masked text of each chunk with personal data (a chunk
        personal only by a name that does not occur in its text masks to its own text, and shares its vector)."""
        for staged in ready:
            staged.masked = []
            staged.findings = [self._findings(staged, draft, result)
                               for draft, result in zip(staged.drafts, staged.classifications, strict=True)]
            for draft, result, findings in zip(staged.drafts, staged.classifications, staged.findings, strict=True):
                if not self.label_map.is_personal(self._entity_types(staged, draft, result)):
                    staged.masked.append(None)
                    continue
                text = mask(draft.text, findings)
                staged.masked.append((hashlib.sha256(text.encode()).hexdigest(), text))

    def _embed(self, ready: Sequence[_Staged]) -> tuple[dict[str, Vector], set[str], float]:
        """Vectors for every distinct chunk sha of the batch (masked texts included), the shas computed now,
        and seconds spent."""
        texts_by_sha: dict[str, str] = {}
        for staged in ready:
            for draft in staged.drafts:
                texts_by_sha.setdefault(draft.sha256, draft.text)
            for masked in staged.masked:
                if masked is not None:
                    texts_by_sha.setdefault(*masked)
        model_id = self.embedder.model_id
        t0 = time.perf_counter()
        vectors: dict[str, Vector] = dict(self.cache.get_many(model_id, list(texts_by_sha))) if self.cache else {}
        missing = [sha for sha in texts_by_sha if sha not in vectors]
        if missing:
            array = self.embedder.embed([texts_by_sha[sha] for sha in missing])
            if array.shape != (len(missing), self.embedder.dim):
                raise EmbeddingError(f"embedder returned shape {array.shape} for {len(missing)} texts")
            fresh = {sha: array[i] for i, sha in enumerate(missing)}
            vectors.update(fresh)
            if self.cache is not None:
                self.cache.put_many(model_id, fresh)
        elapsed = time.perf_counter() - t0
        logger.info("embedded batch: distinct=%d computed=%d model_id=%s", len(texts_by_sha), len(missing), model_id)
        return vectors, set(missing), elapsed

    def _assemble(
        self, staged: _Staged, vectors: dict[str, Vector], computed: set[str], seen: set[str]
    ) -> ProcessedDocument:
        chunks: list[ProcessedChunk] = []
        for draft, result, masked, findings in zip(staged.drafts, staged.classifications, staged.masked,
                                                   staged.findings, strict=True):
            # Personal data in the names shown beside the chunk is the chunk's too (its label, its flag).
            in_names = self._in_names(staged, draft)
            entity_types = self._entity_types(staged, draft, result)
            first_computation = draft.sha256 in computed and draft.sha256 not in seen
            seen.add(draft.sha256)
            masked_vector, masked_cached = None, True
            if masked is not None:
                masked_vector = tuple(vectors[masked[0]].tolist())
                masked_cached = not (masked[0] in computed and masked[0] not in seen)
                seen.add(masked[0])
            chunks.append(
                ProcessedChunk(
                    draft=draft,
                    findings=findings,
                    label=max(staged.floor, result.label, self.label_map.label_for(in_names)),
                    entity_types=entity_types,
                    has_personal_data=self.label_map.is_personal(entity_types),
                    vector=tuple(vectors[draft.sha256].tolist()),
                    embedding_cached=not first_computation,
                    masked_vector=masked_vector,
                    masked_embedding_cached=masked_cached,
                )
            )
        label_map_version = (
            staged.classifications[0].label_map_version if staged.classifications else (self.label_map.version)
        )
        versions = PipelineVersions(
            pipeline=PIPELINE_VERSION,
            parser=staged.parsed.parser,
            chunker=chunker_version(self.max_tokens),
            classifier=self.classifier.version,
            label_map=label_map_version,
            embedding_model=self.embedder.model_id,
        )
        logger.info(
            "document processed: sha256=%s chunks=%d personal=%d",
            staged.sha256,
            len(chunks),
            sum(c.has_personal_data for c in chunks),
        )
        return ProcessedDocument(
            sha256=staged.sha256,
            size_bytes=staged.size,
            mime_type=staged.parsed.mime_type,
            text_length=len(staged.parsed.text),
            chunks=tuple(chunks),
            versions=versions,
            timings_s=dict(staged.timings),
            warnings=staged.parsed.warnings,
            names_pii=tuple(NamePii(name, found) for name, found in sorted(staged.names_pii.items())),
        )
