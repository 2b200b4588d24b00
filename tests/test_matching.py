"""The one definition of matching heads (matchsig.analysis.matching): tests against scipy/statsmodels, rules by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from matchsig.analysis.matching import classify, head_tests, rank_heads


def test_head_tests_equal_scipy_paired_tests_and_statsmodels_corrections():
    rng = np.random.default_rng(0)
    nq, nl, nh, nd = 15, 3, 4, 2
    means = {level: rng.normal(0.3, 0.05, (nq, nl, nh, nd)) for level in (3, 0, -1)}
    means[3][..., 1, 2, 0] += 0.1  # one head attends more to relevant passages
    means[0][4] = np.nan  # a query without hard negatives: left out of the comparisons that need them
    out = head_tests(means, "holm")
    for name, (a, b) in {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}.items():
        ok = [q for q in range(nq) if not (np.isnan(means[a][q]).any() or np.isnan(means[b][q]).any())]
        p = np.empty((nl, nh, nd))
        for l in range(nl):
            for h in range(nh):
                for d in range(nd):
                    x, y = means[a][ok, l, h, d], means[b][ok, l, h, d]
                    res = stats.ttest_rel(x, y)
                    p[l, h, d] = res.pvalue
                    assert out[f"t_{name}"][l, h, d] == pytest.approx(res.statistic)
                    assert out[f"delta_{name}"][l, h, d] == pytest.approx((x - y).mean())
        np.testing.assert_allclose(out[f"p_{name}"], p, rtol=1e-10)
        np.testing.assert_allclose(out[f"p_{name}_holm"].ravel(), multipletests(p.ravel(), method="holm")[1], rtol=1e-10)
        assert (out[f"n_{name}"] == len(ok)).all()
    assert out["n_relevant"][0, 0, 0] == 15 and out["n_hard"][0, 0, 0] == 14
    assert "p_relevant_bonferroni" in head_tests(means, "bonferroni") and "p_relevant_holm" not in head_tests(means, "none")


def _row(layer, head, direction, d_rel, p_rel, d_hard, p_hard, d_rh, p_rh):
    return dict(layer=layer, head=head, direction=direction, delta_relevant=d_rel, p_relevant=p_rel,
                delta_hard=d_hard, p_hard=p_hard, delta_relevant_hard=d_rh, p_relevant_hard=p_rh)


def test_classification_rules():
    rows = pd.DataFrame([
        _row(0, 0, "Q<-D", 0.10, 0.001, 0.09, 0.002, 0.01, 0.5),     # syntactic
        _row(0, 1, "Q<-D", 0.05, 0.001, 0.00, 0.8, 0.05, 0.001),     # semantic
        _row(0, 2, "Q<-D", -0.05, 0.001, 0.00, 0.8, -0.05, 0.001),   # semantic, negative sign
        _row(0, 3, "Q<-D", 0.05, 0.001, 0.00, 0.8, 0.05, 0.3),       # matching, no positive evidence: unclassified
        _row(1, 0, "Q<-D", 0.05, 0.001, -0.04, 0.01, 0.09, 0.001),   # hard moves the other way: unclassified
        _row(1, 1, "Q<-D", -0.08, 0.01, -0.07, 0.01, -0.01, 0.6),    # syntactic, negative sign
        _row(1, 2, "Q<-D", 0.20, 0.06, 0.20, 0.001, 0.0, 0.9),       # not matching (p just above alpha)
    ])
    out = classify(rows, 0.05, "none")
    assert list(out["kind"]) == ["syntactic", "semantic", "semantic", "unclassified", "unclassified", "syntactic", "none"]
    assert list(out["sign"]) == [1, 1, -1, 1, 1, -1, 0]
    assert list(out["matching"]) == [True] * 6 + [False]
    # the decision uses the corrected column of the correction in force
    corrected = rows.assign(p_relevant_holm=1.0, p_hard_holm=1.0, p_relevant_hard_holm=1.0)
    assert set(classify(corrected, 0.05, "holm")["kind"]) == {"none"}
    with pytest.raises(KeyError, match="p_relevant_bonferroni"):
        classify(rows, 0.05, "bonferroni")


def test_ranking_puts_matching_heads_first_by_effect_size():
    rows = pd.DataFrame([
        _row(0, 0, "Q<-D", 0.30, 0.20, 0, 1, 0, 1),  # large but not significant
        _row(0, 0, "D<-Q", 0.01, 0.20, 0, 1, 0, 1),
        _row(0, 1, "Q<-D", 0.02, 0.01, 0, 1, 0, 1),  # matching, small
        _row(0, 1, "D<-Q", 0.50, 0.30, 0, 1, 0, 1),  # (its large effect is in a non-matching direction)
        _row(1, 0, "Q<-D", -0.10, 0.001, 0, 1, 0, 1),  # matching, negative sign, large
        _row(1, 0, "D<-Q", 0.00, 0.9, 0, 1, 0, 1),
        _row(1, 1, "Q<-D", 0.05, 0.9, 0, 1, 0, 1),
        _row(1, 1, "D<-Q", 0.04, 0.9, 0, 1, 0, 1),
    ])
    assert rank_heads(rows, 0.05, "none") == [(1, 0), (0, 1), (0, 0), (1, 1)]


def test_explorer_reads_the_kind_sign_and_corrected_p(tmp_path):
    from matchsig.report.explorer import read_contrast_heads

    rows = pd.DataFrame([_row(0, 1, "Q<-D", -0.05, 0.001, 0.0, 0.8, -0.05, 0.001)])
    rows = classify(rows.assign(p_relevant_holm=0.004, p_hard_holm=1.0, p_relevant_hard_holm=0.004), 0.05, "holm")
    rows.to_csv(tmp_path / "heads.csv", index=False)
    (read,) = read_contrast_heads(tmp_path / "heads.csv", 2, 2)
    assert read["kind"] == "semantic" and read["sign"] == -1
    assert read["p_relevant"] == pytest.approx(0.004) and read["p_hard"] == 1.0
    js = (__import__("matchsig").__path__[0] + "/report/templates/explorer.js")
    assert "' unc'" in open(js).read()  # matching but unclassified heads get their own ring
