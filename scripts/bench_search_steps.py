"""Where the governed search's time goes: each step right after an embedding (cold) and again at once (warm).

    .venv/bin/python scripts/bench_search_steps.py --store DIR/n100000 --scifact /work/shared/data/scifact \\
        [--queries 300] [--warmup 20]

`--store` is one of the stores scripts/bench_query.py builds (`--data-dir DIR` keeps them as DIR/n<N>); its
SQLite file and Qdrant Edge shard are used in place (searches append audit records, as bench_query does).

For each query (the SciFact claims and policy questions bench_query uses, over its six callers):
1. as the API runs a search: `memory.search.plan` reads the policy in a transaction that commits, the real
   model embeds the query, then `memory.search.search` runs under that plan on that vector (COLD: the
   forward pass has just evicted the CPU caches, which is what every real search meets) and commits;
2. the same again at once on the same vector (WARM: no embedding in between);
3. the same for the bare baseline: an embedding, then `store.search_unfiltered` (cold), then again (warm).
Steps are the service's own `timings_ms` parts (policy SQL + filters, vector search, withheld reasons,
render, audit append) plus the two commits and the session's close (the embedding is not counted). The
printed table gives each step's p50 cold and warm and their ratio; cold service minus cold bare is what
governance adds to a search.

The last stdout line is ONE JSON object: {"cold_ms": {...}, "warm_ms": {...}, "bare_cold_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import _bench_common as bc
import numpy as np
from bench_query import CALLERS, TOP_K, latency_queries


class FixedVector:
    """A QueryEmbedder that returns one precomputed vector (so a search can be rerun without embedding)."""

    def __init__(self, model_id: str, vector: np.ndarray, counter: Any) -> None:
        self.model_id, self._vector, self._counter = model_id, vector, counter

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector

    def count_tokens(self, text: str) -> int:
        return int(self._counter(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bc.store_bench_args(ap, warmup=20)
    args = bc.parse_store_bench_args(ap, argv)

    from memory import principals
    from memory import search as search_svc
    from memory.bootstrap import Container

    queries = latency_queries(args.scifact, args.seed)
    c = Container(bc.bench_settings(args.store))
    c.prepare_database()
    store, emb = c.store, c.embedder
    with c.sessions() as s:
        whos = [principals.resolve_effective(s, caller=principals.get_principal(s, principal_id=pid), acting_for=acting)
                for pid, acting in CALLERS]
    cold: dict[str, list[float]] = {}
    warm: dict[str, list[float]] = {}
    bare_cold: list[float] = []
    bare_warm: list[float] = []

    def service(q: str, who: Any, embed: Callable[[], np.ndarray], into: dict[str, list[float]] | None) -> np.ndarray:
        """As the API runs a search: the policy planned and committed, the query embedded (`embed`, excluded
        from the times), then the search under the plan and its commit."""
        request = search_svc.SearchRequest(query=q, top_k=TOP_K)
        t0 = time.perf_counter()
        with c.sessions() as s:
            planned = search_svc.plan(s, who=who, request=request, max_top_k=c.settings.search_max_top_k,
                                      reads=c.policy_reads)
            t_plan_commit = time.perf_counter()
            s.commit()
            t_embed = time.perf_counter()
            vector = embed()
            t_search = time.perf_counter()
            res = search_svc.search(s, store=store, embedder=FixedVector(emb.model_id, vector, emb.count_tokens),
                                    who=who, request=request, max_top_k=c.settings.search_max_top_k,
                                    planned=planned)
            t_commit = time.perf_counter()
            s.commit()
        t_end = time.perf_counter()
        if into is not None:
            parts = {k: v for k, v in res.timings_ms.items() if k != "embed"}
            parts["commit+close"] = (t_end - t_commit + t_embed - t_plan_commit) * 1000
            parts["total"] = (t_end - t0 - (t_search - t_embed)) * 1000
            for k, v in parts.items():
                into.setdefault(k, []).append(v)
        return vector

    def bare(vector: np.ndarray) -> float:
        t = time.perf_counter()
        store.search_unfiltered(vector, TOP_K)
        return (time.perf_counter() - t) * 1000

    for i in range(args.warmup + args.queries):
        q, who = queries[i % len(queries)], whos[i % len(whos)]
        keep = i >= args.warmup
        vector = service(q, who, lambda q=q: emb.embed_query(q), cold if keep else None)
        service(q, who, lambda vector=vector: vector, warm if keep else None)
        vector = emb.embed_query(q)
        b_cold, b_warm = bare(vector), bare(vector)
        if keep:
            bare_cold.append(b_cold)
            bare_warm.append(b_warm)
    c.close()

    p50 = {k: statistics.median(v) for k, v in cold.items()}
    w50 = {k: statistics.median(v) for k, v in warm.items()}
    print(f"{'step (p50 ms)':16s} {'cold':>7s} {'warm':>7s} {'cold/warm':>9s}")
    for k in p50:
        print(f"{k:16s} {p50[k]:7.3f} {w50[k]:7.3f} {p50[k] / max(w50[k], 1e-9):9.1f}")
    bc50, bw50 = statistics.median(bare_cold), statistics.median(bare_warm)
    print(f"{'bare search':16s} {bc50:7.3f} {bw50:7.3f} {bc50 / max(bw50, 1e-9):9.1f}")
    print(f"governance adds {p50['total'] - bc50:.2f} ms cold, {w50['total'] - bw50:.2f} ms warm "
          f"({args.queries} queries)", flush=True)
    print(json.dumps({"cold_ms": {k: bc.r(v) for k, v in p50.items()}, "warm_ms": {k: bc.r(v) for k, v in w50.items()},
                      "bare_cold_ms": bc.r(bc50), "bare_warm_ms": bc.r(bw50), "queries": args.queries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
