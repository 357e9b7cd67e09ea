"""IngestPipeline: labels, personal-data flags, embed-once caching, batches, errors per file, versions."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from classifiers.labels import LabelMap
from classifiers.types import Classification, Finding, Label
from ingest.embedders import InMemoryEmbeddingCache, Vector
from ingest.errors import CorruptDocumentError, EmptyDocumentError, EncryptedDocumentError, TooManyChunksError
from ingest.pipeline import IngestItem, IngestPipeline, sha256_bytes

EMAIL = re.compile(r"[\w.]+@[\w.]+\w")
CARD = re.compile(r"\b(?:\d{4}[ -]){3}\d{4}\b")
MAX = 10 * 1024 * 1024


class FakeClassifier:
    """Emails -> EMAIL_ADDRESS, 16-digit groups -> CREDIT_CARD; label from the default LabelMap."""

    version = "fake-classifier-1"

    def __init__(self) -> None:
        self.label_map = LabelMap()
        self.calls: list[int] = []

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        self.calls.append(len(texts))
        results = []
        for text in texts:
            findings = tuple(
                sorted(
                    [Finding("EMAIL_ADDRESS", m.start(), m.end(), 1.0, "fake") for m in EMAIL.finditer(text)]
                    + [Finding("CREDIT_CARD", m.start(), m.end(), 1.0, "fake") for m in CARD.finditer(text)],
                    key=lambda f: f.start,
                )
            )
            types = tuple(sorted({f.entity_type for f in findings}))
            results.append(
                Classification(findings, self.label_map.label_for(types), self.label_map.version, self.version, types)
            )
        return results


class FakeEmbedder:
    """Deterministic unit vectors from the text hash; counts words as tokens; records what it embedded."""

    model_id = "fake-embedder@000000000000"
    dim = 8

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vector:
        self.embedded.extend(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.uint8)[: self.dim] for t in texts]
        array = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim) + 1.0
        normalised: Vector = (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)
        return normalised

    def embed_query(self, text: str) -> Vector:
        vector: Vector = self.embed([text])[0]
        return vector

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def make_pipeline(cache: InMemoryEmbeddingCache | None = None, max_tokens: int = 60) -> IngestPipeline:
    return IngestPipeline(FakeClassifier(), FakeEmbedder(), cache, max_bytes=MAX, max_tokens=max_tokens)


def text_file(*paragraphs: str) -> bytes:
    return "\n\n".join(paragraphs).encode()


PUBLIC = "The planning review covers revenue forecasts and vendor contracts for every region this year."
EMAIL_PARA = "Questions about the renewal go to alice.smith@example.com before the end of March please."
CARD_PARA = "The corporate card 4111 1111 1111 1111 was used for the vendor deposit last week only."
# What a caller who reads them masked is served: their masked twins embed these (classifiers.masking).
EMAIL_MASKED = "Questions about the renewal go to <EMAIL_ADDRESS> before the end of March please."
CARD_MASKED = "The corporate card <CREDIT_CARD> was used for the vendor deposit last week only."


def test_label_is_max_of_floor_and_findings() -> None:
    pipeline = make_pipeline(max_tokens=20)

    doc = pipeline.process(text_file(PUBLIC, EMAIL_PARA, CARD_PARA), "notes.txt", floor=Label.INTERNAL)

    assert [c.label for c in doc.chunks] == [Label.INTERNAL, Label.CONFIDENTIAL, Label.RESTRICTED]
    assert [c.has_personal_data for c in doc.chunks] == [False, True, True]
    assert doc.chunks[1].entity_types == ("EMAIL_ADDRESS",)
    finding = doc.chunks[1].findings[0]
    assert doc.chunks[1].draft.text[finding.start : finding.end] == "alice.smith@example.com"
    assert doc.entity_counts == {"EMAIL_ADDRESS": 1, "CREDIT_CARD": 1}


def test_a_high_floor_wins_over_clean_text() -> None:
    doc = make_pipeline().process(text_file(PUBLIC), "notes.txt", floor=Label.RESTRICTED)

    assert {c.label for c in doc.chunks} == {Label.RESTRICTED}
    assert not any(c.has_personal_data for c in doc.chunks)


def test_document_fields_versions_and_timings() -> None:
    data = text_file(PUBLIC, EMAIL_PARA)

    doc = make_pipeline().process(data, "notes.txt", floor=Label.PUBLIC)

    assert doc.sha256 == sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    assert doc.size_bytes == len(data) and doc.mime_type == "text/plain"
    assert doc.versions.parser.endswith(":partition_text")
    assert doc.versions.chunker.endswith("max_tokens=60")
    assert doc.versions.classifier == "fake-classifier-1"
    assert doc.versions.label_map == LabelMap().version
    assert doc.versions.embedding_model == "fake-embedder@000000000000"
    assert set(doc.timings_s) == {"parse", "chunk", "classify", "embed"}
    assert all(len(c.vector) == 8 for c in doc.chunks)


def test_classifier_sees_all_chunks_in_one_batch() -> None:
    pipeline = make_pipeline(max_tokens=20)

    pipeline.process(text_file(PUBLIC, EMAIL_PARA, CARD_PARA), "notes.txt", floor=Label.PUBLIC)

    # The three chunks and, in the same batch, the file name as it is and with its separators as spaces.
    assert pipeline.classifier.calls == [3 + 2]  # type: ignore[attr-defined]


def test_personal_data_in_the_file_name_is_every_chunks() -> None:
    """A file named after a person is about that person: each chunk carries the name's personal data (entity
    types, label, personal flag) and the document says where in the name it is (for masking citations)."""
    name = "from-alice.smith@example.com-renewal.txt"
    doc = make_pipeline(max_tokens=20).process(text_file(PUBLIC, CARD_PARA), name, floor=Label.PUBLIC)

    assert all(c.has_personal_data and "EMAIL_ADDRESS" in c.entity_types for c in doc.chunks)
    assert [c.label for c in doc.chunks] == [Label.CONFIDENTIAL, Label.RESTRICTED]  # the card's chunk stays higher
    assert [c.findings == () for c in doc.chunks] == [True, False]  # text spans are the text's own
    [pii] = doc.names_pii
    assert pii.name == name and {name[f.start:f.end] for f in pii.findings} >= {"alice.smith@example.com"}


def test_a_file_name_without_personal_data_adds_nothing() -> None:
    for name in ("notes.txt", "q3-office_hours.md"):
        doc = make_pipeline(max_tokens=20).process(text_file(PUBLIC), name, floor=Label.PUBLIC)
        assert doc.names_pii == () and not doc.chunks[0].has_personal_data and doc.chunks[0].label == Label.PUBLIC


def test_each_distinct_chunk_text_is_embedded_once() -> None:
    cache = InMemoryEmbeddingCache()
    pipeline = make_pipeline(cache, max_tokens=20)
    embedder: Any = pipeline.embedder
    data = text_file(PUBLIC, EMAIL_PARA, PUBLIC)  # a duplicate paragraph inside the document

    first = pipeline.process(data, "a.txt", floor=Label.PUBLIC)
    second = pipeline.process(data, "copy-of-a.txt", floor=Label.PUBLIC)

    assert embedder.embedded == [PUBLIC, EMAIL_PARA, EMAIL_MASKED]  # the personal chunk's masked text too
    assert [c.embedding_cached for c in first.chunks] == [False, False, True]
    assert [c.masked_embedding_cached for c in first.chunks] == [True, False, True]
    assert [c.embedding_cached for c in second.chunks] == [True, True, True]
    assert [c.masked_embedding_cached for c in second.chunks] == [True, True, True]
    assert first.chunks[0].vector == first.chunks[2].vector == second.chunks[0].vector
    assert [c.masked_vector is not None for c in first.chunks] == [False, True, False]
    assert first.chunks[1].masked_vector == second.chunks[1].masked_vector != first.chunks[1].vector
    assert len(cache) == 3


def test_process_many_batches_embedding_and_reports_bad_files_in_place(read_fixture: Any) -> None:
    pipeline = make_pipeline(InMemoryEmbeddingCache(), max_tokens=20)
    embedder: Any = pipeline.embedder
    items = [
        IngestItem(text_file(PUBLIC, EMAIL_PARA), "a.txt", Label.PUBLIC),
        IngestItem(b"", "empty.txt", Label.PUBLIC),
        IngestItem(read_fixture("encrypted.pdf"), "encrypted.pdf", Label.PUBLIC),
        IngestItem(read_fixture("corrupt.docx"), "corrupt.docx", Label.PUBLIC),
        IngestItem(text_file(EMAIL_PARA, CARD_PARA), "b.txt", Label.CONFIDENTIAL),
    ]

    results = pipeline.process_many(items)

    assert [type(r) for r in results[1:4]] == [EmptyDocumentError, EncryptedDocumentError, CorruptDocumentError]
    # one embed call, EMAIL_PARA and its masked text once
    assert embedder.embedded == [PUBLIC, EMAIL_PARA, EMAIL_MASKED, CARD_PARA, CARD_MASKED]
    a, b = results[0], results[4]
    assert not isinstance(a, Exception) and not isinstance(b, Exception)
    assert [c.embedding_cached for c in b.chunks] == [True, False]
    assert [c.label for c in b.chunks] == [Label.CONFIDENTIAL, Label.RESTRICTED]


def test_a_document_past_the_chunk_limit_is_refused_before_classify_and_embed() -> None:
    pipeline = IngestPipeline(FakeClassifier(), FakeEmbedder(), None, max_bytes=MAX, max_tokens=20, max_chunks=2)
    embedder: Any = pipeline.embedder
    items = [
        IngestItem(text_file(PUBLIC, EMAIL_PARA, CARD_PARA), "three.txt", Label.PUBLIC),
        IngestItem(text_file(PUBLIC, CARD_PARA), "two.txt", Label.PUBLIC),
    ]

    refused, stored = pipeline.process_many(items)

    assert isinstance(refused, TooManyChunksError) and refused.code == "too_many_chunks"
    assert "more chunks than the limit of 2" in refused.message
    assert not isinstance(stored, Exception) and len(stored.chunks) == 2
    assert EMAIL_PARA not in embedder.embedded  # the refused file's own chunk was never embedded
    assert embedder.embedded[:2] == [PUBLIC, CARD_PARA]  # (then the card chunk's masked text, for its twin)
    with pytest.raises(ValueError):
        IngestPipeline(FakeClassifier(), FakeEmbedder(), None, max_chunks=0)


def test_process_raises_the_typed_error() -> None:
    with pytest.raises(EmptyDocumentError):
        make_pipeline().process(b"", "empty.txt", floor=Label.PUBLIC)


def test_works_without_a_cache() -> None:
    doc = make_pipeline(None).process(text_file(PUBLIC, PUBLIC), "a.txt", floor=Label.PUBLIC)

    assert doc.chunks


def test_a_label_map_that_contradicts_the_classifier_is_refused() -> None:
    other = LabelMap(mapping={"PERSON": Label.RESTRICTED})

    with pytest.raises(ValueError):
        IngestPipeline(FakeClassifier(), FakeEmbedder(), None, label_map=other)


def test_a_relabelled_pipeline_takes_the_map_with_its_classifier_or_refuses() -> None:
    """with_label_map: the copy labels with the new map, the original keeps its own; a classifier that holds a
    map of its own but cannot take another is refused (labels and personal flags never come from two maps)."""

    class Relabelling(FakeClassifier):
        def with_label_map(self, label_map: LabelMap) -> Relabelling:
            other = Relabelling()
            other.label_map = label_map
            return other

    raised = LabelMap(mapping={"EMAIL_ADDRESS": Label.RESTRICTED})
    base = IngestPipeline(Relabelling(), FakeEmbedder(), None)
    relabelled = base.with_label_map(raised)
    doc = relabelled.process(b"# Note\n\nWrite to ann@example.com today.\n", "note.md", floor=Label.PUBLIC)
    assert {c.label for c in doc.chunks} == {Label.RESTRICTED}
    assert doc.versions.label_map == raised.version
    assert base.label_map.version == base.classifier.label_map.version == LabelMap().version
    assert relabelled.parser is base.parser and relabelled.embedder is base.embedder
    with pytest.raises(TypeError):
        IngestPipeline(FakeClassifier(), FakeEmbedder(), None).with_label_map(raised)


def test_pipeline_opens_no_socket(read_fixture: Any, socket_events: list[str]) -> None:
    make_pipeline().process(read_fixture("report.docx"), "report.docx", floor=Label.PUBLIC)

    assert socket_events == []


@pytest.mark.slow
def test_pipeline_with_the_real_embedder(real_embedder: Any, read_fixture: Any, socket_events: list[str]) -> None:
    pipeline = IngestPipeline(FakeClassifier(), real_embedder, InMemoryEmbeddingCache(), max_bytes=MAX)

    doc = pipeline.process(read_fixture("report.docx"), "report.docx", floor=Label.INTERNAL)

    assert socket_events == []
    assert doc.chunks and all(len(c.vector) == 384 for c in doc.chunks)
    assert all(c.draft.token_count <= 200 for c in doc.chunks)
    assert abs(float(np.linalg.norm(np.array(doc.chunks[0].vector))) - 1.0) < 1e-5
    assert doc.versions.embedding_model.startswith("sentence-transformers/all-MiniLM-L6-v2@")
