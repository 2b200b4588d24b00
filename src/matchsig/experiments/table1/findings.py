"""The findings of Table 1 (SPEC §5 findings 1-4 and the significance claims), judged on a run folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.findings import (FAILS, HOLDS, INCONCLUSIVE, MARGIN, MIN_QUERIES, SEP_NOOP, Finding, Judge, _combine, _fmt, directional, finding, missing, queries_of)
from ...analysis.runfolder import COMPARE, RunFolder, as_float
from ...engine.ablation import direction_cells

SEP_PARTS = ("SEP1", "SEP2")

def _ndcg_state(run: RunFolder, row: pd.Series) -> str:
    """One nDCG comparison row: "drop" (significant), "rise" (significant), "harmless" (CI rules out a drop
    of MARGIN or more), or "undecided"."""
    p = run.decision_p(row)
    delta = as_float(row.get(COMPARE.delta))
    low = as_float(row.get(COMPARE.ci_low))
    n = as_float(row.get(COMPARE.n_queries))
    if n is not None and n < MIN_QUERIES:
        return "undecided"
    if p is not None and delta is not None and p <= run.alpha and delta != 0:
        return "drop" if delta < 0 else "rise"
    if low is not None and low > -MARGIN:
        return "harmless"
    return "undecided"


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
            f"hold when another direction is significantly below D<-D, or D<-D's own drop is ruled out (CI of its change "
            f"above -{MARGIN}); otherwise inconclusive.")
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
    if state_dd == "harmless" or state_dd == "rise":
        verdict = FAILS
        evidence += " D<-D does not lower nDCG@10 meaningfully."
    elif pq is None or not c_dd or not c_run:
        verdict = INCONCLUSIVE
        evidence += " table1_per_query.csv is missing: D<-D cannot be tested against the runner-up."
    else:
        test = directional(pq[c_run].to_numpy(float) - pq[c_dd].to_numpy(float), run.alpha, 0.0)
        n = test.n
        # only significance decides here: "hurts most" has no margin of its own
        verdict = HOLDS if test.state == HOLDS else FAILS if (test.p <= run.alpha and test.mean < 0) else INCONCLUSIVE
        evidence += (f" D<-D vs the next lowest, {runner[0]}<-{runner[1]}: {runner[0]}<-{runner[1]} minus D<-D "
                     f"{test.mean:+.3f} per query, paired t-test p={test.p:.3g} over {test.n} queries.")
    return finding(key, verdict, evidence, rule, n, ranking=[[f"{t}<-{s}", v] for (t, s), v in ranked])


def _sep_noop(run: RunFolder) -> Finding:
    key = "sep_noop"
    rule = (f"Each of the 18 ablations into or out of SEP1/SEP2 (16 single directions + SEP1<-*, SEP2<-*) is a no-op "
            f"when the (1 - alpha) CI of its change lies inside +-{MARGIN}; it changes something when the change is "
            f"significant ({run.p_name} <= {run.alpha:g}) and larger than {SEP_NOOP}. Holds when all 18 are no-ops; "
            "does not hold when one changes something; otherwise inconclusive.")
    cells = run.cells()
    chosen = {k: v for k, v in cells.items()
              if (k[1] != "*" and (k[0] in SEP_PARTS or k[1] in SEP_PARTS)) or (k[1] == "*" and k[0] in SEP_PARTS)}
    if not chosen:
        return missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    changes, undecided, noop = [], [], []
    for (t, s), row in chosen.items():
        delta = float(row[COMPARE.delta])
        p = run.decision_p(row)
        low, high = as_float(row.get(COMPARE.ci_low)), as_float(row.get(COMPARE.ci_high))
        text = _cell_text(run, f"{t}<-{s}", row)
        if p is not None and p <= run.alpha and abs(delta) > SEP_NOOP:
            changes.append(text)
        elif low is not None and high is not None and -MARGIN < low and high < MARGIN:
            noop.append(text)
        else:
            undecided.append(text)
    verdict = FAILS if changes else HOLDS if not undecided else INCONCLUSIVE
    deltas = [abs(float(r[COMPARE.delta])) for r in chosen.values()]
    evidence = f"{len(chosen)} SEP cells, largest |change| {max(deltas):.3f}; {len(noop)} no-ops."
    if changes:
        evidence += " Significant changes above " + f"{SEP_NOOP}: " + "; ".join(changes) + "."
    if undecided:
        evidence += " Not decided (CI wider than the margin): " + "; ".join(undecided) + "."
    return finding(key, verdict, evidence, rule, queries_of(run, run.table1), changes=changes, undecided=undecided)


def _cls_all_random(run: RunFolder) -> Finding:
    key = "cls_all_random"
    rule = (f"Per query, CLS<-* minus the exact random baseline: holds when the (1 - alpha) CI of the mean lies inside "
            f"+-{MARGIN} (or every query equals it: all scores tie); does not hold when the difference is significant "
            f"(paired t-test p <= alpha) and larger than {MARGIN}; otherwise inconclusive.")
    row = run.cells().get(("CLS", "*"))
    rnd = run.random_ndcg
    if row is None or rnd is None:
        return missing(key, "CLS<-* or the random baseline is missing (Table 1 was not run).", rule)
    value = float(row[COMPARE.ndcg])
    evidence = f"CLS<-* = {value:.4f} vs random ranking {rnd:.4f} (difference {value - rnd:+.4f}); unablated {_fmt(run.unablated)}."
    pq = run.table1_per_query
    col = _per_query_columns(run).get(frozenset({("CLS", "*")}))
    if pq is None or col is None or "random" not in pq:
        verdict = HOLDS if abs(value - rnd) <= MARGIN else INCONCLUSIVE
        return finding(key, verdict, evidence + " No per-query values: judged on the means only.", rule,
                        queries_of(run, run.table1), value=value, random=rnd)
    d = pq[col].to_numpy(float) - pq["random"].to_numpy(float)
    test = directional(d, run.alpha, MARGIN)
    if np.all(np.abs(d) < 1e-9):
        verdict = HOLDS
        evidence += f" Equal to the exact random baseline on every one of the {len(d)} queries (all scores tie)."
    else:
        inside = -MARGIN < test.ci[0] and test.ci[1] < MARGIN
        verdict = (HOLDS if inside else FAILS if (test.p <= run.alpha and abs(test.mean) > MARGIN) else INCONCLUSIVE)
        evidence += f" Per query CLS<-* minus random: {test.text()}."
    return finding(key, verdict, evidence, rule, test.n, value=value, random=rnd)


def _clsq_vs_clsd(run: RunFolder) -> Finding:
    key = "clsq_vs_clsd"
    rule = ("Per query, nDCG@10 of CLS<-D minus CLS<-Q (the claim: positive). Holds when a paired t-test gives p <= "
            f"alpha with CLS<-Q lower; does not hold when CLS<-Q is significantly higher or the CI rules out CLS<-Q "
            f"being {MARGIN} lower; otherwise inconclusive.")
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
    test = directional(pq[cd].to_numpy(float) - pq[cq].to_numpy(float), run.alpha, MARGIN)
    evidence += f" Per query CLS<-D minus CLS<-Q: {test.text()}."
    return finding(key, test.state, evidence, rule, test.n, cls_q=vq, cls_d=vd)


def _table1_cells(run: RunFolder, key: str, wanted: list[tuple[str, str]], rule: str, claim_drop: bool) -> Finding:
    cells = run.cells()
    if not all(k in cells for k in wanted):
        return missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    states, parts = [], []
    for k in wanted:
        row = cells[k]
        state = _ndcg_state(run, row)
        if claim_drop:
            verdict = HOLDS if state == "drop" else FAILS if state in ("rise", "harmless") else INCONCLUSIVE
        else:
            verdict = FAILS if state == "drop" else HOLDS if state in ("rise", "harmless") else INCONCLUSIVE
        states.append(verdict)
        parts.append(f"{_cell_text(run, f'{k[0]}<-{k[1]}', row)}: {verdict}")
    return finding(key, _combine(states), "; ".join(parts) + ".", rule, queries_of(run, run.table1))


def _table1_significant_drops(run: RunFolder) -> Finding:
    rule = (f"Each of D<-D, Q<-*, D<-*, CLS<-* is a significant drop ({run.p_name} <= {run.alpha:g} over the 30 "
            f"ablations, change < 0); a cell fails when it rises significantly or its CI rules out a drop of {MARGIN}. "
            "Holds when all four are significant drops.")
    return _table1_cells(run, "table1_significant_drops", [("D", "D"), ("Q", "*"), ("D", "*"), ("CLS", "*")], rule, True)


def _table1_not_significant(run: RunFolder) -> Finding:
    rule = (f"Neither CLS<-Q nor CLS<-D is a significant drop; a cell holds when its CI rules out a drop of {MARGIN} "
            f"(or it rises significantly), fails when it is a significant drop ({run.p_name} <= {run.alpha:g}), and is "
            "inconclusive when it is not significant but a drop of the margin is not ruled out (too few queries).")
    return _table1_cells(run, "table1_not_significant", [("CLS", "Q"), ("CLS", "D")], rule, False)



JUDGES = (
    Judge("dd_hurts_most", "D<-D hurts most among single directions", 1, _dd_hurts_most),
    Judge("sep_noop", "Directions into or out of SEP change nothing (no-op sinks)", 2, _sep_noop),
    Judge("cls_all_random", "CLS<-* gives a random ranking", 3, _cls_all_random),
    Judge("clsq_vs_clsd", "CLS<-Q hurts more than CLS<-D", 4, _clsq_vs_clsd),
    Judge("table1_significant_drops", "Table 1: D<-D, Q<-*, D<-* and CLS<-* are significant drops", 9, _table1_significant_drops),
    Judge("table1_not_significant", "Table 1: CLS<-Q and CLS<-D are not significant drops", 10, _table1_not_significant),
)
