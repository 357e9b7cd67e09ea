"""What relabelling a store costs (memory.relabel), and what it does to the searches after it.

    .venv/bin/python scripts/bench_relabel.py --store DIR/n100000 [--entity ORGANIZATION --to confidential]

`--store` is one of the stores scripts/bench_query.py builds (`--data-dir DIR` keeps them as DIR/n<N>). It is
COPIED to a temporary directory first (`--work-dir` to choose where; the copy is deleted at the end), so the
store itself is never relabelled. On the copy, in this order:
1. a dry run under the map in force (what every run pays to find out there is nothing to do), then a run;
2. a new map version raising `--entity` to `--to` (ORGANIZATION is the commonest entity type in SciFact and the
   policy corpus), and a relabel under it (SQL and payloads); then the same run again (nothing left to do);
3. the default map back, and the relabel that lowers the same chunks again;
4. bare vector searches (`search_unfiltered`, fixed random unit vectors, p50 of `--searches`) before step 2,
   after step 3, and after `optimize` (every patched point leaves its indexed segment until then).
The last stdout line is ONE JSON object: {"chunks", "dry_run_s", "noop_s", "raise_s", "raised", "points_patched",
"chunks_per_s", "again_s", "lower_s", "lowered", "search_p50_ms": {"before", "after", "optimized"}, ...}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench_common as bc
import numpy as np


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="a bench_query store dir (e.g. DIR/n100000)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where to copy the store (default: a temp dir)")
    ap.add_argument("--entity", default="ORGANIZATION")
    ap.add_argument("--to", default="confidential", help="the label the new map gives --entity")
    ap.add_argument("--searches", type=int, default=300)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    bc.setup_logging(args.verbose)
    if not (args.store / "qdrant-edge").is_dir():
        ap.error(f"{args.store} is not a bench_query store (no qdrant-edge/ inside)")

    from classifiers.labels import LabelMap
    from memory import policy_store, relabel
    from memory.bootstrap import Container
    from memory.db import transaction

    work = Path(tempfile.mkdtemp(prefix="bench-relabel-", dir=args.work_dir))
    try:
        copy = work / args.store.name
        _, copy_s = _timed(lambda: shutil.copytree(args.store, copy))
        print(f"copied {args.store} in {copy_s:.1f} s", file=sys.stderr)
        c = Container(bc.bench_settings(copy))
        c.prepare_database()
        vectors = np.random.default_rng(7).standard_normal((args.searches, c.store.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        def search_p50() -> float:
            times = []
            for v in vectors:
                t0 = time.perf_counter()
                c.store.search_unfiltered(v, 10)
                times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times[len(times) // 10:])  # the first tenth warms the caches

        def run(**kw: Any) -> tuple[relabel.RelabelReport, float]:
            return _timed(lambda: relabel.relabel(c.sessions, c.store, actor="bench", **kw))

        def put_map(body: dict[str, object]) -> None:
            with transaction(c.sessions) as s:
                policy_store.put_label_map(s, body=body, actor="bench")

        before = search_p50()
        dry, dry_s = run(dry_run=True)
        noop, noop_s = run()
        print(f"dry run {dry_s:.2f} s, run {noop_s:.2f} s over {dry.chunks} chunks "
              f"({dry.versions_relabelled} versions to relabel)", file=sys.stderr)
        default = LabelMap().to_json()
        put_map({**default, "mapping": {**default["mapping"], args.entity: args.to}})  # type: ignore[dict-item]
        raised, raise_s = run()
        again, again_s = run()
        put_map(default)
        lowered, lower_s = run()
        after = search_p50()
        _, optimize_s = _timed(c.store.optimize)  # type: ignore[attr-defined]
        optimized = search_p50()
        c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"raise {args.entity}->{args.to}: {raised.raised} chunks raised, {raised.points_patched} points written in "
          f"{raise_s:.2f} s; again {again_s:.2f} s ({again.points_patched} written); lowered {lowered.lowered} in "
          f"{lower_s:.2f} s; bare search p50 {before:.3f} -> {after:.3f} ms, {optimized:.3f} after optimize "
          f"({optimize_s:.1f} s)", file=sys.stderr)
    bc.emit_json({
        "chunks": dry.chunks, "versions": dry.versions, "dry_run_s": bc.r(dry_s), "noop_s": bc.r(noop_s),
        "noop_points_patched": noop.points_patched, "entity": args.entity, "to": args.to,
        "raise_s": bc.r(raise_s), "raised": raised.raised, "versions_relabelled": raised.versions_relabelled,
        "points_patched": raised.points_patched, "chunks_per_s": bc.r(dry.chunks / raise_s, 1),
        "again_s": bc.r(again_s), "again_points_patched": again.points_patched,
        "lower_s": bc.r(lower_s), "lowered": lowered.lowered,
        "search_p50_ms": {"before": bc.r(before), "after": bc.r(after), "optimized": bc.r(optimized)},
        "optimize_s": bc.r(optimize_s, 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
