"""The findings of Figures 2-4 (matching heads, hard vs easy negatives, entropy and exact match), judged on a run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis.findings import (FAILS, HOLDS, INCONCLUSIVE, MIN_QUERIES, STD_MARGIN, Finding, Judge, _combine,
                                  directional, finding, first_layer, layer_text, missing)
from ...analysis.runfolder import COMPARE, CONTRAST, RunFolder
from ...analysis.verdicts import bound, proportion

def _classified(run: RunFolder, correction: str | None = None) -> pd.DataFrame | None:
    from ...analysis.matching import classify

    frame = run.contrast_heads
    if frame is None:
        return None
    return classify(frame, run.alpha, run.correction if correction is None else correction)


def matching_heads(run: RunFolder, direction: str | None = None, correction: str | None = None) -> pd.DataFrame:
    """Rows of ``contrast/heads.csv`` that are matching heads (:mod:`matchsig.analysis.matching`, either sign)."""
    frame = _classified(run, correction)
    if frame is None:
        return pd.DataFrame()
    mask = frame[CONTRAST.matching].to_numpy(bool)
    if direction is not None:
        mask &= frame[CONTRAST.direction].astype(str).str.replace(" ", "").to_numpy() == direction
    return frame[mask]


def top_matching_heads(run_dir: str | Path | RunFolder, n: int = 15) -> pd.DataFrame:
    """The matching heads with the largest |delta_relevant|, with sign, kind and the three tests."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    frame = matching_heads(run)
    if frame.empty:
        return frame
    p = {c: run.p_column(c) for c in ("relevant", "hard", "relevant_hard")}
    cols = [c for c in (CONTRAST.layer, CONTRAST.head, CONTRAST.direction, "sign", "delta_relevant", p["relevant"], "delta_hard", p["hard"],
                        "delta_relevant_hard", p["relevant_hard"], CONTRAST.kind) if c in frame]
    order = frame["delta_relevant"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order, cols].head(n).reset_index(drop=True)


def clearly_null(frame: pd.DataFrame, comparison: str, alpha: float) -> np.ndarray:
    """Rows whose ``comparison`` test rules out a medium effect by two one-sided tests at alpha (TOST): the
    (1 - 2 alpha) CI of the mean difference lies inside +-STD_MARGIN standard deviations, i.e.
    |t| + t_{1 - alpha, n - 1} < STD_MARGIN sqrt(n) (from the t and n columns)."""
    from ...analysis.significance import t_critical

    t_col, n_col = f"t_{comparison}", f"n_{comparison}"
    if t_col not in frame or n_col not in frame:
        return np.zeros(len(frame), bool)
    t = np.abs(pd.to_numeric(frame[t_col], errors="coerce").to_numpy(float))
    n = pd.to_numeric(frame[n_col], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        crit = t_critical(2 * alpha, np.maximum(n - 1, 1))
        out = (t + crit < STD_MARGIN * np.sqrt(n)) & (n >= MIN_QUERIES)
    return np.nan_to_num(out, nan=0).astype(bool)


def _per_layer(frame: pd.DataFrame, flag: np.ndarray, L: int, H: int, how: str = "any") -> dict[int, float]:
    """Per layer, the fraction of heads for which ``flag`` holds in any (or all) of their direction rows."""
    heads = frame.assign(_f=flag).groupby([CONTRAST.layer, CONTRAST.head])["_f"].agg(how)
    counts = heads[heads].groupby(level=CONTRAST.layer).size()
    return {l: float(counts.get(l, 0)) / H for l in range(L)}


def _n_queries(frame: pd.DataFrame) -> int | None:
    for column in ("n_relevant", COMPARE.n_queries):
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce").dropna()
            if len(values):
                return int(values.max())
    return None


def head_power(run: RunFolder, frame: pd.DataFrame) -> dict:
    """The per-head tests' minimal detectable effects, in standard deviations (Cohen's d_z) at 80% power: the
    matching test (two-sided, corrected over the 2 L H rows of a comparison) and the "clearly not" TOST."""
    from ...analysis.power import effect_size

    n = _n_queries(frame) or 0
    family = 1 if run.correction == "none" else len(frame)
    sig = effect_size(n, run.alpha / family) if n >= 2 else float("nan")
    null = effect_size(n, run.alpha, "larger", 0.9) if n >= 2 else float("nan")
    return {"mde_dz_matching": sig, "mde_dz_clearly_not": null,
            "underpowered": bool(max(sig, null) > STD_MARGIN) if n >= 2 else False}


def _power_text(power: dict) -> str:
    return (f" Per-head MDE (d_z at 80% power): {power['mde_dz_matching']:.2f} for the matching test, "
            f"{power['mde_dz_clearly_not']:.2f} for the 'clearly not' tests (margin {STD_MARGIN}).")


def _heads_finding(run: RunFolder, key: str, verdict: str, evidence: str, rule: str, frame: pd.DataFrame,
                   **data) -> Finding:
    power = head_power(run, frame)
    out = finding(key, verdict, evidence + _power_text(power), rule, _n_queries(frame), **data)
    out.mde = power["mde_dz_matching"] if power["mde_dz_matching"] == power["mde_dz_matching"] else None
    out.underpowered = verdict in (HOLDS, FAILS) and power["underpowered"]
    return out


def _heads_in(frame: pd.DataFrame, flag: np.ndarray, layers: list[int], how: str = "any") -> int:
    """How many (layer, head)s of ``layers`` have ``flag`` in any (or all) of their direction rows."""
    heads = frame.assign(_f=flag).groupby([CONTRAST.layer, CONTRAST.head])["_f"].agg(how)
    return int(heads[heads.index.get_level_values(0).isin(layers)].sum())


def _matching_heads_layers(run: RunFolder) -> Finding:
    key = "matching_heads_layers"
    L, H = run.num_layers, run.num_heads
    half, late = (first_layer("second_half", L), first_layer("late", L)) if L else (None, None)
    rule = (f"Matching head (matchsig.matching): M(.|3) vs M(.|-1) significant, either sign, in Q<-D or D<-Q "
            f"({run.p_label} <= {run.alpha:g}); a head is clearly not matching when, in both directions, two one-sided "
            f"tests at alpha rule out a medium effect (|d_z| >= {STD_MARGIN}). A share of heads is decided on the range "
            "the heads' tests leave open, [matching, not clearly non-matching] / heads. 'Few' in the first half (l < "
            + layer_text("second_half", L) + "): holds when even the upper end of the range is < 0.5, fails when the "
            "share of matching heads is >= 0.5. 'Every head' in the last layers (l >= " + layer_text("late", L) + ", the "
            "paper's 20-23 of 24): holds when the share of matching heads is >= 0.8, fails when the upper end is < 0.8 "
            "(more than 0.2 clearly not). Otherwise inconclusive.")
    strict = _classified(run)
    if strict is None or not L or not H:
        return missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    matching = _per_layer(strict, strict[CONTRAST.matching].to_numpy(bool), L, H)
    null_flag = clearly_null(strict, "relevant", run.alpha)
    null = _per_layer(strict, null_flag, L, H, how="all")
    first, last = list(range(0, half)), list(range(late, L))
    counts = {name: (_heads_in(strict, strict[CONTRAST.matching].to_numpy(bool), ls),
                     _heads_in(strict, null_flag, ls, "all"), len(ls) * H) for name, ls in (("few", first), ("every", last))}
    few = proportion(*counts["few"], 0.5, at_least=False)
    every = proportion(*counts["every"], 0.8, at_least=True)
    signs = strict[strict[CONTRAST.matching]].groupby(CONTRAST.layer)["sign"].agg(lambda s: f"{(s > 0).sum()}+/{(s < 0).sum()}-")
    listing = ", ".join(f"{l}: {matching[l]:.2f} ({signs.get(l, '0+/0-')}; {null[l]:.2f} clearly not)" for l in range(L))
    evidence = (f"Per layer, the fraction of the {H} heads that are matching heads ({run.p_label}; (+/-) direction "
                f"rows by sign) and that are clearly not: {listing}. First half (layers 0..{half - 1}): {few.text()} -> "
                f"{few.state}; last layers ({late}..{L - 1}): {every.text()} -> {every.state}.")
    return _heads_finding(run, key, _combine([few.state, every.state]), evidence, rule, strict,
                          fractions={str(k): v for k, v in matching.items()}, mean_first_half=few.low,
                          mean_last_layers=every.low)


def _bidirectional(run: RunFolder) -> Finding:
    key = "matching_heads_bidirectional"
    rule = ("Of the heads matching for Q<-D, the share also matching for D<-Q, and vice versa (matching as in "
            f"matchsig.matching, {run.p_label} <= {run.alpha:g}). Holds when both shares are >= 0.5; does not hold when "
            f"more than half of a direction's matching heads are clearly not matching in the other (two one-sided tests "
            f"rule out |d_z| >= {STD_MARGIN}): a share decided on the range the heads' tests leave open; otherwise "
            "inconclusive, also when no head matches.")
    strict = _classified(run)
    if strict is None:
        return missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    strict = strict.assign(_null=clearly_null(strict, "relevant", run.alpha),
                           _dir=strict[CONTRAST.direction].astype(str).str.replace(" ", ""))

    def rows(direction, column):
        sub = strict[strict[column] & (strict["_dir"] == direction)]
        return {(int(l), int(h)): int(s) for l, h, s in zip(sub[CONTRAST.layer], sub[CONTRAST.head], sub["sign"])}

    qd, dq = rows("Q<-D", CONTRAST.matching), rows("D<-Q", CONTRAST.matching)
    qd_null, dq_null = rows("Q<-D", "_null"), rows("D<-Q", "_null")
    n = _n_queries(strict)
    if not qd and not dq:
        return finding(key, INCONCLUSIVE, "No matching head in either direction: nothing to compare.", rule, n)
    share = lambda a, b: len(set(a) & set(b)) / len(a) if a else 1.0  # noqa: E731
    s_qd, s_dq = share(qd, dq), share(dq, qd)
    n_qd, n_dq = share(qd, dq_null), share(dq, qd_null)
    parts = [proportion(len(set(a) & set(b)), len(set(a) & set(c)), len(a), 0.5) for a, b, c in
             ((qd, dq, dq_null), (dq, qd, qd_null)) if a]
    verdict = _combine([c.state for c in parts])
    both = set(qd) & set(dq)
    same_sign = sum(1 for h in both if qd[h] == dq[h])
    evidence = (f"{len(qd)} matching heads for Q<-D, {len(dq)} for D<-Q, {len(both)} in both ({same_sign} with the same "
                f"sign): {s_qd:.0%} of the Q<-D ones also match D<-Q ({n_qd:.0%} clearly do not), {s_dq:.0%} of the "
                f"D<-Q ones also match Q<-D ({n_dq:.0%} clearly do not).")
    return _heads_finding(run, key, verdict, evidence, rule, strict, share_qd=s_qd, share_dq=s_dq, both=len(both))


# ---- per-query contrasts (Figures 3-4) -------------------------------------------------------------


def late_start(L: int) -> int:
    """First of the "last layers": 20 of 24 scaled to depth, floor(20 L / 24) (:func:`first_layer`)."""
    return first_layer("late", L)


def _per_query_levels(run: RunFolder, statistic: str, layers: list[int]) -> pd.DataFrame | None:
    """Per query and direction, the mean of ``statistic`` over the heads of ``layers``, one column per level."""
    frame = run.contrast_per_query
    if frame is None or statistic not in frame:
        return None
    sub = frame[frame[CONTRAST.layer].isin(layers)]
    sub = sub.assign(direction=sub[CONTRAST.direction].astype(str).str.replace(" ", ""))
    return sub.pivot_table(index=[CONTRAST.qid, CONTRAST.direction], columns=CONTRAST.level, values=statistic, aggfunc="mean")


def _diff(table: pd.DataFrame, direction: str, level: int, reference: int) -> pd.Series:
    sub = table.xs(direction, level=CONTRAST.direction)
    if level not in sub or reference not in sub:
        return pd.Series(dtype=float)
    return (sub[level] - sub[reference]).dropna()


def _hard_vs_easy_layers(run: RunFolder) -> Finding:
    key = "hard_vs_easy_layers"
    L = run.num_layers
    s = late_start(L) if L else None
    rule = ("(a) Early/middle layers (l < " + layer_text("late", L) + "): at least one head "
            f"whose M(.|0) vs M(.|-1) differs ({run.p_label} <= {run.alpha:g}, either direction); fails when every "
            f"early/middle row clearly does not (two one-sided tests rule out |d_z| >= {STD_MARGIN}). (b) Last layers "
            "(l >= that, the paper's 20-23 of 24): hard negatives look like easy negatives relative to relevant ones: "
            "per query, averaged over the last layers' heads and both directions, M(0) - M(-1) lies within "
            "+-(M(3) - M(-1))/2 (oriented by the sign of the mean relevant-vs-easy difference): an equivalence with a "
            "per-query band, two one-sided tests at alpha of (M(3)-M(-1))/2 -/+ (M(0)-M(-1)) > 0; holds when both "
            "reject, does not hold only when one side is significantly violated (its mean significantly below 0), "
            "otherwise inconclusive. Holds when (a) and (b) hold.")
    strict = _classified(run)
    if strict is None or not L:
        return missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    if run.p_column("hard") not in strict:
        return missing(key, f"contrast/heads.csv has no {run.p_column('hard')} column.", rule)
    early = (strict[CONTRAST.layer] < s).to_numpy()
    n_s = int(((strict[run.p_column("hard")] <= run.alpha).to_numpy() & early).sum())
    n_null = int((clearly_null(strict, "hard", run.alpha) & early).sum())
    part_a = HOLDS if n_s > 0 else FAILS if n_null == int(early.sum()) else INCONCLUSIVE
    per_layer = strict[strict[run.p_column("hard")] <= run.alpha].groupby(CONTRAST.layer).size()
    evidence = (f"(a) {n_s} of {int(early.sum())} (head, direction) rows in layers 0..{s - 1} with a significant "
                f"hard-vs-easy difference, {n_null} clearly without one; per layer: "
                + (", ".join(f"{int(l)}: {int(c)}" for l, c in per_layer.items()) or "none") + f" -> {part_a}.")
    table = _per_query_levels(run, "max", list(range(s, L)))
    n, tests = None, []
    if table is None:
        part_b = INCONCLUSIVE
        evidence += " (b) contrast/per_query.csv is missing."
    else:
        rel = pd.concat([_diff(table, d, 3, -1) for d in ("Q<-D", "D<-Q")], axis=1).mean(axis=1)
        hard = pd.concat([_diff(table, d, 0, -1) for d in ("Q<-D", "D<-Q")], axis=1).mean(axis=1)
        both = pd.concat([rel, hard], axis=1).dropna()
        sign = float(np.sign(both[0].mean())) or 1.0
        # M(0) - M(-1) inside +-(M(3) - M(-1))/2: two one-sided tests (TOST with a per-query band)
        above = bound((sign * both[0] / 2 - sign * both[1]).to_numpy(), run.alpha)
        below = bound((sign * both[0] / 2 + sign * both[1]).to_numpy(), run.alpha)
        part_b, n, tests = _combine([above.state, below.state]), above.n, [above, below]
        evidence += (f" (b) Layers {s}..{L - 1}, per query: median M(0)-M(-1) {float(both[1].median()):+.4f} vs "
                     f"M(3)-M(-1) {float(both[0].median()):+.4f}; (M(3)-M(-1))/2 minus M(0)-M(-1), signed: "
                     f"{above.text()}; plus M(0)-M(-1): {below.text()} -> {part_b}.")
    return finding(key, _combine([part_a, part_b]), evidence, rule, n, tests)


def _figure4(run: RunFolder, key: str, statistic: str, layers_kind: str, directions: tuple[str, ...], rule: str) -> Finding:
    L = run.num_layers
    if not L or run.contrast_per_query is None:
        return missing(key, "contrast/per_query.csv is missing (contrast was not run).", rule)
    s = late_start(L)
    layers = list(range(s, L)) if layers_kind == "late" else list(range(0, s))
    table = _per_query_levels(run, statistic, layers)
    if table is None:
        return missing(key, f"contrast/per_query.csv has no {statistic} column.", rule)
    states, parts, ns, tests = [], [], [], []
    for direction in directions:
        test = directional(_diff(table, direction, 3, -1).to_numpy(), run.alpha)
        tests.append(test)
        states.append(test.state)
        ns.append(test.n)
        parts.append(f"{direction} {statistic}, relevant minus easy, layers {layers[0]}..{layers[-1]}: {test.text()} -> {test.state}")
    return finding(key, _combine(states), "; ".join(parts) + ".", rule, min(ns) if ns else None, tests)


def _qd_entropy_late(run: RunFolder) -> Finding:
    rule = ("Per query, the Q<-D attention entropy on relevant minus easy-negative passages, averaged over the heads of "
            "the last layers (l >= floor(20 L / 24)); holds when a one-sample t-test gives p <= alpha with a positive "
            "mean; does not hold when significant the other way or a one-sided test at alpha rules out d_z >= 0.5; "
            "otherwise inconclusive.")
    return _figure4(run, "qd_entropy_late", "entropy", "late", ("Q<-D",), rule)


def _exact_match_early(run: RunFolder) -> Finding:
    rule = ("Per query and direction (Q<-D and D<-Q), the exact-match mass on relevant minus easy-negative passages, "
            "averaged over the heads of the early/middle layers (l < floor(20 L / 24)); each direction decided as for the "
            "entropy claim; holds when both directions hold.")
    return _figure4(run, "exact_match_early", "exact", "early", ("Q<-D", "D<-Q"), rule)


def _dq_entropy_late_similar(run: RunFolder) -> Finding:
    key = "dq_entropy_late_similar"
    rule = ("Last layers (l >= floor(20 L / 24)), per query: a = sQD x dQD - sDQ x dDQ, where dX is the entropy on "
            "relevant minus easy-negative passages for direction X averaged over the heads and sX the sign of its mean "
            "(so mean a = |mean dQD| - |mean dDQ|; the claim: D<-Q differs less than Q<-D). One-sample t-test on a: holds "
            "when p <= alpha with a > 0; does not hold when significant the other way or a one-sided test at alpha rules "
            "out d_z >= 0.5; "
            "otherwise inconclusive.")
    L = run.num_layers
    if not L or run.contrast_per_query is None:
        return missing(key, "contrast/per_query.csv is missing (contrast was not run).", rule)
    s = late_start(L)
    table = _per_query_levels(run, "entropy", list(range(s, L)))
    if table is None:
        return missing(key, "contrast/per_query.csv has no entropy column.", rule)
    qd, dq = _diff(table, "Q<-D", 3, -1), _diff(table, "D<-Q", 3, -1)
    both = pd.concat([qd, dq], axis=1).dropna()
    s_qd, s_dq = (float(np.sign(both[c].mean())) or 1.0 for c in (0, 1))
    test = directional((s_qd * both[0] - s_dq * both[1]).to_numpy(), run.alpha)
    t_dq = directional(both[1].to_numpy(), run.alpha)
    evidence = (f"Layers {s}..{L - 1}: mean entropy difference relevant minus easy, Q<-D {float(both[0].mean()):+.4f}, "
                f"D<-Q {float(both[1].mean()):+.4f} (D<-Q alone: p={t_dq.p:.3g}); a: {test.text()}.")
    return finding(key, test.state, evidence, rule, test.n, [test])


def _matching_per_query(run: RunFolder) -> pd.DataFrame | None:
    """Per query and matching (layer, head, direction) row: M at levels 3, 0 and -1 and the row's sign."""
    frame, strict = run.contrast_per_query, _classified(run)
    if frame is None or strict is None or "max" not in frame:
        return None
    keys = [CONTRAST.layer, CONTRAST.head, CONTRAST.direction]
    rows = strict[strict[CONTRAST.matching]].assign(
        direction=lambda f: f[CONTRAST.direction].astype(str).str.replace(" ", ""))[keys + [CONTRAST.sign]]
    sub = frame.assign(direction=frame[CONTRAST.direction].astype(str).str.replace(" ", ""))
    table = sub.pivot_table(index=[CONTRAST.qid] + keys, columns=CONTRAST.level, values="max", aggfunc="mean")
    if not {3, 0, -1} <= set(table.columns):
        return None
    # a query counts where it has all three levels (relevant, hard and easy passages)
    return table.dropna(subset=[3, 0, -1]).reset_index().merge(rows, on=keys)


SELECTION = ("Heads and signs are those of the contrast run (chosen on the same queries: the per-query means are "
             "conditional on that selection).")


def _hard_same_pattern_weaker(run: RunFolder) -> Finding:
    key = "hard_same_pattern_weaker"
    rule = ("On the matching (head, direction) rows (M(.|3) vs M(.|-1) significant, sign s), per query averaged over "
            "the rows: (i) same pattern: s (M(3) - M(0)) > 0, relevant passages also differ from hard negatives in the "
            "head's direction; (ii) weaker: s (M(0) - M(-1)) > 0, i.e. s (M(3) - M(0)) < s (M(3) - M(-1)). Each an "
            "effect claim (one-sample t-test, margin d_z = 0.5 for a clear no). Holds when both hold. " + SELECTION)
    table = _matching_per_query(run)
    if table is None:
        return missing(key, "contrast/per_query.csv or contrast/heads.csv is missing (contrast was not run).", rule)
    if table.empty:
        return finding(key, INCONCLUSIVE, "No matching head: nothing to compare.", rule)
    sign = table[CONTRAST.sign].to_numpy(float)
    per_query = pd.DataFrame({"same": sign * (table[3] - table[0]), "weaker": sign * (table[0] - table[-1]),
                              "easy": sign * (table[3] - table[-1]), CONTRAST.qid: table[CONTRAST.qid]})
    means = per_query.groupby(CONTRAST.qid).mean()
    same, weaker = directional(means["same"].to_numpy(), run.alpha), directional(means["weaker"].to_numpy(), run.alpha)
    rows = len(table[[CONTRAST.layer, CONTRAST.head, CONTRAST.direction]].drop_duplicates())
    evidence = (f"{rows} matching rows; per query, signed M(3)-M(-1) {float(means['easy'].mean()):+.4f}, M(3)-M(0) "
                f"{float(means['same'].mean()):+.4f}. (i) s(M(3)-M(0)): {same.text()} -> {same.state}; (ii) "
                f"s(M(0)-M(-1)): {weaker.text()} -> {weaker.state}.")
    return finding(key, _combine([same.state, weaker.state]), evidence, rule, same.n, [same, weaker])


def _late_differences_smaller(run: RunFolder) -> Finding:
    key = "late_differences_smaller"
    L = run.num_layers
    rule = ("Per query, the signed difference s (M(3) - M(-1)) averaged over the matching (head, direction) rows of "
            "the early/middle layers (l < " + layer_text("late", L) + ") minus the same over the matching rows of the last "
            "layers: the claim, late-layer differences are smaller in magnitude, is that it is > 0 (an effect claim, "
            "one-sample t-test, margin d_z = 0.5 for a clear no); inconclusive when a range has no matching head. "
            + SELECTION)
    table = _matching_per_query(run)
    if table is None or not L:
        return missing(key, "contrast/per_query.csv or contrast/heads.csv is missing (contrast was not run).", rule)
    late = table[CONTRAST.layer] >= late_start(L)
    if not late.any() or late.all():
        where = "last" if not late.any() else "early/middle"
        return finding(key, INCONCLUSIVE, f"No matching head in the {where} layers: nothing to compare.", rule)
    signed = table[CONTRAST.sign].to_numpy(float) * (table[3] - table[-1])
    frame = pd.DataFrame({CONTRAST.qid: table[CONTRAST.qid], "late": late.to_numpy(), "d": signed})
    by = frame.groupby([CONTRAST.qid, "late"])["d"].mean().unstack()
    diff = (by[False] - by[True]).dropna()
    test = directional(diff.to_numpy(), run.alpha)
    keys = [CONTRAST.layer, CONTRAST.head, CONTRAST.direction]
    counts = [len(table[mask][keys].drop_duplicates()) for mask in (~late, late)]
    evidence = (f"Matching rows: {counts[0]} early/middle, {counts[1]} late (l >= {late_start(L)}); per query, signed M(3)-M(-1) early/middle {float(by[False].mean()):+.4f}, "
                f"late {float(by[True].mean()):+.4f}; early minus late: {test.text()}.")
    return finding(key, test.state, evidence, rule, test.n, [test])


JUDGES = (
    Judge("matching_heads_layers", "Matching heads: few per layer in early/middle layers, (almost) every head in late layers", 7, _matching_heads_layers),
    Judge("matching_heads_bidirectional", "Matching heads are bidirectional (the same heads match Q<-D and D<-Q)", 8, _bidirectional, needs=("Q<-D",)),
    Judge("hard_vs_easy_layers", "Hard vs easy negatives differ in early/middle layers, not in the last layers (Figure 3)", 11, _hard_vs_easy_layers, needs=("Q<-D",)),
    Judge("qd_entropy_late", "Late-layer Q<-D entropy is higher on relevant than on easy-negative passages (Figure 4)", 12, _qd_entropy_late, needs=("Q<-D",)),
    Judge("exact_match_early", "Early/middle heads put more exact-match mass on relevant passages (Figure 4)", 13, _exact_match_early, needs=("Q<-D",)),
    Judge("dq_entropy_late_similar", "Late-layer D<-Q entropy differs less than Q<-D between relevant and easy negatives (Figure 4)", 14, _dq_entropy_late_similar, needs=("Q<-D",)),
    Judge("hard_same_pattern_weaker", "Relevant vs hard negatives: the same matching pattern, weaker (Figure 2, r = 0)", 16,
          _hard_same_pattern_weaker, needs=("Q<-D",)),
    Judge("late_differences_smaller", "Late-layer matching differences are smaller in magnitude (Figure 2b)", 17,
          _late_differences_smaller, needs=("Q<-D",)),
)
