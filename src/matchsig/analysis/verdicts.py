"""One verdict engine for every kind of claim the checklist judges.

Every claim is one of five kinds, each decided on a sample of per-query values ``d`` (or its summary:
mean, sd, n) at the run's ``alpha``:

* **effect** ("the mean of d is > 0", with a margin m >= 0 that matters): *holds* when the two-sided
  t-test gives p <= alpha with a positive mean (the paper's test); *does not hold* when it is
  significant the other way, or when a one-sided test at alpha rejects "mean >= m" (the data rule out
  an effect as large as the margin: the upper end of the (1 - 2 alpha) CI is below m); otherwise
  *inconclusive*.
* **ordering** ("a > b"): an effect on the paired differences a - b (margin 0 unless given).
* **equivalence** (an effect is *absent*: |mean| < m): two one-sided tests (TOST, Schuirmann 1987) at
  alpha each: *holds* when both reject, i.e. the (1 - 2 alpha) CI lies inside +-m; *does not hold*
  only on a significant violation, a one-sided test at alpha putting the mean beyond +m or below -m;
  otherwise *inconclusive* (a mean near the edge of the band with a wide CI decides nothing).
* **bound** ("the mean of d is > b"): one one-sided test each way: *holds* when "mean <= b" is
  rejected at alpha, *does not hold* when "mean >= b" is rejected, otherwise *inconclusive*.
* **proportion** (a share of units, e.g. heads, at least or below a threshold) decided on counts: the
  units whose own test is significant (in) and those whose test rules the effect out (out) bound the
  true share between in/N and (N - out)/N; *holds* when the whole range satisfies the claim, *does not
  hold* when none of it does.

Fewer than :data:`MIN_QUERIES` values: inconclusive. Each test carries its minimal detectable effect
at 80% power (:mod:`matchsig.analysis.power`) for its test, n and the family it is corrected in; a
decided verdict (holds / does not hold) whose margin is below that MDE is flagged *underpowered* (the
margin it rules in or out; for a significant effect and for claims without a margin, the observed
|mean|: a significant effect below the MDE is a lucky find whose size is likely overestimated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import power as _power

__all__ = ["HOLDS", "FAILS", "INCONCLUSIVE", "NOT_MEASURED", "VERDICTS", "KINDS", "MIN_QUERIES", "STD_MARGIN",
           "Sample", "Test", "Count", "effect", "ordering", "equivalence", "bound", "proportion", "combine"]

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)
KINDS = ("effect", "ordering", "equivalence", "bound", "proportion")
#: Fewer values than this: inconclusive.
MIN_QUERIES = 5
#: Margin for claims without one in the data's units: a standardised medium effect (Cohen's d_z).
STD_MARGIN = 0.5


def combine(states: list[str]) -> str:
    """All parts hold -> holds; any part fails -> does not hold; otherwise inconclusive."""
    if any(s == FAILS for s in states):
        return FAILS
    if states and all(s == HOLDS for s in states):
        return HOLDS
    return INCONCLUSIVE


@dataclass(frozen=True)
class Sample:
    """The summary of per-query values a t-test needs: mean, standard deviation (ddof 1) and count."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, d) -> "Sample":
        """From values (NaNs dropped)."""
        d = np.asarray(d, dtype=float).reshape(-1)
        d = d[~np.isnan(d)]
        n = len(d)
        return cls(float(d.mean()) if n else float("nan"), float(d.std(ddof=1)) if n > 1 else float("nan"), n)

    @classmethod
    def from_ci(cls, mean: float, low: float, high: float, n: int, alpha: float) -> "Sample":
        """From a stored (1 - alpha) Student-t CI of the mean: sd = half width x sqrt(n) / t_{1-alpha/2, n-1}."""
        from .significance import t_critical

        n = int(n)
        if n < 2 or low is None or high is None:
            return cls(float(mean), float("nan"), n)
        half = (float(high) - float(low)) / 2
        return cls(float(mean), half * math.sqrt(n) / float(t_critical(alpha, n - 1)), n)

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else float("nan")

    def p_above(self, value: float) -> float:
        """One-sided p of H0 "mean <= value" (small: the mean is significantly above ``value``)."""
        from scipy import stats

        if self.n < 2 or not math.isfinite(self.sd):
            return float("nan")
        if self.sd == 0:
            return 0.0 if self.mean > value else 1.0
        return float(stats.t.sf((self.mean - value) / self.se, self.n - 1))

    def p_below(self, value: float) -> float:
        """One-sided p of H0 "mean >= value" (small: the mean is significantly below ``value``)."""
        from scipy import stats

        if self.n < 2 or not math.isfinite(self.sd):
            return float("nan")
        if self.sd == 0:
            return 0.0 if self.mean < value else 1.0
        return float(stats.t.cdf((self.mean - value) / self.se, self.n - 1))

    def p_two_sided(self) -> float:
        if self.n < 2 or not math.isfinite(self.sd):
            return float("nan")
        return min(1.0, 2 * min(self.p_above(0.0), self.p_below(0.0))) if self.sd > 0 else (
            0.0 if self.mean != 0 else 1.0)

    def ci(self, level_alpha: float) -> tuple[float, float]:
        """Two-sided (1 - level_alpha) Student-t CI of the mean."""
        from .significance import t_critical

        if self.n < 2 or not math.isfinite(self.sd):
            return (float("nan"), float("nan"))
        half = float(t_critical(level_alpha, self.n - 1)) * self.se
        return (self.mean - half, self.mean + half)


def _sample(x) -> Sample:
    return x if isinstance(x, Sample) else Sample.of(x)


@dataclass
class Test:
    """A decided claim on per-query values: its kind, verdict (``state``), the numbers it rests on, its MDE."""

    kind: str
    state: str
    n: int
    mean: float
    p: float  # the test that can make the claim hold (two-sided for effects, max of the TOST for equivalence)
    ci: tuple[float, float]  # (1 - alpha) two-sided CI of the mean, for display
    margin: float
    alpha: float = 0.05
    mde: float = float("nan")
    sd: float = float("nan")
    p_violation: float = float("nan")  # one-sided p of the claim's violation (the "does not hold" test)
    ci_one_sided: tuple[float, float] = field(default=(float("nan"), float("nan")))  # (1 - 2 alpha) CI

    @property
    def underpowered(self) -> bool:
        """A decided verdict resting on an effect below the MDE: the margin it rules in or out, or, for an effect
        that holds (significant) and for claims without a margin, the observed |mean| (a significant effect
        smaller than the MDE is a lucky find: its size is likely overestimated)."""
        if self.state not in (HOLDS, FAILS) or not math.isfinite(self.mde):
            return False
        observed = (self.kind in ("effect", "ordering") and self.state == HOLDS) or not (
            self.margin and math.isfinite(self.margin))
        return (abs(self.mean) if observed else self.margin) < self.mde

    def text(self) -> str:
        if self.n < MIN_QUERIES:
            return f"only {self.n} queries (fewer than {MIN_QUERIES}): cannot decide"
        level = f"{100 * (1 - self.alpha):g}%"
        out = (f"mean {self.mean:+.4g} over {self.n} queries, {level} CI [{self.ci[0]:+.4g}, {self.ci[1]:+.4g}], "
               f"p={self.p:.3g}, margin {self.margin:.3g}")
        if self.kind in ("equivalence", "bound") or (self.state == FAILS and self.margin):
            lo, hi = self.ci_one_sided
            out += f", {100 * (1 - 2 * self.alpha):g}% CI [{lo:+.4g}, {hi:+.4g}] (one-sided tests)"
        out += f", MDE {self.mde:.3g}" + (" (underpowered)" if self.underpowered else "")
        return out


def _too_few(kind: str, s: Sample, alpha: float, margin: float) -> Test:
    nan = float("nan")
    return Test(kind, INCONCLUSIVE, s.n, s.mean, nan, (nan, nan), margin, alpha, nan, s.sd)


def effect(x, alpha: float, margin: float | None = None, p: float | None = None, tests: int = 1,
           kind: str = "effect") -> Test:
    """Claim "the mean is > 0": holds on a significant positive mean (``p``: a corrected two-sided p to decide
    on instead of the sample's own), does not hold on a significant negative one or when a one-sided test
    rejects "mean >= margin" (``margin`` None: :data:`STD_MARGIN` sd). MDE: two-sided at alpha / tests."""
    s = _sample(x)
    m = float(margin) if margin is not None else STD_MARGIN * s.sd
    if s.n < MIN_QUERIES:
        return _too_few(kind, s, alpha, m)
    p2 = s.p_two_sided() if p is None else float(p)
    p_no = s.p_below(m)
    if p2 <= alpha and s.mean > 0:
        state = HOLDS
    elif (p2 <= alpha and s.mean < 0) or (m > 0 and p_no <= alpha):
        state = FAILS
    else:
        state = INCONCLUSIVE
    return Test(kind, state, s.n, s.mean, p2, s.ci(alpha), m, alpha, _power.mde(s.sd, s.n, alpha, tests=tests),
                s.sd, p_no, s.ci(2 * alpha))


def ordering(a, b, alpha: float, margin: float = 0.0) -> Test:
    """Claim "a > b" on paired per-query values: an effect on a - b."""
    return effect(np.asarray(a, float) - np.asarray(b, float), alpha, margin, kind="ordering")


def equivalence(x, alpha: float, margin: float | None = None, tests: int = 1) -> Test:
    """Claim "|mean| < margin" by two one-sided tests at alpha; does not hold only on a significant violation
    (``tests``: the family the violation is corrected in, for the MDE)."""
    s = _sample(x)
    m = float(margin) if margin is not None else STD_MARGIN * s.sd
    if s.n < MIN_QUERIES:
        return _too_few("equivalence", s, alpha, m)
    p_tost = max(s.p_above(-m), s.p_below(m))
    p_out = min(s.p_above(m), s.p_below(-m))
    state = HOLDS if p_tost <= alpha else FAILS if p_out <= alpha else INCONCLUSIVE
    return Test("equivalence", state, s.n, s.mean, p_tost, s.ci(alpha), m, alpha,
                _power.mde_equivalence(s.sd, s.n, alpha, tests), s.sd, p_out, s.ci(2 * alpha))


def bound(x, alpha: float, value: float = 0.0, tests: int = 1) -> Test:
    """Claim "the mean is > value": holds when "mean <= value" is rejected at alpha (one-sided), does not hold
    when "mean >= value" is; the margin is the distance of the bound from 0 (|value|)."""
    s = _sample(x)
    if s.n < MIN_QUERIES:
        return _too_few("bound", s, alpha, abs(value))
    p_yes, p_no = s.p_above(value), s.p_below(value)
    state = HOLDS if p_yes <= alpha else FAILS if p_no <= alpha else INCONCLUSIVE
    return Test("bound", state, s.n, s.mean, p_yes, s.ci(alpha), abs(value), alpha,
                _power.mde(s.sd, s.n, alpha, "larger", tests), s.sd, p_no, s.ci(2 * alpha))


@dataclass
class Count:
    """A proportion claim decided on counts: ``inside`` units significantly in, ``outside`` clearly out of ``total``."""

    state: str
    inside: int
    outside: int
    total: int
    threshold: float
    at_least: bool

    @property
    def low(self) -> float:
        return self.inside / self.total if self.total else float("nan")

    @property
    def high(self) -> float:
        return (self.total - self.outside) / self.total if self.total else float("nan")

    def text(self) -> str:
        claim = ">=" if self.at_least else "<"
        return (f"share between {self.low:.2f} ({self.inside} of {self.total} significant) and {self.high:.2f} "
                f"({self.outside} clearly not); claim {claim} {self.threshold:g}")


def proportion(inside: int, outside: int, total: int, threshold: float, at_least: bool = True) -> Count:
    """Claim "the share of units is >= threshold" (``at_least``) or "< threshold", on the range of shares the
    units' own tests leave open: [inside / total, (total - outside) / total]."""
    c = Count(INCONCLUSIVE, int(inside), int(outside), int(total), float(threshold), at_least)
    if not total:
        return c
    if at_least:
        c.state = HOLDS if c.low >= threshold else FAILS if c.high < threshold else INCONCLUSIVE
    else:
        c.state = HOLDS if c.high < threshold else FAILS if c.low >= threshold else INCONCLUSIVE
    return c
