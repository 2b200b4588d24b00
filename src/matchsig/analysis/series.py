"""A checkpoint series (``matchsig train --save-steps``, then ``matchsig compare``): the runs as steps of one
training, x = step. Which step each run is (:func:`series_steps`) and, per step, how far the matching heads and
the Table 1 pattern have emerged (:func:`series`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import MatchsigError
from .matching import KINDS
from .runfolder import RunFolder

__all__ = ["pattern_similarity", "series", "series_steps"]

#: Matching-head kinds (``none``, not a matching head, left out).
HEAD_KINDS = tuple(k for k in KINDS if k != "none")

#: A model folder of ``matchsig train --save-steps`` (``.../checkpoints/step-000100``).
_STEP = re.compile(r"step-0*(\d+)/?$")


def series_steps(runs: Sequence[tuple[str, RunFolder]], steps: Sequence[int] | None = None) -> list[int] | None:
    """The x value (training step) of each run: ``steps`` when given, else read from the models' folder names
    (``step-NNNNNN``, as ``matchsig train --save-steps`` writes them) when every run has one; None otherwise."""
    if steps is not None:
        if len(steps) != len(runs):
            raise MatchsigError(f"--series gives {len(steps)} steps for {len(runs)} run folders")
        return [int(x) for x in steps]
    found = [_STEP.search(str(r.model_info.get("name") or r.config.get("model") or "")) for _, r in runs]
    return [int(m.group(1)) for m in found] if all(found) else None


def pattern_similarity(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """How alike two runs' Table 1 patterns are, over the cells both define (gap fractions, indexed by ablation):
    ``cells``, Pearson ``pearson_r``, Spearman ``spearman_rho`` (NaN with fewer than 3 cells or a constant
    pattern) and the mean absolute difference ``mad``."""
    from scipy import stats

    both = pd.concat([a, b], axis=1, join="inner").dropna()
    out = {"cells": len(both), "pearson_r": math.nan, "spearman_rho": math.nan, "mad": math.nan}
    if len(both) == 0:
        return out
    x, y = both.iloc[:, 0].to_numpy(float), both.iloc[:, 1].to_numpy(float)
    out["mad"] = float(np.abs(x - y).mean())
    if len(both) >= 3 and x.std() > 0 and y.std() > 0:
        out["pearson_r"] = float(np.corrcoef(x, y)[0, 1])
        out["spearman_rho"] = float(stats.spearmanr(x, y).statistic)
    return out


def series(names: Sequence[str], cards: pd.DataFrame, table1: pd.DataFrame, heads: pd.DataFrame,
           steps: Sequence[int]) -> pd.DataFrame:
    """Per run of a series, by step: the baselines, the share of all heads that are matching heads (either
    direction, and by kind), and how close its Table 1 pattern (gap fractions) is to the last step's: Pearson r
    and the mean absolute difference over the cells. ``cards``, ``table1``, ``heads``: the comparison's tables
    (:class:`~matchsig.analysis.crossrun.Comparison`)."""
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    final = names[order[-1]]
    removed = table1.pivot(index="ablation", columns="run", values="removed") if len(table1) else pd.DataFrame()
    cards = cards.set_index("name")
    rows = []
    for i in order:
        name = names[i]
        row = {"run": name, "step": steps[i], "unablated": cards.loc[name, "unablated"],
               "random": cards.loc[name, "random"]}
        either = heads[(heads["run"] == name) & (heads["direction"] == "either")] if len(heads) else pd.DataFrame()
        for k in ("matching", *HEAD_KINDS):
            row[k] = float(either[k].mean()) if len(either) else math.nan
        if name in removed and final in removed:
            sim = pattern_similarity(removed[name], removed[final])
            row["r_final"], row["mad_final"] = sim["pearson_r"], sim["mad"]
        else:
            row["r_final"], row["mad_final"] = math.nan, math.nan
        rows.append(row)
    return pd.DataFrame(rows)
