"""Power of the package's t-tests: the minimal detectable effect (MDE) at 80% power.

The MDE of a test is the smallest true mean difference it detects with probability ``power`` (80%)
at its sample size and significance level: ``d * sd`` where ``d`` solves the power equation of the
one-sample (or paired) t-test, ``statsmodels.stats.power.TTestPower`` (the noncentral t). A family
of ``tests`` corrected for multiple comparisons is tested at ``alpha / tests`` (Bonferroni, and Holm's
first step: the bound every Holm-corrected test must beat when all others are null), so its MDE is
that of the smaller level. For an equivalence claim decided by two one-sided tests (TOST) the MDE is
the smallest equivalence margin the TOST establishes with 80% power when the true mean is 0: each
one-sided test at ``alpha`` needs power ``1 - (1 - power) / 2`` (the two failures are nearly
disjoint events), i.e. a one-sided MDE at 90% power.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = ["POWER", "ALTERNATIVES", "effect_size", "mde", "mde_equivalence", "family_alpha"]

#: The power the MDE is stated at.
POWER = 0.8
#: ``two-sided`` (an effect either way), ``larger`` (a one-sided test).
ALTERNATIVES = ("two-sided", "larger")


@lru_cache(maxsize=4096)
def effect_size(n: int, alpha: float, alternative: str = "two-sided", power: float = POWER) -> float:
    """The standardised effect (Cohen's d_z = mean / sd) a t-test of ``n`` values detects with ``power``;
    NaN for fewer than 2 values."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, not {alternative!r}")
    if n < 2 or not (0 < alpha < 1):
        return float("nan")
    from statsmodels.stats.power import TTestPower

    value = TTestPower().solve_power(effect_size=None, nobs=int(n), alpha=float(alpha), power=float(power),
                                     alternative=alternative)
    return float(value[0] if hasattr(value, "__len__") else value)


def family_alpha(alpha: float, tests: int = 1) -> float:
    """The per-test level of a family of ``tests`` corrected tests (Bonferroni / Holm's first step)."""
    return float(alpha) / max(int(tests), 1)


def mde(sd: float, n: int, alpha: float, alternative: str = "two-sided", tests: int = 1,
        power: float = POWER) -> float:
    """Minimal detectable mean difference at ``power`` of a t-test of ``n`` values with standard deviation ``sd``,
    tested at ``alpha`` within a corrected family of ``tests`` (NaN when ``sd`` or ``n`` cannot give one)."""
    if sd is None or not math.isfinite(sd) or sd <= 0 or n is None or n < 2:
        return float("nan")  # no variation (every value equal): the t-test is degenerate, no MDE
    return effect_size(int(n), family_alpha(alpha, tests), alternative, power) * float(sd)


def mde_equivalence(sd: float, n: int, alpha: float, tests: int = 1, power: float = POWER) -> float:
    """Smallest equivalence margin two one-sided tests at ``alpha`` establish with ``power`` when the true
    mean is 0 (one-sided MDE at power ``1 - (1 - power) / 2``)."""
    return mde(sd, n, alpha, "larger", tests, 1 - (1 - power) / 2)
