"""The verdict engine, the MDE and the layer table, re-derived by independent routes (scipy's one-sided
t-tests and t intervals, the noncentral t, hand-made samples sitting just inside and just outside each
decision threshold), and the ranking tables' MDE and Holm view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matchsig.analysis import power
from matchsig.analysis.findings import PAPER_LAYERS, first_layer
from matchsig.analysis.verdicts import (FAILS, HOLDS, INCONCLUSIVE, MIN_QUERIES, Sample, bound, effect, equivalence,
                                        ordering, proportion)

ALPHA = 0.05


def _sample(mean: float, sd: float, n: int) -> np.ndarray:
    """n values with exactly this mean and sd (ddof 1)."""
    z = np.random.default_rng(n).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


# ---- one-sided p-values and CIs against scipy ---------------------------------------------------------


def test_one_sided_p_values_and_cis_equal_scipy():
    d = _sample(0.013, 0.05, 30)
    s = Sample.of(d)
    assert s.p_above(0.01) == pytest.approx(stats.ttest_1samp(d, 0.01, alternative="greater").pvalue)
    assert s.p_below(0.03) == pytest.approx(stats.ttest_1samp(d, 0.03, alternative="less").pvalue)
    assert s.p_two_sided() == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    for level in (0.05, 0.10):
        assert s.ci(level) == pytest.approx(stats.t.interval(1 - level, 29, loc=d.mean(), scale=stats.sem(d)))
    low, high = stats.t.interval(0.95, 29, loc=d.mean(), scale=stats.sem(d))
    assert Sample.from_ci(d.mean(), low, high, 30, 0.05).sd == pytest.approx(d.std(ddof=1))


# ---- near-threshold cases: just inside, just outside, too few ------------------------------------------


def _edge(n: int, sd: float, level: float) -> float:
    """The mean at which a one-sided t-test of level ``level`` over n values sits exactly on its threshold."""
    return stats.t.ppf(1 - level, n - 1) * sd / np.sqrt(n)


@pytest.mark.parametrize("n", [12, 43])
def test_effect_at_its_thresholds(n):
    sd, eps = 0.1, 1e-6
    significant = _edge(n, sd, ALPHA / 2)  # two-sided p = alpha
    assert effect(_sample(significant + eps, sd, n), ALPHA, 0.02).state == HOLDS
    assert effect(_sample(significant - eps, sd, n), ALPHA, 1e-9).state == INCONCLUSIVE
    assert effect(_sample(-significant - eps, sd, n), ALPHA, 0.02).state == FAILS
    # a clear no: the one-sided test rules out the margin just barely (upper end of the 90% CI below it)
    margin = 0.05
    clear = margin - _edge(n, sd, ALPHA)
    assert effect(_sample(clear - eps, sd, n), ALPHA, margin).state == FAILS
    assert effect(_sample(clear + eps, sd, n), ALPHA, margin).state == INCONCLUSIVE
    assert effect(_sample(0.5, sd, MIN_QUERIES - 1), ALPHA, 0.02).state == INCONCLUSIVE


@pytest.mark.parametrize("n", [15, 60])
def test_equivalence_at_its_thresholds(n):
    sd, margin, eps = 0.04, 0.02, 1e-7
    inside = margin - _edge(n, sd, ALPHA)  # TOST: the 90% CI touches +margin
    if inside > 0:
        assert equivalence(_sample(inside - eps, sd, n), ALPHA, margin).state == HOLDS
    assert equivalence(_sample(inside + eps, sd, n), ALPHA, margin).state == INCONCLUSIVE
    outside = margin + _edge(n, sd, ALPHA)  # a significant violation: the one-sided test puts the mean above +margin
    assert equivalence(_sample(outside + eps, sd, n), ALPHA, margin).state == FAILS
    assert equivalence(_sample(-outside - eps, sd, n), ALPHA, margin).state == FAILS
    assert equivalence(_sample(outside - eps, sd, n), ALPHA, margin).state == INCONCLUSIVE
    # a mean on the band's edge with a wide CI decides nothing (the "does not hold on p = 0.995" case)
    assert equivalence(_sample(margin, sd, n), ALPHA, margin).state == INCONCLUSIVE
    assert equivalence(_sample(0.0, sd, MIN_QUERIES - 1), ALPHA, margin).state == INCONCLUSIVE


def test_bound_and_ordering_at_their_thresholds():
    n, sd, eps = 25, 0.2, 1e-7
    edge = _edge(n, sd, ALPHA)
    assert bound(_sample(0.1 + edge + eps, sd, n), ALPHA, 0.1).state == HOLDS
    assert bound(_sample(0.1 + edge - eps, sd, n), ALPHA, 0.1).state == INCONCLUSIVE
    assert bound(_sample(0.1 - edge - eps, sd, n), ALPHA, 0.1).state == FAILS
    assert bound(_sample(0.1 - edge + eps, sd, n), ALPHA, 0.1).state == INCONCLUSIVE
    b = _sample(0.5, 0.1, n)
    two = _edge(n, sd, ALPHA / 2)
    assert ordering(b + _sample(two + eps, sd, n), b, ALPHA).state == HOLDS
    assert ordering(b + _sample(two - eps, sd, n), b, ALPHA).state == INCONCLUSIVE
    assert ordering(b - _sample(two + eps, sd, n), b, ALPHA).state == FAILS


def test_proportion_on_the_range_the_counts_leave_open():
    assert proportion(8, 0, 10, 0.8).state == HOLDS  # 0.8 of 0.8: just inside
    assert proportion(7, 0, 10, 0.8).state == INCONCLUSIVE  # just outside, range [0.7, 1.0]
    assert proportion(7, 3, 10, 0.8).state == FAILS  # range [0.7, 0.7]
    assert proportion(7, 2, 10, 0.8).state == INCONCLUSIVE  # range [0.7, 0.8]
    assert proportion(0, 6, 10, 0.5, at_least=False).state == HOLDS  # upper end 0.4 < 0.5
    assert proportion(0, 5, 10, 0.5, at_least=False).state == INCONCLUSIVE  # upper end 0.5: not below
    assert proportion(5, 0, 10, 0.5, at_least=False).state == FAILS
    assert proportion(0, 0, 0, 0.5).state == INCONCLUSIVE


# ---- power: the MDE against the noncentral t --------------------------------------------------------------


def _power_nct(effect_dz: float, n: int, alpha: float, two_sided: bool) -> float:
    df, nc = n - 1, effect_dz * np.sqrt(n)
    if two_sided:
        crit = stats.t.ppf(1 - alpha / 2, df)
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    return stats.nct.sf(stats.t.ppf(1 - alpha, df), df, nc)


@pytest.mark.parametrize("n,tests", [(43, 1), (43, 30), (36, 144), (8, 1)])
def test_mde_has_80_percent_power_by_the_noncentral_t(n, tests):
    sd = 0.13
    m = power.mde(sd, n, ALPHA, tests=tests)
    assert _power_nct(m / sd, n, ALPHA / tests, True) == pytest.approx(0.8, abs=1e-4)
    one = power.mde(sd, n, ALPHA, "larger", tests=tests)
    assert _power_nct(one / sd, n, ALPHA / tests, False) == pytest.approx(0.8, abs=1e-4)
    eq = power.mde_equivalence(sd, n, ALPHA)
    assert _power_nct(eq / sd, n, ALPHA, False) == pytest.approx(0.9, abs=1e-4)
    assert np.isnan(power.mde(sd, 1, ALPHA))


def test_underpowered_flags_a_clear_no_below_the_mde():
    # 43 queries, sd 0.12: MDE ~0.052; a clear no at margin 0.02 is underpowered, at 0.08 it is not
    d = _sample(-0.03, 0.12, 43)
    weak, strong = effect(d, ALPHA, 0.02), effect(d, ALPHA, 0.08)
    assert weak.state == FAILS and weak.underpowered and weak.mde == pytest.approx(power.mde(0.12, 43, ALPHA))
    assert strong.state == FAILS and not strong.underpowered
    assert "(underpowered)" in weak.text() and "MDE" in strong.text()
    tiny = effect(_sample(0.02, 0.05, 400), ALPHA, 0.0)  # significant but below the MDE of... 400 queries: not
    assert tiny.state == HOLDS and not tiny.underpowered


# ---- the layer table ----------------------------------------------------------------------------------------


def test_layer_boundaries_are_the_papers_fractions_at_any_depth():
    assert {k: first_layer(k, 24) for k in PAPER_LAYERS} == PAPER_LAYERS  # the paper's own model: its layers
    assert {k: first_layer(k, 12) for k in PAPER_LAYERS} == {"cls_last": 11, "dd_onset": 5, "late": 10, "second_half": 6}
    assert {k: first_layer(k, 6) for k in PAPER_LAYERS} == {"cls_last": 5, "dd_onset": 2, "late": 5, "second_half": 3}
    for L in range(1, 49):
        for name, layer in PAPER_LAYERS.items():
            s = first_layer(name, L)
            assert 0 <= s <= L - 1
            assert s == min(L - 1, int(np.floor(layer * L / 24 + 1e-9)))  # the layer holding the paper's boundary


# ---- the ranking tables: MDE column, the random row outside the corrected column, the Holm view -----------------


def _rows(rng, n_rows: int = 6, n: int = 20) -> tuple[pd.DataFrame, list[np.ndarray]]:
    from matchsig.analysis.comparison import compare

    ref = {str(q): float(v) for q, v in enumerate(rng.uniform(0.3, 0.9, n))}
    diffs, rows = [], []
    for i in range(n_rows):
        d = rng.normal(-0.03 * i, 0.05, n)
        diffs.append(d)
        per_query = {q: v + dq for (q, v), dq in zip(ref.items(), d)}
        rows.append({"ablation": f"c{i}", **compare(per_query, ref, float(np.mean(list(ref.values()))), ALPHA)})
    return pd.DataFrame(rows), diffs


def test_decide_adds_the_mde_and_keeps_references_out_of_the_corrected_column():
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.power import TTestPower

    from matchsig.analysis.comparison import decide

    frame, diffs = _rows(np.random.default_rng(2))
    family = np.array([False, True, True, True, True, True])
    out = decide(frame.copy(), ALPHA, "holm", family)
    assert np.isnan(out["p_holm"].iloc[0])  # the reference row is tested alone: no corrected p
    assert out["p_holm"].iloc[1:].to_numpy() == pytest.approx(multipletests(frame["p_value"].iloc[1:], method="holm")[1])
    assert bool(out["significant"].iloc[0]) == (frame["p_value"].iloc[0] <= ALPHA)
    for i, d in enumerate(diffs):
        alpha = ALPHA / (5 if family[i] else 1)
        dz = TTestPower().solve_power(nobs=len(d), alpha=alpha, power=0.8, alternative="two-sided")
        assert out["mde"].iloc[i] == pytest.approx(dz * d.std(ddof=1), rel=1e-6)


def test_uncorrected_runs_carry_the_holm_view_beside_the_papers_test():
    from statsmodels.stats.multitest import multipletests

    from matchsig.analysis.comparison import decide
    from matchsig.analysis.significance import marks_legend
    from matchsig.experiments import PAPER_CONFIG

    frame, _ = _rows(np.random.default_rng(5))
    out = decide(frame.copy(), ALPHA, "none")
    assert (out["significant"] == (frame["p_value"] <= ALPHA)).all()  # the paper's test decides
    holm = multipletests(frame["p_value"], method="holm")[1]
    assert out["p_holm"].to_numpy() == pytest.approx(holm)
    expected = ["" if p > ALPHA else ("*" if d < 0 else "\u2191") for p, d in zip(holm, frame["delta"])]
    assert out["mark_holm"].tolist() == expected
    assert "uncorrected as in the paper" in marks_legend(ALPHA, "none", "the 30 ablations")
    assert "p_holm" in marks_legend(ALPHA, "none", "the 30 ablations")
    assert PAPER_CONFIG().correction == "none"


# ---- the random baseline's sd from its definition ------------------------------------------------------------


def test_random_baseline_sd_from_a_seeded_numpy_loop():
    from matchsig.data.datasets import load_collection
    from matchsig.data.evaluation import random_baseline
    from matchsig.data.sampling import query_rng, sample_pool

    demo = load_collection("demo")
    pool = sample_pool(demo, per_grade=2, seed=0, qids=demo.judged_qids()[:6])
    rankings = 50
    base = random_baseline(pool, rankings, seed=3)
    per_ranking = np.zeros(rankings)
    by_query = pool.by_query()
    for qid, rows in by_query.items():
        gains = np.array([max(r.grade, 0) for r in rows], float)
        ideal = np.sort(np.array([max(g, 0) for g in pool.qrels()[qid].values()], float))[::-1][:10]
        idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))  # linear gains, as trec_eval
        rng = query_rng(3, qid, "random-ranking")
        for i in range(rankings):  # one permutation at a time, the ranking's nDCG@10 by its formula
            order = rng.permutation(gains)[:10]
            dcg = sum(g / np.log2(j + 2) for j, g in enumerate(order))
            per_ranking[i] += dcg / idcg if idcg > 0 else 0.0
    per_ranking /= len(by_query)
    assert base.sd == pytest.approx(per_ranking.std(), rel=1e-9)
