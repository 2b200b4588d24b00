"""Metrics through ir_measures, tie-breaking, the random baseline and TREC run files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matchsig.data.datasets import load_collection
from matchsig.errors import MatchsigError
from matchsig.data.evaluation import evaluate_scores, ndcg_at_k, parse_measures, random_baseline, rank, write_trec_run
from matchsig.data.sampling import Pool, PoolRow, sample_pool



def tiny_pool() -> Pool:
    rows = [
        PoolRow("q1", "a", 3),
        PoolRow("q1", "b", 0),
        PoolRow("q1", "c", 1),
        PoolRow("q1", "e", -1),
        PoolRow("q2", "x", 2),
        PoolRow("q2", "y", 0),
    ]
    return Pool(tuple(rows), dataset="tiny", per_grade=20, easy_negatives=1, seed=0)


def test_ndcg_matches_a_hand_computation():
    pool = tiny_pool()
    # q1 ranked e(-1 -> gain 0), a(3), c(1), b(0); q2 ranked y(0), x(2)
    scores = [5.0, 1.0, 2.0, 9.0, 0.1, 0.2]
    result = evaluate_scores(pool, scores, ["nDCG@10", "RR@10"])
    dcg1 = 3 / math.log2(3) + 1 / math.log2(4)
    idcg1 = 3 / math.log2(2) + 1 / math.log2(3)  # ideal from the pool's own grades
    q2 = (2 / math.log2(3)) / 2
    assert result.per_query["nDCG@10"]["q1"] == pytest.approx(dcg1 / idcg1)
    assert result.per_query["nDCG@10"]["q2"] == pytest.approx(q2)
    assert result["nDCG@10"] == pytest.approx((dcg1 / idcg1 + q2) / 2)
    assert result.per_query["RR@10"] == pytest.approx({"q1": 0.5, "q2": 0.5})
    assert result.sample_fingerprint == pool.fingerprint


def test_ideal_dcg_comes_from_the_pool_not_all_qrels():
    # one relevant passage sampled, the only one with gain: a perfect ranking is 1.0
    pool = Pool((PoolRow("q", "rel", 1), PoolRow("q", "non", 0)))
    assert evaluate_scores(pool, [1.0, 0.0])["nDCG@10"] == pytest.approx(1.0)


def test_ties_are_evaluated_tie_aware_whatever_the_input_order():
    pool = tiny_pool()
    flat = np.zeros(len(pool))
    ranked = rank(pool, flat)  # run files and displays still break ties by docid
    assert [d for d, _ in ranked["q1"]] == ["a", "b", "c", "e"]
    reversed_pool = Pool(tuple(reversed(pool.rows)))
    assert evaluate_scores(reversed_pool, flat)["nDCG@10"] == pytest.approx(evaluate_scores(pool, flat)["nDCG@10"])
    # all tied: each of the 4 ranks gets the mean gain (3 + 0 + 1 + 0) / 4 = 1
    idcg1 = 3 + 1 / math.log2(3)
    expected = sum(1 / math.log2(i + 2) for i in range(4)) / idcg1
    assert evaluate_scores(pool, flat).per_query["nDCG@10"]["q1"] == pytest.approx(expected)


def test_bad_inputs():
    pool = tiny_pool()
    with pytest.raises(MatchsigError, match="got 2 scores for a pool of 6 pairs"):
        evaluate_scores(pool, [1.0, 2.0])
    with pytest.raises(MatchsigError, match="NaN"):
        evaluate_scores(pool, [float("nan")] * 6)
    with pytest.raises(MatchsigError, match="unknown measure 'nDCG@@10'"):
        parse_measures(["nDCG@@10"])
    with pytest.raises(MatchsigError, match="bad number of rankings"):
        random_baseline(pool, rankings=0)


def test_vectorised_ndcg_equals_ir_measures_on_random_rankings():
    pool = sample_pool(load_collection("demo"), per_grade=5, easy_negatives=3, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        scores = rng.permutation(len(pool)).astype(float)
        reference = evaluate_scores(pool, scores).per_query["nDCG@10"]
        for qid, docs in rank(pool, scores).items():
            gains_by_doc = pool.qrels()[qid]
            in_rank_order = np.array([gains_by_doc[d] for d, _ in docs], float)
            ours = ndcg_at_k(in_rank_order, np.array(list(gains_by_doc.values()), float), 10)
            assert ours == pytest.approx(reference[qid], abs=1e-12)


def test_random_baseline_is_seeded():
    pool = sample_pool(load_collection("demo"), per_grade=5, seed=1)
    a, b = random_baseline(pool, 200, seed=3), random_baseline(pool, 200, seed=3)
    assert a.sampled_mean == b.sampled_mean and a.sd == b.sd and a.per_query == b.per_query
    other = random_baseline(pool, 200, seed=4)
    assert other.sampled_mean != a.sampled_mean and other.mean == a.mean  # the exact value has no seed
    assert 0 < a.mean < 1 and a.sd > 0 and len(a.per_query) == 43


@pytest.mark.parametrize("cap, expected, pairs", [(20, 0.43, 2563), (10, 0.48, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_baseline_on_real_dl19(cap, expected, pairs, seed):
    pool = sample_pool(load_collection("demo"), per_grade=cap, seed=seed)  # all of DL19's judgments
    if pairs:
        assert len(pool) == pairs
    assert random_baseline(pool, 1000, seed=seed).mean == pytest.approx(expected, abs=0.015)


def test_trec_run_file(tmp_path):
    import ir_measures

    pool = tiny_pool()
    scores = [5.0, 1.0, 2.0, 9.0, 0.1, 0.1]
    path = write_trec_run(tmp_path / "runs" / "run.txt", pool, scores, run_name="my model")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 e 1 9.0 my_model"
    assert lines[-2:] == ["q2 Q0 x 1 0.1 my_model", "q2 Q0 y 2 0.1 my_model"]
    read = list(ir_measures.read_trec_run(str(path)))
    assert len(read) == len(pool)
