"""Cluster bootstrap of a mean: confidence intervals for effects measured on several units per query.

Activation-patching effects are per pair, and one query gives several pairs (the append and prepend
pairs of one passage, several passages of one query): they are not independent. The cluster bootstrap
resamples *queries* with replacement (every pair of a drawn query comes along) and recomputes the
mean over pairs; the percentile interval of :data:`RESAMPLES` resamples is the (1 - alpha) CI. Draws
are seeded: resample b is ``numpy.random.default_rng(seed).multinomial(Q, [1/Q] * Q)``, the b-th call,
which weights each of the Q queries by how often it was drawn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RESAMPLES", "clustered_mean_ci"]

#: Bootstrap resamples.
RESAMPLES = 2000


def clustered_mean_ci(values: np.ndarray, clusters, alpha: float = 0.05, resamples: int = RESAMPLES,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``values`` (rows: units, e.g. pairs; NaN = not measured), the percentile (1 - alpha) CI of
    the mean over units, resampling the ``clusters`` (one label per row) with replacement. Returns (low,
    high, number of clusters with a value) per column; NaN bounds for a column with fewer than 2 clusters."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    labels, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    q = len(labels)
    finite = np.isfinite(values)
    sums = np.zeros((q, values.shape[1]))
    counts = np.zeros((q, values.shape[1]))
    np.add.at(sums, index, np.where(finite, values, 0.0))
    np.add.at(counts, index, finite.astype(float))
    present = (counts > 0).sum(0)
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    if q < 2:
        return low, high, present
    weights = np.random.default_rng(seed).multinomial(q, np.full(q, 1.0 / q), size=resamples).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ sums) / (weights @ counts)  # (resamples, columns); NaN where a resample has no value
    ok = present >= 2
    if ok.any():
        low[ok] = np.nanquantile(means[:, ok], alpha / 2, axis=0)
        high[ok] = np.nanquantile(means[:, ok], 1 - alpha / 2, axis=0)
    return low, high, present
