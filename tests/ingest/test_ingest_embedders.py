"""Embedders: weight verification, normalised float32 vectors, token counting, and the embedding cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.embedders import (
    MINILM_SAFETENSORS_SHA256,
    InMemoryEmbeddingCache,
    SentenceTransformerEmbedder,
    default_minilm_path,
    file_sha256,
)
from ingest.errors import EmbeddingError


def test_wrong_weights_hash_is_refused_before_loading() -> None:
    with pytest.raises(EmbeddingError) as caught:
        SentenceTransformerEmbedder(expected_sha256="0" * 64)

    assert caught.value.code == "embedding_failed"
    assert MINILM_SAFETENSORS_SHA256 in str(caught.value)


def test_other_weights_are_refused(tmp_path: Path) -> None:
    for item in default_minilm_path().iterdir():
        if item.name != "model.safetensors":
            (tmp_path / item.name).symlink_to(item)
    (tmp_path / "model.safetensors").write_bytes(b"not the upstream weights")

    with pytest.raises(EmbeddingError, match="does not match"):
        SentenceTransformerEmbedder(tmp_path)


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError):
        SentenceTransformerEmbedder(tmp_path)


def test_installed_weights_match_the_upstream_release() -> None:
    assert file_sha256(default_minilm_path() / "model.safetensors") == MINILM_SAFETENSORS_SHA256


def test_in_memory_cache_round_trip_is_per_model() -> None:
    cache = InMemoryEmbeddingCache()
    vector = np.array([0.6, 0.8], dtype=np.float32)

    cache.put_many("model-a", {"sha1": vector})

    assert set(cache.get_many("model-a", ["sha1", "sha2"])) == {"sha1"}
    assert cache.get_many("model-b", ["sha1"]) == {}
    np.testing.assert_array_equal(cache.get_many("model-a", ["sha1"])["sha1"], vector)
    assert (cache.hits, cache.misses) == (2, 2)


@pytest.mark.slow
def test_real_embedder_vectors_are_normalised_float32(real_embedder: Any) -> None:
    vectors = real_embedder.embed(["The budget review is on Monday.", "Hiring plans for Q3.", ""])

    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert real_embedder.dim == 384
    assert real_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2@" + MINILM_SAFETENSORS_SHA256[:12]


@pytest.mark.slow
def test_real_embedder_is_deterministic_and_semantic(real_embedder: Any) -> None:
    docs = ["The vendor contract renewal is due in March.", "Our cat sleeps on the sofa all afternoon."]
    query = real_embedder.embed_query("when must we renew the supplier agreement?")

    first, second = real_embedder.embed(docs), real_embedder.embed(docs)

    np.testing.assert_allclose(first, second, atol=1e-6)
    assert query.shape == (384,)
    assert float(first[0] @ query) > float(first[1] @ query)
    assert real_embedder.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_real_embedder_counts_tokens_without_truncation(real_embedder: Any) -> None:
    long_text = " ".join(["budget"] * 600)

    assert real_embedder.count_tokens("") == 0
    assert real_embedder.count_tokens("Hello world") == 2
    assert real_embedder.count_tokens(long_text) == 600  # tokenizer.json alone would truncate at 128


@pytest.mark.slow
def test_real_embedder_small_batches_give_encodes_vectors(real_embedder: Any) -> None:
    """A query or a batch of at most `batch_size` texts goes through the model without `encode`'s per-call
    preamble: the vectors are `encode`'s, for one text (bit for bit), texts of mixed lengths, an empty text and
    one the model truncates."""
    texts = ["when must we renew the supplier agreement?", "", "Hiring plans for Q3.",
             " ".join(["budget"] * 600), "Contact alice.smith@example.com about payroll."]

    def encode(batch: list[str]) -> np.ndarray:
        return real_embedder._model.encode(batch, batch_size=real_embedder.batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)

    np.testing.assert_array_equal(real_embedder.embed_query(texts[0]), encode(texts[:1])[0])
    np.testing.assert_allclose(real_embedder.embed(texts), encode(texts), atol=1e-6)
    many = [f"{t} ({i})" for i in range(real_embedder.batch_size + 3) for t in texts[:1]]  # encode's own path
    np.testing.assert_allclose(real_embedder.embed(many), encode(many), atol=1e-6)
