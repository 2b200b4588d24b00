"""Paired t-tests, corrections and the significance mark."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from matchsig.errors import MatchsigError
from matchsig.analysis.significance import change_mark, correct, paired_ttest, register_correction


def test_paired_ttest_matches_scipy_and_pairs_by_qid():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1, 40)
    b = a - rng.normal(0.05, 0.1, 40)
    reference = stats.ttest_rel(a, b)
    result = paired_ttest(list(a), list(b))
    assert result.pvalue == pytest.approx(reference.pvalue)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.mean_diff == pytest.approx(float(np.mean(a - b)))
    # mappings are paired by key, whatever their order
    qa = {str(i): v for i, v in enumerate(a)}
    qb = {str(i): v for i, v in reversed(list(enumerate(b)))}
    assert paired_ttest(qa, qb).pvalue == pytest.approx(reference.pvalue)
    assert result.n == 40


def test_identical_vectors_give_p_one_not_nan():
    values = {"q1": 0.5, "q2": 0.7, "q3": 0.2}
    result = paired_ttest(values, dict(values))
    assert result.pvalue == 1.0 and result.statistic == 0.0 and not result.significant
    assert change_mark(result.pvalue, result.mean_diff) == ""
    # a constant non-zero shift is a certain difference
    shifted = paired_ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert shifted.pvalue == 0.0 and shifted.significant
    # too few pairs: no evidence
    assert paired_ttest([1.0], [0.0]).pvalue == 1.0


def test_mismatched_inputs():
    with pytest.raises(MatchsigError, match="different queries"):
        paired_ttest({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})
    with pytest.raises(MatchsigError, match="3 and 2 values"):
        paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0])


def test_holm_and_bonferroni():
    p = [0.01, 0.04, 0.03, 0.5]
    assert correct(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])
    # Holm: sorted 0.01*4, 0.03*3, 0.04*2, 0.5*1 -> 0.04, 0.09, 0.09 (monotone), 0.5
    assert correct(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert correct(p, None) == p
    grid = {("D", "D"): 0.001, ("CLS", "Q"): 0.2, ("SEP1", "D"): float("nan")}
    adjusted = correct(grid, "holm")
    assert set(adjusted) == set(grid)
    assert adjusted[("D", "D")] == pytest.approx(0.003) and adjusted[("SEP1", "D")] == 1.0
    with pytest.raises(MatchsigError, match="unknown correction 'fdr'"):
        correct(p, "fdr")
    register_correction("halve", lambda x: x / 2)
    assert correct([0.5], "halve") == [0.25]


def test_change_mark_at_the_threshold():
    assert change_mark(0.05, -0.1) == "*" and change_mark(0.05, 0.1) == "\u2191"
    assert change_mark(0.0501, -0.1) == ""
    assert change_mark(float("nan"), -0.1) == ""


def test_corrections_match_an_independent_computation_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.2, 30)
    p[3] = p[7]  # a tie in the p-values
    m = len(p)
    # Holm by hand: step-down over sorted p-values, running maximum, capped at 1
    order = np.argsort(p, kind="stable")
    holm = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        holm[i] = running
    assert correct(list(p), "holm") == pytest.approx(list(holm), abs=1e-15)
    assert correct(list(p), "bonferroni") == pytest.approx(list(np.minimum(1.0, p * m)), abs=1e-15)
    assert correct(list(p), "holm") == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_confidence_interval_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=25), rng.uniform(size=25)
    t = paired_ttest(list(a), list(b))
    low, high = t.ci(0.05)
    d = a - b
    ref = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(ref, abs=1e-12)
    assert paired_ttest([1.0, 2.0], [1.0, 2.0]).ci() == (0.0, 0.0)


def test_change_marks_and_column_names():
    from matchsig.analysis.significance import change_mark, corrected_column, decision_column

    assert change_mark(0.01, -0.1) == "*" and change_mark(0.01, 0.1) == "\u2191"
    assert change_mark(0.2, -0.1) == "" and change_mark(0.01, 0.0) == "" and change_mark(0.05, -1, alpha=0.01) == ""
    assert corrected_column("holm") == "p_holm" and corrected_column("Bonferroni") == "p_bonferroni"
    assert corrected_column("none") is None and decision_column("none") == "p_value"
    assert decision_column("holm", "p_relevant") == "p_relevant_holm" and decision_column(None, "p_hard") == "p_hard"


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_corrections_equal_statsmodels(method):
    """The package's corrections against statsmodels' multipletests, on p-values with ties, tiny values
    and values near 1 (the experiments' corrected columns are checked against it too)."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 30, 96):
        p = rng.uniform(0, 1, size) ** 3
        p[: size // 3] = p[0]  # ties
        np.testing.assert_allclose(correct(list(p), method), multipletests(p, method=method)[1], atol=1e-15, rtol=0)
