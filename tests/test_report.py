"""Figures, findings and the HTML report on small synthetic run folders (no model needed).

The run folders follow the RUN_DIR contract (config.json, summary.json, table1.csv,
table1_per_query.csv, layers.csv, contrast/heads.csv, contrast/per_query.csv, heads.csv); the
numbers are crafted so that every SPEC §5 finding holds (``paper_like=True``) or none does.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matchsig.analysis import paper
from matchsig.engine.ablation import direction_cells as normalize_direction
from matchsig.experiments.contrast.findings import top_matching_heads
from matchsig.report import judge

PARTS = paper.PARTS
L, H, NQ = 6, 4, 60
UNABLATED, RANDOM = 0.80, 0.45
DIRECTIONS = ("Q<-D", "D<-Q")


# ---- independent statistics (scipy, statsmodels), not matchsig's ---------------------------------


def _paired(values: np.ndarray, reference: np.ndarray) -> dict:
    from scipy import stats

    d = values - reference
    if not d.any():
        return {"ndcg@10": float(values.mean()), "delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0,
                "n_queries": len(d)}
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    return {"ndcg@10": float(values.mean()), "delta": float(d.mean()), "ci_low": low, "ci_high": high,
            "p_value": float(stats.ttest_rel(values, reference).pvalue), "n_queries": len(d)}


def _holm(frame: pd.DataFrame, mask=None) -> pd.DataFrame:
    from statsmodels.stats.multitest import multipletests

    mask = np.ones(len(frame), bool) if mask is None else mask
    frame["p_holm"] = frame["p_value"]
    frame.loc[mask, "p_holm"] = multipletests(frame.loc[mask, "p_value"], method="holm")[1]
    return frame


# ---- the synthetic runs ---------------------------------------------------------------------------


def _table1_shifts(kind: str) -> dict[tuple[str, str], float]:
    """(target, source) -> mean change of nDCG@10 (the CLS cells are built apart)."""
    shifts = {(t, s): 0.0 for t in PARTS for s in PARTS + ("*",)}
    shifts.update({("D", "D"): -0.18, ("Q", "*"): -0.14, ("D", "*"): -0.22, ("Q", "Q"): -0.03, ("D", "Q"): -0.04})
    if kind == "contrary":
        shifts.update({("D", "D"): -0.002, ("D", "SEP2"): -0.10, ("D", "Q"): -0.12, ("Q", "D"): -0.30})
    return shifts


def _layer_shifts(direction: str, kind: str) -> list[float]:
    if direction in ("CLS<-*", "CLS<-Q,CLS<-D"):
        end = -0.35 if direction == "CLS<-*" else -0.10
        # the paper's last 2 of 24 layers are floor(22 L / 24) = 5.. of 6: only the last layer hurts
        return [0.0] * (L - 1) + [end] if kind != "contrary" else [0.0, -0.05] + [-0.08] * (L - 3) + [end]
    if direction == "D<-D":
        return [0.0, 0.0, -0.002, -0.06, -0.12, -0.18] if kind != "contrary" else [-0.05, -0.08, -0.1, -0.12, -0.15, -0.18]
    return [0.0] * L


def _head_shifts(layer: int, head: int, direction: str, kind: str) -> tuple[float, float]:
    """(relevant - easy, hard - easy) shift of M for one head and direction."""
    if kind == "contrary":  # every head matches, Q<-D and D<-Q on disjoint heads; hard negatives beyond relevant ones
        match = (head % 2 == 0) == (direction == "Q<-D")
        rel = 0.05 if match else 0.0
        return rel, (0.08 if match else 0.0)
    if layer < 4:  # early/middle: head 0 matches syntactically
        return (0.15, 0.135) if head == 0 else (0.0, 0.0)
    return 0.05, 0.0  # late: every head, semantically (hard negatives look like easy ones)


def make_run(root: Path, paper_like: bool = True, with_contrast: bool = True, with_heads: bool = True,
             queries: int = NQ, kind: str | None = None) -> Path:
    kind = kind or ("paper" if paper_like else "contrary")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0 if kind == "paper" else 1)
    qids = [str(1000 + i) for i in range(queries)]
    config = {
        "model": "embedded", "datasets": ["demo"], "per_grade": 10, "seed": 0,
        "experiments": ["table1", "layers"] + (["contrast"] if with_contrast else []) + (["heads"] if with_heads else []),
        "batch_size": 16, "contrast_per_grade": 5, "contrast_easy": 5, "heads_k": [1, 2, 4, 8],
        "heads_random_seeds": 3, "alpha": 0.05, "correction": "holm",
    }
    (root / "config.json").write_text(json.dumps(config))
    pool = {"fingerprint": "abc123def456", "queries": queries, "pairs": 400, "per_grade": 10, "easy_negatives": 10,
            "grade_counts": {"-1": 120, "0": 100, "1": 80, "2": 60, "3": 40}}
    summary = {
        "model_info": {"name": "embedded-minilm", "num_layers": L, "num_heads": H, "num_labels": 1, "parameters": 22_700_000},
        "pools": {"main": pool, "contrast": {**pool, "fingerprint": "fedcba654321", "per_grade": 5, "pairs": 150}},
        "random_ndcg@10": {"mean": RANDOM, "sd": 0.1, "rankings": 1000, "exact": True},
        "unablated_ndcg@10": UNABLATED,
        "timings": {"table1": 12.5, "layers": 30.1},
        "versions": {"matchsig": "0.1.0", "torch": "2.5", "transformers": "5.0"},
        "created": "2026-11-27T01:00:00Z",
    }

    ref = UNABLATED + rng.normal(0, 0.08, queries)
    random = RANDOM + rng.normal(0, 0.05, queries)
    summary["unablated_ndcg@10"] = float(ref.mean())
    summary["random_ndcg@10"]["mean"] = float(random.mean())
    (root / "summary.json").write_text(json.dumps(summary))
    per_query = {"qid": qids, "none": ref, "random": random}
    for (t, s), shift in _table1_shifts(kind).items():
        per_query[f"{t}<-{s}"] = ref + shift + rng.normal(0, 0.02, queries)
    # CLS<-Q a small insignificant drop, CLS<-D consistently above it; CLS<-* ties: the random baseline exactly
    per_query["CLS<-Q"] = ref - 0.004 + rng.normal(0, 0.02, queries)
    per_query["CLS<-D"] = per_query["CLS<-Q"] + 0.004 + rng.normal(0, 0.001, queries)
    per_query["CLS<-*"] = random.copy()
    if kind == "contrary":
        per_query["CLS<-D"] = ref - 0.05 + rng.normal(0, 0.01, queries)
        per_query["CLS<-Q"] = ref + rng.normal(0, 0.001, queries)
        per_query["CLS<-*"] = ref - 0.02 + rng.normal(0, 0.01, queries)
    rows = [dict(target="none", source="", ablation="none", **_paired(ref, ref)),
            dict(target="random", source="", ablation="random", **_paired(random, ref))]
    for t in PARTS:
        for s in PARTS + ("*",):
            rows.append(dict(target=t, source=s, ablation=f"{t}<-{s}", **_paired(per_query[f"{t}<-{s}"], ref)))
    frame = pd.DataFrame(rows)
    frame = _holm(frame, ~frame["ablation"].isin(["none", "random"]).to_numpy())
    frame["lower"] = frame["ndcg@10"] < ref.mean()
    frame.to_csv(root / "table1.csv", index=False)
    pd.DataFrame(per_query).to_csv(root / "table1_per_query.csv", index=False)

    directions = [f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")] + ["CLS<-Q,CLS<-D", "CLS<-*"]
    rows = []
    for direction in directions:
        for layer, shift in enumerate(_layer_shifts(direction, kind)):
            rows.append(dict(direction=direction, layer=layer, **_paired(ref + shift + rng.normal(0, 0.015, queries), ref)))
    _holm(pd.DataFrame(rows)).to_csv(root / "layers.csv", index=False)

    if with_contrast:
        from scipy import stats
        from statsmodels.stats.multitest import multipletests

        (root / "contrast").mkdir(exist_ok=True)
        heads_rows, pq_rows = [], []
        for layer in range(L):
            for head in range(H):
                for direction in DIRECTIONS:
                    rel, hard = _head_shifts(layer, head, direction, kind)
                    base = 0.3 + 0.02 * layer + rng.normal(0, 0.02, queries)
                    m = {3: base + rel + rng.normal(0, 0.01, queries), 0: base + hard + rng.normal(0, 0.01, queries),
                         -1: base + rng.normal(0, 0.01, queries)}
                    late, early = layer >= 5, layer < 5
                    if kind == "paper":
                        ent_shift = {3: (0.3 if direction == "Q<-D" else 0.05) if late else 0.0}
                        exact_shift = {3: 0.2 if early else 0.0}
                    else:
                        ent_shift = {3: (-0.05 if direction == "Q<-D" else 0.5) if late else 0.0}
                        exact_shift = {3: -0.2 if early else 0.0}
                    for level in (3, 0, -1):
                        for i, qid in enumerate(qids):
                            pq_rows.append(dict(
                                qid=qid, level=level, layer=layer, head=head, direction=direction, max=m[level][i],
                                entropy=2.0 + 0.1 * layer + ent_shift.get(level, 0.0) + rng.normal(0, 0.05),
                                exact=0.1 + exact_shift.get(level, 0.0) + rng.normal(0, 0.02),
                                mass=0.5 + rng.normal(0, 0.02)))
                    row = dict(layer=layer, head=head, direction=direction)
                    for name, (a, b) in {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}.items():
                        test = stats.ttest_rel(m[a], m[b])
                        row.update({f"delta_{name}": float((m[a] - m[b]).mean()), f"t_{name}": test.statistic,
                                    f"p_{name}": test.pvalue, f"n_{name}": queries})
                    heads_rows.append(row)
        heads = pd.DataFrame(heads_rows)
        for name in ("relevant", "hard", "relevant_hard"):
            heads[f"p_{name}_holm"] = multipletests(heads[f"p_{name}"], method="holm")[1]
        pq = pd.DataFrame(pq_rows)
        for stat in ("entropy", "exact"):
            for level, suffix in ((3, "relevant"), (-1, "easy")):
                means = pq[pq["level"] == level].groupby(["layer", "head", "direction"])[stat].mean()
                heads[f"{stat}_{suffix}"] = [means[(r.layer, r.head, r.direction)] for r in heads.itertuples()]
        heads["kind"] = "none"  # judged again from the tests by matchsig.analysis.matching
        heads["n_queries"] = queries
        heads.to_csv(root / "contrast" / "heads.csv", index=False)
        pq.to_csv(root / "contrast" / "per_query.csv", index=False)

    if with_heads:
        rows = []
        for k in (1, 2, 4, 8):
            top = UNABLATED - 0.04 * k
            rows.append(dict(selection="top", k=k, seed=0, heads=";".join(f"5/{h}" for h in range(min(k, H))),
                             **{"ndcg@10": top}, delta=top - UNABLATED, p_value=0.001, p_holm=0.004,
                             matching_in_selection=min(k, H)))
            for seed in range(3):
                value = UNABLATED - 0.005 * k + 0.003 * seed
                rows.append(dict(selection="random", k=k, seed=seed, heads="0/1", **{"ndcg@10": value},
                                 delta=value - UNABLATED, p_value=0.4, p_holm=1.0, matching_in_selection=0))
        pd.DataFrame(rows).to_csv(root / "heads.csv", index=False)
    return root


def _verdicts(findings) -> dict[str, str]:
    return {f.key: f.verdict for f in findings}


KEYS = [
    "dd_hurts_most", "sep_noop", "cls_all_random", "clsq_vs_clsd",
    "cls_last_layers", "dd_from_middle", "matching_heads_layers", "matching_heads_bidirectional",
    "table1_significant_drops", "table1_not_significant", "hard_vs_easy_layers", "qd_entropy_late",
    "exact_match_early", "dq_entropy_late_similar", "qd_dq_alone_keep_signal", "hard_same_pattern_weaker",
    "late_differences_smaller",
]


def test_findings_hold_on_a_paper_like_run(tmp_path):
    run_dir = make_run(tmp_path / "run")
    findings = judge(run_dir)
    assert [f.key for f in findings] == KEYS
    assert _verdicts(findings) == {k: "holds" for k in KEYS}, [(f.key, f.evidence) for f in findings if not f.holds]
    for f in findings:
        assert f.evidence and f.rule and f.name and f.paper
        assert f.queries == NQ, f.key
    saved = json.loads((run_dir / "findings.json").read_text())
    assert [f["verdict"] for f in saved["findings"]] == ["holds"] * len(KEYS)
    assert saved["top_matching_heads"], "the top matching heads are listed"
    layers = next(f for f in findings if f.key == "matching_heads_layers")
    assert layers.data["mean_first_half"] == pytest.approx(0.25)
    assert layers.data["mean_last_layers"] == pytest.approx(1.0)
    cls = next(f for f in findings if f.key == "cls_all_random")
    assert "every one of the 60 queries" in cls.evidence


def test_findings_fail_on_a_contrary_run(tmp_path):
    findings = judge(make_run(tmp_path / "run", kind="contrary"), write=False)
    expected = {k: "does not hold" for k in KEYS}
    assert _verdicts(findings) == expected, [(f.key, f.evidence) for f in findings if f.verdict != "does not hold"]
    assert not (tmp_path / "run" / "findings.json").exists()


def test_findings_are_inconclusive_with_too_few_queries(tmp_path):
    findings = judge(make_run(tmp_path / "run", queries=4), write=False)
    verdicts = _verdicts(findings)
    for key in ("dd_hurts_most", "clsq_vs_clsd", "cls_last_layers", "dd_from_middle", "table1_significant_drops",
                "table1_not_significant", "qd_entropy_late", "exact_match_early", "dq_entropy_late_similar"):
        assert verdicts[key] == "inconclusive", (key, verdicts[key])
    assert all(f.queries == 4 for f in findings if f.queries is not None)


def test_directional_rule_against_scipy():
    from scipy import stats

    from matchsig.analysis.findings import STD_MARGIN, directional

    rng = np.random.default_rng(4)
    strong = rng.normal(0.5, 1.0, 40)
    t = directional(strong, 0.05)
    assert t.state == "holds" and t.p == pytest.approx(stats.ttest_1samp(strong, 0).pvalue)
    assert directional(-strong, 0.05).state == "does not hold"
    null = rng.normal(0, 1.0, 200)
    null -= null.mean()  # exactly 0 mean: the CI rules out d_z = 0.5
    assert directional(null, 0.05).state == "does not hold"
    few = null[:8] - null[:8].mean()
    assert directional(few, 0.05).state == "inconclusive"  # 8 queries cannot rule out d_z = 0.5
    assert directional(null[:4], 0.05).state == "inconclusive" and directional(null[:4], 0.05).n == 4
    low, high = stats.t.interval(0.95, 199, loc=0.0, scale=stats.sem(null))
    assert directional(null, 0.05).ci == pytest.approx((low, high))
    assert directional(null, 0.05).margin == pytest.approx(STD_MARGIN * null.std(ddof=1))


def test_findings_not_measured_when_experiments_missing(tmp_path):
    run_dir = make_run(tmp_path / "run", with_contrast=False, with_heads=False)
    (run_dir / "layers.csv").unlink()
    verdicts = _verdicts(judge(run_dir))
    assert verdicts["dd_hurts_most"] == "holds"
    for key in ("cls_last_layers", "dd_from_middle", "matching_heads_layers", "matching_heads_bidirectional",
                "hard_vs_easy_layers", "qd_entropy_late"):
        assert verdicts[key] == "not measured"


def test_top_matching_heads_have_kinds_and_signs(tmp_path):
    top = top_matching_heads(make_run(tmp_path / "run"), n=5)
    assert len(top) == 5
    assert set(top["kind"]) <= {"syntactic", "semantic"} and set(top["sign"]) == {1}
    assert (top["delta_relevant"].abs().diff().dropna() <= 0).all()


def test_direction_names():
    assert normalize_direction("CLS<-Q,CLS<-D") == normalize_direction("CLS<-{Q,D}") == {("CLS", "Q"), ("CLS", "D")}
    assert normalize_direction("cls<-*") == {("CLS", "*")}


def test_paper_table1_is_complete():
    assert len(paper.TABLE1) == 30
    assert paper.cell("D", "D").text() == "0.67*"
    assert paper.cell("CLS", "*").text() == "0.48*"
    assert paper.cell("Q", "*").text() == "0.66*"
    assert paper.cell("D", "*").text() == "0.62*"
    assert paper.cell("CLS", "Q").ndcg == 0.79 and paper.cell("CLS", "D").ndcg == 0.81
    assert all(paper.cell(sep, s).ndcg == 0.81 for sep in ("SEP1", "SEP2") for s in paper.TABLE1_COLUMNS)
    assert (paper.UNABLATED, paper.RANDOM) == (0.81, 0.48)


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<link" not in text.lower() and "<script src" not in text.lower()
    for src in re.findall(r"""<img[^>]*\ssrc=["']([^"']+)""", text):
        assert src.startswith("data:image/png;base64,")
        base64.b64decode(src.split(",", 1)[1], validate=True)


def test_report_full_run(tmp_path):
    from matchsig.report.figures import FIGURES
    from matchsig.report import build_report

    run_dir = make_run(tmp_path / "run")
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    for name in FIGURES:
        figure = run_dir / "figures" / name
        assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    text = path.read_text()
    _assert_self_contained(text)
    assert text.count("<img") == len(FIGURES)
    assert (run_dir / "findings.json").is_file()
    # configuration, cap note, fingerprints, Table 1 beside the paper, findings, heads test
    for needle in ("abc123def456", "fedcba654321", "contrast_easy", "0.43", "cap of 10", "0.67*", "Holm",
                   "paired t-test", "holds", "syntactic", "embedded-minilm"):
        assert needle in text, needle
    checklist = text.split('id="findings"', 1)[1]
    assert checklist.count('class="badge ok"') == len(KEYS)
    assert "inconclusive" in text and "queries" in checklist


def test_report_empty_and_partial_runs(tmp_path):
    from matchsig.report import build_report

    empty = tmp_path / "empty"
    empty.mkdir()
    text = build_report(empty).read_text()
    _assert_self_contained(text)
    assert "not measured" in text and "<img" not in text

    partial = make_run(tmp_path / "partial", with_contrast=False, with_heads=False)
    text = build_report(partial).read_text()
    _assert_self_contained(text)
    assert (partial / "figures" / "layers.png").is_file()
    assert not (partial / "figures" / "fig2_relevant_vs_easy.png").exists()
    assert "contrast was not run" in text.lower() or "not run" in text.lower()


def test_report_survives_a_malformed_file(tmp_path):
    from matchsig.report import build_report

    run_dir = make_run(tmp_path / "run", with_contrast=False, with_heads=False)
    pd.read_csv(run_dir / "layers.csv").drop(columns=["ndcg@10", "delta"]).to_csv(run_dir / "layers.csv", index=False)
    pd.read_csv(run_dir / "table1.csv").rename(columns={"ndcg@10": "ndcg"}).to_csv(run_dir / "table1.csv", index=False)
    text = build_report(run_dir).read_text()
    _assert_self_contained(text)
    assert "layers.png could not be drawn" in text
    assert "layers.csv could not be read" in text
    assert "could not be rendered" in text  # Table 1's section, without its nDCG column
    findings = judge(run_dir, write=False)
    verdicts = _verdicts(findings)
    assert verdicts["cls_last_layers"] == verdicts["dd_hurts_most"] == "not measured"
    broken = next(f for f in findings if f.key == "dd_hurts_most")
    assert "could not be judged" in broken.evidence.lower() and broken.name != broken.key
