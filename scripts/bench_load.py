"""Search throughput and latency under concurrent load, with and without query-embedding batching.

    .venv/bin/python scripts/bench_load.py --store DIR/n100000 --scifact /work/shared/data/scifact \\
        [--concurrency 1,2,4,8] [--per-client 60] [--rounds 2] [--warmup 20]

`--store` is a store scripts/bench_query.py kept (`--data-dir DIR` -> DIR/n<N>); searches append audit
records to it, as bench_query does. It is copied once to a temporary directory (one process owns an embedded
store). Two API servers (`create_app(Settings())` under uvicorn, as `memory serve`) run side by side: one on
the original with the default settings (concurrent searches share forward passes: memory.query_batching),
one on the copy with MEMORY_SEARCH_EMBED_BATCH_MAX=1 (every search embeds its own query alone). Only one is
under load at a time.

For each round and each C in `--concurrency`, C clients (threads, one HTTP connection each) send
POST /v1/search back to back, `--per-client` requests each, to one server and then the other (which goes
first alternates), so host drift hits both alike: bench_query's latency queries over its six callers.
Printed per variant and C: requests/s, HTTP p50/p95, errors, and the mean batch size the server saw (from
/metrics); then batched/unbatched ratios of throughput and p50 (pooled over rounds).
The last stdout line is ONE JSON object.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _bench_common as bc
from bench_query import TOP_K, caller_headers, latency_queries

VARIANTS: dict[str, dict[str, str]] = {"unbatched": {"MEMORY_SEARCH_EMBED_BATCH_MAX": "1"}, "batched": {}}


def mean_batch(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the server's memory_query_embed_batch_size histogram (0, 0 when absent)."""
    found = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^memory_query_embed_batch_size_(sum|count) (\S+)$", metrics_text, re.M)}
    return found.get("sum", 0.0), found.get("count", 0.0)


def load(base_url: str, queries: list[str], clients: int, per_client: int, offset: int) -> dict[str, Any]:
    import httpx

    heads = caller_headers()
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(w: int) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as c:
            for i in range(per_client):
                j = offset + w * per_client + i
                t = time.perf_counter()
                r = c.post("/v1/search", json={"query": queries[j % len(queries)], "top_k": TOP_K},
                           headers=heads[j % len(heads)])
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"latencies": lat, "wall_s": wall, "errors": errors[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bc.store_bench_args(ap, warmup=20)
    ap.add_argument("--concurrency", default="1,2,4,8", help="client counts, comma-separated")
    ap.add_argument("--per-client", type=int, default=60, help="requests each client sends per level")
    ap.add_argument("--rounds", type=int, default=2)
    args = bc.parse_store_bench_args(ap, argv)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    if not levels or min(levels) < 1 or args.per_client < 1 or args.rounds < 1:
        ap.error("--concurrency needs positive integers; --per-client and --rounds must be positive")
    queries = latency_queries(args.scifact, args.seed)

    import httpx

    pooled: dict[str, dict[int, dict[str, Any]]] = {v: {c: {"lat": [], "wall": 0.0, "n": 0, "errors": 0}
                                                        for c in levels} for v in VARIANTS}
    batches: dict[str, dict[int, list[float]]] = {v: {c: [0.0, 0.0] for c in levels} for v in VARIANTS}
    offset = 0
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        copy = Path(tmp) / args.store.name
        shutil.copytree(args.store, copy)
        servers: dict[str, bc.ServerProcess] = {}
        try:
            servers["batched"] = bc.ServerProcess(args.store, env=VARIANTS["batched"])
            servers["unbatched"] = bc.ServerProcess(copy, env=VARIANTS["unbatched"])
            for server in servers.values():
                load(server.base_url, queries, 1, args.warmup, 0)
            for rnd in range(args.rounds):
                for c in levels:
                    order = list(VARIANTS) if (rnd + c) % 2 == 0 else list(reversed(VARIANTS))
                    for variant in order:
                        url = servers[variant].base_url
                        before = mean_batch(httpx.get(f"{url}/metrics", timeout=30).text)
                        res = load(url, queries, c, args.per_client, offset)
                        after = mean_batch(httpx.get(f"{url}/metrics", timeout=30).text)
                        p = pooled[variant][c]
                        p["lat"] += res["latencies"]
                        p["wall"] += res["wall_s"]
                        p["n"] += len(res["latencies"])
                        p["errors"] += res["errors"]
                        batches[variant][c][0] += after[0] - before[0]
                        batches[variant][c][1] += after[1] - before[1]
                        lat = res["latencies"]
                        print(f"round {rnd + 1} {variant:9s} clients {c:2d}: {len(lat) / res['wall_s']:6.1f} req/s  "
                              f"p50 {bc.percentile(lat, 50):7.1f}  p95 {bc.percentile(lat, 95):7.1f} ms  "
                              f"errors {res['errors']}", flush=True)
                    offset += c * args.per_client
        finally:
            for server in servers.values():
                server.stop()

    summary: dict[str, Any] = {}
    print(f"{'variant':10s} {'clients':>7s} {'req/s':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch':>6s} {'errors':>6s}")
    for variant in VARIANTS:
        rows = {}
        for c in levels:
            p = pooled[variant][c]
            s, n = batches[variant][c]
            rows[str(c)] = {"rps": bc.r(p["n"] / p["wall"], 1), "p50_ms": bc.r(bc.percentile(p["lat"], 50), 1),
                            "p95_ms": bc.r(bc.percentile(p["lat"], 95), 1),
                            "mean_batch": bc.r(s / n, 2) if n else None, "errors": p["errors"]}
            row = rows[str(c)]
            print(f"{variant:10s} {c:7d} {row['rps']:7.1f} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} "
                  f"{row['mean_batch'] if row['mean_batch'] is not None else '-':>6} {row['errors']:6d}")
        summary[variant] = rows
    ratios = {str(c): {"rps": bc.r(summary["batched"][str(c)]["rps"] / summary["unbatched"][str(c)]["rps"]),
                       "p50": bc.r(summary["batched"][str(c)]["p50_ms"] / summary["unbatched"][str(c)]["p50_ms"])}
              for c in levels}
    for c in levels:
        print(f"batched / unbatched at {c} clients: throughput x{ratios[str(c)]['rps']}, p50 x{ratios[str(c)]['p50']}")
    bc.emit_json({"levels": levels, "per_client": args.per_client, "rounds": args.rounds, **summary,
                  "batched_over_unbatched": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
