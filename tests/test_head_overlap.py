"""Patching heads vs contrast heads: selections, the overlap test, the rank correlation and the nDCG cost.

Independent routes: the hypergeometric tail by direct counting (math.comb), the permutation
distribution by enumerating every k-subset of a small model, Spearman's rho as Pearson on pandas
ranks, kinds from hand-set p-values, scores from the float64 reference BERT, nDCG@10 from the plain
loops of tests/_recompute.py (cross-checked there against ir_measures) and t-tests from scipy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from _recompute import expected_p, tie_aware_ndcg
from _reference import bert_score, expand, torch_reference_ids

from matchsig import MatchsigError
from matchsig.analysis.head_overlap import (compare_heads, contrast_heads, contrast_sizes, ndcg_cost, overlap_test,
                                   patching_effects, patching_grid, patching_overlay, random_heads, rank_correlation,
                                   top_contrast_heads, top_patching_heads)


def _patching(effects: np.ndarray, diagnostic: str = "tfc1") -> pd.DataFrame:
    nl, nh = effects.shape
    return pd.DataFrame([{"diagnostic": diagnostic, "site": "head", "layer": l, "head": h, "position": "all",
                          "effect_mean": effects[l, h], "effect_sd": 0.1, "n_pairs": 9}
                         for l in range(nl) for h in range(nh)])


def _tail(n: int, m: int, k: int, observed: int) -> float:
    """P(overlap >= observed) for a uniform k-subset of n items, m of them marked: direct counting."""
    return sum(math.comb(m, x) * math.comb(n - m, k - x) for x in range(observed, min(m, k) + 1)) / math.comb(n, k)


def _sets(shape, k, m, overlap):
    """A selection of the first k heads and a reference of m heads sharing exactly ``overlap`` with it."""
    flat = [(l, h) for l in range(shape[0]) for h in range(shape[1])]
    return flat[:k], flat[k - overlap:k] + flat[k:k + m - overlap]


@pytest.mark.parametrize("shape,k,m,overlap", [((6, 12), 4, 10, 2), ((6, 12), 8, 38, 7), ((6, 12), 8, 31, 3),
                                               ((3, 4), 4, 5, 3), ((6, 12), 5, 20, 0), ((12, 12), 3, 3, 3)])
def test_permutation_p_converges_to_the_hypergeometric_tail(shape, k, m, overlap):
    selected, reference = _sets(shape, k, m, overlap)
    n = shape[0] * shape[1]
    res = overlap_test(selected, reference, shape, n_permutations=20_000, seed=3)
    want = _tail(n, m, k, overlap)
    assert (res.k, res.m, res.n_heads, res.overlap) == (k, m, n, overlap)
    assert res.p_hypergeom == pytest.approx(want, rel=1e-9, abs=1e-15)
    # Monte-Carlo error of a proportion over 20,000 draws (4.5 sd), plus the +1 of the estimator
    assert abs(res.p_permutation - want) <= 4.5 * math.sqrt(want * (1 - want) / 20_000) + 1 / 20_001
    assert res.jaccard == pytest.approx(overlap / (k + m - overlap))
    assert res.expected == pytest.approx(k * m / n)
    assert set(res.shared) == set(selected) & set(reference)
    again = overlap_test(selected, reference, shape, n_permutations=20_000, seed=3)
    assert again.p_permutation == res.p_permutation  # seeded
    exact = _layer_tail(shape, selected, reference, overlap)
    assert res.p_layer_exact == pytest.approx(exact, rel=1e-9, abs=1e-15)
    assert abs(res.p_layer_permutation - exact) <= 4.5 * math.sqrt(exact * (1 - exact) / 20_000) + 1 / 20_001


def _layer_tail(shape, selected, reference, observed) -> float:
    """Layer-stratified tail by enumeration: every choice, per layer, of that layer's number of
    selected heads, weighted equally (product of per-layer subset counts)."""
    per_layer = []
    for l in range(shape[0]):
        k = sum(1 for a, _ in selected if a == l)
        marked = {h for a, h in reference if a == l}
        dist = np.zeros(k + 1)
        for combo in itertools.combinations(range(shape[1]), k):
            dist[len(marked & set(combo))] += 1
        per_layer.append(dist / dist.sum())
    total = np.ones(1)
    for dist in per_layer:
        total = np.array([sum(total[i] * dist[j] for i in range(len(total)) for j in range(len(dist)) if i + j == s)
                          for s in range(len(total) + len(dist) - 1)])
    return min(1.0, float(total[observed:].sum()))


def test_permutation_draws_are_uniform_k_subsets():
    """On 3 x 4 heads every 4-subset can be enumerated: the permutation tail must match that exact distribution."""
    shape, k = (3, 4), 4
    flat = [(l, h) for l in range(3) for h in range(4)]
    reference = [flat[i] for i in (0, 3, 5, 8, 11)]
    counts = np.bincount([len(set(c) & set(reference)) for c in itertools.combinations(flat, k)], minlength=k + 1)
    for observed in range(k + 1):
        selected = reference[:observed] + [f for f in flat if f not in reference][:k - observed]
        exact = counts[observed:].sum() / counts.sum()
        res = overlap_test(selected, reference, shape, n_permutations=30_000, seed=observed)
        assert abs(res.p_permutation - exact) <= 4.5 * math.sqrt(exact * (1 - exact) / 30_000) + 1 / 30_001
        assert res.p_hypergeom == pytest.approx(exact, rel=1e-9)
        layer = _layer_tail(shape, selected, reference, observed)  # selections spread over the 3 layers
        assert res.p_layer_exact == pytest.approx(layer, rel=1e-9)
        assert abs(res.p_layer_permutation - layer) <= 4.5 * math.sqrt(layer * (1 - layer) / 30_000) + 1 / 30_001


def test_overlap_rejects_bad_heads_and_shapes():
    with pytest.raises(MatchsigError, match=r"^selected head 3/0 is outside the model's 3 layers x 4 heads$"):
        overlap_test([(3, 0)], [(0, 0)], (3, 4))
    with pytest.raises(MatchsigError, match="repeats a head"):
        overlap_test([(0, 0), (0, 0)], [(0, 1)], (3, 4))
    with pytest.raises(MatchsigError, match="selection is empty"):
        overlap_test([], [(0, 1)], (3, 4))


def test_top_patching_heads_rule():
    """|mean| decides (a reversing head counts), ties go to the lower layer then head, NaN comes last."""
    grid = np.array([[0.1, -0.5, np.nan, 0.2], [0.5, 0.05, 0.2, np.nan], [0.0, 0.3, -0.2, 0.01]])
    effects = patching_effects(_patching(grid))
    assert top_patching_heads(effects, 3) == [(0, 1), (1, 0), (2, 1)]
    assert top_patching_heads(effects, 6) == [(0, 1), (1, 0), (2, 1), (0, 3), (1, 2), (2, 2)]
    assert top_patching_heads(effects, 12)[-2:] == [(0, 2), (1, 3)]
    with pytest.raises(MatchsigError, match="k = 13"):
        top_patching_heads(effects, 13)
    np.testing.assert_array_equal(patching_grid(_patching(grid)), grid)


def test_patching_table_is_read_from_disk_and_checked(tmp_path):
    grid = np.arange(12, dtype=float).reshape(3, 4) / 10
    both = pd.concat([_patching(grid, "tfc1"), _patching(-grid, "stmc1"),
                      _patching(grid, "tfc1").assign(site="mlp", head="")])
    path = tmp_path / "patching.csv"
    both.to_csv(path, index=False)
    np.testing.assert_allclose(patching_grid(path, "stmc1"), -grid)
    with pytest.raises(MatchsigError, match="^patching table holds diagnostics stmc1, tfc1: name one$"):
        patching_effects(path)
    with pytest.raises(MatchsigError, match="has no 'lnc1' rows"):
        patching_effects(path, "lnc1")
    with pytest.raises(MatchsigError, match="not a complete head grid"):
        patching_effects(_patching(grid).drop(index=5))
    with pytest.raises(MatchsigError, match="does not exist"):
        patching_effects(tmp_path / "nope.csv")
    overlay = patching_overlay(path, 3, 4, "tfc1")
    assert [(r["layer"], r["head"]) for r in overlay] == [(l, h) for l in range(3) for h in range(4)]
    assert [r["effect_mean"] for r in overlay] == pytest.approx(list(grid.ravel()))
    assert overlay[0]["n_pairs"] == 9 and overlay[0]["diagnostic"] == "tfc1"
    nan_grid = grid.copy()
    nan_grid[1, 2] = np.nan
    assert patching_overlay(_patching(nan_grid), 3, 4)[6]["effect_mean"] is None
    with pytest.raises(MatchsigError, match="^the patching table is 3 layers x 4 heads but this model is 6 x 12: "):
        patching_overlay(path, 6, 12, "tfc1")
    with pytest.raises(MatchsigError, match="lacks column"):
        patching_effects(pd.DataFrame({"layer": [0], "head": [0]}))


def _contrast(shape, spec: dict) -> pd.DataFrame:
    """A classified-ready contrast table: every row insignificant except ``spec[(l, h, direction)]``:
    (p_relevant, delta_relevant, p_hard, delta_hard, p_relevant_hard, delta_relevant_hard)."""
    rows = []
    for l in range(shape[0]):
        for h in range(shape[1]):
            for d in ("Q<-D", "D<-Q"):
                pr, dr, ph, dh, prh, drh = spec.get((l, h, d), (0.9, 0.001 * (l * shape[1] + h + 1), 0.9, 0.0, 0.9, 0.0))
                rows.append({"layer": l, "head": h, "direction": d, "delta_relevant": dr, "p_relevant": pr,
                             "p_relevant_holm": pr, "delta_hard": dh, "p_hard": ph, "p_hard_holm": ph,
                             "delta_relevant_hard": drh, "p_relevant_hard": prh, "p_relevant_hard_holm": prh})
    return pd.DataFrame(rows)


SYN = (0.001, 0.5, 0.01, 0.3, 0.5, 0.1)     # relevant and hard both significant, same sign
SEM = (0.001, -0.4, 0.6, 0.0, 0.01, -0.3)   # relevant and relevant-vs-hard significant, hard not
UNC = (0.001, 0.2, 0.6, 0.0, 0.6, 0.0)      # relevant only


def test_contrast_sets_and_sizes_follow_the_documented_rules():
    spec = {(0, 1, "Q<-D"): SYN, (0, 1, "D<-Q"): SEM, (1, 2, "D<-Q"): SEM, (2, 3, "Q<-D"): UNC, (2, 0, "D<-Q"): SYN}
    table = _contrast((3, 4), spec)
    assert contrast_heads(table, "matching") == [(0, 1), (1, 2), (2, 0), (2, 3)]
    assert contrast_heads(table, "syntactic") == [(0, 1), (2, 0)]
    assert contrast_heads(table, "semantic") == [(0, 1), (1, 2)]  # 0/1: syntactic one way, semantic the other
    assert contrast_heads(table, "semantic", direction="Q<-D") == []
    assert contrast_heads(table, "matching", direction="D<-Q") == [(0, 1), (1, 2), (2, 0)]
    assert contrast_heads(table, "matching", alpha=0.0001) == []
    sizes = contrast_sizes(table).set_index(["layer", "head"])
    assert sizes.loc[(0, 1), "kinds"] == "semantic;syntactic" and sizes.loc[(0, 1), "size"] == 0.5
    assert sizes.loc[(1, 2), "size"] == 0.4 and not sizes.loc[(1, 1), "matching"]
    # top contrast: matching heads first by size (0/1 0.5, 1/2 0.4, 2/3 0.2, 2/0 0.5 -> tie by layer)
    assert top_contrast_heads(table, 5) == [(0, 1), (2, 0), (1, 2), (2, 3), (2, 2)]  # then the largest other
    with pytest.raises(MatchsigError, match="unknown head set 'lexical'"):
        contrast_heads(table, "lexical")
    with pytest.raises(MatchsigError, match="no column 'p_relevant_bonferroni'"):
        contrast_heads(table, correction="bonferroni")


def test_mismatched_models_are_one_line_errors():
    patch = _patching(np.ones((3, 4)))
    with pytest.raises(MatchsigError) as err:
        compare_heads(patch, _contrast((6, 12), {}), [2])
    assert str(err.value) == ("the patching table is 3 layers x 4 heads but the contrast table is 6 x 12: "
                              "they are not of the same model")
    with pytest.raises(MatchsigError, match="not of the same model"):
        rank_correlation(patching_effects(patch), contrast_sizes(_contrast((3, 5), {})))


def test_compare_heads_and_rank_correlation_by_hand():
    rng = np.random.default_rng(1)
    grid = rng.normal(size=(3, 4))
    spec = {(0, 1, "Q<-D"): SYN, (1, 2, "D<-Q"): SEM, (2, 3, "Q<-D"): UNC}
    table = _contrast((3, 4), spec)
    frame = compare_heads(_patching(grid), table, [3, 5], n_permutations=2000)
    assert list(frame["reference"]) == ["matching", "syntactic", "semantic", "top-contrast"] * 2
    flat = np.abs(grid).ravel()
    top5 = [divmod(int(i), 4) for i in np.argsort(-flat, kind="stable")[:5]]
    row = frame[(frame["k"] == 5) & (frame["reference"] == "matching")].iloc[0]
    assert row["overlap"] == len(set(top5) & {(0, 1), (1, 2), (2, 3)})
    assert row["patching_heads"] == ";".join(f"{l}/{h}" for l, h in top5)
    assert row["p_hypergeom"] == pytest.approx(_tail(12, 3, 5, int(row["overlap"])))
    # Spearman as Pearson on average ranks
    default = lambda l, h: (0.9, 0.001 * (l * 4 + h + 1))  # noqa: E731 - _contrast's insignificant rows
    sizes = [max(abs(spec.get((l, h, d), default(l, h))[1]) for d in ("Q<-D", "D<-Q")) for l in range(3) for h in range(4)]
    want = np.corrcoef(pd.Series(flat).rank(), pd.Series(sizes).rank())[0, 1]
    assert row["spearman_rho"] == pytest.approx(want, abs=1e-12) and row["spearman_n"] == 12


def test_random_heads_are_seeded_distinct_and_in_range():
    a = random_heads(6, 12, 8, seed=1)
    assert a == random_heads(6, 12, 8, seed=1) and a != random_heads(6, 12, 8, seed=2)
    assert len(set(a)) == 8 and all(0 <= l < 6 and 0 <= h < 12 for l, h in a) and a == sorted(a)
    with pytest.raises(MatchsigError, match="k = 73"):
        random_heads(6, 12, 73, seed=0)


@pytest.fixture(scope="module")
def small_pool():
    from matchsig.data.datasets import load_collection
    from matchsig.data.sampling import sample_pool

    demo = load_collection("demo")
    return sample_pool(demo, per_grade=1, seed=0, qids=demo.judged_qids()[:5])


def test_ndcg_cost_rederived_from_the_float64_reference(tiny_model, tokenizer, small_pool):
    from scipy import stats
    from transformers import BertForSequenceClassification

    from matchsig import CrossEncoder

    ce = CrossEncoder.load(tiny_model, device="cpu")
    model = BertForSequenceClassification.from_pretrained(tiny_model).eval()
    selections = {"patch": [(0, 1), (2, 3)], "contrast": [(1, 0), (1, 2), (2, 1)], "random": random_heads(3, 4, 2, 0)}
    res = ndcg_cost(ce, small_pool, selections, comparisons=[("patch", "contrast")], alpha=0.1)
    qs, ds = small_pool.pairs()
    frame = pd.DataFrame({"qid": [r.qid for r in small_pool.rows], "docid": [r.docid for r in small_pool.rows],
                          "grade": [r.grade for r in small_pool.rows]})
    dirs = expand("Q<-D,D<-Q")
    per_query = {}
    for row, label in enumerate(["none", *selections]):
        cuts = {}
        for l, h in selections.get(label, []):
            cuts.setdefault(l, {})[h] = dirs
        want = [bert_score(model, *torch_reference_ids(tokenizer, q, d), cuts) for q, d in zip(qs, ds)]
        np.testing.assert_allclose(res.scores[row], want, atol=1e-5)
        per_query[label], _ = tie_aware_ndcg(frame, res.scores[row])
        got = res.per_query[label]
        for q, v in per_query[label].items():
            assert got[q] == pytest.approx(v, abs=1e-9)
    assert len(res.per_query) == 5
    base = np.array([per_query["none"][q] for q in sorted(per_query["none"])])
    table = res.table.set_index("selection")
    for label in ["none", *selections]:
        x = np.array([per_query[label][q] for q in sorted(per_query[label])])
        r = table.loc[label]
        assert r["ndcg@10"] == pytest.approx(x.mean(), abs=1e-12)
        assert r["delta"] == pytest.approx(x.mean() - base.mean(), abs=1e-12)
        assert r["p_value"] == pytest.approx(expected_p(x, base), abs=1e-12)
        d = x - base
        if d.std() > 0:
            half = stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
        assert r["k"] == len(selections.get(label, []))
    a = np.array([per_query["patch"][q] for q in sorted(per_query["patch"])])
    b = np.array([per_query["contrast"][q] for q in sorted(per_query["contrast"])])
    comp = res.comparisons.iloc[0]
    assert comp["p_value"] == pytest.approx(expected_p(a, b), abs=1e-12)
    assert comp["diff"] == pytest.approx((a - b).mean(), abs=1e-12) and comp["n_queries"] == 5
    assert table.loc["patch", "delta"] != 0  # the cut moves the ranking: a test that can fail


def test_ndcg_cost_bad_selections(tiny_model, small_pool):
    from matchsig import CrossEncoder

    ce = CrossEncoder.load(tiny_model, device="cpu")
    with pytest.raises(MatchsigError, match="^contrast head 3/0 is outside the model's 3 layers x 4 heads$"):
        ndcg_cost(ce, small_pool, {"contrast": [(3, 0)]})
    with pytest.raises(MatchsigError, match="comparison names 'top'"):
        ndcg_cost(ce, small_pool, {"a": [(0, 0)]}, comparisons=[("a", "top")])
    with pytest.raises(MatchsigError, match="'none' names the unablated model"):
        ndcg_cost(ce, small_pool, {"none": [(0, 0)]})


def test_last_layer_cuts_change_no_score(tiny_model, small_pool):
    """Documented caveat of the cost: only [CLS] leaves the last layer, and Q<-D,D<-Q never touch its row."""
    from matchsig import CrossEncoder

    ce = CrossEncoder.load(tiny_model, device="cpu")
    res = ndcg_cost(ce, small_pool, {"last": [(2, 0), (2, 3)], "first": [(0, 0), (0, 3)]})
    np.testing.assert_allclose(res.scores[1], res.scores[0], atol=1e-6, rtol=0)
    assert np.abs(res.scores[2] - res.scores[0]).max() > 1e-3
