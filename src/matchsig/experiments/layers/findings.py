"""The findings of Figure 1 (SPEC §5 findings 5-6: up-to-layer ablations), judged on a run folder."""

from __future__ import annotations

import pandas as pd

from ...analysis.findings import (DROP, FAILS, HOLDS, INCONCLUSIVE, MIN_QUERIES, Finding, Judge, _combine, finding,
                                  first_layer, layer_text, missing, queries_of)
from ...analysis.runfolder import COMPARE, CONTRAST, RunFolder, as_float
from ...engine.ablation import direction_cells, direction_label
from ..table1.findings import drop_test

CLS_DIRECTIONS = (frozenset({("CLS", "*")}), frozenset({("CLS", "Q"), ("CLS", "D")}))


def _layer_curves(run: RunFolder) -> dict[frozenset, pd.DataFrame]:
    frame = run.layers
    if frame is None:
        return {}
    out = {}
    for direction, group in frame.groupby(CONTRAST.direction, sort=False):
        group = group.sort_values(CONTRAST.layer).copy()
        if COMPARE.delta in group and group[COMPARE.delta].notna().all():
            group["drop"] = -group[COMPARE.delta].astype(float)
        elif run.unablated is not None:
            group["drop"] = run.unablated - group[COMPARE.ndcg].astype(float)
            group[COMPARE.delta] = -group["drop"]
        else:
            continue
        group["label"] = str(direction)
        group["state"] = [_layer_state(run, row) for _, row in group.iterrows()]
        out[direction_cells(direction)] = group
    return out


def _layer_family(run: RunFolder) -> int:
    """The (direction, layer) cells of Figure 1 the run's correction covers."""
    return len(run.layers) if run.layers is not None else 1


def _layer_state(run: RunFolder, row: pd.Series) -> str:
    """"hurts" (significant drop larger than DROP), "harmless" (a one-sided test at alpha rules out a drop of
    DROP), else "undecided"."""
    p = run.decision_p(row)
    drop = -float(row[COMPARE.delta])
    low = as_float(row.get(COMPARE.ci_low))
    n = as_float(row.get(COMPARE.n_queries))
    if n is not None and n < MIN_QUERIES:
        return "undecided"
    if p is not None and p <= run.alpha and drop > DROP:
        return "hurts"
    if low is None:  # an old layers.csv without CIs
        return "harmless" if p is not None and p > run.alpha and drop <= DROP else "undecided"
    test = drop_test(run, row, DROP, _layer_family(run))
    return "harmless" if test is not None and test.state == FAILS and test.mean < DROP else "undecided"


def _states_text(group: pd.DataFrame) -> str:
    return ", ".join(f"{int(l)}: {d:+.3f} {s}" for l, d, s in zip(group[CONTRAST.layer], -group["drop"], group["state"]))


LAYER_STATES = (f"Per layer l (layers 0..l ablated): hurts = significant drop (the run's p over every "
                f"(direction, layer) of Figure 1) larger than {DROP}; harmless = a one-sided test at alpha rules out "
                f"a drop of {DROP} (the (1 - 2 alpha) CI of the change ends above -{DROP}).")


def _tests(run: RunFolder, group: pd.DataFrame, start: int) -> list:
    """The rows' drop tests (for the MDE), each with the verdict its row gives the claim "harmless before layer
    ``start``, hurting from it on" (supports: holds, contradicts: does not hold)."""
    out = []
    for _, row in group.iterrows():
        test = drop_test(run, row, DROP, _layer_family(run))
        if test is not None:
            wanted, contrary = ("harmless", "hurts") if row[CONTRAST.layer] < start else ("hurts", "harmless")
            test.state = HOLDS if row["state"] == wanted else FAILS if row["state"] == contrary else INCONCLUSIVE
            out.append(test)
    return out


def _mde_text(tests: list) -> str:
    mdes = [t.mde for t in tests if t.mde == t.mde]
    return f" MDE of a cell's drop test (80% power, over the family): {min(mdes):.3f} to {max(mdes):.3f}." if mdes else ""


def _cls_last_layers(run: RunFolder) -> Finding:
    key = "cls_last_layers"
    L = run.num_layers
    start = first_layer("cls_last", L) if L else None
    rule = (LAYER_STATES + " The paper's last 2 layers of 24 (22-23) scaled to the depth: l >= s = "
            + layer_text("cls_last", L) + ". Holds when, for CLS<-* and CLS<-{Q,D}, every l < s is harmless and "
            "every l >= s hurts; does not hold when some l < s hurts or some l >= s is harmless; otherwise inconclusive.")
    curves = _layer_curves(run)
    found = [curves[k] for k in CLS_DIRECTIONS if k in curves]
    if not found or not L:
        return missing(key, "layers.csv has no CLS<-* or CLS<-{Q,D} curve (layers was not run).", rule)
    states, parts, tests = [], [], []
    for group in found:
        tests += _tests(run, group, start)
        early, late = group[group[CONTRAST.layer] < start], group[group[CONTRAST.layer] >= start]
        if (early["state"] == "hurts").any() or (late["state"] == "harmless").any():
            states.append(FAILS)
        elif (early["state"] == "harmless").all() and len(late) and (late["state"] == "hurts").all():
            states.append(HOLDS)
        else:
            states.append(INCONCLUSIVE)
        parts.append(f"{direction_label(group['label'].iloc[0])}: {_states_text(group)}")
    return finding(key, _combine(states), f"L = {L}, last layers {start}..{L - 1}. " + ". ".join(parts) + "."
                   + _mde_text(tests), rule, queries_of(run, run.layers), tests)


def _dd_from_middle(run: RunFolder) -> Finding:
    key = "dd_from_middle"
    L = run.num_layers
    start = first_layer("dd_onset", L) if L else None
    rule = (LAYER_STATES + " For D<-D: holds when every l < s = " + layer_text("dd_onset", L)
            + " is harmless and some later l hurts (the paper: not before layers 11/12 of 24); does not hold when an "
            "earlier l hurts or every later l is harmless; otherwise inconclusive.")
    group = _layer_curves(run).get(frozenset({("D", "D")}))
    if group is None or not L:
        return missing(key, "layers.csv has no D<-D curve (layers was not run).", rule)
    early, late = group[group[CONTRAST.layer] < start], group[group[CONTRAST.layer] >= start]
    if (early["state"] == "hurts").any() or (len(late) and (late["state"] == "harmless").all()):
        verdict = FAILS
    elif (early["state"] == "harmless").all() and (late["state"] == "hurts").any():
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    tests = _tests(run, group, start)
    hurting = group[group["state"] == "hurts"][CONTRAST.layer]
    onset = int(hurting.iloc[0]) if len(hurting) else None
    evidence = (f"L = {L}; first layer that hurts: {onset if onset is not None else 'none'}"
                + (f" ({(onset + 1) / L:.0%} of the depth ablated; the paper: layer 11/12 of 24, about 50%)" if onset is not None else "")
                + f". D<-D: {_states_text(group)}." + _mde_text(tests))
    return finding(key, verdict, evidence, rule, queries_of(run, run.layers), tests, onset=onset)



JUDGES = (
    Judge("cls_last_layers", "Up-to-layer CLS ablations hurt only in the last 2 layers", 5, _cls_last_layers, needs=("CLS",)),
    Judge("dd_from_middle", "Blocking D<-D hurts only from about the middle of the network", 6, _dd_from_middle),
)
