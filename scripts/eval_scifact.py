"""Retrieval quality of the governed search API on BEIR SciFact (nDCG@10, Recall@100), unfiltered and
through a non-trivial policy filter that admits every document.

    .venv/bin/python scripts/eval_scifact.py /work/shared/data/scifact [--limit-docs N] [--limit-queries N]

1. Every corpus document becomes a file "<doc id>.txt" holding title, a blank line, and the abstract, and
   goes through the REAL pipeline (unstructured, chunker, Presidio, all-MiniLM-L6-v2) via
   memory.ingestion.ingest_files into four sources (round robin): EU/UK/US residencies, floors public,
   internal, confidential, each readable by its own lab group plus "scifact-all". The external key is the
   file name, so every hit's citation.document_id folds back to the SciFact doc id
   (memory.ingestion.document_id_for).
2. The test queries (qrels/test.tsv) go through POST /v1/search (FastAPI TestClient on the real app),
   top_k=--top-k chunks (default 200, enough for 100 distinct documents), as
   a) `reader-all` (group scifact-all, clearance restricted, EU): sees everything -> ndcg_at_10, recall_at_100;
   b) agent `lab-assistant` (EU) acting for user `fiona` (UK), groups = intersection of several lab
      groups, source_ids = the four sources: a filter with several groups, sources and jurisdiction
      grants that still admits every chunk (checked: store.count(filter) == store.count()) -> *_filtered.
   Chunks are folded to documents by max score; metrics use the trec_eval / pytrec_eval definitions
   (scripts/_bench_common.py, verified to reproduce the published 0.64508 from the reference run).
3. Diagnostics: the same chunks searched exactly (numpy, no HNSW, no filter) -> ndcg_at_10_exact_chunks
   (separates chunking from ANN/filter effects); overlap@10 with the reference whole-document exact run
   (reference/*.trec) when present; documents longer than the model's max_seq_length (MTEB embeds whole
   documents truncated there; the service chunks them instead, at --chunk-max-tokens).
Published all-MiniLM-L6-v2 (MTEB): nDCG@10 0.64508, Recall@100 0.92500.

With --limit-docs the corpus is the selected queries' relevant documents plus the first other documents
up to N: far fewer distractors, so the figures are optimistic and only a smoke test.
The last stdout line is ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _bench_common as bc
import numpy as np

SOURCES = [  # id, jurisdiction, floor, read groups
    ("scifact-a", "EU", "public", ("lab-a", "scifact-all")),
    ("scifact-b", "UK", "internal", ("lab-b", "scifact-all")),
    ("scifact-c", "US", "internal", ("lab-c", "scifact-all")),
    ("scifact-d", "EU", "confidential", ("lab-d", "scifact-all")),
]
PUBLISHED = {"ndcg_at_10": 0.64508, "recall_at_100": 0.925}


def load_corpus(path: Path) -> list[dict[str, str]]:
    with (path / "corpus.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def doc_bytes(d: dict[str, str]) -> bytes:
    return ((d.get("title") or "").strip() + "\n\n" + (d.get("text") or "").strip()).strip().encode() + b"\n"


def select(corpus: list[dict[str, str]], qrels: dict[str, dict[str, int]], limit_docs: int | None,
           limit_queries: int | None) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    qids = sorted(qrels, key=lambda q: (len(q), q))
    if limit_queries:
        qids = qids[:limit_queries]
    sel_qrels = {q: qrels[q] for q in qids}
    if not limit_docs or limit_docs >= len(corpus):
        return corpus, sel_qrels
    needed = {d for q in qids for d, g in qrels[q].items() if g > 0}
    docs = [d for d in corpus if d["_id"] in needed]
    for d in corpus:
        if len(docs) >= limit_docs:
            break
        if d["_id"] not in needed:
            docs.append(d)
    return docs, sel_qrels


def run_queries(search: Any, queries: dict[str, str], top_k: int, key_of: dict[str, str]) -> tuple[dict, list]:
    run: dict[str, list[str]] = {}
    lat: list[float] = []
    for qid, text in queries.items():
        t = time.perf_counter()
        hits = search(text, top_k)
        lat.append((time.perf_counter() - t) * 1000)
        ranked = bc.fold_to_documents((key_of[h["citation"]["document_id"]], h["score"]) for h in hits)
        run[qid] = [d for d, _ in ranked]
    return run, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("path", type=Path, help="BEIR SciFact folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    ap.add_argument("--limit-docs", type=int, default=None, help="relevant docs of the queries + others up to N")
    ap.add_argument("--limit-queries", type=int, default=None, help="first N test queries")
    ap.add_argument("--top-k", type=int, default=200, help="chunks per query (default 200)")
    ap.add_argument("--chunk-max-tokens", type=int, default=None,
                    help="MEMORY_CHUNK_MAX_TOKENS for this run (32..256; default: the service default)")
    ap.add_argument("--data-dir", default=None, help="use this data dir (default: fresh temp dir, deleted)")
    ap.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)")
    ap.add_argument("--batch-files", type=int, default=32, help="files per ingest_files call (default 32)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    bc.setup_logging(args.verbose)
    started = time.perf_counter()

    qrels_all = bc.read_qrels(args.path / "qrels" / "test.tsv")
    queries_all = {q["_id"]: q["text"] for q in map(json.loads, (args.path / "queries.jsonl").open(encoding="utf-8"))}
    corpus, qrels = select(load_corpus(args.path), qrels_all, args.limit_docs, args.limit_queries)
    queries = {q: queries_all[q] for q in qrels}
    print(f"SciFact: {len(corpus)} documents, {len(queries)} test queries", flush=True)

    from fastapi.testclient import TestClient
    from sqlalchemy import select as sql_select

    from memory import policy, policy_store, principals
    from memory.api.app import create_app
    from memory.bootstrap import Container
    from memory.db import transaction
    from memory.embedding_cache import SqlEmbeddingCache
    from memory.ingestion import FileInput, document_id_for, ingest_files
    from memory.models import Chunk, Principal

    overrides: dict[str, Any] = {"search_max_top_k": max(100, args.top_k)}
    if args.chunk_max_tokens:
        overrides["chunk_max_tokens"] = args.chunk_max_tokens
    result: dict[str, Any] = {}
    with bc.data_dir_for(args.data_dir, prefix="eval-scifact-", keep=args.keep) as data_dir:
        settings = bc.bench_settings(data_dir, args.database_url, **overrides)
        c = Container(settings)
        c.prepare_database()
        with transaction(c.sessions) as s:
            bc.make_principal(s, "steward", groups=("stewards",), clearance="restricted", roles=("steward", "reader"))
            for sid, j, floor, groups in SOURCES:
                bc.make_source(s, sid, steward="steward", jurisdiction=j, read_groups=groups, floor=floor)
            tok_all = bc.make_principal(s, "reader-all", groups=("scifact-all",), clearance="restricted",
                                        jurisdiction="EU")
            bc.make_principal(s, "fiona", groups=("lab-a", "lab-b", "lab-c", "lab-d", "lab-z"),
                              clearance="restricted", jurisdiction="UK")
            tok_agent = bc.make_principal(s, "lab-assistant", kind="agent", jurisdiction="EU", clearance="restricted",
                                          groups=("lab-a", "lab-b", "lab-c", "lab-d", "lab-y"), may_act_for=("fiona",))

        # 1. ingest through the real pipeline
        t0 = time.perf_counter()
        c.warm()
        warm_s = time.perf_counter() - t0
        key_of: dict[str, str] = {}
        statuses: dict[str, int] = {}
        failures: dict[str, int] = {}
        n_chunks = 0
        t0 = time.perf_counter()
        for si, (sid, *_rest) in enumerate(SOURCES):
            docs = corpus[si::len(SOURCES)]
            for b in range(0, len(docs), args.batch_files):
                files = [FileInput(data=doc_bytes(d), filename=f"{d['_id']}.txt", external_key=f"{d['_id']}.txt",
                                   uri=f"scifact://{d['_id']}") for d in docs[b:b + args.batch_files]]
                for f in files:
                    key_of[document_id_for(sid, f.external_key)] = f.external_key[:-4]
                for o in ingest_files(c.sessions, c.store, c.ingest_pipeline(), source_id=sid, files=files,
                                      actor="steward"):
                    statuses[o.status] = statuses.get(o.status, 0) + 1
                    n_chunks += o.chunks
                    if o.status == "failed":
                        failures[o.error_code or "unknown"] = failures.get(o.error_code or "unknown", 0) + 1
                done = sum(statuses.values())
                print(f"\r  ingested {done}/{len(corpus)} docs, {n_chunks} chunks "
                      f"({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        c.store.flush()
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.store.optimize()
        optimize_s = time.perf_counter() - t0

        # Filters: both principals must admit every chunk.
        now = time.time()
        with c.sessions() as s:
            rules = policy_store.transfer_rules(s, as_of=now)
            who_all = principals.resolve_effective(s, caller=s.get(Principal, "reader-all"), acting_for=None)
            who_f = principals.resolve_effective(s, caller=s.get(Principal, "lab-assistant"), acting_for="fiona")
            chunk_rows = s.execute(sql_select(Chunk.document_id, Chunk.sha256)).all()
        source_ids = [sid for sid, *_ in SOURCES]
        total = c.store.count()
        admitted_all = c.store.count(policy.build_filter(who_all, rules, as_of=now))
        admitted_f = c.store.count(policy.build_filter(who_f, rules, as_of=now, source_ids=source_ids))

        # Diagnostics: exact search over the same chunk vectors (no ANN, no filter).
        emb = c.embedder
        vecs = SqlEmbeddingCache(c.sessions).get_many(emb.model_id, list({sha for _, sha in chunk_rows}))
        V = np.stack([vecs[sha] for _, sha in chunk_rows])
        chunk_doc = [key_of[d] for d, _ in chunk_rows]
        qids = list(queries)
        Q = emb.embed([queries[q] for q in qids])
        exact_run: dict[str, list[str]] = {}
        for qid, qv in zip(qids, Q, strict=True):
            scores = V @ qv
            top = np.argsort(-scores)[: args.top_k]
            exact_run[qid] = [d for d, _ in bc.fold_to_documents((chunk_doc[i], float(scores[i])) for i in top)]
        over_len = sum(1 for d in corpus if emb.count_tokens(doc_bytes(d).decode()) + 2 > emb.max_seq_length) \
            if hasattr(emb, "max_seq_length") else None
        max_seq = getattr(emb, "max_seq_length", None)

        # 2. the API
        app = create_app(settings, container=c, warm=False)
        with TestClient(app) as client:
            def searcher(token: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
                h = {"Authorization": f"Bearer {token}", **headers}

                def call(text: str, top_k: int) -> list[dict[str, Any]]:
                    resp = client.post("/v1/search", headers=h, json={"query": text, "top_k": top_k, **body})
                    if resp.status_code != 200:
                        raise RuntimeError(f"search failed: {resp.status_code} {resp.text[:300]}")
                    return resp.json()["hits"]
                return call

            run_all, lat_all = run_queries(searcher(tok_all, {}, {}), queries, args.top_k, key_of)
            run_f, lat_f = run_queries(searcher(tok_agent, {"X-Acting-For": "fiona"}, {"source_ids": source_ids}),
                                       queries, args.top_k, key_of)
        # (the app's lifespan closed the container)

    m_all = bc.evaluate_run(run_all, qrels)
    m_f = bc.evaluate_run(run_f, qrels)
    m_exact = bc.evaluate_run(exact_run, qrels)
    ref_path = next(iter(sorted((args.path / "reference").glob("run_*.trec"))), None) \
        if (args.path / "reference").is_dir() else None
    overlap = None
    if ref_path is not None:
        in_corpus = {d["_id"] for d in corpus}  # a subset run compares with the reference restricted to it
        ref = {q: [d for d in docs if d in in_corpus] for q, docs in bc.read_trec_run(ref_path).items()}
        overlap = statistics.fmean(len(set(run_all.get(q, [])[:10]) & set(ref.get(q, [])[:10])) / 10 for q in qrels)
    identical = sum(1 for q in qrels if run_all.get(q, [])[:10] == run_f.get(q, [])[:10])
    result = {
        "ndcg_at_10": bc.r(m_all["ndcg_at_10"], 5), "recall_at_100": bc.r(m_all["recall_at_100"], 5),
        "ndcg_at_10_filtered": bc.r(m_f["ndcg_at_10"], 5), "recall_at_100_filtered": bc.r(m_f["recall_at_100"], 5),
        "recall_at_10": bc.r(m_all["recall_at_10"], 5),
        "ndcg_at_10_exact_chunks": bc.r(m_exact["ndcg_at_10"], 5),
        "recall_at_100_exact_chunks": bc.r(m_exact["recall_at_100"], 5),
        "published": PUBLISHED, "overlap_at_10_with_reference_run": bc.r(overlap, 4) if overlap is not None else None,
        "queries_same_top10_filtered": identical,
        "n_docs": len(corpus), "n_queries": len(qrels), "chunks": n_chunks, "statuses": statuses,
        "failures_by_code": failures, "filter_admits_all": admitted_all == total and admitted_f == total,
        "points": total, "admitted_unfiltered_principal": admitted_all, "admitted_filtered_principal": admitted_f,
        "docs_over_max_seq_length": over_len, "max_seq_length": max_seq,
        "chunk_max_tokens": settings.chunk_max_tokens, "top_k": args.top_k,
        "query_p50_ms": bc.r(bc.percentile(lat_all, 50)), "query_p50_ms_filtered": bc.r(bc.percentile(lat_f, 50)),
        "ingest_s": bc.r(ingest_s, 1), "optimize_s": bc.r(optimize_s, 1), "warm_s": bc.r(warm_s, 1),
        "seconds": bc.r(time.perf_counter() - started, 1),
        "subset": bool(args.limit_docs or args.limit_queries),
    }
    print(f"\nSciFact test: {len(corpus)} docs -> {n_chunks} chunks (max {settings.chunk_max_tokens} tokens; "
          f"{over_len} docs exceed the model's {max_seq} tokens), {len(qrels)} queries, top_k {args.top_k} chunks")
    print(f"  ingest {ingest_s:.1f} s, optimize {optimize_s:.1f} s; statuses {statuses}")
    print(f"  API, sees everything        nDCG@10 {result['ndcg_at_10']}  Recall@100 {result['recall_at_100']}"
          f"  (published 0.64508 / 0.92500)")
    print(f"  API, filter admitting all   nDCG@10 {result['ndcg_at_10_filtered']}  Recall@100 "
          f"{result['recall_at_100_filtered']}  (admits {admitted_f}/{total} points; "
          f"{identical}/{len(qrels)} queries with identical top 10)")
    print(f"  exact search, same chunks   nDCG@10 {result['ndcg_at_10_exact_chunks']}  Recall@100 "
          f"{result['recall_at_100_exact_chunks']}")
    if overlap is not None:
        print(f"  overlap@10 with the whole-document exact reference run: {overlap:.3f}")
    if result["subset"]:
        print("  NOTE: subset run (few distractors): figures are optimistic, a smoke test only")
    bc.emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
