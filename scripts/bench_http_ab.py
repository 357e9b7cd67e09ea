"""HTTP search latency of this checkout against another one, or against other settings, in the same run (A/B).

    git worktree add /tmp/base <revision>
    .venv/bin/python scripts/bench_http_ab.py --store DIR/n100000 --baseline-repo /tmp/base \\
        --scifact /work/shared/data/scifact [--queries 300] [--warmup 40]
    .venv/bin/python scripts/bench_http_ab.py --store DIR/n100000 --baseline-env MEMORY_SEARCH_EMBED_BATCH_MAX=1 \\
        --scifact /work/shared/data/scifact

`--store` is a store scripts/bench_query.py kept (`--data-dir DIR` -> DIR/n<N>). It is copied once to a
temporary directory, since one process owns an embedded store. Server A (this checkout's code) serves the
original. Server B (`--baseline-repo`'s code, default this checkout, same interpreter and packages, plus any
`--baseline-env` settings) serves the copy. Both run
`create_app(Settings())` under uvicorn on 127.0.0.1. The baseline must be able to open the store, so use a
store last opened by a revision whose migrations the baseline has.

For each query (bench_query's latency queries over its six callers), POST /v1/search goes to both servers,
alternating which goes first, so host noise hits both alike. With `--concurrency C`, blocks of C queries are
sent at once (C connections) to one server and then to the other, and requests/s is reported too. The
script prints each side's HTTP p50/p95/mean, the search() latency each server reports and requests/s, plus
ratio = p50(A) / p50(B) (below 1: A is faster).
The last stdout line is ONE JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _bench_common as bc
from bench_query import TOP_K, caller_headers, latency_queries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bc.store_bench_args(ap, warmup=40)
    ap.add_argument("--baseline-repo", type=Path, default=bc.REPO, help="checkout of the code to compare against "
                    "(default: this one)")
    ap.add_argument("--concurrency", type=int, default=1, help="requests sent at once to one server (default 1)")
    ap.add_argument("--baseline-env", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for server B only (repeatable), e.g. MEMORY_SEARCH_EMBED_BATCH_MAX=1")
    args = bc.parse_store_bench_args(ap, argv)
    baseline_env = dict(kv.split("=", 1) for kv in args.baseline_env if "=" in kv)
    if len(baseline_env) != len(args.baseline_env):
        ap.error("--baseline-env takes KEY=VALUE")
    if not (args.baseline_repo / "memory" / "api" / "app.py").is_file():
        ap.error(f"{args.baseline_repo} is not a checkout of this project")

    import httpx

    queries = latency_queries(args.scifact, args.seed)
    heads = caller_headers()
    lat: dict[str, list[float]] = {"A": [], "B": []}
    served: dict[str, list[float]] = {"A": [], "B": []}
    wall = {"A": 0.0, "B": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        copy = Path(tmp) / args.store.name
        shutil.copytree(args.store, copy)
        servers = {"A": bc.ServerProcess(args.store),
                   "B": bc.ServerProcess(copy, repo=args.baseline_repo, env=baseline_env)}
        try:
            n = args.concurrency
            clients = {k: [httpx.Client(base_url=s.base_url, timeout=60.0) for _ in range(n)]
                       for k, s in servers.items()}
            pool = ThreadPoolExecutor(n)

            def send(side: str, slot: int, i: int) -> tuple[float, Any]:
                body = {"query": queries[i % len(queries)], "top_k": TOP_K}
                t = time.perf_counter()
                resp = clients[side][slot].post("/v1/search", json=body, headers=heads[i % len(heads)])
                return (time.perf_counter() - t) * 1000, resp

            # Blocks of `n` requests sent at once to one server, then the same block to the other (which goes
            # first alternates); with n = 1 this is one request to each, in turn.
            for block, start in enumerate(range(0, args.warmup + args.queries, n)):
                for side in ("A", "B") if block % 2 == 0 else ("B", "A"):
                    t_block = time.perf_counter()
                    results = list(pool.map(lambda k, side=side, start=start: send(side, k, start + k), range(n)))
                    block_s = time.perf_counter() - t_block
                    for _, resp in results:
                        if resp.status_code != 200:
                            print(f"{side}: HTTP {resp.status_code}: {resp.text[:300]}", file=sys.stderr)
                            return 1
                    if start >= args.warmup:
                        wall[side] += block_s
                        for dt, resp in results:
                            lat[side].append(dt)
                            served[side].append(float(resp.json().get("latency_ms", 0.0)))
            pool.shutdown()
            for cs in clients.values():
                for c in cs:
                    c.close()
        finally:
            for s in servers.values():
                s.stop()

    out: dict[str, Any] = {"queries": args.queries, "store": str(args.store), "baseline_env": baseline_env,
                           "concurrency": args.concurrency}
    for side in ("A", "B"):
        out[side] = {"p50_ms": bc.r(bc.percentile(lat[side], 50)), "p95_ms": bc.r(bc.percentile(lat[side], 95)),
                     "mean_ms": bc.r(statistics.fmean(lat[side])),
                     "search_latency_p50_ms": bc.r(bc.percentile(served[side], 50)),
                     "requests_per_s": bc.r(len(lat[side]) / max(wall[side], 1e-9), 2)}
        o = out[side]
        name = "this checkout" if side == "A" else f"{args.baseline_repo} {baseline_env}"
        print(f"{side} ({name}): HTTP p50 {o['p50_ms']} ms, "
              f"p95 {o['p95_ms']} ms, mean {o['mean_ms']} ms; search() p50 {o['search_latency_p50_ms']} ms; "
              f"{o['requests_per_s']} requests/s")
    out["ratio_p50"] = bc.r(out["A"]["p50_ms"] / out["B"]["p50_ms"])
    print(f"ratio p50 A/B {out['ratio_p50']}", flush=True)
    bc.emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
