"""The contrastive analysis (Figures 2-4): per-query means per passage level and the per-head tests."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...analysis.runfolder import CONTRAST as C
from ...analysis.runfolder import POOLS
from ...data.sampling import EASY_NEGATIVE, Pool
from ..pools import CONTRAST_LEVELS

__all__ = ["analyse_contrast", "stats_frame"]


def stats_frame(pool: Pool, values: np.ndarray) -> pd.DataFrame:
    from ...engine.attention_stats import AttentionStats

    frame = AttentionStats(values).to_frame()
    rows = np.asarray(frame["pair"], dtype=int)
    frame.insert(1, POOLS.qid, np.asarray([r.qid for r in pool.rows], dtype=object)[rows])
    frame.insert(2, POOLS.docid, np.asarray([r.docid for r in pool.rows], dtype=object)[rows])
    frame.insert(3, POOLS.grade, np.asarray([r.grade for r in pool.rows])[rows])
    return frame


def analyse_contrast(pool: Pool, values: np.ndarray, alpha: float = 0.05, correction: str = "holm",
                     directions: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per-query means per level, and per head the paired tests and classification of :mod:`matchsig.analysis.matching`.

    ``values``: (pairs, layers, heads, 2 directions, 4 stats) in pool row order; ``directions``: the ones to
    analyse (default both; a causal decoder's Q<-D reads nothing and is left out, so the corrections run over
    the heads of D<-Q only). Returns ``{"heads": one row per (layer, head, direction), "per_query": per-query
    means per level}``.
    """
    from ...engine.attention_stats import DIRECTIONS as ALL_DIRECTIONS
    from ...engine.attention_stats import STATS
    from ...analysis.matching import classify, head_tests

    keep = [k for k, (d, _, _) in enumerate(ALL_DIRECTIONS) if directions is None or d in directions]
    values = values[:, :, :, keep]
    DIRECTIONS = [ALL_DIRECTIONS[k] for k in keep]

    grades = np.array([r.grade for r in pool.rows])
    qids = [r.qid for r in pool.rows]
    order = list(dict.fromkeys(qids))
    position = {q: i for i, q in enumerate(order)}
    qidx = np.array([position[q] for q in qids])
    nq, (_, nl, nh, nd, ns) = len(order), values.shape
    means = {}
    for level in CONTRAST_LEVELS:
        acc = np.zeros((nq, nl, nh, nd, ns))
        cnt = np.zeros(nq)
        sel = grades == level
        np.add.at(acc, qidx[sel], values[sel])
        np.add.at(cnt, qidx[sel], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[level] = acc / cnt[:, None, None, None, None]
    per_query = []
    for level, arr in means.items():
        idx = np.indices((nq, nl, nh, nd)).reshape(4, -1)
        flat = arr.reshape(-1, ns)
        df = pd.DataFrame({C.qid: np.asarray(order, dtype=object)[idx[0]], C.level: level, C.layer: idx[1],
                           C.head: idx[2], C.direction: np.asarray([d for d, _, _ in DIRECTIONS])[idx[3]]})
        for k, s in enumerate(STATS):
            df[s] = flat[:, k]
        per_query.append(df.dropna(subset=["max"]))
    per_query = pd.concat(per_query, ignore_index=True)

    imax, ient, iex = STATS.index("max"), STATS.index("entropy"), STATS.index("exact")
    tests = head_tests({level: m[..., imax] for level, m in means.items()}, correction)
    easy = means[EASY_NEGATIVE]
    rel_ok = ~np.isnan(means[3][..., 0, 0, 0, 0]) & ~np.isnan(easy[..., 0, 0, 0, 0])
    grid = np.indices((nl, nh, nd)).reshape(3, -1)
    frame = pd.DataFrame({C.layer: grid[0], C.head: grid[1],
                          C.direction: np.asarray([d for d, _, _ in DIRECTIONS])[grid[2]]})
    for name, array in tests.items():
        frame[name] = array.reshape(-1)
    with np.errstate(invalid="ignore"):
        for stat, i in (("entropy", ient), ("exact", iex)):
            frame[f"{stat}_relevant"] = np.nanmean(means[3][rel_ok][..., i], axis=0).reshape(-1) if rel_ok.any() else np.nan
            frame[f"{stat}_easy"] = np.nanmean(easy[rel_ok][..., i], axis=0).reshape(-1) if rel_ok.any() else np.nan
    frame[C.n_queries] = frame[C.n_relevant]
    return {"heads": classify(frame, alpha, correction), "per_query": per_query}
