"""`matchsig view`: the page's data against full attention maps, the CLI, and the page in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from matchsig import Ablation, CrossEncoder, MatchsigError
from matchsig.report.explorer import (
    TABLE1_ABLATIONS,
    build_view_data,
    choose_top_k,
    dequantise_links,
    link_bytes,
    load_run_pair,
    quantise_links,
    read_contrast_heads,
    render_html,
    write_view,
)
from matchsig.engine.parts import Part

QUERY = "what is a flea"
DOC = ("The cat flea (Ctenocephalides felis) is a small wingless insect that feeds on the blood of cats and dogs. "
       "Fleas can jump 30 cm; a flea lives two to three months.")
LONG_QUERY = "how do i get rid of fleas in my house for good"
LONG_DOC = " ".join(
    f"Paragraph {i}: the common cat flea is an insect of the order Siphonaptera; adult fleas feed on blood, "
    f"and larvae live in carpets and bedding, so vacuum floors and wash pet bedding every {i + 2} days."
    for i in range(40)
)


@pytest.fixture(scope="module")
def data(ce):
    return build_view_data(ce, QUERY, DOC, top_k=6)


@pytest.fixture(scope="module")
def reference_maps(minilm_folder, ce):
    """Full post-softmax maps (L, H, T, T) from Hugging Face's own eager attention: an independent path."""
    from transformers import BertForSequenceClassification

    hf = BertForSequenceClassification.from_pretrained(minilm_folder, attn_implementation="eager").eval()
    enc = ce.encode([QUERY], [DOC])
    inputs = {"input_ids": torch.tensor(enc.input_ids), "token_type_ids": torch.tensor(enc.token_type_ids),
              "attention_mask": torch.ones(1, len(enc.input_ids[0]), dtype=torch.long)}
    with torch.no_grad():
        out = hf(**inputs, output_attentions=True)
    return np.stack([a[0].double().numpy() for a in out.attentions])


def _decode(pack: dict, rows: int, n_layers: int, n_heads: int):
    k = pack["k"]
    dt = np.uint8 if pack["index_bytes"] == 1 else np.dtype("<u2")
    index = np.frombuffer(base64.b64decode(pack["index"]), dtype=dt).reshape(n_layers, n_heads, rows, k)
    codes = np.frombuffer(base64.b64decode(pack["weight"]), dtype=np.uint8).reshape(n_layers, n_heads, rows, k)
    scale = np.asarray(pack["scale"], dtype=np.float64).reshape(n_layers, n_heads)
    mass = np.frombuffer(base64.b64decode(pack["mass"]), dtype=np.uint8).reshape(n_layers, n_heads, rows) / 255.0
    return index.astype(np.int64), dequantise_links(codes, scale), scale, mass


# ---- data extraction ------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["Q<-D", "D<-Q"])
def test_top_links_equal_full_map_top_k(data, reference_maps, direction):
    nl, nh = data["layers"], data["heads"]
    qs, qe = data["q_span"]
    ds, de = data["d_span"]
    rows = (qe - qs) if direction == "Q<-D" else (de - ds)
    pack = data["qd"] if direction == "Q<-D" else data["dq"]
    index, weight, scale, mass = _decode(pack, rows, nl, nh)
    k = pack["k"]
    assert k == min(6, (de - ds) if direction == "Q<-D" else (qe - qs))
    for layer in range(nl):
        for head in range(nh):
            full = reference_maps[layer, head]
            blk = full[qs:qe, ds:de] if direction == "Q<-D" else full[ds:de, qs:qe]
            ref_idx = np.argsort(-blk, axis=-1, kind="stable")[:, :k]  # the k largest links of each row
            ref_w = np.take_along_axis(blk, ref_idx, -1)
            tol = scale[layer, head] / 255 * 0.5 + 1e-5
            got_i, got_w = index[layer, head], weight[layer, head]
            # the weights are the k largest of each row, in order, within the quantisation step
            np.testing.assert_allclose(got_w, ref_w, atol=tol, rtol=0)
            # each index points at a weight of that size in the full map (robust to ties)
            np.testing.assert_allclose(np.take_along_axis(blk, got_i, -1), ref_w, atol=2e-5, rtol=0)
            # where the k-th and (k+1)-th weights are apart, the index sets are exactly the full map's top-k
            if blk.shape[1] > k:
                srt = -np.sort(-blk, axis=-1)
                clear = srt[:, k - 1] - srt[:, k] > 1e-5
                for r in np.flatnonzero(clear):
                    assert set(got_i[r]) == set(ref_idx[r]), (direction, layer, head, r)
            np.testing.assert_allclose(mass[layer, head], blk.sum(-1), atol=0.5 / 255 + 1e-5)


def test_head_statistics_match_full_maps(data, reference_maps, ce):
    qs, qe = data["q_span"]
    ds, de = data["d_span"]
    enc = ce.encode([QUERY], [DOC])
    ids = np.asarray(enc.input_ids[0])
    same = ids[qs:qe, None] == ids[None, ds:de]
    qd = reference_maps[:, :, qs:qe, ds:de]
    dq = reference_maps[:, :, ds:de, qs:qe]
    np.testing.assert_allclose(data["stats"]["max_qd"], qd.max(-1).mean(-1), atol=2e-5)
    np.testing.assert_allclose(data["stats"]["max_dq"], dq.max(-1).mean(-1), atol=2e-5)
    want = (qd * same).sum((-1, -2)) / qd.sum((-1, -2))
    np.testing.assert_allclose(data["stats"]["exact_qd"], want, atol=2e-5)
    want = (dq * same.T).sum((-1, -2)) / dq.sum((-1, -2))
    np.testing.assert_allclose(data["stats"]["exact_dq"], want, atol=2e-5)


def test_tokens_parts_and_exact_matches(data, ce):
    assert data["tokens"][0] == "[CLS]" and data["part"][0] == Part.CLS
    qs, qe = data["q_span"]
    ds, de = data["d_span"]
    assert data["part"][qs:qe] == [int(Part.Q)] * (qe - qs)
    assert data["part"][ds:de] == [int(Part.D)] * (de - ds)
    assert [data["text"][i] for i in range(qs, qe)] == ["what", "is", "a", "flea"]
    # display text comes from the original string (case kept), the raw token from the tokenizer
    doc_text = [data["text"][i] for i in range(ds, de)]
    assert "Fleas" in "".join(doc_text) or "Flea" in doc_text
    T = len(data["tokens"])
    exact = {data["tokens"][i] for i in range(T) if data["exact"][i]}
    assert {"flea", "is", "a"} <= exact and "cat" not in exact and "[SEP]" not in exact
    assert T == qe - qs + de - ds + 3


def test_scores_are_the_31_table1_ablations(data, minilm_folder, tokenizer):
    """The page's scores against the float64 reference (tests/_reference.py), not the package's scorer."""
    from _reference import bert_score, cuts_for, torch_reference_ids
    from transformers import BertForSequenceClassification

    names = [s["name"] for s in data["scores"]]
    assert len(names) == 31 == len(set(names))
    assert set(names) == {Ablation.parse(a).name for a in TABLE1_ABLATIONS}
    got = {s["name"]: s["score"] for s in data["scores"]}
    model = BertForSequenceClassification.from_pretrained(minilm_folder).eval()
    ids, types = torch_reference_ids(tokenizer, QUERY, DOC)
    for spec in ("none", "D<-D", "CLS<-*", "SEP2<-Q", "Q<-D"):
        want = bert_score(model, ids, types, {} if spec == "none" else cuts_for(spec, None, None, 6, 12))
        assert got[Ablation.parse(spec).name] == pytest.approx(float(want), abs=1e-5), spec


def test_quantisation_and_budget():
    rng = np.random.default_rng(0)
    w = rng.random((2, 3, 5, 4)).astype(np.float32) * 0.3
    codes, scale = quantise_links(w)
    assert codes.dtype == np.uint8 and codes.max() == 255
    np.testing.assert_allclose(dequantise_links(codes, scale), w, atol=float(scale.max()) / 510 + 1e-7)
    # a large model at 512 tokens still fits the byte budget: D<-Q links shrink first
    kq, kd = choose_top_k(24, 16, 20, 489, 8, 1_400_000)
    assert link_bytes(24, 16, 20, 489, kq, kd) <= 1_400_000 and kq >= kd >= 2
    assert choose_top_k(6, 12, 10, 100, 8, 10**9) == (8, 8)
    assert choose_top_k(6, 12, 3, 100, 8, 10**9) == (8, 3)


def test_page_is_self_contained_and_escapes_text(ce, tmp_path):
    nasty = 'Fleas </script><script>window.pwned=1</script> & <!-- "quotes" \u2028 done \u2615'
    data = build_view_data(ce, "flea </script> \u2615", nasty, top_k=3, ablations=("none",))
    unknown = [i for i, t in enumerate(data["tokens"]) if t == "[UNK]"]
    assert len(unknown) == 2 and not any(data["exact"][i] for i in unknown)  # [UNK] = [UNK] is no term match
    page = render_html(data)
    assert page.count("</script>") == 2  # the data script and the code script, nothing from the text
    assert "__MATCHSIG_" not in page and "/*__MATCHSIG" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no external resources"
    assert "<link" not in page and "@import" not in page
    payload = re.search(r'<script type="application/json" id="matchsig-data">(.*?)</script>', page, re.S).group(1)
    parsed = json.loads(payload)
    assert "".join(parsed["text"]).replace(" ", "").startswith("[CLS]flea</script>\u2615[SEP]Fleas</script>")
    assert parsed["scores"][0]["name"] == "none"
    out = write_view(tmp_path / "sub" / "p.html", page)
    assert out.read_text(encoding="utf-8") == page


# ---- run folders and the CLI ----------------------------------------------------------------


def _fake_run(tmp_path: Path, model: str, heads: bool = True) -> Path:
    import pandas as pd

    run = tmp_path / "run"
    (run / "contrast").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": model, "datasets": ["demo"]}))
    pd.DataFrame({
        "qid": ["19335", "19335", "47923"], "docid": ["1017759", "8412684", "3"], "grade": [3, 0, 1],
        "query": [QUERY, QUERY, "welsh corgi"],
        "document": [DOC, 'A "flea market"\tsells old things.', "Corgis are herding dogs."],
        "pool": ["main", "main", "contrast"],
    }).to_csv(run / "pools.tsv", sep="\t", index=False)
    if heads:
        rows = []
        for layer in range(6):
            for head in range(12):
                for d in ("Q<-D", "D<-Q"):
                    kind = "syntactic" if (layer, head) == (1, 3) else "semantic" if (layer, head) == (5, 7) else "none"
                    rows.append({"layer": layer, "head": head, "direction": d, "delta_relevant": 0.01 * layer - 0.002 * head,
                                 "delta_hard": 0.001, "p_relevant": 0.5, "p_hard": 0.9, "kind": kind, "entropy_easy": 1.0})
        pd.DataFrame(rows).to_csv(run / "contrast" / "heads.csv", index=False)
    return run


def test_run_folder_pairs_and_heads(tmp_path, minilm_folder):
    run = _fake_run(tmp_path, str(minilm_folder))
    pair = load_run_pair(run, "19335", "8412684")
    assert pair.document == 'A "flea market"\tsells old things.' and pair.query == QUERY
    assert pair.model == str(minilm_folder) and pair.heads_csv == run / "contrast" / "heads.csv" and pair.note is None
    heads = read_contrast_heads(pair.heads_csv, 6, 12)
    assert len(heads) == 144 and {(h["layer"], h["head"]) for h in heads if h["kind"] == "syntactic"} == {(1, 3)}
    with pytest.raises(MatchsigError, match="does not exist in this model"):
        read_contrast_heads(pair.heads_csv, 6, 2)
    with pytest.raises(MatchsigError, match="query 19335 has no passage 999"):
        load_run_pair(run, "19335", "999")
    with pytest.raises(MatchsigError, match="no query 1"):
        load_run_pair(run, "1", "999")
    (run / "contrast" / "heads.csv").unlink()
    assert "no heads are highlighted" in load_run_pair(run, "47923", "3").note
    with pytest.raises(MatchsigError, match="does not exist"):
        load_run_pair(tmp_path / "nope", "1", "2")


def test_cli_view_run_dir_and_model(tmp_path, minilm_folder, ce, monkeypatch):
    from typer.testing import CliRunner

    from matchsig.cli import app

    loaded = []

    def fake_load(cls, name, **kwargs):  # the module's encoder, not a second copy: loading costs seconds
        loaded.append(str(name))
        return ce

    monkeypatch.setattr(CrossEncoder, "load", classmethod(fake_load))
    runner = CliRunner()
    run = _fake_run(tmp_path, str(minilm_folder))
    res = runner.invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--top-k", "4"])
    assert res.exit_code == 0, res.output
    page = (run / "view-19335-1017759.html").read_text(encoding="utf-8")
    payload = json.loads(re.search(r'id="matchsig-data">(.*?)</script>', page, re.S).group(1))
    assert payload["meta"]["qid"] == "19335" and payload["qd"]["k"] == 4 and len(payload["contrast"]) == 144
    assert len(payload["scores"]) == 31 and loaded == [str(minilm_folder)]  # the run's model

    out = tmp_path / "v.html"
    res = runner.invoke(app, ["view", "--model", str(minilm_folder), "--query", "cat flea", "--document", "Fleas bite cats.",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.stat().st_size > 10_000 and loaded[-1] == str(minilm_folder)
    res = runner.invoke(app, ["view", "--query", "cat flea", "--document", "Fleas bite cats.", "--out", str(out)])
    assert res.exit_code == 0 and loaded[-1] == "embedded"  # the default model
    payload = json.loads(re.search(r'id="matchsig-data">(.*?)</script>', out.read_text(encoding="utf-8"), re.S).group(1))
    assert payload["contrast"] == [] and any("no heads are highlighted" in n for n in payload["notes"])

    for args, msg in (
        (["view", str(run), "--qid", "19335"], "--qid and --docid"),
        (["view", "--query", "x"], "--query and --document"),
        (["view", "--query", "x", "--document", "y", "--qid", "1"], "need a RUN_DIR"),
        (["view", str(run), "--qid", "1", "--docid", "2", "--query", "x"], "not both"),
        (["view", "--query", "x", "--document", "y", "--heads", str(tmp_path / "none.csv")], "no such file"),
        (["view", "--query", "x", "--document", "y", "--patching", str(tmp_path / "none.csv")], "--patching"),
        (["view", "--query", "x", "--document", "y", "--top-k", "0"], "--top-k"),
    ):
        res = runner.invoke(app, args)
        assert isinstance(res.exception, MatchsigError) and msg in str(res.exception), (args, res.exception)


def _patching_csv(path: Path, site: str = "head") -> "pd.DataFrame":
    """A patching.csv of the MiniLM grid (6 x 12), with one head whose mean is missing (no pair moved)."""
    import pandas as pd

    rng = np.random.default_rng(3)
    rows = [{"diagnostic": "tfc1", "site": site, "layer": l, "head": h, "position": "all",
             "effect_mean": float(rng.normal(scale=0.2)), "effect_sd": 0.05, "n_pairs": 7}
            for l in range(6) for h in range(12)]
    rows[5]["effect_mean"], rows[5]["n_pairs"] = float("nan"), 0
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def test_cli_view_overlays_the_runs_patching_effects(tmp_path, minilm_folder, ce, monkeypatch):
    import pandas as pd
    from typer.testing import CliRunner

    from matchsig.cli import app

    monkeypatch.setattr(CrossEncoder, "load", classmethod(lambda cls, name, **kwargs: ce))
    run = _fake_run(tmp_path, str(minilm_folder))
    _patching_csv(run / "patching.csv")
    res = CliRunner().invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    page = (run / "view-19335-1017759.html").read_text(encoding="utf-8")
    payload = json.loads(re.search(r'id="matchsig-data">(.*?)</script>', page, re.S).group(1))
    # the overlay is the per-head mean of the CSV's rows, read back by pandas
    want = pd.read_csv(run / "patching.csv").groupby(["layer", "head"])["effect_mean"].mean()
    got = {(r["layer"], r["head"]): r["effect_mean"] for r in payload["patching"]}
    assert set(got) == set(want.index) and len(got) == 72 and got[(0, 5)] is None and np.isnan(want[(0, 5)])
    assert all(got[key] == pytest.approx(value, abs=1e-12) for key, value in want.items() if np.isfinite(value))
    assert {r["diagnostic"] for r in payload["patching"]} == {"tfc1"} and payload["meta"]["patching"].endswith("patching.csv")
    # a run folder whose patching.csv is of another site: a note, no overlay; the same file named explicitly: an error
    _patching_csv(run / "patching.csv", site="mlp")
    res = CliRunner().invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--top-k", "2"])
    payload = json.loads(re.search(r'id="matchsig-data">(.*?)</script>',
                                   (run / "view-19335-1017759.html").read_text(encoding="utf-8"), re.S).group(1))
    assert res.exit_code == 0 and payload["patching"] == [] and any("no patching overlay" in n for n in payload["notes"])
    res = CliRunner().invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--patching",
                                   str(run / "patching.csv")])
    assert isinstance(res.exception, MatchsigError) and "no head rows" in str(res.exception)


# ---- in a real browser ----------------------------------------------------------------------

CHROMIUM = os.environ.get("MATCHSIG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MATCHSIG_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            pytest.skip(f"{exe} not found: install Debian's chromium and chromium-driver (scripts/setup.sh --browser)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> float:
    started = time.perf_counter()
    driver.get(path.resolve().as_uri())
    deadline = time.time() + 20
    while driver.execute_script("return document.body && document.body.getAttribute('data-ready')") != "1":
        if time.time() > deadline:
            errors = driver.get_log("browser") if hasattr(driver, "get_log") else []
            raise AssertionError(f"page never became ready: {errors}")
        time.sleep(0.02)
    return time.perf_counter() - started


def _doc_shading(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#document .tk')).map(s => s.style.backgroundColor);")


@pytest.mark.browser
def test_page_in_chromium(browser, data, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    data = dict(data, contrast=[{"layer": 1, "head": 3, "direction": "Q<-D", "delta_relevant": 0.02, "delta_hard": 0.01,
                                 "p_relevant": 0.01, "p_hard": 0.03, "kind": "syntactic"}])
    path = write_view(tmp_path / "pair.html", render_html(data))
    _open(browser, path)
    # tokens shown, coloured by part, exact matches marked
    q_tokens = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#query .tk.p1")]
    assert q_tokens == ["what", "is", "a", "flea"]
    doc = browser.find_element(By.ID, "document").text
    assert "Ctenocephalides" in doc and "wingless insect" in doc
    assert browser.find_elements(By.CSS_SELECTOR, "#document .tk.em") and browser.find_elements(By.CSS_SELECTOR, "#query .tk.em")
    cells = browser.find_elements(By.CSS_SELECTOR, "#grid .cell")
    assert len(cells) == data["layers"] * data["heads"]
    assert browser.find_elements(By.CSS_SELECTOR, "#grid .cell.syn")  # the contrast head is highlighted
    # the first highlighted head is selected at start
    assert browser.find_element(By.ID, "head-label").text == "Layer 1 · Head 3"
    table = browser.find_elements(By.CSS_SELECTOR, "#ablations td[data-ablation]")
    assert len(table) == 30

    # click another head: label, selection and shading change
    before = _doc_shading(browser)
    browser.find_element(By.CSS_SELECTOR, '#grid .cell[data-layer="4"][data-head="7"]').click()
    assert browser.find_element(By.ID, "head-label").text == "Layer 4 · Head 7"
    assert browser.find_element(By.CSS_SELECTOR, "#grid .cell.sel").get_attribute("data-head") == "7"
    after = _doc_shading(browser)
    assert after != before

    # keyboard: right = next head, down = next layer, x = direction
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    assert browser.find_element(By.ID, "head-label").text == "Layer 4 · Head 8"
    body.send_keys(Keys.ARROW_DOWN)
    assert browser.find_element(By.ID, "head-label").text == "Layer 5 · Head 8"
    body.send_keys(Keys.ARROW_UP, Keys.ARROW_UP, Keys.ARROW_LEFT)
    assert browser.find_element(By.ID, "head-label").text == "Layer 3 · Head 7"
    assert _doc_shading(browser) != after
    body.send_keys("x")
    assert "on" in browser.find_element(By.ID, "dir-dq").get_attribute("class")
    body.send_keys("x")

    # hover a query token: the tooltip lists its top links, the document is shaded by them
    flea = browser.find_elements(By.CSS_SELECTOR, "#query .tk.p1")[3]
    ActionChains(browser).move_to_element(flea).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and "flea" in tip.text and "top links" in tip.text
    top = browser.execute_script("return window.matchsig.links('qd', 3, 7, arguments[0]);", 3)
    assert top and len(top) <= data["qd"]["k"]
    shaded = _doc_shading(browser)
    assert sum(1 for s in shaded if s) <= len(top)  # only its links are shaded
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "head-label")).perform()
    assert not browser.find_element(By.ID, "tip").is_displayed()
    # click pins the token (its links stay shown off hover); Escape unpins
    flea.click()
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "head-label")).perform()
    assert browser.execute_script("return window.matchsig.state().pin") == data["q_span"][0] + 3
    assert "pinned" in browser.find_element(By.ID, "explain").text and _doc_shading(browser) == shaded
    body.send_keys(Keys.ESCAPE)
    assert browser.execute_script("return window.matchsig.state().pin") == -1
    # the heatmap is drawn for the head
    assert browser.execute_script("var c = document.getElementById('heat'); return c.width > 100 && c.height > 50;")

    shot = tmp_path / "explorer.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    errors = [e for e in (browser.get_log("browser") if hasattr(browser, "get_log") else []) if e.get("level") == "SEVERE"]
    assert not errors, errors


@pytest.mark.browser
def test_512_token_pair_is_small_and_fast(browser, ce, tmp_path):
    started = time.perf_counter()
    data = build_view_data(ce, LONG_QUERY, LONG_DOC, ablations=("none", "D<-D"))
    build_s = time.perf_counter() - started
    assert len(data["tokens"]) == 512 and any("truncated" in n for n in data["notes"])
    path = write_view(tmp_path / "long.html", render_html(data))
    size = path.stat().st_size
    assert size < 2_000_000, size
    load_s = _open(browser, path)
    render_ms = float(browser.execute_script("return window.matchsig.renderMs"))
    n_doc = browser.execute_script("return document.querySelectorAll('#document .tk').length")
    assert n_doc == data["d_span"][1] - data["d_span"][0] + 1  # document tokens + final [SEP]
    # switching heads stays interactive: time 20 head changes inside the page
    per_switch = browser.execute_script(
        "var t = performance.now(); for (var i = 0; i < 20; i++) window.matchsig.select(i % 6, (i * 5) % 12);"
        "document.body.offsetHeight; return (performance.now() - t) / 20;")
    browser.save_screenshot(str(tmp_path / "explorer-512.png"))
    print(f"512 tokens: build {build_s:.1f}s, {size / 1024:.0f} KiB, load {load_s:.2f}s, "
          f"first render {render_ms:.0f} ms, head switch {per_switch:.1f} ms")
    assert render_ms < 3000 and per_switch < 250, (render_ms, per_switch)
    assert load_s < 10



@pytest.mark.browser
def test_cli_view_embedded_model_in_chromium(browser, tmp_path):
    """The way the issue is checked: `matchsig view --model embedded ...`, opened in headless Chromium."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from typer.testing import CliRunner

    from matchsig.engine import embedded
    from matchsig.cli import app

    if not (embedded.EMBEDDED_DIR / embedded.MANIFEST_FILE).is_file():
        pytest.skip("the embedded model is not installed in this checkout")
    out = tmp_path / "embedded.html"
    res = CliRunner().invoke(app, ["view", "--model", "embedded", "--query", "how long do cat fleas live",
                                   "--document", "The adult cat flea lives two to three months; pupae wait in carpets.",
                                   "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    _open(browser, out)
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#query .tk.p1")][:3] == ["how", "long", "do"]
    label = browser.find_element(By.ID, "head-label").text
    last = browser.execute_script("return window.matchsig.state().layer === window.matchsig.data.layers - 1")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_UP if last else Keys.ARROW_DOWN)
    assert browser.find_element(By.ID, "head-label").text != label
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ablations td[data-ablation]")) == 30
    browser.save_screenshot(str(tmp_path / "embedded.png"))


@pytest.mark.browser
def test_patching_overlay_in_chromium(browser, data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from matchsig.analysis.head_overlap import patching_overlay

    overlay = patching_overlay(_patching_csv(tmp_path / "patching.csv"), 6, 12)
    path = write_view(tmp_path / "patch.html", render_html(dict(data, patching=overlay)))
    _open(browser, path)
    finite = [r for r in overlay if r["effect_mean"] is not None]
    ranked = sorted(finite, key=lambda r: (-abs(r["effect_mean"]), r["layer"], r["head"]))[:5]
    marked = browser.find_elements(By.CSS_SELECTOR, "#grid .cell.pt")
    assert sorted((int(c.get_attribute("data-layer")), int(c.get_attribute("data-head"))) for c in marked) == \
        sorted((r["layer"], r["head"]) for r in ranked)
    links = browser.find_elements(By.CSS_SELECTOR, "#grid-legend a.patch-head")
    assert [a.text.split(" ")[0] for a in links] == [f"{r['layer']}/{r['head']}" for r in ranked]  # sorted by |effect|
    links[1].click()
    assert browser.find_element(By.ID, "head-label").text == f"Layer {ranked[1]['layer']} · Head {ranked[1]['head']}"
    assert f"{ranked[1]['effect_mean']:.3f}" in browser.find_element(By.ID, "head-info").text
    assert "rank 2 of 71 by |effect|" in browser.find_element(By.ID, "head-info").text
    Select(browser.find_element(By.ID, "metric")).select_by_value("patching")
    top = browser.find_element(By.CSS_SELECTOR, f'#grid .cell[data-layer="{ranked[0]["layer"]}"][data-head="{ranked[0]["head"]}"]')
    missing = browser.find_element(By.CSS_SELECTOR, '#grid .cell[data-layer="0"][data-head="5"]')
    full = "rgba(220, 38, 38, 1)" if ranked[0]["effect_mean"] > 0 else "rgba(37, 99, 235, 1)"  # largest |effect|: full colour
    assert top.value_of_css_property("background-color") == full and "patching effect" in top.get_attribute("title")
    assert missing.value_of_css_property("background-color") == "rgba(243, 244, 246, 1)"  # no mean: grey


# ---- the circuit drawn in the page (matchsig circuit's circuit.json) --------------------------


def _circuit_json(path: Path, layers: int = 6, heads: int = 12, n_edges: int = 150, seed: int = 5) -> dict:
    """A circuit.json as `matchsig circuit` writes it: random edges between existing nodes of the model."""
    rng = np.random.default_rng(seed)
    senders = ["input"] + [f"a{l}.h{h}" for l in range(layers) for h in range(heads)] + [f"m{l}" for l in range(layers)]
    edges, seen = [], set()
    while len(edges) < n_edges:
        s = senders[rng.integers(len(senders))]
        layer = 0 if s == "input" else int(s[1:].split(".")[0])
        target_layer = int(rng.integers(layer + (0 if s.startswith("m") or s == "input" else 0), layers + 1))
        if s.startswith("a") and target_layer == layer:
            r = f"m{layer}"
        elif target_layer >= layers or (s.startswith("m") and target_layer == layer):
            r = "score"
        else:
            r = f"a{target_layer}.h{rng.integers(heads)}.{'qkv'[rng.integers(3)]}" if rng.random() < 0.8 else f"m{target_layer}"
        if (s, r) in seen:
            continue
        seen.add((s, r))
        edges.append({"sender": s, "receiver": r, "score": float(rng.normal(scale=0.05)), "on_path": bool(rng.random() < 0.9)})
    edges[7]["score"] = -edges[3]["score"]  # a tie in |score|: kept in file order
    nodes = sorted({n.rsplit(".", 1)[0] if n.count(".") == 2 else n for e in edges for n in (e["sender"], e["receiver"])}
                   - {"input", "score"})
    circuit = {"diagnostic": "tfc1", "method": "eap", "steps": 8, "ablation": "mean", "layers": layers, "heads": heads,
               "target": 0.8, "size": len(edges), "reached": True, "faithfulness": 0.83, "ci": [0.7, 0.95],
               "nodes": nodes, "connected_size": len(edges), "edges": edges}
    path.write_text(json.dumps(circuit))
    return circuit


def test_read_circuit_keeps_the_largest_edges_and_refuses_another_model(tmp_path):
    import pandas as pd

    from matchsig.report.view_circuit import read_circuit

    circuit = _circuit_json(tmp_path / "circuit.json")
    got = read_circuit(tmp_path / "circuit.json", 6, 12, max_edges=40)
    frame = pd.DataFrame(circuit["edges"])
    frame["abs"] = frame["score"].abs()
    want = frame.sort_values("abs", ascending=False, kind="stable").head(40)  # pandas' stable sort: ties in file order
    assert [e[:3] for e in got["edges"]] == [[r.sender, r.receiver, r.score] for r in want.itertuples()]
    assert [e[3] for e in got["edges"]] == [int(r.on_path) for r in want.itertuples()]
    assert got["size"] == 150 and got["nodes"] == circuit["nodes"] and got["ci"] == [0.7, 0.95] and got["faithfulness"] == 0.83
    assert len(read_circuit(tmp_path / "circuit.json", 6, 12)["edges"]) == 150
    with pytest.raises(MatchsigError, match="6 layers x 12 heads, not 12 x 12"):
        read_circuit(tmp_path / "circuit.json", 12, 12)
    for bad, msg in ((dict(sender="a6.h0", receiver="score"), "not an edge of this model"),
                     (dict(sender="a0.h0", receiver="a1.h2"), "not an edge of this model"),  # a head receives by q, k or v
                     (dict(sender="score", receiver="m1"), "not an edge of this model"),
                     (dict(sender="a0.h0", receiver="m1", score="x"), "numeric score")):
        broken = dict(circuit, edges=circuit["edges"] + [dict(dict(score=0.1), **bad)])
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(MatchsigError, match=msg):
            read_circuit(tmp_path / "bad.json", 6, 12)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MatchsigError, match="is not JSON"):
        read_circuit(tmp_path / "bad.json", 6, 12)


def test_cli_view_draws_the_runs_circuit(tmp_path, minilm_folder, ce, monkeypatch):
    from typer.testing import CliRunner

    from matchsig.cli import app

    monkeypatch.setattr(CrossEncoder, "load", classmethod(lambda cls, name, **kwargs: ce))
    run = _fake_run(tmp_path, str(minilm_folder))
    circuit = _circuit_json(run / "circuit.json")
    res = CliRunner().invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    payload = json.loads(re.search(r'id="matchsig-data">(.*?)</script>',
                                   (run / "view-19335-1017759.html").read_text(encoding="utf-8"), re.S).group(1))
    assert payload["circuit"]["size"] == len(circuit["edges"]) and payload["meta"]["circuit"].endswith("circuit.json")
    assert {tuple(e[:2]) for e in payload["circuit"]["edges"]} == {(e["sender"], e["receiver"]) for e in circuit["edges"]}
    _circuit_json(tmp_path / "other.json", layers=4)
    res = CliRunner().invoke(app, ["view", str(run), "--qid", "19335", "--docid", "1017759", "--circuit", str(tmp_path / "other.json")])
    assert isinstance(res.exception, MatchsigError) and "another model" in str(res.exception)
    res = CliRunner().invoke(app, ["view", "--query", "x", "--document", "y", "--circuit", str(tmp_path / "none.json")])
    assert isinstance(res.exception, MatchsigError) and "--circuit" in str(res.exception)


@pytest.mark.browser
def test_circuit_in_chromium(browser, data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from matchsig.report.view_circuit import read_circuit

    circuit = _circuit_json(tmp_path / "circuit.json")
    path = write_view(tmp_path / "circuit.html", render_html(dict(data, circuit=read_circuit(tmp_path / "circuit.json", 6, 12))))
    _open(browser, path)
    assert browser.find_element(By.ID, "circuit-panel").is_displayed()
    ranked = sorted(circuit["edges"], key=lambda e: -abs(e["score"]))  # sorted() is stable: ties in file order
    drawn = browser.execute_script("return window.matchsig.circuitEdges();")
    assert len(drawn) == 60 and [d[:2] for d in drawn] == [[e["sender"], e["receiver"]] for e in ranked[:60]]
    assert all(d[2] == pytest.approx(e["score"], abs=1e-12) for d, e in zip(drawn, ranked))
    # the slider redraws that many edges; colours follow the sign, widths |score|
    browser.execute_script("var r = document.getElementById('circuit-n'); r.value = 12; r.dispatchEvent(new Event('input'));")
    lines = browser.find_elements(By.CSS_SELECTOR, "#circuit-edges line")
    assert len(lines) == 12 and "12 of 150" in browser.find_element(By.ID, "circuit-n-label").text
    for line, e in zip(lines, ranked):
        assert line.get_attribute("stroke") == ("#2563eb" if e["score"] >= 0 else "#dc2626")
    widths = [float(x.get_attribute("stroke-width")) for x in lines]
    assert widths[0] == pytest.approx(3.4, abs=0.01) and widths == sorted(widths, reverse=True)
    # every node of the model is drawn; the circuit's heads are black and marked in the grid
    assert len(browser.find_elements(By.CSS_SELECTOR, "#circuit-wrap [data-node]")) == 2 + 6 * 12 + 6
    heads_in = {n for n in circuit["nodes"] if n.startswith("a")}
    marked = browser.find_elements(By.CSS_SELECTOR, "#grid .cell.cn")
    assert {f"a{c.get_attribute('data-layer')}.h{c.get_attribute('data-head')}" for c in marked} == heads_in
    black = browser.find_elements(By.CSS_SELECTOR, '#circuit-wrap [data-node][fill="#111827"]')
    assert {b.get_attribute("data-node") for b in black} == set(circuit["nodes"])
    # a click on a head node selects it in the whole page
    name = sorted(heads_in)[0]
    layer, head = int(name[1:].split(".")[0]), int(name.split(".h")[1])
    browser.find_element(By.CSS_SELECTOR, f'#circuit-wrap circle[data-node="{name}"]').click()
    assert browser.find_element(By.ID, "head-label").text == f"Layer {layer} · Head {head}"
    assert "circuit" in browser.find_element(By.ID, "head-info").text
    assert browser.find_element(By.CSS_SELECTOR, "#circuit-wrap .nd.sel").get_attribute("data-node") == name
    Select(browser.find_element(By.ID, "metric")).select_by_value("circuit")
    browser.save_screenshot(str(tmp_path / "circuit.png"))
    errors = [e for e in (browser.get_log("browser") if hasattr(browser, "get_log") else []) if e.get("level") == "SEVERE"]
    assert not errors, errors
