"""Fast tests of the benchmark scripts: the pure metric code against hand-computed examples, and that
every script answers --help (subprocess, no model loaded)."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import _bench_common as bc  # noqa: E402

SCIFACT = Path("/work/shared/data/scifact")


def L(i: int) -> float:  # discount of rank i (1-based)
    return 1 / math.log2(i + 1)


def test_ndcg_binary_hand_computed() -> None:
    qrels = {"a": 1, "b": 1, "z": 0}
    # relevant at ranks 1 and 3; ideal: ranks 1 and 2
    assert bc.ndcg_at_k(["a", "x", "b", "y"], qrels, 10) == pytest.approx((L(1) + L(3)) / (L(1) + L(2)))
    assert bc.ndcg_at_k(["a", "b"], qrels, 10) == pytest.approx(1.0)
    assert bc.ndcg_at_k(["x", "y"], qrels, 10) == 0.0
    assert bc.ndcg_at_k([], qrels, 10) == 0.0


def test_ndcg_cutoff_and_ideal_uses_all_relevant() -> None:
    qrels = {"a": 1, "b": 1, "c": 1}
    # k=2: only rank 2 counts; the ideal at k=2 is two relevant documents
    assert bc.ndcg_at_k(["x", "a", "b"], qrels, 2) == pytest.approx(L(2) / (L(1) + L(2)))
    # a relevant document past the cut-off does not count
    assert bc.ndcg_at_k(["x", "y", "a"], qrels, 2) == 0.0


def test_ndcg_graded_linear_gain_like_trec_eval() -> None:
    qrels = {"a": 2, "b": 1}
    got = bc.ndcg_at_k(["b", "a"], qrels, 10)
    assert got == pytest.approx((1 * L(1) + 2 * L(2)) / (2 * L(1) + 1 * L(2)))


def test_ndcg_duplicates_count_once_and_no_relevant_is_zero() -> None:
    assert bc.ndcg_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 10) == pytest.approx(1.0)
    assert bc.ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_recall_at_k() -> None:
    qrels = {"a": 1, "b": 1, "c": 1, "d": 0}
    assert bc.recall_at_k(["a", "x", "b", "d"], qrels, 100) == pytest.approx(2 / 3)
    assert bc.recall_at_k(["x", "a", "b"], qrels, 1) == 0.0
    assert bc.recall_at_k(["x", "a", "b"], qrels, 2) == pytest.approx(1 / 3)
    assert bc.recall_at_k(["a", "a", "a"], qrels, 2) == pytest.approx(1 / 3)
    assert bc.recall_at_k(["a"], {}, 10) == 0.0


def test_fold_to_documents_max_score_per_doc() -> None:
    hits = [("d1", 0.5), ("d2", 0.9), ("d1", 0.95), ("d3", 0.1), ("d2", 0.2)]
    assert bc.fold_to_documents(hits) == [("d1", 0.95), ("d2", 0.9), ("d3", 0.1)]
    # ties: by doc id descending, as trec_eval sorts
    assert [d for d, _ in bc.fold_to_documents([("10", 0.5), ("9", 0.5), ("2", 0.5)])] == ["9", "2", "10"]


def test_evaluate_run_means_over_qrels_and_missing_query_scores_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    out = bc.evaluate_run({"q1": ["a"]}, qrels, recall_ks=(1,))
    assert out == {"ndcg_at_10": pytest.approx(0.5), "recall_at_1": pytest.approx(0.5)}


def test_read_qrels_and_trec_run(tmp_path: Path) -> None:
    (tmp_path / "q.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t1\n2\td3\t1\n")
    assert bc.read_qrels(tmp_path / "q.tsv") == {"1": {"d1": 1, "d2": 1}, "2": {"d3": 1}}
    (tmp_path / "r.trec").write_text("1 Q0 d2 1 0.9 t\n1 Q0 d1 2 0.95 t\n2 Q0 d3 1 0.1 t\n")
    assert bc.read_trec_run(tmp_path / "r.trec") == {"1": ["d1", "d2"], "2": ["d3"]}


def test_percentile_matches_numpy_linear() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert bc.percentile(xs, 50) == 3.0
    assert bc.percentile(xs, 95) == pytest.approx(4.8)
    assert bc.percentile([7.0], 95) == 7.0
    assert math.isnan(bc.percentile([], 50))


def test_bootstrap_intervals_bracket_the_medians() -> None:
    bare = [10.0 + (i % 7) * 0.5 for i in range(200)]
    service = [b * 1.3 for b in bare]  # every pair exactly 1.3x
    assert bc.median_ratio_ci95(service, bare) == [1.3, 1.3]
    lo, hi = bc.median_ratio_ci95([b + (i % 5) for i, b in enumerate(bare)], bare)
    assert lo <= (statistics.median([b + (i % 5) for i, b in enumerate(bare)]) / statistics.median(bare)) <= hi
    lo, hi = bc.median_ci95([float(i % 11) for i in range(200)])  # one sample: the median's interval
    assert lo <= 5.0 <= hi
    assert all(math.isnan(x) for x in bc.median_ratio_ci95([1.0] * 9, [1.0] * 9))  # too few pairs to say
    assert all(math.isnan(x) for x in bc.median_ratio_ci95([1.0] * 20, [1.0] * 19))  # not pairs


def test_bench_token_is_a_valid_api_key() -> None:
    import re

    from memory.principals import _KEY

    for pid in ("ana", "tier-reader-0.001", "x" * 128, "svc@corp:1"):
        tok = bc.bench_token(pid)
        assert re.match(_KEY, tok), tok
    assert bc.bench_token("a") != bc.bench_token("b")


@pytest.mark.skipif(not (SCIFACT / "reference").is_dir(), reason="shared SciFact data not present")
def test_bench_load_reads_the_batch_histogram() -> None:
    import bench_load

    text = ("# TYPE memory_query_embed_batch_size histogram\n"
            'memory_query_embed_batch_size_bucket{le="1.0"} 3.0\n'
            "memory_query_embed_batch_size_count 4.0\nmemory_query_embed_batch_size_sum 6.0\n")
    assert bench_load.mean_batch(text) == (6.0, 4.0)
    assert bench_load.mean_batch("") == (0.0, 0.0)


def test_metrics_reproduce_published_scifact_figures_from_reference_run() -> None:
    qrels = bc.read_qrels(SCIFACT / "qrels" / "test.tsv")
    run = bc.read_trec_run(next((SCIFACT / "reference").glob("run_*.trec")))
    out = bc.evaluate_run(run, qrels)
    assert len(qrels) == 300
    assert out["ndcg_at_10"] == pytest.approx(0.64508, abs=5e-6)
    assert out["recall_at_100"] == pytest.approx(0.925, abs=5e-6)
    assert out["recall_at_10"] == pytest.approx(0.78333, abs=5e-6)


@pytest.mark.parametrize("script", ["bench_ingest.py", "bench_query.py", "bench_search_steps.py", "bench_http_ab.py",
                                    "bench_load.py", "eval_scifact.py"])
def test_script_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
