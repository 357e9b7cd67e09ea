"""Filtered top-k latency and recall of the embedded (Qdrant Edge) vector store.

Builds N points (clustered random vectors, so the HNSW graph sees structure like real embeddings) with ACL
payloads in a temporary directory, runs `optimize()`, then for access filters admitting ~50%, 10%, 1% and
0.1% of the points measures p50/p95 filtered top-10 latency and recall@10 against exact brute force
(numpy over the points `AccessFilter.matches` admits). Prints a table, then ONE JSON object as the last line.

    .venv/bin/python scripts/bench_vector_filter.py --points 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from memory.stores.base import AccessFilter, ChunkPayload, JurisdictionGrant, VectorPoint
from memory.stores.edge import EdgeVectorStore
from memory.stores.edge_config import EdgeTuning

SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
NOW = 1_700_000_000.0
JURISDICTIONS = ("EU", "US", "UK", "IN")
# Clauses other than groups admit ~0.62 of points (label<=2: 0.75, jurisdiction grant: ~0.875,
# valid now: 0.95, committed and not retracted: ~0.99); group thresholds are scaled by it.
OTHER_PASS = 0.62


def make_payloads(n: int, rng: np.random.Generator) -> list[ChunkPayload]:
    """ACL payloads: the group tiers are nested (g0.1% ⊂ g1% ⊂ ...) and independent of the vectors."""
    u = rng.random(n)
    labels = rng.integers(0, 4, n)
    juris = rng.integers(0, 4, n)
    personal = rng.random(n) < 0.5
    superseded = rng.random(n) < 0.05
    retracted = rng.random(n) < 0.005
    uncommitted = rng.random(n) < 0.005
    out = []
    for i in range(n):
        groups = [f"team-{i % 50}"] + [f"tier-{s}" for s in SELECTIVITIES if u[i] < min(1.0, s / OTHER_PASS)]
        out.append(
            ChunkPayload(
                chunk_id=f"c{i}",
                source_id=f"src-{i % 20}",
                document_id=f"d{i // 10}",
                version_id=f"v{i // 10}",
                read_groups=tuple(groups),
                label=int(labels[i]),
                jurisdiction=JURISDICTIONS[juris[i]],
                personal=bool(personal[i]),
                entity_types=("PERSON",) if personal[i] else (),
                valid_from=NOW - 1000.0,
                valid_to=NOW - 10.0 if superseded[i] else 253402300799.0,
                retracted=bool(retracted[i]),
                committed=not uncommitted[i],
            )
        )
    return out


def make_vectors(n: int, dim: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    centroids = rng.normal(size=(max(8, n // 200), dim)).astype(np.float32)
    x = centroids[rng.integers(0, len(centroids), n)] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def access_filter(selectivity: float) -> AccessFilter:
    grants = (
        JurisdictionGrant("EU", True),
        JurisdictionGrant("US", True),
        JurisdictionGrant("UK", True),
        JurisdictionGrant("IN", False),
    )
    return AccessFilter(groups=frozenset({f"tier-{selectivity}"}), max_label=2, grants=grants, as_of=NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    defaults = EdgeTuning()
    parser.add_argument("--full-scan-kb", type=int, default=defaults.full_scan_threshold_kb)
    parser.add_argument("--hnsw-ef", type=int, default=defaults.hnsw_ef)
    parser.add_argument("--acorn-max-selectivity", type=float, default=defaults.acorn_max_selectivity)
    parser.add_argument("--spread", type=float, default=0.6, help="cluster noise; large = uniform random")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    payloads = make_payloads(args.points, rng)
    vectors = make_vectors(args.points, args.dim, args.spread, rng)
    tuning = EdgeTuning(
        full_scan_threshold_kb=args.full_scan_kb,
        hnsw_ef=args.hnsw_ef,
        acorn_max_selectivity=args.acorn_max_selectivity,
    )
    ids = [str(uuid.UUID(int=i + 1)) for i in range(args.points)]

    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        store = EdgeVectorStore.open(Path(tmp) / "vectors", args.dim, tuning=tuning)
        t0 = time.perf_counter()
        for start in range(0, args.points, 2000):
            store.upsert(
                [VectorPoint(ids[i], vectors[i], payloads[i]) for i in range(start, min(args.points, start + 2000))]
            )
        upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - t0
        stats = store.stats()

        results: dict[str, dict[str, float]] = {}
        for sel in SELECTIVITIES:
            flt = access_filter(sel)
            mask = np.fromiter((flt.matches(p) for p in payloads), dtype=bool, count=args.points)
            subset = np.flatnonzero(mask)
            latencies, recalls = [], []
            for _ in range(args.queries):
                q = vectors[rng.integers(0, args.points)] + 0.3 * rng.normal(size=args.dim).astype(np.float32)
                q /= np.linalg.norm(q)
                k = min(10, len(subset))
                exact = {ids[i] for i in subset[np.argsort(-(vectors[subset] @ q))[:k]]}
                t = time.perf_counter()
                hits = store.search(q, flt, 10)
                latencies.append((time.perf_counter() - t) * 1000)
                recalls.append(len(exact & {h.id for h in hits}) / k if k else 1.0)
            results[str(sel)] = {
                "matching": len(subset),
                "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                "p95_ms": round(float(np.percentile(latencies, 95)), 3),
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "min_recall": round(float(np.min(recalls)), 2),
            }
        store.close()

    print(f"tuning={tuning}")
    print(f"points={args.points} dim={args.dim} upsert={upsert_s:.1f}s optimize={optimize_s:.1f}s stats={stats}")
    print(f"{'target':>8} {'matching':>9} {'p50 ms':>8} {'p95 ms':>8} {'recall@10':>10} {'min':>5}")
    for label, r in results.items():
        print(
            f"{label:>8} {r['matching']:>9} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['recall_at_10']:>10.4f} {r['min_recall']:>5.2f}"
        )
    summary = {
        "points": args.points,
        "dim": args.dim,
        "by_selectivity": results,
        "optimize_s": round(optimize_s, 2),
        "upsert_s": round(upsert_s, 2),
        "indexed_vectors": stats["indexed_vectors"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
