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

from matchsig import paper
from matchsig.findings import judge, normalize_direction, top_matching_heads

PARTS = paper.PARTS
L, H, NQ = 6, 4, 12
UNABLATED, RANDOM = 0.80, 0.45


def _table1(paper_like: bool) -> dict[tuple[str, str], tuple[float, float]]:
    """(target, source) -> (nDCG@10, p_value)."""
    cells = {}
    for i, t in enumerate(PARTS):
        for j, s in enumerate(PARTS + ("*",)):
            cells[(t, s)] = (UNABLATED + 0.004 * ((i + j) % 3 - 1), 0.5)
    cells[("Q", "Q")] = (0.78, 0.2)
    cells[("D", "Q")] = (0.77, 0.04)
    cells[("CLS", "*")] = (0.46, 1e-6)
    cells[("Q", "*")] = (0.66, 1e-4)
    cells[("D", "*")] = (0.58, 1e-5)
    cells[("D", "D")] = (0.62, 1e-4)
    cells[("CLS", "Q")] = (0.78, 0.3)
    cells[("CLS", "D")] = (0.80, 0.9)
    cells[("SEP1", "D")] = (0.77, 0.4)  # |delta| > 0.01 but not significant: still "no change"
    cells[("SEP2", "SEP2")] = (0.795, 0.01)  # significant but |delta| <= 0.01: no change
    if not paper_like:
        cells[("D", "D")] = (0.79, 0.3)  # Q<-* etc. unchanged; now D<-Q is the worst single direction
        cells[("D", "SEP2")] = (0.70, 0.001)  # a SEP ablation that hurts significantly
        cells[("CLS", "*")] = (0.70, 0.01)
        cells[("CLS", "Q")] = (0.80, 0.9)
        cells[("CLS", "D")] = (0.78, 0.3)
    return cells


def _layer_curve(direction: str, paper_like: bool) -> list[float]:
    flat = [UNABLATED] * L
    if direction in ("CLS<-*", "CLS<-Q,CLS<-D"):
        end = 0.46 if direction == "CLS<-*" else 0.70
        curve = [UNABLATED - 0.005] * (L - 2) + [0.74, end]
        if not paper_like:
            curve = [UNABLATED, 0.75] + [0.70] * (L - 3) + [end]
        return curve
    if direction == "D<-D":
        curve = [UNABLATED, 0.795, 0.79, 0.74, 0.68, 0.62]  # onset at layer 3 >= floor(0.45*6) = 2
        return curve if paper_like else [0.75, 0.72, 0.70, 0.68, 0.65, 0.62]
    return [v - 0.003 * i for i, v in enumerate(flat)]


def _matching(layer: int, head: int, direction: str, paper_like: bool) -> bool:
    if paper_like:
        return head == 0 if layer < 4 else True  # 1/4 early, every head in layers 4-5
    # every head early; Q<-D and D<-Q use disjoint heads
    return (head % 2 == 0) == (direction == "Q<-D")


def make_run(root: Path, paper_like: bool = True, with_contrast: bool = True, with_heads: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0 if paper_like else 1)
    qids = [str(1000 + i) for i in range(NQ)]
    config = {
        "model": "embedded", "datasets": ["demo"], "per_grade": 10, "seed": 0,
        "experiments": ["table1", "layers"] + (["contrast"] if with_contrast else []) + (["heads"] if with_heads else []),
        "batch_size": 16, "contrast_per_grade": 5, "contrast_easy": 5, "heads_k": [1, 2, 4, 8],
        "heads_random_seeds": 3, "alpha": 0.05, "correction": "holm",
    }
    (root / "config.json").write_text(json.dumps(config))
    pool = {"fingerprint": "abc123def456", "queries": NQ, "pairs": 400, "per_grade": 10, "easy_negatives": 10,
            "grade_counts": {"-1": 120, "0": 100, "1": 80, "2": 60, "3": 40}}
    summary = {
        "model_info": {"name": "embedded-minilm", "num_layers": L, "num_heads": H, "num_labels": 1, "parameters": 22_700_000},
        "pools": {"main": pool, "contrast": {**pool, "fingerprint": "fedcba654321", "per_grade": 5, "pairs": 150}},
        "random_ndcg@10": {"mean": RANDOM, "sd": 0.1, "rankings": 1000},
        "unablated_ndcg@10": UNABLATED,
        "timings": {"table1": 12.5, "layers": 30.1},
        "versions": {"matchsig": "0.1.0", "torch": "2.5", "transformers": "5.0"},
        "created": "2026-11-27T01:00:00Z",
    }
    (root / "summary.json").write_text(json.dumps(summary))

    cells = _table1(paper_like)
    rows, per_query = [], {"qid": qids, "none": list(UNABLATED + rng.normal(0, 0.05, NQ))}
    for (t, s), (value, p) in cells.items():
        name = f"{t}<-{s}"
        rows.append(dict(target=t, source=s, ablation=name, **{"ndcg@10": value}, delta=value - UNABLATED, p_value=p,
                         p_holm=min(1.0, p * 30), significant=p <= 0.05, lower=value < UNABLATED))
        per_query[name] = list(value + rng.normal(0, 0.05, NQ))
    rows.append(dict(target="none", source="", ablation="none", **{"ndcg@10": UNABLATED}, delta=0.0, p_value=1.0,
                     p_holm=1.0, significant=False, lower=False))
    rows.append(dict(target="random", source="", ablation="random", **{"ndcg@10": RANDOM}, delta=RANDOM - UNABLATED,
                     p_value=1e-8, p_holm=1e-8, significant=True, lower=True))
    pd.DataFrame(rows).to_csv(root / "table1.csv", index=False)
    pd.DataFrame(per_query).to_csv(root / "table1_per_query.csv", index=False)

    directions = [f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")] + ["CLS<-Q,CLS<-D", "CLS<-*"]
    rows = []
    for direction in directions:
        for layer, value in enumerate(_layer_curve(direction, paper_like)):
            rows.append(dict(direction=direction, layer=layer, **{"ndcg@10": value}, delta=value - UNABLATED,
                             p_value=0.5 if abs(value - UNABLATED) < 0.02 else 0.001))
    pd.DataFrame(rows).to_csv(root / "layers.csv", index=False)

    if with_contrast:
        (root / "contrast").mkdir(exist_ok=True)
        heads_rows, pq_rows = [], []
        for layer in range(L):
            for head in range(H):
                for direction in ("Q<-D", "D<-Q"):
                    match = _matching(layer, head, direction, paper_like)
                    syntactic = match and layer < 4
                    base = 0.3 + 0.02 * layer
                    shift_rel = (0.15 if layer < 4 else 0.05) if match else 0.0
                    shift_hard = shift_rel * 0.9 if syntactic else 0.0
                    for qid in qids:
                        for level, shift in ((3, shift_rel), (0, shift_hard), (-1, 0.0)):
                            pq_rows.append(dict(
                                qid=qid, level=level, layer=layer, head=head, direction=direction,
                                max=base + shift + rng.normal(0, 0.01),
                                entropy=2.0 + 0.1 * layer + (0.3 if level == 3 and layer >= 4 else 0) + rng.normal(0, 0.05),
                                exact=0.1 + (0.2 if level == 3 and layer < 4 else 0) + rng.normal(0, 0.02),
                                mass=0.5 + rng.normal(0, 0.02),
                            ))
                    heads_rows.append(dict(
                        layer=layer, head=head, direction=direction, delta_relevant=shift_rel if match else 0.001,
                        delta_hard=shift_hard, p_relevant=1e-4 if match else 0.6, p_hard=1e-4 if syntactic else 0.7,
                        kind="syntactic" if syntactic else ("semantic" if match else "none"),
                        entropy_relevant=2.3, entropy_easy=2.0 + 0.01 * head, exact_relevant=0.3, exact_easy=0.1,
                        n_queries=NQ,
                    ))
        pd.DataFrame(heads_rows).to_csv(root / "contrast" / "heads.csv", index=False)
        pd.DataFrame(pq_rows).to_csv(root / "contrast" / "per_query.csv", index=False)

    if with_heads:
        rows = []
        for k in (1, 2, 4, 8):
            top = UNABLATED - 0.04 * k
            rows.append(dict(selection="top", k=k, seed=0, heads=";".join(f"5/{h}" for h in range(min(k, H))),
                             **{"ndcg@10": top}, delta=top - UNABLATED, p_value=0.001))
            for seed in range(3):
                value = UNABLATED - 0.005 * k + 0.003 * seed
                rows.append(dict(selection="random", k=k, seed=seed, heads="0/1", **{"ndcg@10": value},
                                 delta=value - UNABLATED, p_value=0.4))
        pd.DataFrame(rows).to_csv(root / "heads.csv", index=False)
    return root


def _verdicts(findings) -> dict[str, bool | None]:
    return {f.key: f.holds for f in findings}


KEYS = [
    "dd_hurts_most", "sep_noop", "cls_all_random", "clsq_vs_clsd",
    "cls_last_layers", "dd_from_middle", "matching_heads_layers", "matching_heads_bidirectional",
]


def test_findings_hold_on_a_paper_like_run(tmp_path):
    run_dir = make_run(tmp_path / "run")
    findings = judge(run_dir)
    assert [f.key for f in findings] == KEYS
    assert _verdicts(findings) == {k: True for k in KEYS}, [(f.key, f.evidence) for f in findings if not f.holds]
    for f in findings:
        assert f.evidence and f.rule and f.name
    saved = json.loads((run_dir / "findings.json").read_text())
    assert [f["verdict"] for f in saved["findings"]] == ["holds"] * len(KEYS)
    assert saved["top_matching_heads"], "the top matching heads are listed"
    sep = next(f for f in findings if f.key == "sep_noop")
    assert "SEP1<-D" in sep.evidence  # a large but insignificant change is reported
    layers = next(f for f in findings if f.key == "matching_heads_layers")
    assert layers.data["mean_first_half"] == pytest.approx(0.25)
    assert layers.data["mean_last_quarter"] == pytest.approx(1.0)


def test_findings_fail_on_a_contrary_run(tmp_path):
    findings = judge(make_run(tmp_path / "run", paper_like=False), write=False)
    assert _verdicts(findings) == {k: False for k in KEYS}, [(f.key, f.evidence) for f in findings if f.holds]
    assert not (tmp_path / "run" / "findings.json").exists()
    cls = next(f for f in findings if f.key == "clsq_vs_clsd")
    assert "paired t-test" in cls.evidence


def test_findings_not_measured_when_experiments_missing(tmp_path):
    run_dir = make_run(tmp_path / "run", with_contrast=False, with_heads=False)
    (run_dir / "layers.csv").unlink()
    verdicts = _verdicts(judge(run_dir))
    assert verdicts["dd_hurts_most"] is True
    for key in ("cls_last_layers", "dd_from_middle", "matching_heads_layers", "matching_heads_bidirectional"):
        assert verdicts[key] is None


def test_top_matching_heads_have_kinds(tmp_path):
    top = top_matching_heads(make_run(tmp_path / "run"), n=5)
    assert len(top) == 5
    assert set(top["kind"]) <= {"syntactic", "semantic"}
    assert (top["delta_relevant"].diff().dropna() <= 0).all()


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
    from matchsig.figures import FIGURES
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
    assert verdicts["cls_last_layers"] is None and verdicts["dd_hurts_most"] is None
    broken = next(f for f in findings if f.key == "dd_hurts_most")
    assert "could not be judged" in broken.evidence.lower() and broken.name != broken.key
