"""Beyond the paper: do the top activation-patching heads coincide with the contrast matching heads?

Judged on ``patching_overlap.csv`` (:func:`matchsig.analysis.head_overlap.compare_heads`, written by the
``patch`` experiment in a folder that also holds a contrast run), rows of reference ``matching``:
one test per k of ``overlap_k``. The claim is listed only for run folders with patching results.
"""

from __future__ import annotations

from ...analysis.findings import FAILS, HOLDS, INCONCLUSIVE, Finding, Judge, _combine, finding, missing
from ...analysis.runfolder import FILES, RunFolder

__all__ = ["JUDGES", "RULE"]

KEY = "patching_heads_match_contrast"
#: The equivalence bound of the overlap: "coincide" means a share of matching heads among the top k at least
#: this far from the chance share m / n towards 1 (half way).
COINCIDE = 0.5
RULE = ("Per k (the rows of reference 'matching' in patching_overlap.csv), the overlap of the top-k patching heads "
        "with the matching heads is tested one-sided against chance twice: hypergeometric (uniform random k heads) "
        "and layer-stratified exact (random heads keeping each layer's count); each family of k's is corrected with "
        "the run's correction. A k holds when both corrected p <= alpha. It does not hold when the overlap is "
        f"significantly below the bound of a real coincidence: a share of matching heads among the top k of "
        f"pi = c + {COINCIDE} (1 - c), half way from the chance share c = m / n to all, tested by the binomial lower "
        "tail P(X <= overlap; k, pi) <= alpha (corrected over the k's; an overlap at or below chance with enough "
        "heads fails, one with few heads cannot); otherwise it is inconclusive. The claim holds when every k holds, "
        "does not hold when any k does not hold, and is inconclusive otherwise, and when the contrast run found no "
        "matching head or only matching heads.")


def _cut(run: RunFolder, k: int) -> tuple[str, bool | None]:
    """The uncertainty of the top-k choice: the k-th and (k+1)-th heads by |effect_mean| with their cluster-bootstrap
    CIs; separated when the k-th's CI of |effect| lies wholly above the (k+1)-th's (None: no CIs in the table)."""
    frame = run.patching
    if frame is None or "ci_low" not in frame or len(frame) <= k:
        return "", None
    order = frame.assign(_a=frame["effect_mean"].abs()).sort_values(["_a", "layer", "head"],
                                                                     ascending=[False, True, True])
    a, b = order.iloc[k - 1], order.iloc[k]

    def abs_range(row) -> tuple[float, float]:
        low, high = float(row["ci_low"]), float(row["ci_high"])
        return (0.0 if low <= 0 <= high else min(abs(low), abs(high))), max(abs(low), abs(high))

    separated = bool(abs_range(a)[0] > abs_range(b)[1])
    text = (f" (cut between head {int(a['layer'])}/{int(a['head'])}, {float(a['effect_mean']):+.3f} "
            f"[{float(a['ci_low']):+.3f}, {float(a['ci_high']):+.3f}], and {int(b['layer'])}/{int(b['head'])}, "
            f"{float(b['effect_mean']):+.3f} [{float(b['ci_low']):+.3f}, {float(b['ci_high']):+.3f}]: "
            + ("separated" if separated else "the CIs overlap, the top-k set is uncertain") + ")")
    return text, separated


def _coincide(run: RunFolder) -> Finding:
    from scipy.stats import binom

    from ...analysis.significance import correct

    frame = run.patching_overlap
    if frame is None:
        why = ("patching_overlap.csv is missing: it needs --site head and a contrast run in the same folder "
               "(matchsig experiments --experiments contrast,patch)")
        return missing(KEY, why, RULE)
    rows = frame[frame["reference"].astype(str) == "matching"].sort_values("k").reset_index(drop=True)
    if rows.empty:
        return missing(KEY, f"{FILES.patching_overlap} has no rows of reference 'matching'", RULE)
    n, m = int(rows["n_heads"].iloc[0]), int(rows["m"].iloc[0])
    diagnostic = str(rows["diagnostic"].iloc[0])
    if m == 0 or m == n:
        what = "no matching head" if m == 0 else f"every one of the {n} heads matching"
        return finding(KEY, INCONCLUSIVE, f"The contrast run found {what}: an overlap cannot tell anything.", RULE,
                       diagnostic=diagnostic, m=m, n_heads=n)
    alpha, method = run.alpha, run.correction
    p_uniform = correct(rows["p_hypergeom"].astype(float).tolist(), method)
    p_layer = correct(rows["p_layer_exact"].astype(float).tolist(), method)
    bound = m / n + COINCIDE * (1 - m / n)
    lower = [float(binom.cdf(int(r.overlap), int(r.k), bound)) for r in rows.itertuples()]
    p_lower = correct(lower, method)
    states, parts, per_k = [], [], []
    for i, r in enumerate(rows.itertuples()):
        if p_uniform[i] <= alpha and p_layer[i] <= alpha:
            state = HOLDS
        elif p_lower[i] <= alpha:
            state = FAILS
        else:
            state = INCONCLUSIVE
        states.append(state)
        cut, separated = _cut(run, int(r.k))
        per_k.append({"k": int(r.k), "overlap": int(r.overlap), "expected": float(r.expected), "state": state,
                      "p_hypergeom": p_uniform[i], "p_layer_exact": p_layer[i], "p_lower": p_lower[i],
                      "top_k_separated": separated})
        parts.append(f"k={int(r.k)}{cut}: {int(r.overlap)} shared (expected {float(r.expected):.2f}), p "
                     f"{p_uniform[i]:.3g} uniform, {p_layer[i]:.3g} layer-stratified, below the bound {bound:.2f} x "
                     f"{int(r.k)} = {bound * int(r.k):.2f}: p {p_lower[i]:.3g}: {state}")
    rho = float(rows["spearman_rho"].iloc[0])
    evidence = (f"{diagnostic}: top-k patching heads vs the {m} matching heads of {n} ({run.corrected} p over the "
                f"{len(rows)} k's, alpha {alpha:g}): " + "; ".join(parts)
                + f". Spearman rho(|effect|, contrast size) = {rho:.3f} (p {float(rows['spearman_p'].iloc[0]):.3g}).")
    return finding(KEY, _combine(states), evidence, RULE, diagnostic=diagnostic, m=m, n_heads=n, per_k=per_k,
                   spearman_rho=rho)


JUDGES = (
    Judge(KEY, "Top activation-patching heads coincide with the contrast matching heads (beyond the paper)", 18,
          _coincide, applies=lambda run: run.patching is not None),
)
