"""The content-addressed embedding cache over SQL: one vector per (model, chunk text sha256).

The same text in two sources, or an unchanged chunk in a new version, is embedded once. Cache writes use
their own short transaction: a cached vector is a pure function of (model, text), so keeping it when the
document's own transaction later fails is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory.clock import utcnow
from memory.db import transaction
from memory.models import Embedding


class SqlEmbeddingCache:
    """Implements ingest.embedders.EmbeddingCache over the `embeddings` table."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def get_many(self, model_id: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(shas))
        with self._factory() as session:
            for i in range(0, len(wanted), 500):
                rows = session.execute(
                    select(Embedding.sha256, Embedding.vector).where(
                        Embedding.model_id == model_id, Embedding.sha256.in_(wanted[i : i + 500])
                    )
                ).all()
                for sha, blob in rows:
                    out[sha] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put_many(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        with transaction(self._factory) as session:
            existing = set(self.get_many(model_id, list(vectors)))
            now = utcnow()
            for sha, vec in vectors.items():
                if sha in existing:
                    continue
                arr = np.asarray(vec, dtype=np.float32)
                session.add(Embedding(sha256=sha, model_id=model_id, dim=int(arr.shape[0]), vector=arr.tobytes(),
                                      created_at=now))
