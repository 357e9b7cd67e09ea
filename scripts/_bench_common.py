"""Helpers shared by scripts/bench_ingest.py, scripts/bench_query.py and scripts/eval_scifact.py.

Importing this module sets the offline environment (before any model library is imported), puts the
repository root on sys.path (so the scripts run from a checkout), and offers:

- retrieval metrics with the BEIR / pytrec_eval (trec_eval) definitions: `ndcg_at_k`, `recall_at_k`,
  `fold_to_documents`, `evaluate_run`, `read_qrels`, `read_trec_run`;
- process helpers: `peak_rss_mib`, `current_rss_mib`, `proc_rss_mib`, `percentile`, `median_ci95`,
  `median_ratio_ci95`, `free_port`, `emit_json`;
- service helpers: `bench_settings`, `data_dir_for`, `make_principal`, `make_source`, `bench_token`,
  `ServerProcess` (the real API under uvicorn in a subprocess, on 127.0.0.1 and a free port).

The metric code is pure and has no dependency on the service (tests/scripts/test_bench_scripts.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

for _k, _v in {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "1", "UNSTRUCTURED_DISABLE_NOTICE": "1", "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- metrics (pure) ------------------------------------------------------------------------------------


def fold_to_documents(hits: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Chunk hits (doc key, score) -> documents ranked by their best chunk (max score), best first.

    Ties are broken by doc key (descending, as trec_eval does) so the ranking is deterministic."""
    best: dict[str, float] = {}
    for doc, score in hits:
        if doc not in best or score > best[doc]:
            best[doc] = float(score)
    return sorted(best.items(), key=lambda kv: (-kv[1], _neg_key(kv[0])))


def _neg_key(key: str) -> tuple[int, ...]:
    return (*(-ord(c) for c in key), 1)  # descending string order; a prefix ranks after its extensions


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k as trec_eval's ndcg_cut (what pytrec_eval, BEIR and MTEB report): linear gain = relevance
    grade, discount log2(rank + 1), ideal DCG over every judged document with grade > 0. Documents in the
    ranking more than once count once (first occurrence). 0.0 when the query has no relevant document."""
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg <= 0:
        return 0.0
    dcg = 0.0
    for i, doc in enumerate(_dedup(ranking)[:k]):
        g = qrels.get(doc, 0)
        if g > 0:
            dcg += g / math.log2(i + 2)
    return dcg / idcg


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """trec_eval recall_k: relevant documents (grade > 0) in the top k / all relevant documents."""
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedup(ranking)[:k])) / len(relevant)


def _dedup(ranking: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ranking))


def evaluate_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], *, ndcg_k: int = 10,
    recall_ks: Sequence[int] = (10, 100),
) -> dict[str, float]:
    """Mean metrics over every query in `qrels` (a query missing from `run` scores 0, stricter than
    pytrec_eval, which skips it; the scripts always run every query)."""
    n = len(qrels)
    if n == 0:
        return {f"ndcg_at_{ndcg_k}": 0.0, **{f"recall_at_{k}": 0.0 for k in recall_ks}}
    out = {f"ndcg_at_{ndcg_k}": sum(ndcg_at_k(run.get(q, []), rel, ndcg_k) for q, rel in qrels.items()) / n}
    for k in recall_ks:
        out[f"recall_at_{k}"] = sum(recall_at_k(run.get(q, []), rel, k) for q, rel in qrels.items()) / n
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header 'query-id corpus-id score') -> {query: {doc: grade}}."""
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (i == 0 and not parts[2].strip().lstrip("-").isdigit()):
                continue
            out.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return out


def read_trec_run(path: Path) -> dict[str, list[str]]:
    """TREC run 'qid Q0 doc rank score tag' -> {query: [doc, ...]} ordered by score (desc), as trec_eval."""
    scored: dict[str, list[tuple[float, str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 5:
                scored.setdefault(parts[0], []).append((float(parts[4]), parts[2]))
    return {q: [d for d, _ in fold_to_documents((d, s) for s, d in rows)] for q, rows in scored.items()}


# -- process figures -----------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def proc_rss_mib(pid: int | str = "self") -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident set size of a process, from /proc."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def current_rss_mib() -> float:
    return proc_rss_mib().get("rss_mib", float("nan"))


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median_ci95(values: Sequence[float]) -> list[float]:
    """95% percentile-bootstrap interval of the median of `values`; [nan, nan] below 10 samples."""
    import numpy as np

    return _bootstrap_ci95((values,), lambda x, axis=-1: np.median(x, axis=axis))


def median_ratio_ci95(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """95% percentile-bootstrap interval of median(a) / median(b), the pairs (a[i], b[i]) resampled together;
    [nan, nan] below 10 pairs or when a and b are not pairs."""
    import numpy as np

    if len(a) != len(b):
        return [float("nan"), float("nan")]
    return _bootstrap_ci95((a, b), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis))


def _bootstrap_ci95(samples: tuple[Sequence[float], ...], statistic: Any) -> list[float]:
    """scipy.stats.bootstrap (percentile method, 2000 resamples, fixed seed) of a vectorised `statistic`;
    several samples are resampled as pairs."""
    if len(samples[0]) < 10:
        return [float("nan"), float("nan")]
    import numpy as np
    from scipy import stats

    ci = stats.bootstrap(tuple(np.asarray(x, dtype=float) for x in samples), statistic, paired=len(samples) > 1,
                         vectorized=True, n_resamples=2000, confidence_level=0.95, method="percentile",
                         random_state=np.random.default_rng(0)).confidence_interval
    return [r(ci.low), r(ci.high)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def r(x: float, nd: int = 3) -> float:
    return round(float(x), nd) if x == x else x  # keep NaN


def emit_json(obj: Mapping[str, Any]) -> None:
    """The machine-readable result: ONE JSON object, the last line on stdout."""
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=False, default=str), flush=True)


def setup_logging(verbose: bool = False) -> None:
    """Logs to stderr (stdout carries the figures and the final JSON line)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "presidio-analyzer", "sentence_transformers", "unstructured", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)


@contextlib.contextmanager
def data_dir_for(given: str | None, *, prefix: str, keep: bool = False) -> Iterator[Path]:
    """The given --data-dir (created, never deleted), else a fresh temporary one (deleted unless keep)."""
    if given:
        p = Path(given).expanduser().resolve()
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"(kept data dir {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- service helpers -----------------------------------------------------------------------------------


def store_bench_args(ap: argparse.ArgumentParser, *, warmup: int) -> None:
    """Arguments of the scripts that measure searches on a store bench_query kept (`--data-dir DIR`)."""
    ap.add_argument("--store", type=Path, required=True, help="a bench_query store dir (e.g. DIR/n100000)")
    ap.add_argument("--scifact", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-v", "--verbose", action="store_true")


def parse_store_bench_args(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, set up logging, and refuse a `--store` that is not a bench_query store."""
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    if not (args.store / "qdrant-edge").is_dir():
        ap.error(f"{args.store} is not a bench_query store (no qdrant-edge/ inside)")
    return args


# A benchmark calls far faster than any caller may: the rate limiter still counts every request (its cost is
# measured with the rest) but never refuses one.
BENCH_RATES = {"rate_limit_search": "1000000/second", "rate_limit_ingest": "1000000/second",
               "rate_limit_other": "1000000/second", "rate_limit_principal": "1000000/second",
               "rate_limit_auth_failures": "1000000/second"}


def bench_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Any:
    from memory.settings import Settings

    return Settings(data_dir=data_dir, database_url=database_url, env="test", log_json=False,  # type: ignore[call-arg]
                    log_level="WARNING", **{**BENCH_RATES, **overrides})


def bench_token(principal_id: str) -> str:
    """A deterministic API key for a benchmark principal (format gm_<16 hex>_<secret>)."""
    key_id = hashlib.sha256(principal_id.encode()).hexdigest()[:16]
    secret = re.sub(r"[^A-Za-z0-9_-]", "-", f"bench-key-{principal_id}")
    return f"gm_{key_id}_{secret[:100]:-<24}"


def make_principal(session: Any, pid: str, *, kind: str = "user", groups: Sequence[str] = (),
                   clearance: str = "internal", jurisdiction: str = "EU", roles: Sequence[str] = ("reader",),
                   may_act_for: Sequence[str] = ()) -> str:
    """Create a principal (idempotent) with a deterministic key; returns its bearer token."""
    from memory import principals
    from memory.models import ApiKey, Principal

    token = bench_token(pid)
    if session.get(Principal, pid) is None:
        principals.create_principal(session, spec=principals.NewPrincipal(
            id=pid, kind=kind, groups=tuple(groups), clearance=clearance, jurisdiction=jurisdiction,
            roles=tuple(roles), may_act_for=tuple(may_act_for)), actor="bench")
    if session.get(ApiKey, token.split("_")[1]) is None:
        principals.issue_key(session, principal_id=pid, actor="bench", token=token, description="bench")
    return token


def make_source(session: Any, sid: str, *, steward: str, jurisdiction: str, read_groups: Sequence[str],
                floor: str = "internal") -> None:
    from memory import sources
    from memory.models import Source

    if session.get(Source, sid) is None:
        sources.register(session, spec=sources.NewSource(
            id=sid, name=sid, steward=steward, jurisdiction=jurisdiction, read_groups=tuple(read_groups),
            floor=floor, uri=f"bench://{sid}"), actor="bench")


_SERVER_CODE = """
import logging, sys, uvicorn
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
sys.path.insert(0, {repo!r})
from memory.api.app import create_app
from memory.settings import Settings
settings = Settings()
# As `memory serve` runs it (getattr: a --baseline-repo checkout may predate these settings).
uvicorn.run(create_app(settings), host="127.0.0.1", port={port}, log_level="warning", access_log=False,
            http=getattr(settings, "http_impl", "auto"), loop=getattr(settings, "event_loop", "auto"))
"""


class ServerProcess:
    """`memory serve` equivalent in a subprocess: create_app(Settings()) under uvicorn, warm models."""

    def __init__(self, data_dir: Path, database_url: str | None = None, *, env: Mapping[str, str] | None = None,
                 startup_timeout: float = 300.0, repo: Path | None = None) -> None:
        """`repo`: the checkout whose code serves (default this one; another git worktree to compare)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ)
        e.update({"MEMORY_DATA_DIR": str(data_dir), "MEMORY_ENV": "test", "MEMORY_LOG_LEVEL": "WARNING",
                  "MEMORY_LOG_JSON": "false", "PYTHONUNBUFFERED": "1",
                  **{f"MEMORY_{k.upper()}": v for k, v in BENCH_RATES.items()}})
        if database_url:
            e["MEMORY_DATABASE_URL"] = database_url
        else:
            e.pop("MEMORY_DATABASE_URL", None)
        e.update(env or {})
        self._log = tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CODE.format(repo=str(repo or REPO), port=self.port)],
            env=e, stdout=self._log, stderr=subprocess.STDOUT,
        )
        import httpx

        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {startup_timeout}s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.startup_s = time.perf_counter() - started

    def rss(self) -> dict[str, float]:
        """Server RSS including its child processes (the parse worker): current and peak, summed."""
        import psutil

        pids = [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        per = [proc_rss_mib(pid) for pid in pids]
        return {key: sum(p.get(key, 0.0) for p in per) for key in ("rss_mib", "peak_rss_mib")} | {
            "processes": float(len(pids)), "main_rss_mib": per[0].get("rss_mib", 0.0)}

    def log_tail(self, n: int = 4000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def timer() -> float:
    return time.perf_counter()
