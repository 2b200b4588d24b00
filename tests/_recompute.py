"""Re-derive a run folder's published numbers by independent routes, value by value.

Nothing here calls the runner, matchsig's evaluation or statistics code: per-query nDCG@10 comes from
ir_measures, t-tests from scipy, multiple-comparison corrections from statsmodels, and scores either
from the run's own raw score file or from the public ``CrossEncoder`` API (itself checked against the
float64 reference in test_reference_grid.py). Column names that are about to change (the corrected
p-value column, named after the correction) are found by prefix.

Ties: a tiny random model can tie scores (``CLS<-*`` makes every score equal). Where a query's
scores tie, only the bounds are checked: its nDCG@10 must lie between the ranking that orders the
tied passages worst-first and the one that orders them best-first (true for any tie policy,
including a tie-aware mean); elsewhere the value is checked to 1e-9.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
TABLE1_LABELS = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS]
FIGURE1 = [f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")] + ["CLS<-Q,CLS<-D", "CLS<-*"]
MATCH = "Q<-D,D<-Q"


def config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def pools(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str}, keep_default_na=False)


def main_pool(run_dir: Path) -> pd.DataFrame:
    frame = pools(run_dir)
    return frame[frame["pool"].str.split("+").apply(lambda p: "main" in p)].reset_index(drop=True)


def contrast_pool(run_dir: Path) -> pd.DataFrame:
    frame = pools(run_dir)
    return frame[frame["pool"].str.split("+").apply(lambda p: "contrast" in p)].reset_index(drop=True)


def _ir_ndcg(qids, docids, grades, ranks) -> dict[str, float]:
    import ir_measures

    qrels = [ir_measures.Qrel(q, d, max(int(g), 0)) for q, d, g in zip(qids, docids, grades)]
    run = [ir_measures.ScoredDoc(q, d, float(-r)) for q, d, r in zip(qids, docids, ranks)]
    per = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], qrels, run)}
    return {q: per.get(q, 0.0) for q in dict.fromkeys(qids)}


def ndcg_bounds(pool: pd.DataFrame, scores) -> tuple[dict[str, float], dict[str, float], set[str]]:
    """Per-query nDCG@10 with ties ordered worst-first and best-first (ir_measures), and the tied queries."""
    scores = np.asarray(scores, dtype=float)
    qids, docids, grades = list(pool["qid"]), list(pool["docid"]), np.asarray(pool["grade"], dtype=int)
    out = []
    for sign in (-1, 1):  # -1: worst first among equal scores
        order = sorted(range(len(scores)), key=lambda i: (qids[i], -scores[i], -sign * grades[i], docids[i]))
        ranks = np.empty(len(scores))
        ranks[order] = np.arange(len(scores))
        out.append(_ir_ndcg(qids, docids, grades, ranks))
    tied = set()
    frame = pd.DataFrame({"qid": qids, "s": scores})
    for q, sub in frame.groupby("qid"):
        if sub["s"].duplicated().any():
            tied.add(q)
    return out[0], out[1], tied


def assert_ndcg(per_query: dict[str, float], pool: pd.DataFrame, scores, what: str) -> None:
    low, high, tied = ndcg_bounds(pool, scores)
    assert set(per_query) == set(low), what
    for q, value in per_query.items():
        if q in tied:
            assert low[q] - 1e-9 <= value <= high[q] + 1e-9, (what, q, value, low[q], high[q])
        else:
            assert abs(value - low[q]) <= 1e-9, (what, q, value, low[q])


def expected_p(x, y) -> float:
    """Two-sided paired t-test (scipy); with zero variance of the differences scipy has no answer, and
    the documented rule applies: all differences 0 -> p = 1, all equal and non-zero -> p = 0."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = x - y
    if len(d) < 2 or np.all(d == d[0]):
        return 1.0 if len(d) < 2 or d[0] == 0 else 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def corrected(pvalues, method: str) -> np.ndarray:
    from statsmodels.stats.multitest import multipletests

    p = np.nan_to_num(np.asarray(pvalues, float), nan=1.0)
    if method in (None, "none"):
        return p
    return multipletests(p, method={"holm": "holm", "bonferroni": "bonferroni"}[method])[1]


def corrected_column(frame: pd.DataFrame) -> str:
    cols = [c for c in frame.columns if c.startswith("p_") and c != "p_value"]
    assert len(cols) == 1, frame.columns
    return cols[0]


# ---- Table 1 ------------------------------------------------------------------------------------------


def check_table1(run_dir: Path, ce) -> dict:
    """table1_scores.csv against the public API, table1_per_query.csv against ir_measures, table1.csv
    against scipy and statsmodels. Returns the recomputed numbers."""
    cfg = config(run_dir)
    pool = main_pool(run_dir)
    raw = pd.read_csv(run_dir / "table1_scores.csv", dtype={"qid": str, "docid": str})
    assert list(raw["qid"]) == list(pool["qid"]) and list(raw["docid"]) == list(pool["docid"])
    assert list(raw["grade"]) == list(pool["grade"])
    labels = ["none"] + TABLE1_LABELS
    assert list(raw.columns[3:]) == labels
    # the raw scores are the model's scores under each ablation (other batches: fp32 noise only)
    want = ce.score_many(list(pool["query"]), list(pool["document"]), labels, batch_size=cfg["batch_size"])
    np.testing.assert_allclose(raw[labels].to_numpy().T, want, atol=2e-5, rtol=0)

    per_query = pd.read_csv(run_dir / "table1_per_query.csv", dtype={"qid": str}).set_index("qid")
    assert set(per_query.index) == set(pool["qid"]) and set(per_query.columns) == set(labels)
    for label in labels:
        assert_ndcg(per_query[label].to_dict(), pool, raw[label], f"table1 {label}")

    table = pd.read_csv(run_dir / "table1.csv", keep_default_na=False).set_index("ablation")
    none = per_query["none"]
    alpha = cfg["alpha"]
    p_values = {}
    for label in TABLE1_LABELS:
        row = table.loc[label]
        mean = per_query[label].mean()
        assert abs(row["ndcg@10"] - mean) <= 1e-12, label
        assert abs(row["delta"] - (mean - none.mean())) <= 1e-12, label
        p_values[label] = expected_p(per_query[label].to_numpy(), none.to_numpy())
        assert abs(row["p_value"] - p_values[label]) <= 1e-12, (label, row["p_value"], p_values[label])
        assert _bool(row["lower"]) == (mean < none.mean()), label
        sig = _bool(row["significant"])
        assert not sig or p_values[label] <= alpha, label  # a mark needs p <= alpha ...
        if p_values[label] <= alpha and mean < none.mean():
            assert sig, label  # ... and every significant drop is marked
        x, y = row["target"], row["source"]
        assert f"{x}<-{'*' if y == '*' else y}" == label
    col = corrected_column(table)
    adjusted = corrected([p_values[l] for l in TABLE1_LABELS], cfg["correction"])
    np.testing.assert_allclose(table.loc[TABLE1_LABELS, col].astype(float), adjusted, atol=1e-12, rtol=0)
    assert abs(table.loc["none", "ndcg@10"] - none.mean()) <= 1e-12
    # the random ranking: its mean lies between the worst and best orderings of every query
    rnd = float(table.loc["random", "ndcg@10"])
    worst, best, _ = ndcg_bounds(pool, np.zeros(len(pool)))
    assert np.mean(list(worst.values())) <= rnd <= np.mean(list(best.values()))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert abs(summary["unablated_ndcg@10"] - none.mean()) <= 1e-12
    assert abs(summary["random_ndcg@10"]["mean"] - rnd) <= 1e-12
    return {"per_query": per_query, "table": table, "p": p_values}


def _bool(value) -> bool:
    return value if isinstance(value, (bool, np.bool_)) else str(value).strip().lower() == "true"


# ---- Figure 1 -------------------------------------------------------------------------------------------


def check_layers(run_dir: Path, ce) -> None:
    """Every (direction, layer) of layers.csv from the public API's scores and ir_measures, p from scipy."""
    from matchsig import Ablation

    cfg = config(run_dir)
    pool = main_pool(run_dir)
    qs, ds = list(pool["query"]), list(pool["document"])
    base = ce.score(qs, ds, batch_size=cfg["batch_size"])
    low, high, tied = ndcg_bounds(pool, base)
    assert not tied, "the unablated tiny model should not tie"
    none = pd.Series(low)
    layers = pd.read_csv(run_dir / "layers.csv").set_index(["direction", "layer"])
    assert set(layers.index.get_level_values(0)) == set(FIGURE1)
    assert set(layers.index.get_level_values(1)) == set(range(ce.num_layers))
    specs = [Ablation.parse(d, up_to_layer=l) for d in FIGURE1 for l in range(ce.num_layers)]
    scores = ce.score_many(qs, ds, specs, batch_size=cfg["batch_size"])
    for spec, s in zip(specs, scores):
        direction, layer = spec.spec, spec.layers[-1]
        label = next(d for d in FIGURE1 if d.upper() == direction)
        row = layers.loc[(label, layer)]
        low_q, high_q, tied = ndcg_bounds(pool, s)
        if not tied:
            per = pd.Series(low_q)
            assert abs(row["ndcg@10"] - per.mean()) <= 1e-9, (label, layer)
            assert abs(row["delta"] - (per.mean() - none.mean())) <= 1e-9, (label, layer)
            want_p = expected_p(per[none.index].to_numpy(), none.to_numpy())
            assert abs(row["p_value"] - want_p) <= 1e-9, (label, layer, row["p_value"], want_p)
        else:
            assert np.mean(list(low_q.values())) - 1e-9 <= row["ndcg@10"] <= np.mean(list(high_q.values())) + 1e-9


# ---- contrast ---------------------------------------------------------------------------------------------


def check_contrast(run_dir: Path, ce) -> pd.DataFrame:
    """per_query.csv from the public API's statistics; heads.csv (deltas, p-values, kinds) from per_query.csv
    with scipy and statsmodels. Returns heads.csv."""
    cfg = config(run_dir)
    pool = contrast_pool(run_dir)
    assert set(pool["grade"]) == {3, 0, -1}
    values = ce.attention_stats(list(pool["query"]), list(pool["document"]), batch_size=cfg["batch_size"])
    per_query = pd.read_csv(run_dir / "contrast" / "per_query.csv", dtype={"qid": str})
    for direction in ("Q<-D", "D<-Q"):
        for stat in ("max", "entropy", "exact", "mass"):
            arr = values.get(direction, stat)  # (pairs, layers, heads)
            for (qid, level), rows in pool.groupby(["qid", "grade"]).groups.items():
                want = arr[np.asarray(list(rows))].mean(0)
                got = per_query[(per_query.qid == qid) & (per_query.level == level) & (per_query.direction == direction)]
                got = got.sort_values(["layer", "head"])[stat].to_numpy().reshape(want.shape)
                np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5, err_msg=f"{qid} {level} {direction} {stat}")

    heads = pd.read_csv(run_dir / "contrast" / "heads.csv")
    alpha, method = cfg["alpha"], cfg["correction"]
    wide = per_query.pivot_table(index=["layer", "head", "direction", "qid"], columns="level", values="max")
    keys = list(heads[["layer", "head", "direction"]].itertuples(index=False, name=None))
    result = {}
    for name, level in (("relevant", 3), ("hard", 0)):
        deltas, ps, ns = [], [], []
        for key in keys:
            sub = wide.loc[key][[level, -1]].dropna()
            deltas.append(float((sub[level] - sub[-1]).mean()))
            p = expected_p(sub[level], sub[-1]) if len(sub) >= 2 else 1.0
            ps.append(p)
            ns.append(len(sub))
        result[name] = (np.array(deltas), corrected(ps, method), ns)
    np.testing.assert_allclose(heads["delta_relevant"], result["relevant"][0], atol=1e-9, rtol=0)
    np.testing.assert_allclose(heads["delta_hard"], result["hard"][0], atol=1e-9, rtol=0)
    p_rel_col = "p_relevant" if "p_relevant" in heads else next(c for c in heads if c.startswith("p_") and "rel" in c)
    p_hard_col = "p_hard" if "p_hard" in heads else next(c for c in heads if c.startswith("p_") and "hard" in c)
    np.testing.assert_allclose(heads[p_rel_col], result["relevant"][1], atol=1e-9, rtol=0)
    np.testing.assert_allclose(heads[p_hard_col], result["hard"][1], atol=1e-9, rtol=0)
    assert list(heads["n_queries"]) == result["relevant"][2]
    sig_r = (result["relevant"][1] <= alpha) & (result["relevant"][0] > 0)
    sig_h = (result["hard"][1] <= alpha) & (result["hard"][0] > 0)
    kinds = np.where(sig_r & sig_h, "syntactic", np.where(sig_r, "semantic", "none"))
    assert list(heads["kind"]) == list(kinds)
    # entropy / exact-match columns: means over the queries that have relevant and easy passages
    for stat in ("entropy", "exact"):
        w = per_query.pivot_table(index=["layer", "head", "direction", "qid"], columns="level", values=stat)
        for i, key in enumerate(keys):
            sub = w.loc[key][[3, -1]].dropna()
            assert abs(heads[f"{stat}_relevant"].iloc[i] - sub[3].mean()) <= 1e-9
            assert abs(heads[f"{stat}_easy"].iloc[i] - sub[-1].mean()) <= 1e-9
    return heads


def contrast_ranking(heads: pd.DataFrame) -> list[tuple[int, int]]:
    """(layer, head) by matching strength: mean delta_relevant over Q<-D and D<-Q, best first (ties: layer, head)."""
    strength = {}
    for (layer, head), sub in heads.groupby(["layer", "head"]):
        strength[(int(layer), int(head))] = float(sub["delta_relevant"].mean())
    return sorted(strength, key=lambda lh: (-strength[lh], lh))


# ---- heads ------------------------------------------------------------------------------------------------


def check_heads(run_dir: Path, ce) -> pd.DataFrame:
    """heads.csv: top-k = the top k of the contrast ranking; every row's nDCG@10 from the public API."""
    from matchsig.ablation import AblationSet

    cfg = config(run_dir)
    pool = main_pool(run_dir)
    qs, ds = list(pool["query"]), list(pool["document"])
    contrast = pd.read_csv(run_dir / "contrast" / "heads.csv")
    ranking = contrast_ranking(contrast)
    frame = pd.read_csv(run_dir / "heads.csv", keep_default_na=False)
    ks = sorted(k for k in set(cfg["heads_k"]) if k <= ce.num_layers * ce.num_heads)
    assert sorted(set(frame["k"])) == ks
    none_low, _, tied = ndcg_bounds(pool, ce.score(qs, ds, batch_size=cfg["batch_size"]))
    assert not tied
    none = pd.Series(none_low)
    sets = [[tuple(int(x) for x in lh.split("/")) for lh in str(h).split(";") if lh] for h in frame["heads"]]
    for k in ks:
        top = frame[(frame["selection"] == "top") & (frame["k"] == k)]
        assert len(top) == 1
        assert sorted(sets[top.index[0]]) == sorted(ranking[:k]), (k, sets[top.index[0]], ranking[:k])
        rnd = frame[(frame["selection"] == "random") & (frame["k"] == k)]
        assert len(rnd) == cfg["heads_random_seeds"]
        for i in rnd.index:
            assert len(set(sets[i])) == k and all(0 <= l < ce.num_layers and 0 <= h < ce.num_heads for l, h in sets[i])
    ablations = [AblationSet.heads(MATCH, hs) for hs in sets]
    scores = ce.score_many(qs, ds, ablations, batch_size=cfg["batch_size"])
    for i, s in enumerate(scores):
        low, high, tied = ndcg_bounds(pool, s)
        row = frame.iloc[i]
        if tied:
            assert np.mean(list(low.values())) - 1e-9 <= row["ndcg@10"] <= np.mean(list(high.values())) + 1e-9
            continue
        per = pd.Series(low)
        assert abs(row["ndcg@10"] - per.mean()) <= 1e-9, (i, row["ndcg@10"], per.mean())
        assert abs(row["delta"] - (per.mean() - none.mean())) <= 1e-9
        assert abs(row["p_value"] - expected_p(per[none.index].to_numpy(), none.to_numpy())) <= 1e-9
    return frame


# ---- report ------------------------------------------------------------------------------------------------


def check_report(run_dir: Path) -> str:
    """report.html shows this run's own numbers: Table 1 cells, baselines, fingerprints, model, top heads."""
    import html as html_lib
    import re

    text = html_lib.unescape((run_dir / "report.html").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = config(run_dir)
    for pool in summary["pools"].values():
        assert pool["fingerprint"] in text
    assert str(summary["model_info"]["name"]) in text or Path(cfg["model"]).name in text
    table1_path = run_dir / "table1.csv"
    if table1_path.is_file():
        table = pd.read_csv(table1_path, keep_default_na=False).set_index("ablation")
        section = text.split('id="table1"', 1)[1].split("</section>", 1)[0]
        cells = re.findall(r'title="([A-Z0-9]+)<-([A-Z0-9*]+): nDCG@10 ([0-9.]+)', section)
        assert len(cells) == 30, len(cells)
        for x, y, value in cells:
            assert abs(float(value) - table.loc[f"{x}<-{y}", "ndcg@10"]) <= 0.5e-4, (x, y, value)
        for label in TABLE1_LABELS:
            assert f"{table.loc[label, 'ndcg@10']:.3f}" in section, label
        assert f"Unablated model: {summary['unablated_ndcg@10']:.3f}" in re.sub(r"<[^>]+>", "", section)
        assert f"random ranking: {summary['random_ndcg@10']['mean']:.3f}" in re.sub(r"<[^>]+>", "", section)
    heads_path = run_dir / "contrast" / "heads.csv"
    if heads_path.is_file():
        heads = pd.read_csv(heads_path)
        matching = heads[heads["kind"] != "none"]
        section = text.split('id="contrast"', 1)[1].split("</section>", 1)[0]
        for layer, head in list(matching[["layer", "head"]].itertuples(index=False, name=None))[:3]:
            assert f"{layer}/{head}" in section
    if (run_dir / "heads.csv").is_file():
        frame = pd.read_csv(run_dir / "heads.csv")
        section = text.split('id="heads"', 1)[1].split("</section>", 1)[0]
        for _, row in frame[frame["selection"] == "top"].iterrows():
            assert f"{row['ndcg@10']:.3f}" in section
    return text
