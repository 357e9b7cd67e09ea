"""Audit chain cost: verify throughput, and the search latency overhead of writing the audit record.

(a) Appends N hash-chained search records (10 served chunk ids each, 500 per transaction) to a temporary
    SQLite file, and to PostgreSQL when MEMORY_BENCH_DATABASE_URL points at an EMPTY throwaway database
    (tables are created there and dropped afterwards; refused if audit_log already exists), then times
    `verify_chain` -> records/s.
(b) On one synthetic corpus (SQL rows + Qdrant Edge points, bag-of-words test embedder), runs the same
    searches alternately with the real audit append and with a no-op in its place, each search in its own
    transaction (commit included, as in the API) -> p50 with and without, and their ratio.

Prints human figures, then ONE JSON object as the last line.

    .venv/bin/python scripts/bench_audit.py --records 20000 --searches 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session, sessionmaker

from classifiers.types import Label
from memory import audit, policy_store
from memory import search as search_svc
from memory.db import make_engine, make_sessionmaker, transaction
from memory.ingestion import chunk_id_for, point_id_for
from memory.models import Base, Chunk, Document, DocumentVersion, Principal, Source, SourceReadGroup
from memory.policy import Identity, effective
from memory.stores.base import OPEN_END, ChunkPayload, VectorPoint
from memory.stores.edge import EdgeVectorStore

DIM = 384
WORDS = ("travel policy train hotel meal expense invoice contract payroll holiday laptop security badge "
         "office remote budget audit customer supplier refund pension training parking canteen").split()


class BagOfWordsEmbedder:
    """The tests' fake embedder: deterministic bag-of-words vectors; no model, so timing is ours alone."""

    model_id = "fake-bow@bench"

    def embed_query(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little") % DIM] += 1.0
        if not v.any():
            v[0] = 1.0
        return v / np.linalg.norm(v)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _ids(i: int) -> list[str]:
    return [hashlib.sha256(f"{i}:{k}".encode()).hexdigest()[:32] for k in range(10)]


def append_records(factory: sessionmaker[Session], n: int, batch: int = 500) -> float:
    """Append n search records like the API writes them; returns seconds."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        with transaction(factory) as s:
            for i in range(done, min(n, done + batch)):
                ids = _ids(i)
                audit.append(s, audit.SearchPerformed(
                    query_sha256=hashlib.sha256(str(i).encode()).hexdigest(), top_k=10, as_of=1.7e9 + i,
                    filter_summary={"groups": ["g"], "max_label": "internal", "caller_jurisdictions": ["EU"]},
                    chunk_ids=ids, masked_chunk_ids=[], withheld={}, latency_ms=12.5, embedding_tokens=7,
                ), principal_id=f"p{i % 50}", acting_for=None)
        done = min(n, done + batch)
    return time.perf_counter() - t0


def time_verify(engine: Engine, n: int, label: str) -> dict[str, float]:
    factory = make_sessionmaker(engine)
    append_s = append_records(factory, n)
    with factory() as s:
        t0 = time.perf_counter()
        report = audit.verify_chain(s)
        verify_s = time.perf_counter() - t0
    assert report.valid and report.checked == n, report
    print(f"[{label}] appended {n} records in {append_s:.1f}s ({n / append_s:,.0f}/s); "
          f"verify_chain {verify_s:.2f}s ({n / verify_s:,.0f} records/s)")
    return {"append_s": append_s, "verify_s": verify_s, "verify_records_per_s": n / verify_s}


def make_embedder(real: bool) -> Any:
    """The real all-MiniLM-L6-v2 (what a deployment pays per search) or the tests' bag-of-words double."""
    if not real:
        return BagOfWordsEmbedder()
    from ingest.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(num_threads=2)


def build_corpus(
    factory: sessionmaker[Session], store: EdgeVectorStore, docs: int, per_doc: int, emb: Any = None
) -> None:
    """One EU source readable by group g; docs x per_doc chunks of random vocabulary, in SQL and vectors."""
    rng = np.random.default_rng(7)
    emb = emb or BagOfWordsEmbedder()
    now = datetime.now(UTC)
    points = []
    with transaction(factory) as s:
        policy_store.seed_defaults(s)
        s.add(Principal(id="bench", kind="user", clearance=1, jurisdiction="EU", created_at=now))
        s.flush()
        s.add(Source(id="bench", name="bench", steward_id="bench", jurisdiction="EU", floor=1, uri="",
                     created_at=now, updated_at=now, read_groups=[SourceReadGroup(group="g")]))
        s.flush()
        for d in range(docs):
            did, vid = f"doc{d:05d}", f"doc{d:05d}-v1"
            s.add(Document(id=did, source_id="bench", external_key=did, created_at=now, current_version=1))
            s.add(DocumentVersion(
                id=vid, document_id=did, version=1, status="active", sha256="0" * 64, size_bytes=1, mime_type="t",
                filename="f", uri="u", ingested_at=now, ingested_by="bench", valid_from=0.0, valid_to=OPEN_END,
                pipeline_version="p", parser_version="p", chunker_version="c", classifier_version="c",
                label_map_version="l", embedding_model=emb.model_id, chunk_count=per_doc, vectors_synced=True,
            ))
            s.flush()  # parents before their chunks
            for k in range(per_doc):
                text = " ".join(rng.choice(WORDS, 12))
                sha = hashlib.sha256(text.encode()).hexdigest()
                cid = chunk_id_for(vid, k, sha)
                s.add(Chunk(id=cid, point_id=point_id_for(cid), version_id=vid, document_id=did, source_id="bench",
                            ordinal=k, text=text, sha256=sha, start=0, end=len(text), element_types=[],
                            token_count=12, label=1, personal=False, entity_types=[]))
                points.append(VectorPoint(point_id_for(cid), emb.embed_query(text).tolist(), ChunkPayload(
                    chunk_id=cid, source_id="bench", document_id=did, version_id=vid, read_groups=("g",), label=1,
                    jurisdiction="EU", personal=False, entity_types=(), valid_from=0.0, committed=True)))
    store.upsert(points)


def search_latencies(
    factory: sessionmaker[Session], store: EdgeVectorStore, n: int, emb: Any = None
) -> tuple[list[float], list[float]]:
    """Alternate audited and unaudited searches (same queries, same store) so drift hits both equally."""
    emb = emb or BagOfWordsEmbedder()
    who = effective(Identity("reader", "user", frozenset({"g"}), Label.INTERNAL, "EU", frozenset({"reader"})))
    rng = np.random.default_rng(11)
    queries = [" ".join(rng.choice(WORDS, 3)) for _ in range(n)]
    real_append = search_svc.audit.append

    class _NoRecord:
        seq = 0

    def no_op(*_: Any, **__: Any) -> Any:
        return _NoRecord()

    def one(q: str, append: Callable[..., Any]) -> float:
        search_svc.audit.append = append  # type: ignore[assignment]
        try:
            t0 = time.perf_counter()
            with transaction(factory) as s:
                search_svc.search(s, store=store, embedder=emb, who=who, request=search_svc.SearchRequest(q, 10))
            return (time.perf_counter() - t0) * 1000
        finally:
            search_svc.audit.append = real_append  # type: ignore[assignment]

    for q in queries[:20]:  # warm caches and the HNSW/segment paths
        one(q, real_append)
        one(q, no_op)
    with_audit: list[float] = []
    without: list[float] = []
    for i, q in enumerate(queries):
        arms: list[tuple[Callable[..., Any], list[float]]] = [(real_append, with_audit), (no_op, without)]
        order: Sequence[tuple[Callable[..., Any], list[float]]] = arms if i % 2 == 0 else arms[::-1]
        for fn, sink in order:
            sink.append(one(q, fn))
    return with_audit, without


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="audit records to append and verify")
    parser.add_argument("--searches", type=int, default=300, help="searches per arm (with / without audit)")
    parser.add_argument("--docs", type=int, default=500, help="synthetic documents (x 8 chunks)")
    parser.add_argument("--real-embedder", action="store_true",
                        help="search with the real embedding model (the deployed cost), not the test double")
    args = parser.parse_args()
    summary: dict[str, Any] = {"audit_records": args.records}
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/audit.sqlite3")
        Base.metadata.create_all(engine)
        sq = time_verify(engine, args.records, "sqlite")
        engine.dispose()
        summary.update(verify_s=round(sq["verify_s"], 3), verify_records_per_s=round(sq["verify_records_per_s"]),
                       append_records_per_s=round(args.records / sq["append_s"]))
        pg_url = os.environ.get("MEMORY_BENCH_DATABASE_URL")
        if pg_url:
            pg = make_engine(pg_url)
            if inspect(pg).has_table("audit_log"):
                sys.exit("MEMORY_BENCH_DATABASE_URL must be an empty throwaway database (audit_log exists)")
            Base.metadata.create_all(pg)
            try:
                res = time_verify(pg, args.records, "postgresql")
                summary.update(pg_verify_s=round(res["verify_s"], 3),
                               pg_verify_records_per_s=round(res["verify_records_per_s"]))
            finally:
                Base.metadata.drop_all(pg)
                pg.dispose()
        engine = make_engine(f"sqlite:///{tmp}/search.sqlite3")
        Base.metadata.create_all(engine)
        factory = make_sessionmaker(engine)
        store = EdgeVectorStore.open(Path(tmp) / "edge", DIM)
        try:
            emb = make_embedder(args.real_embedder)
            build_corpus(factory, store, args.docs, 8, emb)
            store.optimize()
            with_audit, without = search_latencies(factory, store, args.searches, emb)
        finally:
            store.close()
            engine.dispose()
    p50_with, p50_without = statistics.median(with_audit), statistics.median(without)
    print(f"[search] {args.searches} searches per arm over {args.docs * 8} chunks (SQLite + Qdrant Edge): "
          f"p50 {p50_with:.2f} ms with audit, {p50_without:.2f} ms without -> x{p50_with / p50_without:.2f}")
    summary.update(search_p50_ms_with_audit=round(p50_with, 3), search_p50_ms_without_audit=round(p50_without, 3),
                   audit_overhead_ratio=round(p50_with / p50_without, 3),
                   embedder="all-MiniLM-L6-v2" if args.real_embedder else "bag-of-words test double")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
