"""The experiments, report and explorer on prompt-based rerankers (issue 20, item 5): a causal decoder
(parts PRE Q MID D LAST, score at LAST) and monoT5 (PRE Q MID D POST, and the decoder token DEC).

Table 1's rows and columns follow the model's parts; directions a causal mask makes impossible are
written "impossible" and never computed; the aggregating part's ``X<-*`` is the random baseline;
claims about parts a model does not have are listed as not applicable. Re-derived here by hand: the
possible cells (from the part order), the tied scores of ``LAST<-*`` / ``DEC<-*`` (from the scores
file), the float64 reference score of a cell (:mod:`_reference_decoder`), the Holm correction over
D<-Q only (statsmodels).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matchsig.engine.ablation import FIGURE1_DIRECTIONS, TABLE1_CELLS
from matchsig.engine.scheme import ENCODER, PartScheme
from matchsig.experiments import RunConfig, Runner

from test_explorer import _open, browser  # noqa: F401  (the Chromium fixture)
from test_families import CHAT, _decoder, _qwen_tokenizer
from test_t5 import _t5, _t5_tokenizer

SETTINGS = dict(datasets=["demo"], per_grade=2, max_queries=4, contrast_per_grade=2, contrast_easy=2, chunk_size=40,
                batch_size=8, rankings=20, alpha=0.3, device="cpu")
DECODER = ("PRE", "Q", "MID", "D", "LAST")
SLOTS = ("CLS", "Q", "SEP1", "D", "SEP2")


def _causal_cells() -> list[tuple[str, str]]:
    """Possible cells of a causal decoder, by hand: X reads Y only when Y does not come after X."""
    return [(x, y) for i, x in enumerate(SLOTS) for j, y in enumerate(SLOTS) if j <= i] + [(x, "*") for x in SLOTS]


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    from matchsig.data.datasets import load_collection

    root = tmp_path_factory.mktemp("prompt")
    demo = load_collection("demo")
    qids = demo.judged_qids()[:4]
    texts = [demo.queries[q] for q in qids] + list(demo.docs([d for q in qids for d in list(demo.qrels[q])[:30]]).values())
    tok = _qwen_tokenizer(texts + [CHAT["pre"], CHAT["mid"], CHAT["post"], "query: document:"] + ["yes no"] * 20)
    folder = root / "qwen3"
    _decoder("qwen3", tok, seed=3).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = root / "run"
    Runner(out, RunConfig(model=str(folder), experiments=["table1", "layers", "contrast"], correction="holm",
                          **SETTINGS), progress=False).run()
    from matchsig.report import build_report

    build_report(out)
    return folder, out


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("monot5")
    tok = _t5_tokenizer()
    folder = root / "monot5"
    _t5(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = root / "run"
    Runner(out, RunConfig(model=str(folder), experiments=["table1", "layers"], correction="none",
                          **{**SETTINGS, "per_grade": 1}), progress=False).run()
    return folder, out


def test_part_schemes_by_hand():
    assert ENCODER.table1_cells() == TABLE1_CELLS and all(ENCODER.possible(x, y) for x, y in TABLE1_CELLS)
    assert ENCODER.figure1_directions() == FIGURE1_DIRECTIONS and ENCODER.encoder
    assert ENCODER.label("SEP2<-Q") == "SEP2<-Q"
    dec = PartScheme(DECODER, causal=True, aggregator="SEP2")
    assert [c for c in dec.table1_cells() if dec.possible(*c)] == _causal_cells() and len(_causal_cells()) == 20
    assert not dec.possible("Q", "D") and dec.possible("D", "Q") and dec.possible("CLS", "*")
    assert dec.label("SEP2<-Q,SEP2<-D") == "LAST<-Q,LAST<-D" and dec.label("CLS<-SEP1") == "PRE<-MID"
    assert dec.figure1_directions() == ("Q<-Q", "D<-Q", "D<-D", "SEP2<-Q", "SEP2<-D", "SEP2<-SEP2",
                                        "SEP2<-Q,SEP2<-D", "SEP2<-*")
    t5 = PartScheme(("PRE", "Q", "MID", "D", "POST"), decoder=True, aggregator="DEC")
    assert len(t5.table1_cells()) == 36 and all(t5.possible(*c) for c in t5.table1_cells())
    assert not t5.possible("Q", "DEC") and t5.figure1_directions() == ("Q<-Q", "Q<-D", "D<-Q", "D<-D")
    assert PartScheme.from_dict(None) == ENCODER and PartScheme.from_dict(dec.to_dict()) == dec


def test_decoder_table1_has_the_possible_cells_and_impossible_ones_written_as_such(decoder_run):
    folder, out = decoder_run
    table = pd.read_csv(out / "table1.csv")
    cells = [(t, s) for t, s in zip(table["target"], table["source"]) if t not in ("none", "random")]
    assert cells == _causal_cells()
    info = json.loads((out / "summary.json").read_text())["model_info"]
    assert info["family"] == "decoder" and info["parts"]["names"] == list(DECODER) and info["parts"]["causal"]
    # the family of the correction is the 20 computed ablations
    md = (out / "table1.md").read_text()
    assert "the 20 ablations" in md and "score read at LAST" in md
    lines = [l for l in md.splitlines() if l.startswith("|")]
    assert lines[0] == "| X \\ Y | PRE | Q | MID | D | LAST | All |"
    for i, line in enumerate(lines[2:]):
        row = [c.strip() for c in line.strip("|").split("|")]
        assert row[0] == f"**{DECODER[i]}**"
        assert [j for j, c in enumerate(row[1:6]) if c == "impossible"] == list(range(i + 1, 5))
        assert row[6] != "impossible"
    tex = (out / "table1.tex").read_text()
    assert "LAST &" in tex and "SEP2" not in tex


def test_decoder_last_reading_nothing_is_the_random_ranking(decoder_run):
    _, out = decoder_run
    scores = pd.read_csv(out / "table1_scores.csv")
    # every pair of a query ties under LAST<-* (the scoring position reads nothing) ...
    assert scores.groupby("qid")["SEP2<-*"].agg(np.ptp).max() <= 1e-6
    assert scores.groupby("qid")["none"].agg(np.ptp).min() > 1e-4
    # ... so its nDCG@10 is the exact random baseline
    table = pd.read_csv(out / "table1.csv").set_index("ablation")
    assert table.loc["SEP2<-*", "ndcg@10"] == pytest.approx(table.loc["random", "ndcg@10"], abs=1e-12)
    # the curve's last point (cut in every layer) is Table 1's cell
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers["direction"]) == {"Q<-Q", "D<-Q", "D<-D", "SEP2<-Q", "SEP2<-D", "SEP2<-SEP2",
                                        "SEP2<-Q,SEP2<-D", "SEP2<-*"}
    last = layers[layers["layer"] == layers["layer"].max()].set_index("direction")
    for d in ("D<-D", "SEP2<-D", "SEP2<-*"):
        assert last.loc[d, "ndcg@10"] == pytest.approx(table.loc[d, "ndcg@10"], abs=1e-9)


def test_decoder_cell_scores_equal_the_float64_reference(decoder_run):
    """A cell's stored scores (slot names) are the model's own named direction (LAST<-D), checked by the
    float64 reference on a few pairs."""
    from _reference_decoder import decoder_score

    from matchsig.data.datasets import load_collection
    from matchsig.engine.model import CrossEncoder

    folder, out = decoder_run
    ce = CrossEncoder.load(folder, device="cpu", max_length=512)
    scores = pd.read_csv(out / "table1_scores.csv", dtype={"qid": str, "docid": str})

    demo = load_collection("demo")
    rows = scores.index[:: max(1, len(scores) // 3)][:3]
    qs = [demo.queries[scores.loc[i, "qid"]] for i in rows]
    ds = [demo.docs([scores.loc[i, "docid"]])[scores.loc[i, "docid"]] for i in rows]
    enc = ce.encode(qs, ds)
    names = [[DECODER[p] for p in parts] for parts in enc.part_ids]
    cuts = {l: {h: {("LAST", "D")} for h in range(4)} for l in range(3)}
    model = ce.model
    for k, i in enumerate(rows):
        ref = decoder_score(model, enc.input_ids[k], names[k], cuts)
        assert abs(scores.loc[i, "SEP2<-D"] - ref) <= 1e-5
        assert abs(ce.score([qs[k]], [ds[k]], ablation="LAST<-D")[0] - ref) <= 1e-5


def test_decoder_contrast_tests_d_to_q_only(decoder_run):
    from statsmodels.stats.multitest import multipletests

    _, out = decoder_run
    heads = pd.read_csv(out / "contrast" / "heads.csv")
    assert set(heads["direction"]) == {"D<-Q"} and len(heads) == 3 * 4
    p = heads["p_relevant"].to_numpy()
    ok = np.isfinite(p)
    want = np.full(len(p), np.nan)
    want[ok] = multipletests(p[ok], method="holm")[1]
    np.testing.assert_allclose(heads["p_relevant_holm"].to_numpy(), want, rtol=1e-9, equal_nan=True)


def test_decoder_findings_and_report(decoder_run):
    _, out = decoder_run
    findings = {f["key"]: f for f in json.loads((out / "findings.json").read_text())["findings"]}
    for key in ("sep_noop", "cls_all_random", "clsq_vs_clsd", "cls_last_layers", "table1_significant_drops"):
        assert findings[key]["verdict"] == "not measured" and "parts are PRE, Q, MID, D, LAST" in findings[key]["evidence"]
    for key in ("matching_heads_bidirectional", "qd_entropy_late", "qd_dq_alone_keep_signal"):
        assert findings[key]["verdict"] == "not measured" and "Q<-D is impossible" in findings[key]["evidence"]
    judged = findings["dd_hurts_most"]
    assert judged["verdict"] != "not measured"
    assert not re.search(r"\b(CLS|SEP1|SEP2)\b", judged["evidence"]), judged["evidence"]
    page = (out / "report.html").read_text()
    assert page.count(">impossible</td>") == 10 and "Model family decoder" in page
    assert "Traceback" not in page


def test_decoder_view_follows_the_parts(decoder_run):
    from matchsig.engine.model import CrossEncoder
    from matchsig.report.explorer import build_view_data

    folder, _ = decoder_run
    ce = CrossEncoder.load(folder, device="cpu", max_length=256)
    data = build_view_data(ce, "what is a flea", "fleas are small insects that live on cats")
    assert data["parts"] == list(DECODER) and data["causal"] and not data["decoder"]
    names = [s["name"] for s in data["scores"]]
    labels = {"CLS": "PRE", "SEP1": "MID", "SEP2": "LAST"}
    assert names == ["none"] + [f"{labels.get(x, x)}<-{labels.get(y, y)}" for x, y in _causal_cells()]
    by = {s["name"]: s["score"] for s in data["scores"]}
    assert by["LAST<-D"] == pytest.approx(float(ce.score(["what is a flea"], ["fleas are small insects that live on cats"],
                                                         ablation="LAST<-D")[0]), abs=1e-6)


@pytest.mark.browser
def test_decoder_view_in_chromium(browser, decoder_run, tmp_path):
    from selenium.webdriver.common.by import By

    from matchsig.engine.model import CrossEncoder
    from matchsig.report.explorer import build_view_data, render_html, write_view

    folder, _ = decoder_run
    ce = CrossEncoder.load(folder, device="cpu", max_length=256)
    path = write_view(tmp_path / "decoder.html", render_html(build_view_data(ce, "what is a flea", "fleas bite cats")))
    _open(browser, path)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ablations td[data-ablation]")) == 20
    impossible = [td.get_attribute("title") for td in browser.find_elements(By.CSS_SELECTOR, "#ablations td")
                  if "impossible" in (td.get_attribute("title") or "")]
    assert len(impossible) == 10 and "LAST" in browser.find_element(By.ID, "ablations").text
    errors = [e for e in (browser.get_log("browser") if hasattr(browser, "get_log") else []) if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_monot5_table1_has_the_decoder_token_row(t5_run):
    _, out = t5_run
    table = pd.read_csv(out / "table1.csv")
    cells = [(t, s) for t, s in zip(table["target"], table["source"]) if t not in ("none", "random")]
    assert len(cells) == 36 and cells[25:30] == [("DEC", y) for y in SLOTS] and cells[-1] == ("DEC", "*")
    scores = pd.read_csv(out / "table1_scores.csv")
    assert scores.groupby("qid")["DEC<-*"].agg(np.ptp).max() <= 1e-6  # the decoder token reads nothing
    t = table.set_index("ablation")
    assert t.loc["DEC<-*", "ndcg@10"] == pytest.approx(t.loc["random", "ndcg@10"], abs=1e-12)
    md = (out / "table1.md").read_text()
    assert "| X \\ Y | PRE | Q | MID | D | POST | All |" in md and "| **DEC** |" in md and "impossible" not in md.split("\n\n")[1]
    assert set(pd.read_csv(out / "layers.csv")["direction"]) == {"Q<-Q", "Q<-D", "D<-Q", "D<-D"}
    from matchsig.analysis.runfolder import RunFolder
    from matchsig.experiments.table1.experiment import section

    page = section(RunFolder(out))
    assert "Model family t5" in page and "decoder token" in page
    assert re.findall(r'<tr><th>(\w+)</th><td class="cell', page) == ["PRE", "Q", "MID", "D", "POST", "DEC"]


def test_experiments_run_on_a_decoder_from_the_command_line(tmp_path, decoder_run):
    from typer.testing import CliRunner

    from matchsig.cli import app

    folder, _ = decoder_run
    res = CliRunner().invoke(app, ["ablate", "--model", str(folder), "--dataset", "demo", "--per-grade", "1",
                                   "--max-queries", "2", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "table1.md").read_text().count("impossible") >= 10
