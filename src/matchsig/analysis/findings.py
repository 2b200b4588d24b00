"""The paper's findings, judged on a run folder, with stated rules scaled to the model's depth.

:func:`judge` reads a run folder (:class:`matchsig.analysis.runfolder.RunFolder`) and returns one
:class:`Finding` per claim: SPEC §5's eight findings, the significance claims of Table 1, the
early/middle vs last layers claim of Figure 3 and the three claims of Figure 4. Each registered
experiment declares its claims (:class:`Judge`: ``matchsig.experiments.table1.findings``,
``layers_findings``, ``contrast_findings``); this module holds the shared decision rules. Each has a verdict (``holds``, ``does not hold``, ``inconclusive``,
``not measured``), the rule that decided it, the evidence, the paper's sentence and the number of
queries it rests on. The same goes to ``RUN_DIR/findings.json``.

Verdicts follow one principle (:func:`directional`): a claim that an effect exists *holds* when its
test is significant in the claimed direction at the run's alpha; it *does not hold* when the test is
significant the other way or when the (1 - alpha) confidence interval rules out an effect as large
as a margin (:data:`MARGIN` = 0.02 nDCG@10 for rankings; a standardised medium effect, Cohen's
d_z = :data:`STD_MARGIN`, for attention statistics); otherwise it is *inconclusive* (too few queries
for the effect size, or p between alpha and a clear no). Claims of *no* effect are the mirror image.
Table 1 and layer-curve cells use the run's corrected p-values (column named for the correction)
and the stored confidence intervals; matching heads follow :mod:`matchsig.analysis.matching`. Layer numbers
of the paper's 24-layer model are scaled by proportion: the "last layers" 20-23 of 24 are
l >= floor(20 L / 24).
"""


from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import paper
from .runfolder import COMPARE, FILES, RunFolder

__all__ = [
    "Finding",
    "Judge",
    "RunFolder",
    "VERDICTS",
    "directional",
    "judge",
    "judges",
]


#: Smallest change of nDCG@10 a finding treats as meaningful (a "clear no" rules it out).
MARGIN = 0.02
#: A layer ablation "hurts" when it loses significantly more than this much nDCG@10.
DROP = 0.02
#: A SEP ablation "changes something" when its significant change exceeds this.
SEP_NOOP = 0.01
#: Margin for attention statistics, in standard deviations of the per-query differences (Cohen's d_z).
STD_MARGIN = 0.5
#: Fewer queries than this: inconclusive.
MIN_QUERIES = 5


# ---- directions ---------------------------------------------------------------------------------


#: The CLS ablations of Figure 1 that finding 5 concerns.
CLS_DIRECTIONS = (frozenset({("CLS", "*")}), frozenset({("CLS", "Q"), ("CLS", "D")}))


# ---- decisions ----------------------------------------------------------------------------------

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)


def _combine(states: list[str]) -> str:
    """All parts hold -> holds; any part fails -> does not hold; otherwise inconclusive."""
    if any(s == FAILS for s in states):
        return FAILS
    if states and all(s == HOLDS for s in states):
        return HOLDS
    return INCONCLUSIVE


@dataclass
class Test:
    """A directional claim on per-query differences ``d`` (claim: mean > 0), decided by :func:`directional`."""

    state: str
    n: int
    mean: float
    p: float
    ci: tuple[float, float]
    margin: float
    alpha: float = 0.05

    def text(self) -> str:
        if self.n < MIN_QUERIES:
            return f"only {self.n} queries (fewer than {MIN_QUERIES}): cannot decide"
        return (f"mean {self.mean:+.4g} over {self.n} queries, {100 * (1 - self.alpha):g}% CI "
                f"[{self.ci[0]:+.4g}, {self.ci[1]:+.4g}], p={self.p:.3g}, margin {self.margin:.3g}")


def directional(d: np.ndarray, alpha: float, margin: float | None = None) -> Test:
    """Decide a claim "the mean of ``d`` is > 0" from per-query values.

    * holds: two-sided one-sample t-test p <= alpha with a positive mean;
    * does not hold: p <= alpha with a negative mean, or the upper bound of the (1 - alpha)
      confidence interval of the mean lies below ``margin`` (the data rule out an effect of that
      size): ``margin`` is given in the data's units (nDCG@10: :data:`MARGIN`) or, when None, is a
      standardised medium effect, :data:`STD_MARGIN` x the standard deviation of ``d`` (Cohen's d_z = 0.5);
    * inconclusive otherwise, and with fewer than :data:`MIN_QUERIES` queries.
    """
    from .significance import mean_ci_half_width, one_sample_ttest

    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n < MIN_QUERIES:
        return Test(INCONCLUSIVE, n, float(d.mean()) if n else float("nan"), float("nan"), (float("nan"),) * 2,
                    float("nan"), alpha)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
        ci = (mean, mean)
    else:
        p = float(one_sample_ttest(d)[1])
        half = mean_ci_half_width(sd, n, alpha)
        ci = (mean - half, mean + half)
    m = float(margin) if margin is not None else STD_MARGIN * sd
    if p <= alpha:
        state = HOLDS if mean > 0 else FAILS
    elif ci[1] < m:
        state = FAILS
    else:
        state = INCONCLUSIVE
    return Test(state, n, mean, p, ci, m, alpha)


@dataclass
class Finding:
    """One claim of the paper judged on this run.

    ``verdict`` is ``"holds"``, ``"does not hold"``, ``"inconclusive"`` (the data cannot decide) or
    ``"not measured"`` (the experiment it needs was not run); ``queries`` is how many queries the
    verdict rests on.
    """

    name: str
    verdict: str
    evidence: str
    key: str = ""
    rule: str = ""
    paper: str = ""
    data: dict = field(default_factory=dict)
    queries: int | None = None

    @property
    def holds(self) -> bool | None:
        """True (holds), False (does not hold), None (inconclusive or not measured)."""
        return {HOLDS: True, FAILS: False}.get(self.verdict)


@dataclass(frozen=True)
class Judge:
    """One claim an experiment declares: its key, its name in the checklist, its position in the
    checklist (the paper's order: SPEC §5's eight findings first) and the function that judges it.

    ``applies``: for claims beyond the paper, whether the run folder is one the claim belongs to
    (e.g. it holds the experiment's files); where it returns False the claim is left out of the
    checklist instead of listed as "not measured". None: always listed (the paper's claims)."""

    key: str
    name: str
    position: int
    judge: Callable[[RunFolder], Finding]
    applies: Callable[[RunFolder], bool] | None = None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def finding(key: str, verdict: str, evidence: str, rule: str, queries: int | None = None, **data) -> Finding:
    """A :class:`Finding` of claim ``key`` (its checklist name is filled in by :func:`judge`)."""
    return Finding("", verdict, evidence, key, rule, paper.STATEMENTS.get(key, ""), data, queries)


def missing(key: str, what: str, rule: str) -> Finding:
    """The claim cannot be judged: the experiment it needs was not run."""
    return finding(key, NOT_MEASURED, what, rule)


def queries_of(run: RunFolder, frame: pd.DataFrame | None) -> int | None:
    """How many queries a ranking table's rows rest on (else the main pool's query count)."""
    if frame is not None and COMPARE.n_queries in frame:
        values = pd.to_numeric(frame[COMPARE.n_queries], errors="coerce").dropna()
        return int(values.max()) if len(values) else None
    return (run.summary.get("pools", {}).get("main") or {}).get("queries")


DECISION_TEXT = (
    "Verdicts: holds / does not hold / inconclusive. A claim that an effect exists holds when its test is "
    "significant in the claimed direction; it does not hold when the test is significant the other way, or when "
    "the (1 - alpha) confidence interval rules out an effect as large as the margin; otherwise it is inconclusive "
    "(too few queries for the effect size, or p between alpha and a clear no)."
)
