"""Tie-aware evaluation (SPEC §6): checked against brute force over all tie orders and ir_measures.

The references here are written independently of matchsig.data.evaluation: the brute force enumerates
every order of every tie group with itertools.permutations and scores each complete ranking with
ir_measures (trec_eval's definitions); tie-free rankings are compared with ir_measures directly.
"""

from __future__ import annotations

import itertools
import math

import ir_measures
import numpy as np
import pytest

from matchsig.data.datasets import load_collection
from matchsig.data.evaluation import TIE_RTOL, evaluate_scores, expected_ndcg, random_baseline, tie_groups
from matchsig.data.sampling import Pool, PoolRow, sample_pool

MEASURES = ["nDCG@10", "nDCG@3", "nDCG", "P@3", "P(rel=2)@5", "RR", "RR@2", "RR(rel=3)", "AP", "AP@4", "AP(rel=2)"]


def _groups_by_exact_value(scores):
    """Tie groups of the hand-made cases: equal scores (the cases use exact ties only)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    groups = []
    for i in order:
        if groups and scores[groups[-1][0]] == scores[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def brute_force(rows, scores, measure):
    """Mean of ``measure`` over every order of the tied rows of each query (ir_measures per order)."""
    parsed = ir_measures.parse_measure(measure)
    qrels = {}
    for r in rows:
        qrels.setdefault(r.qid, {})[r.docid] = max(r.grade, 0)
    out = {}
    for qid in dict.fromkeys(r.qid for r in rows):
        idx = [i for i, r in enumerate(rows) if r.qid == qid]
        groups = _groups_by_exact_value([scores[i] for i in idx])
        groups = [[idx[j] for j in g] for g in groups]
        values = []
        for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
            ranking = [i for g in orders for i in g]
            run = {qid: {rows[i].docid: float(len(ranking) - p) for p, i in enumerate(ranking)}}
            found = [m.value for m in ir_measures.iter_calc([parsed], {qid: qrels[qid]}, run)]
            values.append(found[0] if found else 0.0)
        out[qid] = float(np.mean(values))
    return out


CASES = [
    # (grades, scores): one query each; docids are given in an order unrelated to grades
    ([3, 0, 1, -1, 2, 0], [1.0, 1.0, 0.5, 0.5, 0.5, 0.0]),
    ([0, 0, 3, 2, 1, 0, 3], [2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]),
    ([1, 2, 3, 0, -1], [0.0, 0.0, 0.0, 0.0, 0.0]),  # all tied: the random ranking
    ([0, 3, 0, 0, 3, 1], [5.0, 4.0, 4.0, 4.0, 3.0, 3.0]),
    ([0, 0, 0, 0], [1.0, 1.0, 2.0, 2.0]),  # no gain at all
    ([2, 0, 1, 0, 3, 0, 0, 1, 2, 0, 3, 0], [3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1]),  # groups straddle the cutoffs
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("measure", MEASURES)
def test_tie_aware_equals_brute_force_over_all_orders(case, measure):
    grades, scores = CASES[case]
    rows = [PoolRow("q", f"d{(7 * i) % len(grades)}-{i}", g) for i, g in enumerate(grades)]
    pool = Pool(tuple(rows))
    ours = evaluate_scores(pool, scores, [measure])
    assert not ours.tie_broken
    assert ours.per_query[measure]["q"] == pytest.approx(brute_force(rows, scores, measure)["q"], abs=1e-12)


def test_several_queries_at_once_equal_their_brute_force():
    rows, scores = [], []
    for n, (grades, sc) in enumerate(CASES):
        rows += [PoolRow(f"q{n}", f"d{i}", g) for i, g in enumerate(grades)]
        scores += list(sc)
    pool = Pool(tuple(rows))
    for measure in ("nDCG@10", "AP", "RR@3"):
        ours = evaluate_scores(pool, scores, [measure]).per_query[measure]
        assert ours == pytest.approx(brute_force(rows, scores, measure), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_free_rankings_equal_ir_measures(seed):
    pool = sample_pool(load_collection("demo"), per_grade=6, easy_negatives=3, seed=seed)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=len(pool))  # continuous: no ties
    measures = ["nDCG@10", "nDCG", "P@10", "P(rel=2)@10", "RR", "RR(rel=2)@10", "AP", "AP@10", "AP(rel=2)"]
    ours = evaluate_scores(pool, scores, measures)
    run = {}
    for row, s in zip(pool.rows, scores):
        run.setdefault(row.qid, {})[row.docid] = float(s)
    reference = {str(m): {} for m in map(ir_measures.parse_measure, measures)}
    for metric in ir_measures.iter_calc([ir_measures.parse_measure(m) for m in measures], pool.qrels(), run):
        reference[str(metric.measure)][metric.query_id] = metric.value
    for name in reference:
        for qid in pool.qids:
            assert ours.per_query[name][qid] == pytest.approx(reference[name].get(qid, 0.0), abs=1e-12), (name, qid)


def test_other_measures_are_tie_broken_by_docid_and_say_so():
    rows = (PoolRow("q", "a", 0), PoolRow("q", "b", 2))
    result = evaluate_scores(Pool(rows), [1.0, 1.0], ["nDCG@10", "R@1"])
    assert result.tie_broken == ["R@1"]
    assert result.per_query["R@1"]["q"] == 0.0  # docid order puts "a" (not relevant) first
    assert result.to_dict()["ties"]["broken_by_docid"] == ["R@1"]


def test_tie_tolerance_is_relative_and_chained():
    # 1e-6 relative: -5 and -5 * (1 + 5e-7) tie, -5 and -5.0001 do not
    assert list(tie_groups(np.array([-5.0, -5.0 * (1 + 5e-7), -5.0001]))) == [0, 0, 1]
    assert list(tie_groups(np.array([0.0, 0.0, -1e-300]))) == [0, 0, 1]
    # chained: each neighbour within the tolerance, the ends further apart
    step = 0.9e-6
    assert list(tie_groups(np.array([1.0, 1 - step, 1 - 2 * step, 0.5]))) == [0, 0, 0, 1]
    assert TIE_RTOL == 1e-6
    # inside the tolerance a swap cannot change the value
    rows = (PoolRow("q", "a", 3), PoolRow("q", "b", 0))
    a = evaluate_scores(Pool(rows), [1.0, 1.0 + 1e-8])["nDCG@10"]
    b = evaluate_scores(Pool(rows), [1.0 + 1e-8, 1.0])["nDCG@10"]
    assert a == b == pytest.approx((3 / 2 + 3 / 2 / math.log2(3)) / 3)


def test_random_baseline_is_exact_and_its_spread_sampled():
    pool = sample_pool(load_collection("demo"), per_grade=5, easy_negatives=2, seed=1)
    base = random_baseline(pool, rankings=2000, seed=3)
    # exact: E[DCG@10] = mean gain * sum of the first min(10, n) discounts, over the ideal DCG
    for qid, rows in pool.by_query().items():
        gains = sorted((max(r.grade, 0) for r in rows), reverse=True)
        disc = [1 / math.log2(i + 2) for i in range(min(10, len(gains)))]
        idcg = sum(g * d for g, d in zip(gains, disc))
        expected = (sum(gains) / len(gains)) * sum(disc) / idcg if idcg else 0.0
        assert base.per_query[qid] == pytest.approx(expected, abs=1e-12)
    assert base.mean == pytest.approx(np.mean(list(base.per_query.values())), abs=1e-15)
    # the sampled rankings scatter around it
    assert abs(base.sampled_mean - base.mean) < 4 * base.sd / math.sqrt(base.rankings) + 1e-9
    assert base.sd > 0
    # an all-tied ranking scores the random baseline exactly
    tied = expected_ndcg(pool, np.full(len(pool), -0.25))
    assert max(abs(tied[q] - base.per_query[q]) for q in pool.qids) < 1e-12


def test_cls_all_on_the_embedded_model_scores_the_random_baseline_exactly():
    """fp32 noise across batch shapes (~1e-7 relative) stays inside the tie tolerance: CLS<-* = random to 1e-9."""
    from matchsig import CrossEncoder

    collection = load_collection("demo")
    pool = sample_pool(collection, per_grade=2, seed=0, qids=collection.judged_qids()[:4])
    queries, documents = pool.pairs()
    scores = CrossEncoder.load("embedded").score(queries, documents, ablation="CLS<-*", batch_size=5)
    base = random_baseline(pool, rankings=10)
    tied = evaluate_scores(pool, scores)
    assert max(abs(tied.per_query["nDCG@10"][q] - base.per_query[q]) for q in pool.qids) < 1e-9
    assert abs(tied["nDCG@10"] - base.mean) < 1e-9
