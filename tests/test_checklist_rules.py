"""Checklist rules on near-threshold synthetic run folders: each rule just inside its threshold, just outside,
and on too few queries. The thresholds are computed here from scipy's t quantiles, not by the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matchsig.engine.ablation import TABLE1_CELLS
from matchsig.report import judge

ALPHA, MARGIN, N = 0.05, 0.02, 40
SD = 0.05  # sd of the per-query changes of every crafted cell
SE = SD / np.sqrt(N)
T95, T975 = stats.t.ppf(0.95, N - 1), stats.t.ppf(0.975, N - 1)
EPS = 1e-6


def _row(delta: float, n: int = N, sd: float = SD, p: float | None = None) -> dict:
    """A ranking row whose stored 95% CI, p and n are those of per-query changes with this mean and sd."""
    se = sd / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    p = float(2 * stats.t.sf(abs(delta) / se, n - 1)) if p is None else p
    return {"ndcg@10": 0.8 + delta, "delta": delta, "ci_low": delta - half, "ci_high": delta + half, "p_value": p,
            "n_queries": n, "p_holm": min(1.0, p * 30)}


def _folder(tmp_path: Path, name: str, layers: int = 6) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"alpha": ALPHA, "correction": "holm"}))
    (run / "summary.json").write_text(json.dumps({"model_info": {"num_layers": layers, "num_heads": 4},
                                                  "unablated_ndcg@10": 0.8}))
    return run


def _table1(run: Path, cells: dict, n: int = N) -> None:
    rows = [{"target": "none", "source": "", "ablation": "none", **_row(0.0, n, 0.0, 1.0)}]
    for t, s in TABLE1_CELLS:
        rows.append({"target": t, "source": s, "ablation": f"{t}<-{s}", **cells.get((t, s), _row(0.0, n, 0.001))})
    pd.DataFrame(rows).to_csv(run / "table1.csv", index=False)


def _verdict(run: Path, key: str) -> str:
    return next(f.verdict for f in judge(run, write=False) if f.key == key)


# ---- SEP no-ops: an equivalence per cell (TOST at alpha: the 90% CI inside +-MARGIN) -------------------------


@pytest.mark.parametrize("case,delta,expected", [
    ("inside", MARGIN - T95 * SE - EPS, "holds"),
    ("outside", MARGIN - T95 * SE + EPS, "inconclusive"),  # the CI reaches the margin: nothing decided
    ("violated", MARGIN + 6 * SE, "does not hold"),  # beyond the band, significantly even over 18 cells
])
def test_sep_noop_near_its_margin(tmp_path, case, delta, expected):
    run = _folder(tmp_path, case)
    _table1(run, {("SEP1", "Q"): _row(delta)})
    assert _verdict(run, "sep_noop") == expected


def test_sep_noop_with_too_few_queries(tmp_path):
    run = _folder(tmp_path, "few")
    _table1(run, {}, n=4)
    assert _verdict(run, "sep_noop") == "inconclusive"


# ---- CLS<-Q, CLS<-D not significant drops: a bound on the drop (one-sided: the drop < MARGIN) -------------------


@pytest.mark.parametrize("case,delta,expected", [
    ("inside", -MARGIN + T95 * SE + EPS, "holds"),  # the 90% CI's lower end just above -MARGIN
    ("outside", -MARGIN + T95 * SE - EPS, "inconclusive"),
])
def test_not_significant_near_its_bound(tmp_path, case, delta, expected):
    run = _folder(tmp_path, case)
    _table1(run, {("CLS", "Q"): _row(delta), ("CLS", "D"): _row(0.0)})
    assert _verdict(run, "table1_not_significant") == expected


def test_not_significant_fails_on_a_significant_drop_beyond_the_bound(tmp_path):
    run = _folder(tmp_path, "drop")
    _table1(run, {("CLS", "Q"): _row(-MARGIN - 6 * SE), ("CLS", "D"): _row(0.0)})
    assert _verdict(run, "table1_not_significant") == "does not hold"


# ---- layer boundaries from the paper's fractions -----------------------------------------------------------------


def _layers(run: Path, curves: dict[str, list[str]], n: int = N) -> None:
    """``curves``: direction -> per layer "hurts" or "harmless"."""
    rows = []
    for direction, states in curves.items():
        for layer, state in enumerate(states):
            row = _row(-0.1, n, SD, 1e-6) if state == "hurts" else _row(0.0, n, 0.01, 1.0)
            row["p_holm"] = row["p_value"]
            rows.append({"direction": direction, "layer": layer, **row})
    pd.DataFrame(rows).to_csv(run / "layers.csv", index=False)


@pytest.mark.parametrize("case,onset,expected", [
    ("inside", 11, "holds"),  # floor(22 x 12 / 24) = 11: only the last layer of 12 may hurt
    ("outside", 10, "does not hold"),  # the old absolute rule (L - 2 = 10) accepted this
])
def test_cls_last_layers_is_proportional(tmp_path, case, onset, expected):
    run = _folder(tmp_path, case, layers=12)
    states = ["harmless"] * onset + ["hurts"] * (12 - onset)
    _layers(run, {"CLS<-*": states, "CLS<-Q,CLS<-D": states})
    assert _verdict(run, "cls_last_layers") == expected


@pytest.mark.parametrize("case,onset,expected", [
    ("inside", 11, "holds"),  # the paper: not before layers 11/12 of 24
    ("outside", 10, "does not hold"),  # the old floor(0.45 L) = 10 accepted layer 10
])
def test_dd_onset_at_24_layers(tmp_path, case, onset, expected):
    run = _folder(tmp_path, case, layers=24)
    _layers(run, {"D<-D": ["harmless"] * onset + ["hurts"] * (24 - onset)})
    assert _verdict(run, "dd_from_middle") == expected


def test_layer_rules_with_too_few_queries(tmp_path):
    run = _folder(tmp_path, "few", layers=12)
    states = ["harmless"] * 11 + ["hurts"]
    _layers(run, {"CLS<-*": states, "CLS<-Q,CLS<-D": states, "D<-D": states}, n=4)
    assert _verdict(run, "cls_last_layers") == "inconclusive"
    assert _verdict(run, "dd_from_middle") == "inconclusive"


# ---- Q<-D or D<-Q alone keeps the signal: a bound per query (kept minus half the gap to random > 0) ---------------


def _per_query(run: Path, shift: float, n: int = N) -> None:
    rng = np.random.default_rng(1)
    ref = 0.8 + rng.normal(0, 0.05, n)
    rnd = 0.45 + rng.normal(0, 0.05, n)
    z = rng.normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    half = (ref - rnd) / 2
    frame = {"qid": [str(i) for i in range(n)], "none": ref, "random": rnd,
             "Q<-D": rnd + half + shift + SD * z, "D<-Q": ref - 0.01}
    pd.DataFrame(frame).to_csv(run / "table1_per_query.csv", index=False)


@pytest.mark.parametrize("case,shift,expected", [
    ("inside", T95 * SE + EPS, "holds"),
    ("outside", T95 * SE - EPS, "inconclusive"),
    ("destroyed", -T95 * SE - EPS, "does not hold"),
])
def test_alone_keeps_signal_near_its_bound(tmp_path, case, shift, expected):
    run = _folder(tmp_path, case)
    _table1(run, {})
    _per_query(run, shift)
    assert _verdict(run, "qd_dq_alone_keep_signal") == expected


def test_alone_keeps_signal_with_too_few_queries(tmp_path):
    run = _folder(tmp_path, "few")
    _table1(run, {}, n=4)
    _per_query(run, 0.3, n=4)
    assert _verdict(run, "qd_dq_alone_keep_signal") == "inconclusive"
