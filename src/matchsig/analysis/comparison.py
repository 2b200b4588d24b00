"""The comparison of a configuration with the unablated model, one definition for every "ablation rows"
table (Table 1, the layer curves, the head ablations, the nDCG cost of head selections): mean
nDCG@10, its change, the paired t-test and the (1 - alpha) CI of the change (:func:`compare`); then
the family's correction, ``significant``, the change mark and the minimal detectable change at 80%
power of the test the row is decided by (:func:`decide`).

A run without a correction (``"none"``, the paper's plain paired t-tests: ``--preset paper``) also
gets the Holm view beside its decisions: ``p_holm`` and ``mark_holm`` (what the marks would be,
Holm-corrected over the same family); marks and ``significant`` stay the uncorrected ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .power import mde
from .runfolder import COMPARE
from .significance import change_mark, correct, corrected_column, decision_column, paired_ttest, t_critical

__all__ = ["BOLD_CHANGE", "bold", "compare", "decide"]

#: Table 1's bold ("lower than the original"): only a drop of at least this much nDCG@10, or a significant one,
#: is shown bold (a change in the 4th decimal is not one a reader should see).
BOLD_CHANGE = 0.001


def bold(delta: float, mark: str) -> bool:
    """Whether a cell is shown bold: lower than the original by at least :data:`BOLD_CHANGE`, or a significant
    drop (``mark`` ``*``)."""
    return bool(delta < 0 and (delta <= -BOLD_CHANGE or mark == "*"))


def compare(per_query: dict[str, float], ref: dict[str, float], ref_mean: float, alpha: float) -> dict:
    """Mean nDCG@10, change against the unablated model, paired t-test p and (1 - alpha) CI of the change."""
    t = paired_ttest(per_query, ref)
    low, high = t.ci(alpha)
    mean = float(np.mean(list(per_query.values())))
    return {COMPARE.ndcg: mean, COMPARE.delta: mean - ref_mean, COMPARE.ci_low: low, COMPARE.ci_high: high,
            COMPARE.p_value: t.pvalue, COMPARE.n_queries: t.n}


def _corrected(frame: pd.DataFrame, correction: str, mask: np.ndarray) -> np.ndarray:
    """The family's corrected p-values; rows outside the family (references tested alone) get NaN: their p is in
    ``p_value`` only, never in a corrected column."""
    adjusted = np.full(len(frame), np.nan)
    adjusted[mask] = correct(list(frame.loc[mask, COMPARE.p_value]), correction)
    return adjusted


def row_mde(frame: pd.DataFrame, alpha: float, tests: np.ndarray) -> np.ndarray:
    """Per row, the minimal detectable change of nDCG@10 at 80% power of its two-sided paired t-test at
    alpha / tests (the sd of the per-query changes from the stored (1 - alpha) CI and n)."""
    n = frame[COMPARE.n_queries].to_numpy(float)
    half = (frame[COMPARE.ci_high].to_numpy(float) - frame[COMPARE.ci_low].to_numpy(float)) / 2
    out = np.full(len(frame), np.nan)
    for i, (k, h, m) in enumerate(zip(n, half, tests)):
        if k >= 2 and np.isfinite(h) and h > 0:  # no variation (the unablated row): no test, no MDE
            sd = h * np.sqrt(k) / float(t_critical(alpha, k - 1))
            out[i] = mde(sd, int(k), alpha, tests=int(m))
    return out


def decide(frame: pd.DataFrame, alpha: float, correction: str, family: np.ndarray | None = None) -> pd.DataFrame:
    """Add the corrected p column (named for the correction), ``significant``, ``mark`` (* drop, ↑ rise) and
    ``mde`` (:func:`row_mde`, at alpha / the family's size for a corrected family); a run without a correction
    also gets the labelled Holm view (``p_holm``, ``mark_holm``).

    ``family``: the rows corrected together (default: all); the others are tested alone (raw p, no corrected p).
    """
    mask = np.ones(len(frame), bool) if family is None else np.asarray(family, bool)
    column = corrected_column(correction)
    if column:
        frame[column] = _corrected(frame, correction, mask)
    raw = frame[COMPARE.p_value].to_numpy(float)
    decided = np.where(mask, frame[decision_column(correction)].to_numpy(float), raw)
    frame[COMPARE.significant] = decided <= alpha
    frame[COMPARE.mark] = [change_mark(p, d, alpha) for p, d in zip(decided, frame[COMPARE.delta])]
    if not column:  # the paper's uncorrected test decides; the Holm view beside it, labelled by its column names
        holm = _corrected(frame, "holm", mask)
        frame["p_holm"] = holm
        frame["mark_holm"] = [change_mark(p, d, alpha) if m else "" for p, d, m in zip(holm, frame[COMPARE.delta], mask)]
    tests = np.where(mask, int(mask.sum()) if column else 1, 1)
    frame[COMPARE.mde] = row_mde(frame, alpha, tests)
    return frame
