"""Re-derive a run folder's published numbers by independent routes, value by value.

Nothing here calls the runner, matchsig's evaluation, statistics or matching code: per-query nDCG@10 is
computed here with plain loops under the documented tie rule (and cross-checked against ir_measures where a
query has no ties, and against a brute-force mean over every order of the tied passages where there are
few), t-tests come from scipy, multiple-comparison corrections from statsmodels, and scores either from the
run's own raw score files (``table1_scores.csv``; the store's ``.npy`` units for layers and heads) or from
the public ``CrossEncoder`` API (itself checked against the float64 reference in test_reference_grid.py).

Rules re-derived here, as the README and ``summary.json`` state them:

* ties: the expected nDCG@10 over all orders of tied passages (McSherry & Najork, ECIR 2008); two
  neighbours of a query's sorted scores tie when they differ by at most 1e-6 x the larger absolute
  score, chained; gains are max(grade, 0), the ideal DCG comes from the pool's own grades;
* significance: two-sided paired t-test (scipy ``ttest_rel``; zero variance of the differences: p = 1
  when they are all 0, p = 0 otherwise), corrected per family with statsmodels ``multipletests`` into
  the column ``p_<correction>`` (no column for ``none``); a cell is significant when the corrected p (raw
  p for ``none``) is <= alpha, marked ``*`` for a drop and ``↑`` for a rise;
* matching heads: per (layer, head, direction) three paired tests of the per-query mean M (3 vs -1,
  0 vs -1, 3 vs 0), each a family over all rows; matching = 3 vs -1 significant (either sign); kinds
  syntactic / semantic / unclassified / none; heads ranked matching first, then by |delta_relevant|.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
TABLE1_LABELS = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS]
FIGURE1 = [f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")] + ["CLS<-Q,CLS<-D", "CLS<-*"]
MATCH = "Q<-D,D<-Q"
#: The documented tie tolerance (relative); summary.json must state the same.
TIE_RTOL = 1e-6
DROP, RISE = "*", "\u2191"
COMPARISONS = {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}
#: Brute force over tie orders only where a query has at most this many orders (cost).
BRUTE_FORCE_ORDERS = 5040


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


def _csv(path: Path) -> pd.DataFrame:
    # keep_default_na=False: an empty mark is "", not NaN
    return pd.read_csv(path, keep_default_na=False, dtype={"qid": str})


def _bool(value) -> bool:
    return value if isinstance(value, (bool, np.bool_)) else str(value).strip().lower() == "true"


# ---- tie-aware nDCG@10, with plain loops ------------------------------------------------------------------


def _ir_ndcg(qids, docids, grades, ranks) -> dict[str, float]:
    import ir_measures

    qrels = [ir_measures.Qrel(q, d, max(int(g), 0)) for q, d, g in zip(qids, docids, grades)]
    run = [ir_measures.ScoredDoc(q, d, float(-r)) for q, d, r in zip(qids, docids, ranks)]
    per = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], qrels, run)}
    return {q: per.get(q, 0.0) for q in dict.fromkeys(qids)}


def _dcg(gains: list[float], k: int = 10) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def _groups(scores_desc: list[float]) -> list[list[int]]:
    """Tie groups of one query's scores sorted best first: a neighbour within TIE_RTOL x the larger
    absolute score joins the group (chained)."""
    groups: list[list[int]] = []
    for i, s in enumerate(scores_desc):
        prev = scores_desc[i - 1] if i else None
        if prev is not None and prev - s <= TIE_RTOL * max(abs(prev), abs(s)):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _brute_force(groups: list[list[float]], ideal: float) -> float:
    """The mean nDCG@10 over every order of the passages inside each tie group."""
    total, count = 0.0, 0
    for combo in itertools.product(*[list(itertools.permutations(g)) for g in groups]):
        total += _dcg([x for part in combo for x in part])
        count += 1
    return total / count / ideal if ideal > 0 else 0.0


def tie_aware_ndcg(pool: pd.DataFrame, scores) -> tuple[dict[str, float], set[str]]:
    """Per-query expected nDCG@10 over all orders of tied passages (each rank of a tie group gets the
    group's mean gain), and the queries that have ties. Cross-checked here: queries without ties against
    ir_measures, queries with few tie orders against the brute-force mean over those orders."""
    scores = [float(s) for s in np.asarray(scores, dtype=float)]
    qids, docids = list(pool["qid"]), list(pool["docid"])
    gains_all = [max(int(g), 0) for g in pool["grade"]]
    rows: dict[str, list[int]] = {}
    for i, q in enumerate(qids):
        rows.setdefault(q, []).append(i)
    out, tied = {}, set()
    for q, idx in rows.items():
        order = sorted(idx, key=lambda i: -scores[i])
        ranked = [scores[i] for i in order]
        gains = [gains_all[i] for i in order]
        groups = [[gains[i] for i in g] for g in _groups(ranked)]
        expected = [sum(g) / len(g) for g in groups for _ in g]
        ideal = _dcg(sorted(gains, reverse=True))
        out[q] = _dcg(expected) / ideal if ideal > 0 else 0.0
        if any(len(g) > 1 for g in groups):
            tied.add(q)
            if math.prod(math.factorial(len(g)) for g in groups) <= BRUTE_FORCE_ORDERS:
                assert abs(out[q] - _brute_force(groups, ideal)) <= 1e-12, (q, groups)
    untied = [i for i, q in enumerate(qids) if q not in tied]
    if untied:
        ranks = np.empty(len(scores))
        order = sorted(range(len(scores)), key=lambda i: (qids[i], -scores[i]))
        ranks[order] = np.arange(len(scores))
        ir = _ir_ndcg([qids[i] for i in untied], [docids[i] for i in untied], [gains_all[i] for i in untied],
                      ranks[untied])
        for q, v in ir.items():
            assert abs(out[q] - v) <= 1e-9, ("ir_measures disagrees with the plain-loop nDCG@10", q, out[q], v)
    return out, tied


def assert_ndcg(per_query: dict[str, float], pool: pd.DataFrame, scores, what: str) -> dict[str, float]:
    """Every query's published nDCG@10 equals the tie-aware value of ``scores`` (1e-9)."""
    want, _ = tie_aware_ndcg(pool, scores)
    assert set(per_query) == set(want), what
    for q, value in per_query.items():
        assert abs(float(value) - want[q]) <= 1e-9, (what, q, value, want[q])
    return want


# ---- tests and corrections ------------------------------------------------------------------------------


def expected_p(x, y) -> float:
    """Two-sided paired t-test (scipy); with zero variance of the differences scipy has no answer, and
    the documented rule applies: all differences 0 -> p = 1, all equal and non-zero -> p = 0."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = x - y
    if len(d) < 2 or np.all(d == d[0]):
        return 1.0 if len(d) < 2 or d[0] == 0 else 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def expected_t(x, y) -> float:
    """The t statistic under the same rule (zero variance: 0 for no change, +-inf otherwise)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = x - y
    if len(d) < 2:
        return 0.0
    if np.all(d == d[0]):
        return 0.0 if d[0] == 0 else float(np.sign(d[0]) * np.inf)
    return float(stats.ttest_rel(x, y).statistic)


def corrected(pvalues, method: str | None) -> np.ndarray:
    from statsmodels.stats.multitest import multipletests

    p = np.nan_to_num(np.asarray(pvalues, float), nan=1.0)
    if method in (None, "none") or not len(p):
        return p
    return multipletests(p, method={"holm": "holm", "bonferroni": "bonferroni"}[method])[1]


def corrected_name(method: str | None, prefix: str = "p") -> str | None:
    """The corrected column is named after the correction (``p_holm``); ``none`` has none."""
    return None if method in (None, "none") else f"{prefix}_{method}"


def expected_mark(significant: bool, delta: float) -> str:
    if not significant or delta == 0:
        return ""
    return DROP if delta < 0 else RISE


def _floats(column: pd.Series) -> np.ndarray:
    """A float column read with keep_default_na=False: an empty cell is NaN."""
    return np.array([float(v) if str(v).strip() != "" else np.nan for v in column], float)


def check_mde(frame: pd.DataFrame, diffs, family, cfg: dict, what: str) -> None:
    """``ci_low, ci_high``: the (1 - alpha) Student-t CI of the mean per-query change (scipy.stats.t.interval);
    ``mde``: the change a two-sided paired t-test detects with 80% power (statsmodels' TTestPower) at alpha,
    or alpha / the family's size for a corrected family; none where the differences do not vary."""
    from statsmodels.stats.power import TTestPower

    family = np.asarray(family, bool)
    size = int(family.sum()) if cfg["correction"] not in (None, "none") else 1
    lows, highs = _floats(frame["ci_low"]), _floats(frame["ci_high"])
    for i, d in enumerate(diffs):
        d = np.asarray(d, float)
        n, sd = len(d), float(np.std(d, ddof=1))
        if sd > 0:
            low, high = stats.t.interval(1 - cfg["alpha"], n - 1, loc=d.mean(), scale=stats.sem(d))
            assert abs(lows[i] - low) <= 1e-9 and abs(highs[i] - high) <= 1e-9, (what, i, lows[i], low)
        else:
            assert lows[i] == highs[i] and abs(lows[i] - d.mean()) <= 1e-12, (what, i)  # no variation: the point
        got = float(_floats(frame["mde"])[i])
        if not sd > 0:
            assert np.isnan(got), (what, i, got)
            continue
        alpha = cfg["alpha"] / (size if family[i] else 1)
        dz = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
        assert abs(got - dz * sd) <= 1e-6 * dz * sd, (what, i, got, dz * sd)


def check_family(frame: pd.DataFrame, p_raw, delta, family, cfg: dict, what: str) -> np.ndarray:
    """``p_value``, the corrected column (named after the run's correction, statsmodels over ``family``;
    rows outside the family have none: their p is in ``p_value`` only), ``significant`` and ``mark``
    (* drop, ↑ rise); an uncorrected run has the Holm view beside it (``p_holm``, ``mark_holm``). Returns
    the p-values decisions are taken on."""
    method, alpha = cfg["correction"], cfg["alpha"]
    p_raw, delta, family = np.asarray(p_raw, float), np.asarray(delta, float), np.asarray(family, bool)
    np.testing.assert_allclose(frame["p_value"].astype(float), p_raw, atol=1e-12, rtol=0, err_msg=what)
    extra = {c for c in frame.columns if c.startswith("p_") and c != "p_value"}
    name = corrected_name(method)
    decide = p_raw.copy()
    stored = np.full(len(p_raw), np.nan)
    stored[family] = corrected(p_raw[family], "holm" if name is None else method)
    if name is None:  # the paper's test decides; Holm's view beside it
        assert extra == {"p_holm"}, (what, extra)
        np.testing.assert_allclose(_floats(frame["p_holm"]), stored, atol=1e-12, rtol=0, err_msg=what)
        view = [expected_mark(f and p <= alpha, d) for f, p, d in zip(family, stored, delta)]
        assert [str(v) if v == v else "" for v in frame["mark_holm"]] == view, what
    else:
        assert extra == {name}, (what, extra, name)
        decide[family] = stored[family]
        np.testing.assert_allclose(_floats(frame[name]), stored, atol=1e-12, rtol=0, err_msg=what)
    significant = decide <= alpha
    assert [_bool(v) for v in frame["significant"]] == list(significant), what
    marks = [expected_mark(s, d) for s, d in zip(significant, delta)]
    assert [str(v) for v in frame["mark"]] == marks, (what, list(frame["mark"]), marks)
    return decide


def _stored_scores(run_dir: Path, unit: str) -> np.ndarray:
    """The run's own raw scores of one configuration: its store files (``.npy``; the SHA-256 trailer is
    ignored by numpy), chunks concatenated along the pairs axis."""
    from matchsig.experiments import slug  # only the file naming

    files = sorted((run_dir / "store" / unit.split("/")[0] / slug(unit.split("/", 1)[1])).glob("*.npy"))
    assert files, (run_dir, unit)
    return np.concatenate([np.load(f) for f in files], axis=-1)


# ---- Table 1 ------------------------------------------------------------------------------------------


def check_table1(run_dir: Path, ce) -> dict:
    """table1_scores.csv against the public API; table1_per_query.csv (random column included) against
    the tie-aware nDCG@10 of those scores; table1.csv against scipy and statsmodels, with the marks; the
    Markdown and LaTeX layouts cell by cell. Returns the recomputed numbers."""
    cfg = config(run_dir)
    pool = main_pool(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["evaluation"]["tie_rtol"] == TIE_RTOL
    raw = pd.read_csv(run_dir / "table1_scores.csv", dtype={"qid": str, "docid": str})
    assert list(raw["qid"]) == list(pool["qid"]) and list(raw["docid"]) == list(pool["docid"])
    assert list(raw["grade"]) == list(pool["grade"])
    labels = ["none"] + TABLE1_LABELS
    assert list(raw.columns[3:]) == labels
    # the raw scores are the model's scores under each ablation (other batches: fp32 noise only)
    want = ce.score_many(list(pool["query"]), list(pool["document"]), labels, batch_size=cfg["batch_size"])
    np.testing.assert_allclose(raw[labels].to_numpy().T, want, atol=2e-5, rtol=0)

    per_query = pd.read_csv(run_dir / "table1_per_query.csv", dtype={"qid": str}).set_index("qid")
    assert set(per_query.index) == set(pool["qid"]) and set(per_query.columns) == set(labels) | {"random"}
    for label in labels:
        assert_ndcg(per_query[label].to_dict(), pool, raw[label], f"table1 {label}")
    # the random ranking is exact: the tie-aware nDCG@10 of a ranking whose scores all tie
    assert_ndcg(per_query["random"].to_dict(), pool, np.zeros(len(pool)), "random ranking")

    table = _csv(run_dir / "table1.csv").set_index("ablation")
    rows = ["none", "random"] + TABLE1_LABELS
    assert sorted(table.index) == sorted(rows)
    table = table.loc[rows]
    none = per_query["none"]
    p_values, deltas = {}, {}
    for label in rows:
        row = table.loc[label]
        mean = per_query[label].mean()
        deltas[label] = mean - none.mean()
        assert abs(float(row["ndcg@10"]) - mean) <= 1e-12, label
        assert abs(float(row["delta"]) - deltas[label]) <= 1e-12, label
        assert int(row["n_queries"]) == len(none)
        p_values[label] = expected_p(per_query[label].to_numpy(), none.to_numpy())
        assert _bool(row["lower"]) == (mean < none.mean()), label
        if label in TABLE1_LABELS:
            x, y = row["target"], row["source"]
            assert f"{x}<-{y}" == label
    assert p_values["none"] == 1.0
    # the family of the correction is the 30 ablations; "none" and "random" are tested alone
    family = [l in TABLE1_LABELS for l in rows]
    check_family(table, [p_values[l] for l in rows], [deltas[l] for l in rows], family, cfg, "table1")
    check_mde(table, [per_query[l].to_numpy() - none.to_numpy() for l in rows], family, cfg, "table1")
    assert abs(summary["unablated_ndcg@10"] - none.mean()) <= 1e-12
    rnd = summary["random_ndcg@10"]
    assert abs(rnd["mean"] - per_query["random"].mean()) <= 1e-12 and rnd["exact"] is True
    assert rnd["rankings"] == cfg["rankings"]
    # the sampled rankings scatter around the exact value (5 standard errors)
    assert abs(rnd["sampled_mean"] - rnd["mean"]) <= 5 * rnd["sd"] / math.sqrt(rnd["rankings"]) + 1e-12
    _check_layouts(run_dir, table, cfg)
    return {"per_query": per_query, "table": table, "p": p_values}


def _check_layouts(run_dir: Path, table: pd.DataFrame, cfg: dict) -> None:
    """table1.md and table1.tex: every cell's value, mark and bold (lower than the unablated model by at least
    0.001, or significantly)."""
    import re

    caption_word = {"none": "uncorrected", "holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected"}
    md = (run_dir / "table1.md").read_text(encoding="utf-8")
    tex = (run_dir / "table1.tex").read_text(encoding="utf-8")
    md_marks = {"": "", "\\*": DROP, RISE: RISE}
    tex_marks = {"": "", "$^*$": DROP, "$^{\\uparrow}$": RISE}
    md_rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| \*\*(\w+)\*\* \|(.*)\|$", md, re.M)}
    tex_rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+) & (.*) \\\\$", tex, re.M) if m.group(1) in PARTS}
    assert set(md_rows) == set(tex_rows) == set(PARTS)
    for x in PARTS:
        md_cells = [c.strip() for c in md_rows[x].split("|")]
        tex_cells = [c.strip() for c in tex_rows[x].split("&")]
        assert len(md_cells) == len(tex_cells) == 6, (x, md_cells, tex_cells)
        for y, md_cell, tex_cell in zip(PARTS + ["*"], md_cells, tex_cells):
            row = table.loc[f"{x}<-{y}"]
            value, mark = f"{float(row['ndcg@10']):.3f}", str(row["mark"])
            delta = float(row["delta"])
            # bold: lower by at least 0.001, or a significant drop
            low = _bool(row["lower"]) and (delta <= -0.001 or mark == DROP)
            m = re.fullmatch(r"(\*\*)?([0-9.]+)(\\\*|" + RISE + r")?(\*\*)?", md_cell)
            assert m and m.group(2) == value and md_marks[m.group(3) or ""] == mark and bool(m.group(1)) == low, \
                (x, y, md_cell, value, mark, low)
            t = re.fullmatch(r"(\\textbf\{)?([0-9.]+)(\$\^\*\$|\$\^\{\\uparrow\}\$)?\}?", tex_cell)
            assert t and t.group(2) == value and tex_marks[t.group(3) or ""] == mark and bool(t.group(1)) == low, \
                (x, y, tex_cell, value, mark, low)
    for text in (md, tex.replace("$\\leq$", "<=")):
        assert caption_word[cfg["correction"]] in text and f"p <= {cfg['alpha']:g}" in text


# ---- Figure 1 -------------------------------------------------------------------------------------------


def check_layers(run_dir: Path, ce) -> None:
    """Every (direction, layer) of layers.csv: the run's stored scores against the public API, their
    tie-aware nDCG@10, p from scipy, the corrected column from statsmodels (one family), the marks."""
    from matchsig import Ablation

    cfg = config(run_dir)
    pool = main_pool(run_dir)
    qs, ds = list(pool["query"]), list(pool["document"])
    base = _stored_scores(run_dir, "scores/none")
    np.testing.assert_allclose(base, ce.score(qs, ds, batch_size=cfg["batch_size"]), atol=2e-5, rtol=0)
    none = pd.Series(tie_aware_ndcg(pool, base)[0])
    layers = _csv(run_dir / "layers.csv")
    assert set(layers["direction"]) == set(FIGURE1) and set(layers["layer"]) == set(range(ce.num_layers))
    assert len(layers) == len(FIGURE1) * ce.num_layers
    specs = [Ablation.parse(d, up_to_layer=l) for d in FIGURE1 for l in range(ce.num_layers)]
    fresh = ce.score_many(qs, ds, specs, batch_size=cfg["batch_size"]).reshape(len(FIGURE1), ce.num_layers, -1)
    stored = {d: _stored_scores(run_dir, f"layers/{d}") for d in FIGURE1}
    for d, curve in zip(FIGURE1, fresh):
        assert stored[d].shape == curve.shape, d
        np.testing.assert_allclose(stored[d], curve, atol=2e-5, rtol=0, err_msg=d)
    p_raw, delta, sds = [], [], []
    for _, row in layers.iterrows():
        per = pd.Series(tie_aware_ndcg(pool, stored[row["direction"]][int(row["layer"])])[0])
        what = (row["direction"], row["layer"])
        assert abs(float(row["ndcg@10"]) - per.mean()) <= 1e-9, what
        assert abs(float(row["delta"]) - (per.mean() - none.mean())) <= 1e-9, what
        p_raw.append(expected_p(per[none.index].to_numpy(), none.to_numpy()))
        delta.append(per.mean() - none.mean())
        sds.append(per[none.index].to_numpy() - none.to_numpy())
    check_family(layers, p_raw, delta, np.ones(len(layers), bool), cfg, "layers")
    check_mde(layers, sds, np.ones(len(layers), bool), cfg, "layers")


# ---- contrast ---------------------------------------------------------------------------------------------


def classify(heads: pd.DataFrame, tests: dict, alpha: float) -> pd.DataFrame:
    """matching, sign and kind of every row from the decision p-values and deltas in ``tests``
    ({comparison: (delta array, decision p array)}), by the documented rule, row by row."""
    out = []
    for i in range(len(heads)):
        d = {c: tests[c][0][i] for c in COMPARISONS}
        sig = {c: tests[c][1][i] <= alpha for c in COMPARISONS}
        matching = sig["relevant"]
        sign = (1 if d["relevant"] > 0 else -1) if matching else 0
        same = {c: (1 if d[c] > 0 else -1 if d[c] < 0 else 0) == sign for c in COMPARISONS}
        if not matching:
            kind = "none"
        elif sig["hard"] and same["hard"]:
            kind = "syntactic"  # term-sharing hard negatives move the head the same way
        elif sig["relevant_hard"] and same["relevant_hard"] and not sig["hard"]:
            kind = "semantic"  # positive evidence: relevant passages beat term-sharing ones
        else:
            kind = "unclassified"
        out.append({"matching": matching, "sign": sign, "kind": kind})
    return pd.DataFrame(out)


def check_contrast(run_dir: Path, ce) -> pd.DataFrame:
    """per_query.csv from the public API's statistics; heads.csv (deltas, t, p, corrected p named after the
    correction, n, matching, sign, kind) from per_query.csv with scipy and statsmodels. Returns heads.csv."""
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
    assert len(heads) == ce.num_layers * ce.num_heads * 2
    alpha, method = cfg["alpha"], cfg["correction"]
    wide = per_query.pivot_table(index=["layer", "head", "direction", "qid"], columns="level", values="max")
    keys = list(heads[["layer", "head", "direction"]].itertuples(index=False, name=None))
    p_columns = set()
    tests = {}
    for name, (level, reference) in COMPARISONS.items():
        deltas, ts, ps, ns = [], [], [], []
        for key in keys:
            sub = wide.loc[key][[level, reference]].dropna()
            deltas.append(float((sub[level] - sub[reference]).mean()) if len(sub) else 0.0)
            ts.append(expected_t(sub[level], sub[reference]))
            ps.append(expected_p(sub[level], sub[reference]))
            ns.append(len(sub))
        np.testing.assert_allclose(heads[f"delta_{name}"], deltas, atol=1e-9, rtol=0, err_msg=name)
        np.testing.assert_allclose(heads[f"t_{name}"], ts, atol=1e-6, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(heads[f"p_{name}"], ps, atol=1e-9, rtol=0, err_msg=name)
        assert list(heads[f"n_{name}"]) == ns, name
        decide = np.asarray(ps, float)
        p_columns.add(f"p_{name}")
        column = corrected_name(method, f"p_{name}")
        if column is not None:  # one family per comparison: every head and direction
            decide = corrected(ps, method)
            np.testing.assert_allclose(heads[column], decide, atol=1e-9, rtol=0, err_msg=column)
            p_columns.add(column)
        tests[name] = (np.asarray(deltas), decide)
    assert {c for c in heads.columns if c.startswith("p_")} == p_columns
    assert list(heads["n_queries"]) == list(heads["n_relevant"])
    kinds = classify(heads, tests, alpha)
    assert [_bool(v) for v in heads["matching"]] == list(kinds["matching"])
    assert list(heads["sign"]) == list(kinds["sign"])
    assert list(heads["kind"]) == list(kinds["kind"])
    # entropy / exact-match columns: means over the queries that have relevant and easy passages
    for stat in ("entropy", "exact"):
        w = per_query.pivot_table(index=["layer", "head", "direction", "qid"], columns="level", values=stat)
        for i, key in enumerate(keys):
            sub = w.loc[key][[3, -1]].dropna()
            assert abs(heads[f"{stat}_relevant"].iloc[i] - sub[3].mean()) <= 1e-9
            assert abs(heads[f"{stat}_easy"].iloc[i] - sub[-1].mean()) <= 1e-9
    return heads


def _decision(heads: pd.DataFrame, comparison: str, correction: str | None) -> pd.Series:
    return heads[corrected_name(correction, f"p_{comparison}") or f"p_{comparison}"].astype(float)


def contrast_ranking(heads: pd.DataFrame, alpha: float, correction: str | None) -> list[tuple[int, int]]:
    """(layer, head), matching heads first (3 vs -1 significant in either direction, either sign), each part
    by decreasing effect: the largest |delta_relevant| over the head's matching directions (over both
    directions for the others); ties by (layer, head)."""
    p = _decision(heads, "relevant", correction)
    best: dict[tuple[int, int], list] = {}
    for (layer, head, delta), pv in zip(heads[["layer", "head", "delta_relevant"]].itertuples(index=False, name=None), p):
        entry = best.setdefault((int(layer), int(head)), [False, -math.inf, -math.inf])
        size = abs(float(delta))
        entry[2] = max(entry[2], size)
        if pv <= alpha:
            entry[0] = True
            entry[1] = max(entry[1], size)
    return sorted(best, key=lambda lh: (not best[lh][0], -(best[lh][1] if best[lh][0] else best[lh][2]), lh))


def matching_heads(heads: pd.DataFrame, alpha: float, correction: str | None) -> set[tuple[int, int]]:
    """(layer, head) pairs that are matching heads in at least one direction."""
    p = _decision(heads, "relevant", correction)
    return {(int(l), int(h)) for l, h, pv in zip(heads["layer"], heads["head"], p) if pv <= alpha}


# ---- heads ------------------------------------------------------------------------------------------------


def check_heads(run_dir: Path, ce) -> pd.DataFrame:
    """heads.csv: top-k = the top k of the contrast ranking; how many of each selection are matching heads;
    every row's tie-aware nDCG@10 from the run's stored scores (checked against the public API), p from
    scipy, the corrected column from statsmodels (one family: every selection), the marks."""
    from matchsig.engine.ablation import AblationSet

    cfg = config(run_dir)
    pool = main_pool(run_dir)
    qs, ds = list(pool["query"]), list(pool["document"])
    contrast = pd.read_csv(run_dir / "contrast" / "heads.csv")
    ranking = contrast_ranking(contrast, cfg["alpha"], cfg["correction"])
    matching = matching_heads(contrast, cfg["alpha"], cfg["correction"])
    frame = _csv(run_dir / "heads.csv")
    ks = sorted(k for k in set(cfg["heads_k"]) if k <= ce.num_layers * ce.num_heads)
    assert sorted(set(frame["k"])) == ks
    base = _stored_scores(run_dir, "scores/none")
    np.testing.assert_allclose(base, ce.score(qs, ds, batch_size=cfg["batch_size"]), atol=2e-5, rtol=0)
    none = pd.Series(tie_aware_ndcg(pool, base)[0])
    sets = [[tuple(int(x) for x in lh.split("/")) for lh in str(h).split(";") if lh] for h in frame["heads"]]
    for k in ks:
        top = frame[(frame["selection"] == "top") & (frame["k"] == k)]
        assert len(top) == 1
        assert sorted(sets[top.index[0]]) == sorted(ranking[:k]), (k, sets[top.index[0]], ranking[:k])
        rnd = frame[(frame["selection"] == "random") & (frame["k"] == k)]
        assert len(rnd) == cfg["heads_random_seeds"]
        for i in rnd.index:
            assert len(set(sets[i])) == k and all(0 <= l < ce.num_layers and 0 <= h < ce.num_heads for l, h in sets[i])
    assert [int(v) for v in frame["matching_in_selection"]] == [sum(1 for lh in s if lh in matching) for s in sets]
    labels = [f"top{k}" if sel == "top" else f"random{k}-s{seed}" for sel, k, seed in
              zip(frame["selection"], frame["k"], frame["seed"])]
    stored = [_stored_scores(run_dir, f"scores/{label}") for label in labels]
    fresh = ce.score_many(qs, ds, [AblationSet.heads(MATCH, hs) for hs in sets], batch_size=cfg["batch_size"])
    np.testing.assert_allclose(np.stack(stored), fresh, atol=2e-5, rtol=0)
    p_raw, delta, diffs = [], [], []
    for i, s in enumerate(stored):
        per = pd.Series(tie_aware_ndcg(pool, s)[0])
        row = frame.iloc[i]
        assert abs(float(row["ndcg@10"]) - per.mean()) <= 1e-9, (i, row["ndcg@10"], per.mean())
        assert abs(float(row["delta"]) - (per.mean() - none.mean())) <= 1e-9
        p_raw.append(expected_p(per[none.index].to_numpy(), none.to_numpy()))
        delta.append(per.mean() - none.mean())
        diffs.append(per[none.index].to_numpy() - none.to_numpy())
    check_family(frame, p_raw, delta, np.ones(len(frame), bool), cfg, "heads")
    check_mde(frame, diffs, np.ones(len(frame), bool), cfg, "heads")
    return frame


# ---- report ------------------------------------------------------------------------------------------------


def _html_table(fragment: str) -> tuple[list[str], list[list[str]]]:
    """The first <table> of an HTML fragment: header cells and body rows, tags stripped, then unescaped."""
    import html as html_lib
    import re

    table = fragment.split("<table", 1)[1].split("</table>", 1)[0]
    strip = lambda s: html_lib.unescape(re.sub(r"<[^>]+>", "", s)).strip()  # noqa: E731
    header = [strip(c) for c in re.findall(r"<th>(.*?)</th>", table.split("</thead>", 1)[0], re.S)]
    body = table.split("<tbody>", 1)[1] if "<tbody>" in table else ""
    rows = [[strip(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)] for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    return header, rows


def check_report(run_dir: Path) -> str:
    """report.html shows this run's own numbers: Table 1 cells with their marks and the decision p named
    after the correction, baselines, fingerprints, model, the top matching heads (order, sign, kind),
    the heads per kind, and the head-ablation rows."""
    import html as html_lib
    import re

    raw_html = (run_dir / "report.html").read_text(encoding="utf-8")
    text = html_lib.unescape(raw_html)
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = config(run_dir)
    alpha, method = cfg["alpha"], cfg["correction"]
    p_name = corrected_name(method) or "p_value"
    for pool in summary["pools"].values():
        assert pool["fingerprint"] in text
    assert str(summary["model_info"]["name"]) in text or Path(cfg["model"]).name in text
    legend = f"{DROP}: significant drop, {RISE}: significant increase"
    table1_path = run_dir / "table1.csv"
    if table1_path.is_file():
        table = _csv(table1_path).set_index("ablation")
        section = text.split('id="table1"', 1)[1].split("</section>", 1)[0]
        cells = re.findall(r'title="([A-Z0-9]+)<-([A-Z0-9*]+): nDCG@10 ([0-9.]+), delta [-+0-9.]+, (\w+) [^"]*">'
                           r'(?:<b>)?([0-9.]+)([^<]*)(?:</b>)?<span class="delta">', section)
        assert len(cells) == 30, len(cells)
        for x, y, value, p_col, shown, mark in cells:
            row = table.loc[f"{x}<-{y}"]
            assert abs(float(value) - float(row["ndcg@10"])) <= 0.5e-4, (x, y, value)
            assert shown == f"{float(row['ndcg@10']):.3f}" and mark == str(row["mark"]), (x, y, shown, mark)
            assert p_col == p_name, (p_col, p_name)
        # tags stripped before unescaping: the text itself holds "<=" and "<-"
        plain = html_lib.unescape(re.sub(r"<[^>]+>", "", raw_html.split('id="table1"', 1)[1].split("</section>", 1)[0]))
        assert f"Unablated model: {summary['unablated_ndcg@10']:.3f}" in plain
        assert f"random ranking: {summary['random_ndcg@10']['mean']:.3f} (exact" in plain
        assert legend in plain and f"p <= {alpha:g}" in plain
    heads_path = run_dir / "contrast" / "heads.csv"
    if heads_path.is_file():
        heads = pd.read_csv(heads_path)
        section = raw_html.split('id="contrast"', 1)[1].split("</section>", 1)[0]
        top = section.split('id="top-heads"', 1)[1]
        rows = heads[heads["kind"] != "none"]
        if rows.empty:
            assert "No head passes the test" in top
        else:
            rows = rows.assign(size=rows["delta_relevant"].abs()).sort_values("size", ascending=False, kind="stable").head(20)
            header, body = _html_table(top)
            assert header[:3] == ["layer/head", "direction", "sign"] and header[-1] == "kind", header
            assert (corrected_name(method, "p_relevant") or "p_relevant") in header, header
            got = [(r[0], r[1].replace(" ", ""), r[2], r[-1]) for r in body]
            want = [(f"{l}/{h}", d.replace("<-", "←"), "+" if s > 0 else "\u2212", k)
                    for l, h, d, s, k in rows[["layer", "head", "direction", "sign", "kind"]].itertuples(index=False)]
            assert got == want, (got, want)
        # heads per kind and direction, over all heads of the model
        header, body = _html_table(section.split("Heads per kind and direction", 1)[1])
        counts = heads.groupby(["direction", "kind"]).size()
        shown = {(r[0].replace("←", "<-"), kind): int(v) for r in body for kind, v in zip(header[1:], r[1:])}
        want = {(d, k): int(counts.get((d, k), 0)) for d in ("Q<-D", "D<-Q") for k in header[1:]}
        assert shown == want and sum(shown.values()) == len(heads), (shown, want)
    if (run_dir / "heads.csv").is_file():
        frame = _csv(run_dir / "heads.csv")
        section = raw_html.split('id="heads"', 1)[1].split("</section>", 1)[0]
        header, body = _html_table(section)
        by_k = {int(r[header.index("k")]): r for r in body}
        assert sorted(by_k) == sorted(set(frame["k"]))
        for _, row in frame[frame["selection"] == "top"].iterrows():
            shown = by_k[int(row["k"])]
            assert shown[header.index("top")] == f"{float(row['ndcg@10']):.3f}{row['mark']}"
            assert shown[header.index("heads")] == str(row["heads"]).replace(";", " ")
            assert int(shown[header.index("matching")]) == int(row["matching_in_selection"])
            random = frame[(frame["selection"] == "random") & (frame["k"] == row["k"])]["ndcg@10"].astype(float)
            assert shown[header.index("random_mean")] == f"{random.mean():.3f}"
        assert f"top {p_name}" in header
        assert legend in html_lib.unescape(section)
    return text
