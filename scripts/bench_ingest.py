"""Ingestion throughput of the real stack, its embedding-only floor, re-ingest speed-up and peak RSS.

    .venv/bin/python scripts/bench_ingest.py /work/shared/data/policy-corpus [--limit N] [--repeat-check]

Every file under PATH goes into ONE source through the real Container (unstructured, chunker, Presidio +
spaCy, all-MiniLM-L6-v2, SQLite or --database-url, Qdrant Edge) via `memory.documents.ingest_paths`,
exactly as `memory ingest` does. Models are loaded and each parser is warmed (one file per extension
parsed, nothing stored) before the clock starts; the figures are steady-state throughput.

Figures:
- docs_per_s, chunks_per_s: documents ingested (status created) and their chunks / wall seconds of the
  whole ingest_paths call (reading files, parsing, chunking, Presidio, embedding, SQL + vector writes).
- stage seconds: sums of IngestOutcome.timings_s (parse, chunk, classify, embed, store; `process` is the
  pipeline's per-document share of process_many). Classify and embed are batch stages shared out per doc.
- floor_ratio = end-to-end chunks/s / embedding-only chunks/s, where embedding-only = the same embedder
  (no cache: the embedder has none, the cache lives in the pipeline) embedding the DISTINCT chunk texts of
  the corpus (the work the pipeline must do; it embeds a text once) in one call, timed (best of
  --floor-repeats, since the machine may be shared). Goal >= 0.5. floor_ratio_all_texts uses every
  chunk text including duplicates; floor_ratio_cpu is the same ratio in CPU seconds of this process and
  its parse worker (less sensitive to other load on the machine).
- reingest_speedup = first ingest seconds / second ingest seconds (same files, unchanged bytes: every
  file must come back `unchanged` with no new version). Goal >= 20x.
- peak_rss_mib: peak RSS of this process (models, classifier, store) plus the peak of its parse worker
  process (unstructured; MEMORY_PARSE_TIMEOUT_S=0 parses in-process instead): the two peaks summed, an
  upper bound of what the ingest needs. Both are reported too.

--limit N ingests an evenly spaced sample of N files (sorted order, so every sub-folder is represented);
files keep their relative path as identity (a temporary tree of symlinks is ingested).
--repeat-check additionally verifies, after the second pass, that SQL and the vector store are exactly as
after the first (versions, chunks, points, audit writes unchanged) and exits 1 if not.
The last stdout line is ONE JSON object.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

import _bench_common as bc
import psutil


def select_files(root: Path, limit: int | None) -> tuple[list[str], Path | None]:
    """Paths to pass to ingest_paths: [root], or a temp tree of symlinks to an evenly spaced sample."""
    from memory.documents import iter_files

    files = [item[0] for item in iter_files([str(root)]) if isinstance(item, tuple)]
    if limit is None or limit >= len(files):
        return [str(root)], None
    step = len(files) / limit
    chosen = [files[int(i * step)] for i in range(limit)]
    tree = Path(tempfile.mkdtemp(prefix="bench-ingest-sample-"))
    for f in chosen:
        link = tree / f.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f.resolve())
    return [str(tree)], tree


def warm_parsers(paths: list[str]) -> float:
    """Parse one file per extension (nothing stored): the first partition of each type imports a lot."""
    from ingest.parse import parse_document
    from memory.documents import iter_files

    t0 = time.perf_counter()
    seen: set[str] = set()
    for item in iter_files(paths):
        if not isinstance(item, tuple):
            continue
        ext = item[0].suffix.lower()
        if ext in seen:
            continue
        seen.add(ext)
        try:
            parse_document(item[0].read_bytes(), item[0].name, max_bytes=50 * 1024 * 1024)
        except Exception:  # a file the pipeline rejects still warmed its partitioner
            pass
    return time.perf_counter() - t0


def tree_cpu_s() -> float:
    """CPU seconds of this process and its children (the parse worker), live ones included."""
    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def best_of(repeats: int, fn, arg) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Fastest wall time of `repeats` calls (the machine may be shared) and that call's CPU seconds."""
    best = (float("inf"), float("nan"))
    for _ in range(max(1, repeats)):
        t, c = time.perf_counter(), time.process_time()
        fn(arg)
        wall = time.perf_counter() - t
        if wall < best[0]:
            best = (wall, time.process_time() - c)
    return best


def snapshot(container, source_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from memory.models import AuditRecord, Chunk, DocumentVersion

    with container.sessions() as s:
        versions = s.execute(select(func.count()).select_from(DocumentVersion)).scalar_one()
        chunks = s.execute(select(func.count()).select_from(Chunk).where(Chunk.source_id == source_id)).scalar_one()
        audit = s.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
    return {"versions": int(versions), "chunks": int(chunks), "audit_records": int(audit),
            "points": int(container.store.count())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("path", type=Path, help="file or folder to ingest (e.g. /work/shared/data/policy-corpus)")
    ap.add_argument("--limit", type=int, default=None, help="ingest an evenly spaced sample of N files")
    ap.add_argument("--repeat-check", action="store_true",
                    help="verify the second pass changed nothing in SQL or the vector store (exit 1 if it did)")
    ap.add_argument("--data-dir", default=None, help="use this data dir (default: fresh temp dir, deleted)")
    ap.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)")
    ap.add_argument("--batch-files", type=int, default=16, help="files per ingest_files batch (ingest_paths)")
    ap.add_argument("--floor-sample", type=int, default=3000,
                    help="embed a seeded random sample of this many distinct chunk texts for the floor (0 = all)")
    ap.add_argument("--floor-repeats", type=int, default=1,
                    help="time the embedding-only floor this many times, keep the fastest (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    bc.setup_logging(args.verbose)
    if not args.path.exists():
        ap.error(f"{args.path} does not exist")

    from memory import documents
    from memory.bootstrap import Container
    from memory.db import transaction
    from memory.models import Chunk

    paths, sample_tree = select_files(args.path.resolve(), args.limit)
    source_id = "bench-corpus"
    with bc.data_dir_for(args.data_dir, prefix="bench-ingest-", keep=args.keep) as data_dir:
        settings = bc.bench_settings(data_dir, args.database_url)
        container = Container(settings)
        try:
            container.prepare_database()
            with transaction(container.sessions) as s:
                bc.make_principal(s, "bench-steward", groups=("bench",), clearance="restricted",
                                  roles=("steward", "reader"))
                bc.make_source(s, source_id, steward="bench-steward", jurisdiction="EU", read_groups=("bench",))
            t0 = time.perf_counter()
            container.warm()  # store, embedder, classifier, pipeline (as the server does at start)
            warm_models_s = time.perf_counter() - t0
            warm_parse_s = warm_parsers(paths)
            container.classifier.classify(["Warm-up: Jane Doe, jane@example.com, +1 202 555 0143."])
            print(f"warm-up: models {warm_models_s:.1f} s, parsers {warm_parse_s:.1f} s", flush=True)

            cpu: dict[str, float] = {}

            def ingest() -> tuple[list, float]:  # type: ignore[type-arg]
                t, c = time.perf_counter(), tree_cpu_s()
                out = documents.ingest_paths(
                    container.sessions, container.store, container.ingest_pipeline, source_id=source_id, paths=paths,
                    actor="bench-steward", max_bytes=settings.max_upload_bytes, batch_files=args.batch_files)
                cpu.setdefault("first", tree_cpu_s() - c)
                return out, time.perf_counter() - t

            outcomes, first_s = ingest()
            snap1 = snapshot(container, source_id)
            statuses = collections.Counter(o.status for o in outcomes)
            failures = collections.Counter(o.error_code or "unknown" for o in outcomes if o.status == "failed")
            created = [o for o in outcomes if o.status in ("created", "updated")]
            n_docs, n_chunks = len(created), sum(o.chunks for o in created)
            n_embedded = sum(o.embedded for o in created)
            stages: dict[str, float] = collections.defaultdict(float)
            for o in created:
                for k, v in o.timings_s.items():
                    stages[k] += v

            # Embedding-only floor on the same chunk texts, same (warm) embedder, nothing cached.
            with container.sessions() as s:
                texts = [t for (t,) in s.query(Chunk.text).filter(Chunk.source_id == source_id)
                         .order_by(Chunk.document_id, Chunk.ordinal)]
            distinct = list(dict.fromkeys(texts))
            # The floor is a per-chunk rate: a seeded random sample of the same chunk texts measures it as
            # well as all of them, in a fraction of the time (the whole corpus is ~18k chunks).
            sample = distinct
            if args.floor_sample and len(distinct) > args.floor_sample:
                sample = random.Random(0).sample(distinct, args.floor_sample)
            sample_s, embed_distinct_cpu = best_of(args.floor_repeats, container.embedder.embed, sample)
            embed_distinct_s = sample_s * len(distinct) / len(sample)
            embed_distinct_cpu = embed_distinct_cpu * len(distinct) / len(sample)
            embed_all_s = embed_distinct_s * len(texts) / len(distinct)

            outcomes2, second_s = ingest()
            snap2 = snapshot(container, source_id)
            statuses2 = collections.Counter(o.status for o in outcomes2)
            peak = bc.peak_rss_mib()
            worker_peak = sum(bc.proc_rss_mib(p.pid).get("peak_rss_mib", 0.0)
                              for p in psutil.Process().children(recursive=True))
        finally:
            container.close()
    if sample_tree is not None:
        import shutil

        shutil.rmtree(sample_tree, ignore_errors=True)

    chunks_per_s = n_chunks / first_s if first_s > 0 else 0.0
    floor_cps = n_chunks / embed_distinct_s if embed_distinct_s > 0 else float("nan")
    floor_all_cps = len(texts) / embed_all_s if embed_all_s > 0 else float("nan")
    result = {
        "docs_per_s": bc.r(n_docs / first_s if first_s else 0.0),
        "chunks_per_s": bc.r(chunks_per_s),
        "floor_ratio": bc.r(chunks_per_s / floor_cps if floor_cps else float("nan")),
        "reingest_speedup": bc.r(first_s / second_s if second_s > 0 else float("inf"), 1),
        "peak_rss_mib": bc.r(peak + worker_peak, 1),
        "peak_rss_mib_main": bc.r(peak, 1), "peak_rss_mib_parse_worker": bc.r(worker_peak, 1),
        "files": len(outcomes), "docs": n_docs, "chunks": n_chunks, "distinct_chunk_texts": len(distinct),
        "embedded": n_embedded, "statuses": dict(statuses), "failures_by_code": dict(failures),
        "first_ingest_s": bc.r(first_s), "reingest_s": bc.r(second_s), "reingest_statuses": dict(statuses2),
        "stage_s": {k: bc.r(v) for k, v in sorted(stages.items())},
        "embed_only_s": bc.r(embed_distinct_s), "embed_only_chunks_per_s": bc.r(floor_cps),
        "embed_only_texts_per_s": bc.r(len(distinct) / embed_distinct_s if embed_distinct_s else float("nan")),
        "floor_ratio_cpu": bc.r((embed_distinct_cpu / n_chunks) / (cpu["first"] / n_chunks)
                                if n_chunks and cpu.get("first") else float("nan")),
        "first_ingest_cpu_s": bc.r(cpu.get("first", float("nan"))), "embed_only_cpu_s": bc.r(embed_distinct_cpu),
        "floor_ratio_all_texts": bc.r(chunks_per_s / floor_all_cps if floor_all_cps else float("nan")),
        "warm_models_s": bc.r(warm_models_s), "warm_parsers_s": bc.r(warm_parse_s),
        "database": "postgresql" if args.database_url else "sqlite", "limit": args.limit,
    }
    ok = True
    if args.repeat_check:
        problems = []
        if snap1 != snap2:
            problems.append(f"state changed: {snap1} -> {snap2}")
        expected_unchanged = sum(1 for o in outcomes if o.status != "failed")
        if statuses2.get("unchanged", 0) != expected_unchanged:
            problems.append(f"second pass statuses {dict(statuses2)}, expected {expected_unchanged} unchanged")
        result["repeat_check"] = "ok" if not problems else problems
        ok = not problems

    print(f"\nIngest of {args.path} ({len(outcomes)} files; {dict(statuses)}; database {result['database']})")
    print(f"  end to end      {first_s:8.2f} s   {result['docs_per_s']:8.2f} docs/s   {chunks_per_s:8.2f} chunks/s"
          f"   ({n_docs} docs, {n_chunks} chunks, {n_embedded} embedded)")
    print("  stages (s)      " + "  ".join(f"{k} {v:.2f}" for k, v in sorted(stages.items())))
    print(f"  embedding only  {embed_distinct_s:8.2f} s   {floor_cps:8.2f} chunks/s ({len(distinct)} distinct texts)"
          f"   floor_ratio {result['floor_ratio']}  (goal >= 0.5)")
    print(f"  re-ingest       {second_s:8.2f} s   speed-up {result['reingest_speedup']}x  (goal >= 20x)"
          f"   {dict(statuses2)}")
    print(f"  peak RSS        {peak:8.1f} MiB")
    if failures:
        print("  failures        " + ", ".join(f"{k}: {v}" for k, v in failures.most_common()))
    if args.repeat_check:
        print(f"  repeat check    {result['repeat_check']}")
    bc.emit_json(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
