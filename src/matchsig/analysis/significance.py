"""Significance of a change in per-query effectiveness (SPEC §3): paired t-tests and corrections.

The paper compares each ablated model with the original one by a two-sided paired Student t-test
over the per-query nDCG@10 and marks a *drop* with ``*`` when p <= 0.05. Here a significant drop is
marked ``*`` and a significant *increase* ``↑`` (:func:`change_mark`). For a family of tests (the
30 ablations of Table 1, the cells of the layer curves, the head ablations, the heads x directions
of the contrast), :func:`correct` applies a Holm or Bonferroni family-wise correction through
``statsmodels.stats.multitest.multipletests`` (the paper applies none: ``"none"``). A run's
corrected p-values sit in a column named for the correction (:func:`corrected_column`:
``p_holm``, ``p_bonferroni``; none with ``"none"``), and marks use that column when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np

from ..errors import MatchsigError

__all__ = [
    "ALPHA",
    "CORRECTIONS",
    "DROP_MARK",
    "RISE_MARK",
    "TTest",
    "change_mark",
    "mean_ci_half_width",
    "one_sample_ttest",
    "t_critical",
    "correct",
    "correction_label",
    "marks_legend",
    "corrected_column",
    "decision_column",
    "paired_ttest",
    "register_correction",
]

#: Significance level used for the ``*`` mark.
ALPHA = 0.05
#: Marks of a significant drop (the paper's star) and of a significant increase.
DROP_MARK = "*"
RISE_MARK = "\u2191"

K = TypeVar("K")


@dataclass(frozen=True)
class TTest:
    """Result of a paired t-test of ``a`` against ``b`` (``mean_diff`` = mean of a - b)."""

    statistic: float
    pvalue: float
    mean_diff: float
    n: int
    sd_diff: float = 0.0

    @property
    def significant(self) -> bool:
        """p <= :data:`ALPHA`."""
        return self.pvalue <= ALPHA

    def ci(self, alpha: float = ALPHA) -> tuple[float, float]:
        """Two-sided (1 - alpha) Student-t confidence interval of the mean difference (point if n < 2)."""
        if self.n < 2 or self.sd_diff == 0:
            return (self.mean_diff, self.mean_diff)
        half = mean_ci_half_width(self.sd_diff, self.n, alpha)
        return (self.mean_diff - half, self.mean_diff + half)


# ---- the t distribution: every confidence interval and one-sample test of the package --------------


def t_critical(alpha: float, df):
    """The two-sided critical value t_{1 - alpha/2, df} (``df`` a number or an array)."""
    from scipy import stats

    return stats.t.ppf(1 - alpha / 2, df)


def mean_ci_half_width(sd: float, n: int, alpha: float = ALPHA) -> float:
    """Half width of the two-sided (1 - alpha) Student-t confidence interval of a mean of ``n`` values
    with standard deviation ``sd``: t_{1 - alpha/2, n - 1} sd / sqrt(n)."""
    return float(t_critical(alpha, n - 1)) * sd / np.sqrt(n)


def one_sample_ttest(d, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided one-sample Student t-test of mean 0 (``scipy.stats.ttest_1samp``) along ``axis``:
    (statistic, p-value), arrays (0-d for one sample of values)."""
    from scipy import stats

    res = stats.ttest_1samp(d, 0.0, axis=axis)
    return np.asarray(res.statistic, float), np.asarray(res.pvalue, float)


def _align(a: Mapping[str, float] | Sequence[float], b: Mapping[str, float] | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise MatchsigError("paired t-test needs two per-query mappings or two sequences, not one of each")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            only = sorted(set(a) ^ set(b))
            raise MatchsigError(f"paired t-test over different queries (e.g. {only[0]!r} is in only one)")
        keys = sorted(a)
        return np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)
    x, y = np.asarray(a, float).reshape(-1), np.asarray(b, float).reshape(-1)
    if len(x) != len(y):
        raise MatchsigError(f"paired t-test over {len(x)} and {len(y)} values")
    return x, y


def paired_ttest(
    a: Mapping[str, float] | Sequence[float], b: Mapping[str, float] | Sequence[float]
) -> TTest:
    """Two-sided paired Student t-test (``scipy.stats.ttest_rel``) of ``a`` vs ``b``.

    Accepts two {qid: value} mappings (paired by qid) or two equal-length sequences. When every
    difference is the same (e.g. identical vectors) or there are fewer than two pairs, scipy
    returns NaN; there is then no evidence of a difference, and this reports statistic 0 and p = 1
    (unless all differences are equal and non-zero, which is reported as p = 0).
    """
    from scipy import stats

    x, y = _align(a, b)
    diff = x - y
    mean_diff = float(diff.mean()) if len(diff) else 0.0
    if len(diff) < 2:
        return TTest(0.0, 1.0, mean_diff, len(diff))
    if np.all(diff == diff[0]):
        # Zero variance of the differences: scipy gives NaN (or inf); decide explicitly.
        if diff[0] == 0:
            return TTest(0.0, 1.0, 0.0, len(diff))
        return TTest(float(np.sign(diff[0]) * np.inf), 0.0, mean_diff, len(diff))
    result = stats.ttest_rel(x, y)
    statistic, pvalue = float(result.statistic), float(result.pvalue)
    if np.isnan(pvalue):  # pragma: no cover - guarded above, kept as a safety net
        statistic, pvalue = 0.0, 1.0
    return TTest(statistic, pvalue, mean_diff, len(diff), float(diff.std(ddof=1)))


# ---- multiple-comparison corrections -----------------------------------------------------------


def _multipletests(method: str) -> Callable[[np.ndarray], np.ndarray]:
    def adjust(p: np.ndarray) -> np.ndarray:
        from statsmodels.stats.multitest import multipletests

        return np.asarray(multipletests(p, alpha=ALPHA, method=method)[1], dtype=float)

    adjust.__name__ = f"_{method}"
    return adjust


_holm = _multipletests("holm")
_bonferroni = _multipletests("bonferroni")


def _none(p: np.ndarray) -> np.ndarray:
    return p.copy()


#: Correction methods by name; extend with :func:`register_correction`.
CORRECTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _none,
    "holm": _holm,
    "bonferroni": _bonferroni,
}


def register_correction(name: str, method: Callable[[np.ndarray], np.ndarray]) -> None:
    """Add a correction: a function from an array of p-values to adjusted p-values."""
    CORRECTIONS[name.lower()] = method


@overload
def correct(pvalues: Mapping[K, float], method: str | None = ...) -> dict[K, float]: ...
@overload
def correct(pvalues: Sequence[float], method: str | None = ...) -> list[float]: ...


def correct(pvalues, method: str | None = "holm"):
    """Adjust a family of p-values (``"holm"``, ``"bonferroni"`` or ``"none"``/None).

    Takes a sequence (returns a list) or a mapping such as {(row, col): p} (returns a dict with
    the same keys). NaN p-values are treated as 1.
    """
    name = "none" if method is None else str(method).lower()
    if name not in CORRECTIONS:
        raise MatchsigError(f"unknown correction {method!r} (choose from {', '.join(sorted(CORRECTIONS))})")
    keys = list(pvalues) if isinstance(pvalues, Mapping) else None
    values = np.array([pvalues[k] for k in keys] if keys is not None else list(pvalues), dtype=float)
    values = np.where(np.isnan(values), 1.0, values)
    if len(values) and ((values < 0) | (values > 1)).any():
        raise MatchsigError("p-values must lie in [0, 1]")
    adjusted = CORRECTIONS[name](values) if len(values) else values
    if keys is not None:
        return {k: float(v) for k, v in zip(keys, adjusted)}
    return [float(v) for v in adjusted]


def correction_label(correction: str | None) -> str:
    """"Holm-corrected", "Bonferroni-corrected" or "uncorrected", for captions."""
    name = "none" if correction is None else str(correction).lower()
    return {"none": "uncorrected", "holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected"}.get(
        name, f"{name}-corrected")


def marks_legend(alpha: float, correction: str | None, family: str, n_queries: int | None = None) -> str:
    """The caption sentence explaining the marks, e.g. for Table 1 (``family`` = "the 30 ablations")."""
    over = f" over {n_queries} queries" if n_queries else ""
    corr = correction_label(correction)
    scope = f", {corr} over {family}" if corr != "uncorrected" else f", uncorrected as in the paper (family: {family})"
    text = (f"{DROP_MARK}: significant drop, {RISE_MARK}: significant increase (two-sided paired t-test{over}"
            f"{scope}, p <= {alpha:g})")
    if corr == "uncorrected":
        text += f"; the Holm-corrected view over {family} is beside it (columns p_holm, mark_holm)"
    return text


def corrected_column(correction: str | None, prefix: str = "p") -> str | None:
    """Name of the column holding p-values corrected with ``correction`` (``p_holm``), None for none."""
    name = "none" if correction is None else str(correction).lower()
    return None if name == "none" else f"{prefix}_{name}"


def decision_column(correction: str | None, prefix: str = "p") -> str:
    """The column significance is decided on: the corrected one, or the raw ``p_value`` for none."""
    return corrected_column(correction, prefix) or ("p_value" if prefix == "p" else prefix)


def change_mark(pvalue: float, delta: float, alpha: float = ALPHA) -> str:
    """:data:`DROP_MARK` for a significant drop (``delta < 0``), :data:`RISE_MARK` for a significant rise."""
    if not (pvalue == pvalue and pvalue <= alpha) or delta == 0 or delta != delta:
        return ""
    return DROP_MARK if delta < 0 else RISE_MARK
