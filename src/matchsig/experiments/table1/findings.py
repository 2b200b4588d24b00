"""The findings of Table 1 (SPEC §5 findings 1-4 and the significance claims), judged on a run folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.findings import (FAILS, HOLDS, INCONCLUSIVE, MARGIN, MIN_QUERIES, Finding, Judge, _combine, _fmt,
                                  cell_sample, finding, missing, queries_of)
from ...analysis.runfolder import COMPARE, RunFolder, as_float
from ...analysis.significance import correct
from ...analysis.verdicts import Sample, Test, effect, equivalence, ordering
from ...engine.ablation import direction_cells

SEP_PARTS = ("SEP1", "SEP2")
#: The 30 ablations of Table 1: the family its corrected p-values are corrected over (for the MDE).
TABLE1_FAMILY = 30


def family_size(run: RunFolder, size: int) -> int:
    """How many tests a corrected p of the run was corrected over (1 when the run corrects nothing)."""
    return 1 if run.correction == "none" else size


def drop_test(run: RunFolder, row: pd.Series, margin: float = MARGIN, family: int = TABLE1_FAMILY) -> Test | None:
    """The claim "this ablation lowers nDCG@10" of one ranking row: an effect on -change, decided on the row's
    corrected p; it does not hold when the change rises significantly or a one-sided test rules out a drop of
    ``margin`` (the row is harmless). None when the row has no change or query count."""
    s = cell_sample(row, run.alpha)
    if s is None:
        return None
    return effect(Sample(-s.mean, s.sd, s.n), run.alpha, margin, p=run.decision_p(row), tests=family_size(run, family))


def _ndcg_state(run: RunFolder, row: pd.Series) -> str:
    """One nDCG comparison row: "drop" (significant), "rise" (significant), "harmless" (a one-sided test at
    alpha rules out a drop of MARGIN or more), or "undecided"."""
    test = drop_test(run, row)
    if test is None or test.n < MIN_QUERIES:
        return "undecided"
    if test.p <= run.alpha and test.mean != 0:
        return "drop" if test.mean > 0 else "rise"
    return "harmless" if test.state == FAILS else "undecided"


def _cell_text(run: RunFolder, label: str, row: pd.Series) -> str:
    low, high = as_float(row.get(COMPARE.ci_low)), as_float(row.get(COMPARE.ci_high))
    ci = f", CI [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    p = run.decision_p(row)
    return f"{label} {float(row[COMPARE.ndcg]):.3f} ({float(row[COMPARE.delta]):+.3f}{ci}, {run.p_name} {_fmt(p, 3) if p is not None and p >= 0.001 else f'{p:.1e}' if p is not None else 'n/a'})"


def _per_query_columns(run: RunFolder) -> dict[frozenset, str]:
    frame = run.table1_per_query
    if frame is None:
        return {}
    return {direction_cells(c): c for c in frame.columns if "<-" in str(c)}


def _dd_hurts_most(run: RunFolder) -> Finding:
    key = "dd_hurts_most"
    rule = ("D<-D has the lowest nDCG@10 of the 25 single directions and a paired t-test over queries puts it "
            f"significantly below the next lowest direction (p <= alpha, uncorrected: one planned comparison); does not "
            f"hold when another direction is significantly below D<-D, or D<-D's own drop is ruled out (a one-sided "
            f"test at alpha puts its change above -{MARGIN}); otherwise inconclusive.")
    cells = {k: v for k, v in run.cells().items() if k[1] != "*"}
    if ("D", "D") not in cells or len(cells) < 2:
        return missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    values = {k: float(v[COMPARE.ndcg]) for k, v in cells.items()}
    ranked = sorted(values.items(), key=lambda kv: kv[1])
    others = [(k, v) for k, v in ranked if k != ("D", "D")]
    runner = others[0][0]
    worst = ", ".join(f"{t}<-{s} {v:.3f}" for (t, s), v in ranked[:4])
    evidence = f"Lowest single directions: {worst} (unablated {_fmt(run.unablated)})."
    state_dd = _ndcg_state(run, cells[("D", "D")])
    pq, cols = run.table1_per_query, _per_query_columns(run)
    c_dd, c_run = cols.get(frozenset({("D", "D")})), cols.get(frozenset({runner}))
    n = queries_of(run, run.table1)
    tests = [t for t in [drop_test(run, cells[("D", "D")])] if t is not None]
    if state_dd == "harmless" or state_dd == "rise":
        verdict = FAILS
        evidence += " D<-D does not lower nDCG@10 meaningfully."
    elif pq is None or not c_dd or not c_run:
        verdict = INCONCLUSIVE
        evidence += " table1_per_query.csv is missing: D<-D cannot be tested against the runner-up."
    else:
        # only significance decides here: "hurts most" has no margin of its own (an ordering claim)
        test = ordering(pq[c_run].to_numpy(float), pq[c_dd].to_numpy(float), run.alpha)
        n, verdict, tests = test.n, test.state, [test]
        evidence += (f" D<-D vs the next lowest, {runner[0]}<-{runner[1]}: {runner[0]}<-{runner[1]} minus D<-D "
                     f"{test.mean:+.3f} per query, paired t-test p={test.p:.3g} over {test.n} queries, MDE "
                     f"{test.mde:.3g}.")
    return finding(key, verdict, evidence, rule, n, tests, ranking=[[f"{t}<-{s}", v] for (t, s), v in ranked])


def _equivalent_cells(run: RunFolder, chosen: dict) -> tuple[dict, list[str], list[str], list[str]]:
    """Per cell, the TOST of |change| < MARGIN; a violation's one-sided p corrected over the cells (any one
    violation fails the claim: a union, corrected; all must be equivalent: an intersection, not)."""
    tests = {k: equivalence(cell_sample(row, run.alpha), run.alpha, MARGIN) for k, row in chosen.items()}
    p_out = correct({k: t.p_violation for k, t in tests.items()}, run.correction)
    changes, undecided, noop = [], [], []
    for (t, s), row in chosen.items():
        test = tests[(t, s)]
        text = _cell_text(run, f"{t}<-{s}", row)
        if test.n >= MIN_QUERIES and p_out[(t, s)] <= run.alpha:
            test.state = FAILS
            changes.append(f"{text}, one-sided p beyond +-{MARGIN} {p_out[(t, s)]:.3g}")
        elif test.state == FAILS:
            test.state = INCONCLUSIVE  # violated before the correction only
            undecided.append(text)
        elif test.state == HOLDS:
            noop.append(text)
        else:
            undecided.append(text + f" (90% CI [{test.ci_one_sided[0]:+.3f}, {test.ci_one_sided[1]:+.3f}])"
                             if test.n >= MIN_QUERIES else text)
    return tests, changes, undecided, noop


def _sep_noop(run: RunFolder) -> Finding:
    key = "sep_noop"
    rule = (f"Each of the 18 ablations into or out of SEP1/SEP2 (16 single directions + SEP1<-*, SEP2<-*) is a no-op "
            f"when two one-sided tests at alpha put its change inside +-{MARGIN} (its (1 - 2 alpha) CI lies inside); it "
            f"changes something when a one-sided test puts the change beyond +-{MARGIN} ({run.p_label} over the 18). "
            "Holds when all 18 are no-ops; does not hold when one changes something; otherwise inconclusive.")
    cells = run.cells()
    chosen = {k: v for k, v in cells.items()
              if (k[1] != "*" and (k[0] in SEP_PARTS or k[1] in SEP_PARTS)) or (k[1] == "*" and k[0] in SEP_PARTS)}
    if not chosen:
        return missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    tests, changes, undecided, noop = _equivalent_cells(run, chosen)
    verdict = FAILS if changes else HOLDS if not undecided else INCONCLUSIVE
    deltas = [abs(float(r[COMPARE.delta])) for r in chosen.values()]
    mdes = [t.mde for t in tests.values() if t.mde == t.mde]
    evidence = (f"{len(chosen)} SEP cells, largest |change| {max(deltas):.3f}; {len(noop)} no-ops"
                + (f"; MDE of the equivalence tests {min(mdes):.3f} to {max(mdes):.3f}" if mdes else "") + ".")
    if changes:
        evidence += f" Changes beyond +-{MARGIN}: " + "; ".join(changes) + "."
    if undecided:
        evidence += " Not decided (the one-sided tests reach neither side): " + "; ".join(undecided) + "."
    return finding(key, verdict, evidence, rule, queries_of(run, run.table1), list(tests.values()), changes=changes,
                   undecided=undecided)


def _cls_all_random(run: RunFolder) -> Finding:
    key = "cls_all_random"
    rule = (f"Per query, CLS<-* minus the exact random baseline: holds when two one-sided tests at alpha put the mean "
            f"inside +-{MARGIN} (or every query equals it: all scores tie); does not hold when a one-sided test puts it "
            f"beyond +-{MARGIN}; otherwise inconclusive.")
    row = run.cells().get(("CLS", "*"))
    rnd = run.random_ndcg
    if row is None or rnd is None:
        return missing(key, "CLS<-* or the random baseline is missing (Table 1 was not run).", rule)
    value = float(row[COMPARE.ndcg])
    evidence = f"CLS<-* = {value:.4f} vs random ranking {rnd:.4f} (difference {value - rnd:+.4f}); unablated {_fmt(run.unablated)}."
    pq = run.table1_per_query
    col = _per_query_columns(run).get(frozenset({("CLS", "*")}))
    if pq is None or col is None or "random" not in pq:
        return finding(key, INCONCLUSIVE, evidence + " No per-query values: the means alone cannot decide.", rule,
                       queries_of(run, run.table1), value=value, random=rnd)
    d = pq[col].to_numpy(float) - pq["random"].to_numpy(float)
    test = equivalence(d, run.alpha, MARGIN)
    if np.all(np.abs(d) < 1e-9):
        verdict = HOLDS
        evidence += f" Equal to the exact random baseline on every one of the {len(d)} queries (all scores tie)."
    else:
        verdict = test.state
        evidence += f" Per query CLS<-* minus random: {test.text()}."
    return finding(key, verdict, evidence, rule, test.n, [test] if verdict == test.state else [], value=value,
                   random=rnd)


def _clsq_vs_clsd(run: RunFolder) -> Finding:
    key = "clsq_vs_clsd"
    rule = ("Per query, nDCG@10 of CLS<-D minus CLS<-Q (the claim: positive). Holds when a paired t-test gives p <= "
            f"alpha with CLS<-Q lower; does not hold when CLS<-Q is significantly higher or a one-sided test at alpha "
            f"rules out CLS<-Q being {MARGIN} lower; otherwise inconclusive.")
    cells = run.cells()
    q, d = cells.get(("CLS", "Q")), cells.get(("CLS", "D"))
    if q is None or d is None:
        return missing(key, "CLS<-Q or CLS<-D is missing (Table 1 was not run).", rule)
    vq, vd = float(q[COMPARE.ndcg]), float(d[COMPARE.ndcg])
    evidence = f"CLS<-Q = {vq:.3f}, CLS<-D = {vd:.3f} (difference {vq - vd:+.3f})."
    pq, cols = run.table1_per_query, _per_query_columns(run)
    cq, cd = cols.get(frozenset({("CLS", "Q")})), cols.get(frozenset({("CLS", "D")}))
    if pq is None or not cq or not cd:
        return finding(key, INCONCLUSIVE, evidence + " No per-query values (table1_per_query.csv) to test.", rule,
                        queries_of(run, run.table1), cls_q=vq, cls_d=vd)
    test = ordering(pq[cd].to_numpy(float), pq[cq].to_numpy(float), run.alpha, MARGIN)
    evidence += f" Per query CLS<-D minus CLS<-Q: {test.text()}."
    return finding(key, test.state, evidence, rule, test.n, [test], cls_q=vq, cls_d=vd)


def _table1_cells(run: RunFolder, key: str, wanted: list[tuple[str, str]], rule: str, claim_drop: bool) -> Finding:
    cells = run.cells()
    if not all(k in cells for k in wanted):
        return missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    tests = {k: drop_test(run, cells[k]) for k in wanted}
    # "not a significant drop": a bound (drop < MARGIN), violated by a drop significantly beyond it (corrected)
    p_big = correct({k: Sample(t.mean, t.sd, t.n).p_above(MARGIN) if t else 1.0 for k, t in tests.items()},
                    run.correction)
    states, parts = [], []
    for k in wanted:
        test, state = tests[k], _ndcg_state(run, cells[k])
        if claim_drop:
            verdict = HOLDS if state == "drop" else FAILS if state in ("rise", "harmless") else INCONCLUSIVE
        else:
            verdict = HOLDS if state in ("rise", "harmless") else FAILS if p_big[k] <= run.alpha else INCONCLUSIVE
        if test is not None:
            test.state = verdict
        states.append(verdict)
        mde = f", MDE {test.mde:.3f}{' (underpowered)' if test.underpowered else ''}" if test else ""
        parts.append(f"{_cell_text(run, f'{k[0]}<-{k[1]}', cells[k])}{mde}: {verdict}")
    return finding(key, _combine(states), "; ".join(parts) + ".", rule, queries_of(run, run.table1),
                   [t for t in tests.values() if t is not None])


def _table1_significant_drops(run: RunFolder) -> Finding:
    rule = (f"Each of D<-D, Q<-*, D<-*, CLS<-* is a significant drop ({run.p_name} <= {run.alpha:g} over the 30 "
            f"ablations, change < 0); a cell fails when it rises significantly or a one-sided test at alpha rules out a "
            f"drop of {MARGIN}. Holds when all four are significant drops. MDE: two-sided at alpha over the family "
            "(alpha / 30 for a corrected run).")
    return _table1_cells(run, "table1_significant_drops", [("D", "D"), ("Q", "*"), ("D", "*"), ("CLS", "*")], rule, True)


def _table1_not_significant(run: RunFolder) -> Finding:
    rule = (f"Neither CLS<-Q nor CLS<-D is a significant drop: a bound on the drop. A cell holds when a one-sided test "
            f"at alpha rules out a drop of {MARGIN} (or it rises significantly); it fails when a one-sided test puts "
            f"the drop significantly beyond {MARGIN} ({run.p_label} over the two cells); otherwise inconclusive.")
    return _table1_cells(run, "table1_not_significant", [("CLS", "Q"), ("CLS", "D")], rule, False)


def _alone_keeps_signal(run: RunFolder) -> Finding:
    key = "qd_dq_alone_keep_signal"
    rule = ("Q<-D alone and D<-Q alone each keep most of the relevance signal: per query, (ablated - random) minus "
            "half of (unablated - random), where random is the exact random baseline; each a bound claim (mean > 0) by "
            "one-sided tests at alpha: holds when both are significantly above 0 (more than half of the gap to random "
            "kept), does not hold when one is significantly below 0; otherwise inconclusive.")
    pq, cols = run.table1_per_query, _per_query_columns(run)
    wanted = [("Q", "D"), ("D", "Q")]
    columns = [cols.get(frozenset({k})) for k in wanted]
    if pq is None or not all(columns) or "random" not in pq or "none" not in pq:
        return missing(key, "table1_per_query.csv with Q<-D, D<-Q, none and random is missing (Table 1 was not run).",
                       rule)
    from ...analysis.verdicts import bound

    ref, rnd = pq["none"].to_numpy(float), pq["random"].to_numpy(float)
    tests, parts = [], []
    for (t, s_), col in zip(wanted, columns):
        value = pq[col].to_numpy(float)
        test = bound((value - rnd) - (ref - rnd) / 2, run.alpha, 0.0)
        kept = float(np.mean(value - rnd)) / float(np.mean(ref - rnd)) if np.mean(ref - rnd) else float("nan")
        tests.append(test)
        parts.append(f"{t}<-{s_} {float(np.mean(value)):.3f} keeps {kept:.0%} of the gap to random "
                     f"({float(np.mean(ref)):.3f} vs {float(np.mean(rnd)):.3f}); kept minus half: {test.text()} -> {test.state}")
    return finding(key, _combine([t.state for t in tests]), "; ".join(parts) + ".", rule, min(t.n for t in tests),
                   tests)


JUDGES = (
    Judge("dd_hurts_most", "D<-D hurts most among single directions", 1, _dd_hurts_most),
    Judge("sep_noop", "Directions into or out of SEP change nothing (no-op sinks)", 2, _sep_noop, needs=("SEP1", "SEP2")),
    Judge("cls_all_random", "CLS<-* gives a random ranking", 3, _cls_all_random, needs=("CLS",)),
    Judge("clsq_vs_clsd", "CLS<-Q hurts more than CLS<-D", 4, _clsq_vs_clsd, needs=("CLS",)),
    Judge("table1_significant_drops", "Table 1: D<-D, Q<-*, D<-* and CLS<-* are significant drops", 9, _table1_significant_drops, needs=("CLS",)),
    Judge("table1_not_significant", "Table 1: CLS<-Q and CLS<-D are not significant drops", 10, _table1_not_significant, needs=("CLS",)),
    Judge("qd_dq_alone_keep_signal", "Q<-D or D<-Q alone does not destroy the relevance signal (Table 1)", 15,
          _alone_keeps_signal, needs=("Q<-D",)),
)
