"""The comparison of a configuration with the unablated model, one definition for every "ablation rows"
table (Table 1, the layer curves, the head ablations, the nDCG cost of head selections): mean
nDCG@10, its change, the paired t-test and the (1 - alpha) CI of the change (:func:`compare`); then
the family's correction, ``significant`` and the change mark (:func:`decide`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .runfolder import COMPARE
from .significance import change_mark, correct, corrected_column, decision_column, paired_ttest

__all__ = ["compare", "decide"]


def compare(per_query: dict[str, float], ref: dict[str, float], ref_mean: float, alpha: float) -> dict:
    """Mean nDCG@10, change against the unablated model, paired t-test p and (1 - alpha) CI of the change."""
    t = paired_ttest(per_query, ref)
    low, high = t.ci(alpha)
    mean = float(np.mean(list(per_query.values())))
    return {COMPARE.ndcg: mean, COMPARE.delta: mean - ref_mean, COMPARE.ci_low: low, COMPARE.ci_high: high,
            COMPARE.p_value: t.pvalue, COMPARE.n_queries: t.n}


def decide(frame: pd.DataFrame, alpha: float, correction: str, family: np.ndarray | None = None) -> pd.DataFrame:
    """Add the corrected p column (named for the correction), ``significant`` and ``mark`` (* drop, ↑ rise).

    ``family``: the rows corrected together (default: all); the others keep their raw p (tested alone).
    """
    column = corrected_column(correction)
    if column:
        mask = np.ones(len(frame), bool) if family is None else family
        adjusted = frame[COMPARE.p_value].to_numpy(float).copy()
        adjusted[mask] = correct(list(frame.loc[mask, COMPARE.p_value]), correction)
        frame[column] = adjusted
    decided = frame[decision_column(correction)]
    frame[COMPARE.significant] = decided <= alpha
    frame[COMPARE.mark] = [change_mark(p, d, alpha) for p, d in zip(decided, frame[COMPARE.delta])]
    return frame
