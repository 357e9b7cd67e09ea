"""The content-addressed embedding cache over SQL: one vector per (model, chunk text sha256).

The same text in two sources, or an unchanged chunk in a new version, is embedded once. Cache writes use
their own short transaction: a cached vector is a pure function of (model, text), so keeping it when the
document's own transaction later fails is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from memory.clock import utcnow
from memory.db import transaction
from memory.models import Embedding

# INSERT ... ON CONFLICT DO NOTHING in the dialects this service runs on.
_INSERT_NEW = {
    "sqlite": sqlite_insert(Embedding).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(Embedding).on_conflict_do_nothing(),
}


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
        """Keep `vectors`; a vector already kept is left as it is. Two ingests of the same text at once (two teams
        uploading one file) both compute its vector and both keep it: the second insert does nothing (INSERT ...
        ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike), where a check-then-insert let it fail with a
        unique violation, which failed that upload."""
        if not vectors:
            return
        now = utcnow()
        rows = []
        for sha, vec in vectors.items():
            arr = np.asarray(vec, dtype=np.float32)
            rows.append({"sha256": sha, "model_id": model_id, "dim": int(arr.shape[0]), "vector": arr.tobytes(),
                         "created_at": now, "tokens": 0})
        with transaction(self._factory) as session:
            insert_new = _INSERT_NEW[session.get_bind().dialect.name]
            for i in range(0, len(rows), 500):
                session.execute(insert_new, rows[i : i + 500])
