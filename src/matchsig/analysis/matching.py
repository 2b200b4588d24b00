"""Matching heads: the one definition used by contrast, head ablations, findings, report and explorer.

For each head (layer l, head h) and direction (Q<-D, D<-Q), :func:`head_tests` runs three paired
t-tests over queries on the per-query mean ``M`` (SPEC §4) of three passage levels (relevant r = 3,
hard negative r = 0, easy negative r = -1):

=================  ===============  ===========================================
comparison         columns          question
=================  ===============  ===========================================
3 vs -1            ``*_relevant``   does the head attend differently to relevant passages? (Figure 2)
0 vs -1            ``*_hard``       ... to hard negatives, which share the query's terms? (Figure 3)
3 vs 0             ``*_relevant_hard``  ... to relevant passages than to hard negatives?
=================  ===============  ===========================================

Each comparison is one family of 2 x L x H tests, corrected with the run's correction (Holm by
default; column ``p_<comparison>_<correction>``, e.g. ``p_relevant_holm``; raw p in
``p_<comparison>``). With the run's alpha, on the corrected p-values (raw ones with correction
``none``), :func:`classify` decides:

* **matching** (a matching head in that direction): 3 vs -1 significant, **either sign**; ``sign``
  is +1 when the head attends more to relevant passages, -1 when less;
* kind **syntactic**: matching, and 0 vs -1 significant with the same sign (hard negatives, which
  share the query's terms, move the head the same way: exact-term matching);
* kind **semantic**: matching, 3 vs 0 significant with the same sign (positive evidence that the
  head separates relevant passages from term-sharing hard negatives), and 0 vs -1 not significant;
* kind **unclassified**: matching but neither rule applies (e.g. no test separates hard negatives);
* kind **none**: not a matching head.

A (layer, head) is a matching head when it is matching in either direction. :func:`rank_heads`
orders heads for the top-k head ablations: matching heads first, then by effect size (the largest
``|delta_relevant|`` over the head's matching directions; over both directions for the others).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .runfolder import CONTRAST
from .significance import correct, decision_column, one_sample_ttest

__all__ = [
    "COMPARISONS",
    "KINDS",
    "classify",
    "head_tests",
    "matching_heads",
    "rank_heads",
]

#: Comparison name -> (level, reference level).
COMPARISONS: dict[str, tuple[int, int]] = {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}
#: Kinds a (head, direction) row can have.
#: The directions cut in the matching heads when they are ablated (the head ablations, the nDCG cost of a selection).
MATCH_SPEC = "Q<-D,D<-Q"

KINDS = ("syntactic", "semantic", "unclassified", "none")


def head_tests(means: Mapping[int, np.ndarray], correction: str | None = "holm") -> dict[str, np.ndarray]:
    """Paired t-tests of every head and direction, per comparison of :data:`COMPARISONS`.

    ``means[level]``: (queries, layers, heads, directions) per-query means of M, NaN where a query
    has no passage of that level. For each comparison the queries with both levels are used.
    Returns arrays of shape (layers, heads, directions) named ``delta_<c>`` (mean difference),
    ``t_<c>``, ``p_<c>`` (raw two-sided p), ``p_<c>_<correction>`` (corrected over the whole
    family, unless the correction is none) and ``n_<c>`` (queries).
    """
    out: dict[str, np.ndarray] = {}
    for name, (level, reference) in COMPARISONS.items():
        diff = means[level] - means[reference]
        ok = ~np.isnan(diff).reshape(len(diff), -1).any(axis=1)
        d = diff[ok]
        shape = diff.shape[1:]
        n = int(ok.sum())
        delta = d.mean(axis=0) if n else np.zeros(shape)
        if n >= 2:
            with np.errstate(invalid="ignore", divide="ignore"):
                t, p = one_sample_ttest(d, axis=0)
            # zero variance: scipy gives NaN; no evidence when the mean is 0, certainty otherwise
            const = np.all(d == d[:1], axis=0)
            t = np.where(const, np.where(delta == 0, 0.0, np.copysign(np.inf, delta)), t)
            p = np.where(const, np.where(delta == 0, 1.0, 0.0), p)
            p = np.nan_to_num(p, nan=1.0)
        else:
            t, p = np.zeros(shape), np.ones(shape)
        out[f"delta_{name}"], out[f"t_{name}"], out[f"p_{name}"] = delta, t, p
        corrected = decision_column(correction, f"p_{name}")
        if corrected != f"p_{name}":
            out[corrected] = np.asarray(correct(list(p.ravel()), correction)).reshape(shape)
        out[f"n_{name}"] = np.full(shape, n)
    return out


def _p(frame: pd.DataFrame, comparison: str, correction: str | None) -> np.ndarray:
    column = decision_column(correction, f"p_{comparison}")
    if column not in frame:  # e.g. a heads.csv written with another correction: say so
        raise KeyError(f"heads table has no column {column!r} (was it computed with another correction?)")
    return frame[column].to_numpy(float)


def classify(frame: pd.DataFrame, alpha: float, correction: str | None) -> pd.DataFrame:
    """``frame`` (one row per layer, head, direction with the columns of :func:`head_tests`) with
    ``matching``, ``sign`` and ``kind`` set by the rules of the module docstring."""
    out = frame.copy()
    p_rel = _p(out, "relevant", correction)
    p_hard = _p(out, "hard", correction)
    d_rel = out["delta_relevant"].to_numpy(float)
    d_hard = out["delta_hard"].to_numpy(float)
    matching = p_rel <= alpha
    sign = np.where(matching, np.sign(d_rel), 0).astype(int)
    syntactic = matching & (p_hard <= alpha) & (np.sign(d_hard) == sign)
    if "delta_relevant_hard" in out:
        p_rh = _p(out, "relevant_hard", correction)
        d_rh = out["delta_relevant_hard"].to_numpy(float)
        semantic = matching & ~syntactic & (p_rh <= alpha) & (np.sign(d_rh) == sign) & (p_hard > alpha)
    else:  # a table without the direct test cannot show semantic matching
        semantic = np.zeros(len(out), bool)
    out[CONTRAST.matching] = matching
    out[CONTRAST.sign] = sign
    out[CONTRAST.kind] = np.select([syntactic, semantic, matching], ["syntactic", "semantic", "unclassified"], "none")
    return out


def matching_heads(frame: pd.DataFrame, alpha: float, correction: str | None, direction: str | None = None) -> pd.DataFrame:
    """The matching rows of a heads table (optionally of one direction, ``"Q<-D"`` or ``"D<-Q"``)."""
    rows = classify(frame, alpha, correction)
    mask = rows["matching"].to_numpy(bool)
    if direction is not None:
        mask &= rows["direction"].astype(str).str.replace(" ", "").to_numpy() == direction
    return rows[mask]


def rank_heads(frame: pd.DataFrame, alpha: float, correction: str | None) -> list[tuple[int, int]]:
    """Every (layer, head), matching heads first, each part by decreasing effect size (module docstring)."""
    rows = classify(frame, alpha, correction)
    size = rows["delta_relevant"].abs()
    rows = rows.assign(_size=size, _size_matching=size.where(rows["matching"], -np.inf))
    per_head = rows.groupby(["layer", "head"]).agg(matching=("matching", "any"), size=("_size", "max"),
                                                   size_matching=("_size_matching", "max"))
    per_head["key"] = np.where(per_head["matching"], per_head["size_matching"], per_head["size"])
    per_head = per_head.reset_index().sort_values(["matching", "key", "layer", "head"],
                                                  ascending=[False, False, True, True], kind="stable")
    return [(int(l), int(h)) for l, h in zip(per_head["layer"], per_head["head"])]
