"""Faithfulness of a circuit on diagnostic pairs, with a bootstrap CI clustered by query.

For pairs i (baseline b_i, perturbed p_i) and a model variant V, the behaviour is the mean score
difference ``D(V) = mean_i (s_V(p_i) - s_V(b_i))``. A circuit C's faithfulness is

    F(C) = (D(C) - D(empty)) / (D(full) - D(empty))

(1: the circuit reproduces the full model's effect; 0: no more than the all-ablated model), a ratio
of means over the pairs (a per-pair ratio divides by differences near zero). Its CI resamples
*queries* with replacement (every pair of a drawn query comes along, as many times as the query is
drawn) and takes the percentile interval of F over the resamples: pairs of one query are not
independent.
"""

from __future__ import annotations

import numpy as np

__all__ = ["faithfulness", "bootstrap_faithfulness"]


def faithfulness(circuit: np.ndarray, full: np.ndarray, empty: np.ndarray, weights: np.ndarray | None = None) -> float:
    """F from per-pair differences (perturbed - baseline) of the circuit, the full and the empty model;
    ``weights``: per-pair multiplicities (a bootstrap draw)."""
    w = np.ones(len(full)) if weights is None else np.asarray(weights, dtype=float)
    mean = lambda d: float(np.sum(w * np.asarray(d)) / np.sum(w))  # noqa: E731
    denominator = mean(full) - mean(empty)
    return (mean(circuit) - mean(empty)) / denominator if denominator != 0 else float("nan")


def bootstrap_faithfulness(circuit: np.ndarray, full: np.ndarray, empty: np.ndarray, clusters: np.ndarray,
                           n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(F, low, high): the point estimate and the percentile interval of F over ``n_boot`` resamples of
    the clusters (queries); a resample draws ``k`` clusters uniformly with replacement (``k`` = number of
    clusters) and weighs each pair by how often its cluster was drawn."""
    clusters = np.asarray(clusters)
    names, index = np.unique(clusters, return_inverse=True)
    rng = np.random.default_rng(seed)
    point = faithfulness(circuit, full, empty)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        draws[b] = faithfulness(circuit, full, empty, weights=counts[index])
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return point, float("nan"), float("nan")
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)
