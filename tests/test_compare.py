"""``matchsig compare`` / ``matchsig.compare``: runs of tiny random models of different depths on the demo pool.

Every number the comparison shows is re-derived here from the runs' own files with pandas, numpy, scipy and
statsmodels (never by calling matchsig's statistics).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, make_tiny_model, needs_shared

import matchsig
from matchsig import MatchsigError
from matchsig.experiments import RunConfig, Runner

SETTINGS = dict(datasets=["demo"], per_grade=2, max_queries=5, contrast_per_grade=2, contrast_easy=2, chunk_size=40,
                batch_size=8, rankings=20)
HOSTILE = 'x<script>alert("pwn")</script><img src=y onerror=alert(2)> $a$ & _b'
NOT_CELLS = ("qid", "none", "random")
torch_equal = torch.equal


def _run(out: Path, model: str, experiments: list[str], **extra) -> Path:
    Runner(out, RunConfig(model=model, experiments=experiments, **{**SETTINGS, **extra}), progress=False).run()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Two tiny BERTs (2 and 4 layers) on the same pool, the 2-layer one again, and on another pool (seed 1)."""
    root = tmp_path_factory.mktemp("compare")
    models = {}
    for layers in (2, 4):
        models[layers] = root / f"tiny{layers}"
        models[layers].mkdir()
        # seed 0: both depths beat a random ranking on this pool (nDCG@10 0.83 and 0.82 vs 0.79), so every
        # fraction of the gap is defined
        make_tiny_model(models[layers], tokenizer, seed=0, layers=layers)
    full = ["table1", "layers", "contrast"]
    four = _run(root / "four", str(models[4]), [*full, "patch"], pairs=3, min_delta=0.0, overlap_permutations=200)
    return {"two": _run(root / "two", str(models[2]), full), "four": four,
            "two_again": _run(root / "two_again", str(models[2]), ["table1", "layers"]),
            "other_pool": _run(root / "other_pool", str(models[2]), ["table1"], seed=1)}


def _per_query(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "table1_per_query.csv", dtype={"qid": str}).set_index("qid")


def _fractions(run: Path) -> dict[str, float]:
    pq = _per_query(run)
    original, random = pq["none"].to_numpy().mean(), pq["random"].to_numpy().mean()
    gap = original - random if original > random else np.nan  # no better than random: undefined
    return {c: (original - pq[c].to_numpy().mean()) / gap for c in pq.columns if c not in NOT_CELLS}


def _expected_p(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    d = a - b
    if np.all(d == d[0]):  # scipy's NaN for zero variance: no difference = 1, a constant shift = 0
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def _expected_tests(a: Path, b: Path) -> pd.DataFrame:
    from statsmodels.stats.multitest import multipletests

    pa, pb = _per_query(a), _per_query(b).loc[_per_query(a).index]
    rows = []
    for c in [c for c in pa.columns if c not in NOT_CELLS]:
        da, db = (pa[c] - pa["none"]).to_numpy(), (pb[c] - pb["none"]).to_numpy()
        rows.append({"ablation": c, "mean_diff": (da - db).mean(), "p_value": _expected_p(da, db)})
    frame = pd.DataFrame(rows)
    frame["p_corrected"] = multipletests(frame["p_value"], method="holm")[1]
    return frame.set_index("ablation")


def test_the_same_model_on_the_same_pool_compares_as_identical(runs, tmp_path):
    result = matchsig.compare([runs["two"], runs["two_again"]], out=tmp_path / "c", names=["first", "second"])
    assert len(result.paired) == 30 and not result.skipped
    assert (result.paired["p_value"] == 1.0).all() and (result.paired["p_corrected"] == 1.0).all()
    assert not result.paired["significant"].any() and (result.paired["mean_diff"] == 0).all()
    t1 = result.table1.pivot(index="ablation", columns="run", values="removed")
    assert not t1.isna().any().any() and np.array_equal(t1["first"].to_numpy(), t1["second"].to_numpy())
    expected = _fractions(runs["two"])
    assert np.allclose(t1.loc[list(expected), "first"], list(expected.values()), rtol=1e-12, atol=1e-12)
    page = (tmp_path / "c" / "compare.html").read_text()
    assert "0 of 30 cells differ significantly" in page


def test_one_altered_cell_is_exactly_the_cell_that_differs(runs, tmp_path):
    altered = tmp_path / "altered"
    shutil.copytree(runs["two"], altered)
    pq = pd.read_csv(altered / "table1_per_query.csv", dtype={"qid": str})
    rng = np.random.default_rng(0)
    pq["D<-D"] = pq["D<-D"] - 0.3 + rng.normal(0, 0.01, len(pq))
    pq.to_csv(altered / "table1_per_query.csv", index=False)
    result = matchsig.compare([runs["two"], altered], names=["original", "altered"])
    assert result.paired.loc[result.paired["significant"], "ablation"].tolist() == ["D<-D"]
    t1 = result.table1.pivot(index="ablation", columns="run", values="removed")
    differs = t1.index[~np.isclose(t1["original"], t1["altered"], rtol=0, atol=1e-12)].tolist()
    assert differs == ["D<-D"]
    expected = _expected_tests(runs["two"], altered)
    got = result.paired.set_index("ablation")
    assert np.allclose(got["p_value"], expected.loc[got.index, "p_value"], rtol=1e-9, atol=1e-15)
    assert np.allclose(got["p_corrected"], expected.loc[got.index, "p_corrected"], rtol=1e-9, atol=1e-15)


def test_two_models_on_one_pool_fractions_and_tests_by_value(runs, tmp_path):
    out = tmp_path / "c"
    result = matchsig.compare([runs["two"], runs["four"]], out=out, names=["L2", "L4"])
    written = pd.read_csv(out / "table1.csv")
    for name, run in (("L2", runs["two"]), ("L4", runs["four"])):
        expected = _fractions(run)
        mine = written[written["run"] == name].set_index("ablation")["removed"]
        assert set(mine.index) == set(expected) and len(expected) == 30
        assert np.allclose([mine[c] for c in expected], list(expected.values()), rtol=1e-9, atol=1e-12)
    expected = _expected_tests(runs["two"], runs["four"])
    paired = pd.read_csv(out / "paired.csv").set_index("ablation")
    assert set(paired.index) == set(expected.index)
    for column in ("mean_diff", "p_value", "p_corrected"):
        assert np.allclose(paired[column], expected.loc[paired.index, column], rtol=1e-9, atol=1e-12), column
    assert list(paired["significant"]) == list(paired["p_corrected"] <= 0.05)
    from scipy import stats

    a, b = _fractions(runs["two"]), _fractions(runs["four"])
    x, y = np.array(list(a.values())), np.array([b[c] for c in a])
    agree = pd.read_csv(out / "agreement.csv").iloc[0]
    assert agree["cells"] == 30 and agree["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    assert agree["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    assert agree["mad"] == pytest.approx(np.abs(x - y).mean(), abs=1e-9)
    payload = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in payload["runs"]] == ["L2", "L4"] and payload["unpaired"] == []
    assert payload["runs"][0]["layers"] == 2 and payload["runs"][1]["layers"] == 4
    for card, run in zip(payload["runs"], (runs["two"], runs["four"])):
        pq = _per_query(run)
        assert card["unablated"] == pytest.approx(pq["none"].mean()) and card["random"] == pytest.approx(pq["random"].mean())
        summary = json.loads((run / "summary.json").read_text())
        assert card["queries"] == summary["pools"]["main"]["queries"] == len(pq)
    assert payload["runs"][0]["fingerprint"] == payload["runs"][1]["fingerprint"]


def test_models_of_different_depths_align_on_the_normalised_axis(runs):
    result = matchsig.compare([runs["two"], runs["four"]], names=["L2", "L4"])
    curves = result.curves.set_index(["run", "direction", "layer"])
    for name, run, depth in (("L2", runs["two"], 2), ("L4", runs["four"], 4)):
        layers = pd.read_csv(run / "layers.csv")
        pq = _per_query(run)
        original, random = pq["none"].mean(), pq["random"].mean()
        for _, row in layers.iterrows():
            mine = curves.loc[(name, row["direction"], row["layer"])]
            assert mine["depth"] == pytest.approx((row["layer"] + 1) / depth, abs=1e-15)
            assert mine["removed"] == pytest.approx((original - row["ndcg@10"]) / (original - random), rel=1e-9)
        # all layers cut (depth 1) is Table 1's ablation of the same direction, in both models
        last = layers[(layers["direction"] == "D<-D") & (layers["layer"] == depth - 1)]["ndcg@10"].iloc[0]
        assert last == pytest.approx(pq["D<-D"].mean(), abs=1e-9)
    aligned = result.aligned.set_index(["run", "direction", "depth"])
    assert sorted(set(result.aligned["depth"])) == [0.0, 0.25, 0.5, 0.75, 1.0]
    two, four = curves.xs("L2"), curves.xs("L4")
    for direction in set(result.curves["direction"]):
        # depth 0.5 = layer 0 of 2 = layers 0..1 of 4; the 2-layer run at 0.25 is halfway from (0, 0) to its 0.5 point
        assert aligned.loc[("L2", direction, 0.5), "removed"] == pytest.approx(two.loc[(direction, 0), "removed"])
        assert aligned.loc[("L4", direction, 0.5), "removed"] == pytest.approx(four.loc[(direction, 1), "removed"])
        assert aligned.loc[("L2", direction, 0.25), "removed"] == pytest.approx(two.loc[(direction, 0), "removed"] / 2)
        assert not aligned.loc[("L2", direction, 0.25), "measured"] and aligned.loc[("L4", direction, 0.25), "measured"]
        assert aligned.loc[("L2", direction, 1.0), "removed"] == pytest.approx(two.loc[(direction, 1), "removed"])
        assert aligned.loc[("L4", direction, 1.0), "removed"] == pytest.approx(four.loc[(direction, 3), "removed"])


def test_matching_heads_and_contrast_bins_by_value(runs):
    from scipy import stats

    result = matchsig.compare([runs["two"], runs["four"]], names=["L2", "L4"], bins=2)
    for name, run, depth in (("L2", runs["two"], 2), ("L4", runs["four"], 4)):
        heads = pd.read_csv(run / "contrast" / "heads.csv")
        pq = pd.read_csv(run / "contrast" / "per_query.csv", dtype={"qid": str})
        d_z = {}
        for (layer, head, direction), part in pq.groupby(["layer", "head", "direction"]):
            m = part.pivot_table(index="qid", columns="level", values="max").dropna(subset=[3, -1])
            d = (m[3] - m[-1]).to_numpy()
            d_z[(layer, head, direction)] = d.mean() / d.std(ddof=1)
            row = heads[(heads["layer"] == layer) & (heads["head"] == head) & (heads["direction"] == direction)]
            assert row["t_relevant"].iloc[0] == pytest.approx(stats.ttest_1samp(d, 0).statistic, rel=1e-6)
        got = result.bins[result.bins["run"] == name].set_index(["bin", "direction"])
        for b in range(2):
            for direction in ("Q<-D", "D<-Q"):
                layers = [l for l in range(depth) if min(int((l + 0.5) / depth * 2), 1) == b]
                values = [d_z[(l, h, direction)] for l in layers for h in range(4)]
                assert got.loc[(b, direction), "d_z"] == pytest.approx(np.mean(values), rel=1e-5)
                assert got.loc[(b, direction), "abs_d_z"] == pytest.approx(np.mean(np.abs(values)), rel=1e-5)
                rows = heads[heads["layer"].isin(layers) & (heads["direction"] == direction)]
                assert got.loc[(b, direction), "heads"] == len(rows) == 4 * len(layers)
                assert got.loc[(b, direction), "delta_relevant"] == pytest.approx(rows["delta_relevant"].mean())
                assert got.loc[(b, direction), "matching"] == pytest.approx((rows["kind"] != "none").mean())
        mine = result.heads[result.heads["run"] == name].set_index(["layer", "direction"])
        for layer in range(depth):
            for direction in ("Q<-D", "D<-Q"):
                here = heads[(heads["layer"] == layer) & (heads["direction"] == direction)]
                for kind in ("syntactic", "semantic", "unclassified"):
                    assert mine.loc[(layer, direction), kind] == (here["kind"] == kind).sum() / 4
                assert mine.loc[(layer, direction), "matching"] == (here["kind"] != "none").sum() / 4
        kinds = result.heads[(result.heads["run"] == name) & (result.heads["direction"] == "either")].set_index("layer")
        for layer in range(depth):
            here = heads[heads["layer"] == layer]
            assert kinds.loc[layer, "depth"] == pytest.approx((layer + 0.5) / depth)
            assert kinds.loc[layer, "matching"] == here.loc[here["kind"] != "none", "head"].nunique() / 4
            assert kinds.loc[layer, "syntactic"] == here.loc[here["kind"] == "syntactic", "head"].nunique() / 4


def test_patching_summaries_of_the_runs_that_have_them(runs, tmp_path):
    out = tmp_path / "c"
    result = matchsig.compare([runs["two"], runs["four"]], out=out, names=["L2", "L4"])
    patching = pd.read_csv(runs["four"] / "patching.csv")
    top = patching.loc[patching["effect_mean"].abs().sort_values(ascending=False).index[:5]]
    mine = pd.read_csv(out / "patching_top.csv")
    assert set(mine["run"]) == {"L4"} and len(mine) == 5  # the 2-layer run has no patching
    assert mine[["layer", "head"]].values.tolist() == top[["layer", "head"]].values.tolist()
    assert np.allclose(mine["effect_mean"], top["effect_mean"]) and np.allclose(mine["depth"], (top["layer"] + 0.5) / 4)
    overlap = pd.read_csv(runs["four"] / "patching_overlap.csv")
    assert np.allclose(result.overlap["p_hypergeom"], overlap["p_hypergeom"]) and set(result.overlap["run"]) == {"L4"}
    page = (out / "compare.html").read_text()
    assert '<section id="patching">' in page and 'href="#patching"' in page


def test_different_pools_get_no_paired_test_and_the_page_says_why(runs, tmp_path):
    out = tmp_path / "c"
    result = matchsig.compare([runs["two"], runs["other_pool"]], out=out, names=["seed0", "seed1"])
    assert result.paired.empty and len(result.skipped) == 1
    assert "different pools" in result.skipped[0]["reason"]
    page = (out / "compare.html").read_text()
    assert "The runs scored different pools" in page and "No paired test of <b>seed0</b> vs <b>seed1</b>" in page
    assert "no paired test was computed" in page
    assert pd.read_csv(out / "paired.csv").empty
    assert json.loads((out / "compare.json").read_text())["unpaired"][0]["run_b"] == "seed1"
    # runs that record no fingerprint (older summaries) are not paired either, even on what may be one pool
    bare = []
    for key in ("two", "two_again"):
        bare.append(shutil.copytree(runs[key], tmp_path / f"bare_{key}"))
        summary = json.loads((bare[-1] / "summary.json").read_text())
        del summary["pools"]["main"]["fingerprint"]
        (bare[-1] / "summary.json").write_text(json.dumps(summary))
    result = matchsig.compare(bare, out=tmp_path / "bare", names=["a", "b"])
    assert result.paired.empty and "no pool fingerprint" in result.skipped[0]["reason"]
    assert "No run records a pool fingerprint" in (tmp_path / "bare" / "compare.html").read_text()


def test_findings_matrix_reads_findings_json_and_judges_the_others(runs, tmp_path):
    from matchsig.report import judge

    stored = tmp_path / "stored"
    shutil.copytree(runs["two"], stored)
    judge(stored)
    payload = json.loads((stored / "findings.json").read_text())
    payload["findings"][0]["power"] = 0.4242  # a field another branch may add: shown when present
    (stored / "findings.json").write_text(json.dumps(payload))
    out = tmp_path / "c"
    result = matchsig.compare([stored, runs["four"]], out=out, names=["stored", "judged"])
    assert not (runs["four"] / "findings.json").exists()  # judging for the page writes nothing into a run
    matrix = result.findings.set_index(["key", "run"])
    for f in payload["findings"]:
        assert matrix.loc[(f["key"], "stored"), "verdict"] == f["verdict"]
    fresh = {f.key: f.verdict for f in judge(runs["four"], write=False)}
    assert {k: matrix.loc[(k, "judged"), "verdict"] for k in fresh} == fresh
    assert result.sources == {"stored": "findings.json", "judged": "judged now (no findings.json)"}
    assert "power 0.42" in (out / "compare.html").read_text()


def test_bad_input_is_one_line(runs, tmp_path):
    from typer.testing import CliRunner

    from matchsig.cli import app

    with pytest.raises(MatchsigError, match="at least two"):
        matchsig.compare([runs["two"]])
    with pytest.raises(MatchsigError, match="not a matchsig run folder"):
        matchsig.compare([runs["two"], tmp_path])
    with pytest.raises(MatchsigError, match="2 names for 3"):
        matchsig.compare([runs["two"], runs["four"], runs["two_again"]], names=["a", "b"])
    with pytest.raises(MatchsigError, match="given twice"):
        matchsig.compare([runs["two"], runs["four"]], names=["a", "a"])
    with pytest.raises(MatchsigError, match="unknown correction"):
        matchsig.compare([runs["two"], runs["four"]], correction="fdr")
    res = CliRunner().invoke(app, ["compare", str(runs["two"]), str(runs["four"]), "--out", str(tmp_path / "c"),
                                   "--names", "a,b"])
    assert res.exit_code == 0 and "1 pair(s) on a shared pool tested, 0 not" in res.output
    assert (tmp_path / "c" / "compare.html").is_file()
    res = CliRunner().invoke(app, ["compare", str(runs["two"]), "--out", str(tmp_path / "d")])
    assert isinstance(res.exception, MatchsigError)


def test_a_malformed_file_is_left_out_with_a_note(runs, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["four"], damaged)
    heads = pd.read_csv(damaged / "contrast" / "heads.csv")
    heads.drop(columns=["t_relevant"]).to_csv(damaged / "contrast" / "heads.csv", index=False)
    result = matchsig.compare([runs["two"], damaged], names=["ok", "damaged"], out=tmp_path / "c")
    assert set(result.bins["run"]) == {"ok"} and set(result.heads["run"]) == {"ok", "damaged"}
    assert any(n.startswith("damaged: the contrast effects") and "t_relevant" in n for n in result.notes)
    assert "damaged: the contrast effects" in (tmp_path / "c" / "compare.html").read_text()


def test_default_names_are_unique(runs):
    result = matchsig.compare([runs["two"], runs["two_again"], runs["four"]])
    assert len(set(result.names)) == 3 and result.names[0] != result.names[1]
    assert result.names[0].startswith("tiny2") and result.names[2] == "tiny4"


def test_hostile_names_are_escaped(runs, tmp_path):
    out = tmp_path / "c"
    matchsig.compare([runs["two"], runs["four"]], out=out, names=[HOSTILE, "plain"])
    page = (out / "compare.html").read_text()
    assert "<script" not in page and "<img src=y" not in page and "&lt;script&gt;" in page
    assert "onerror=alert(2)&gt;" in page and "http" not in page.replace("http-equiv", "")
    assert (out / "figures" / "curves.png").is_file()  # a name with $ is drawn literally, not as mathtext


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
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.browser
def test_page_in_chromium(browser, runs, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    out = tmp_path / "c"
    matchsig.compare([runs["two"], runs["four"], runs["other_pool"]], out=out, names=[HOSTILE, "four", "other"])
    browser.get((out / "compare.html").resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    errors = [e for e in browser.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
    assert errors == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - no injected script ran
    assert browser.execute_script("return document.scripts.length") == 0
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#runs-list .runname")]
    assert names == [HOSTILE, "four", "other"]
    heads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#runs table.cards th.runname")]
    assert heads == [HOSTILE, "four", "other"]
    images = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(images) == 3 and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#table1 table.grid tbody tr")) == 30
    assert "The runs scored different pools" in browser.find_element(By.ID, "runs").text


# ---- a checkpoint series (matchsig train --save-steps) ------------------------------------------


@needs_shared("trec-dl-2019", "trec-dl-2020")
def test_a_checkpoint_series_of_a_tiny_training(tmp_path):
    from safetensors.torch import load_file

    from matchsig.training import TrainConfig, train

    common = dict(tiny=True, limit_queries=2, steps=4, list_size=4, lists_distill=1, probe_pairs=32, micro_batch=8,
                  bf16=False, dropout=0.1, max_length=64)
    out = tmp_path / "train"
    assert train(SHARED_DATA, out, TrainConfig(**common, save_steps=[4, 0, 2]), log=lambda m: None)["finished"]
    saved = {p.name: load_file(p / "model.safetensors") for p in sorted((out / "checkpoints").iterdir())}
    assert list(saved) == ["step-000000", "step-000002", "step-000004"]
    assert json.loads((out / "checkpoints" / "step-000002" / "checkpoint.json").read_text())["step"] == 2
    final = load_file(out / "model" / "model.safetensors")  # the exported model is the last checkpoint
    assert all(torch_equal(final[k], saved["step-000004"][k]) for k in final)
    assert not all(torch_equal(saved["step-000000"][k], saved["step-000004"][k]) for k in final)
    # stopped after 2 steps and resumed: the same checkpoints (save_steps is not part of the recipe)
    (tmp_path / "b").mkdir()
    shutil.copy(out / "prepared.pt", tmp_path / "b" / "prepared.pt")
    train(SHARED_DATA, tmp_path / "b", TrainConfig(**common, save_steps=[2, 4], stop_after_steps=2), log=lambda m: None)
    train(SHARED_DATA, tmp_path / "b", TrainConfig(**common, save_steps=[4]), log=lambda m: None)
    again = load_file(tmp_path / "b" / "checkpoints" / "step-000004" / "model.safetensors")
    assert all(torch_equal(again[k], saved["step-000004"][k]) for k in final)
    with pytest.raises(MatchsigError, match="--save-steps 5"):
        train(SHARED_DATA, tmp_path / "c", TrainConfig(**common, save_steps=[5]), log=lambda m: None)

    runs = [_run(tmp_path / f"run{s}", str(out / "checkpoints" / f"step-{s:06d}"), ["table1", "contrast"],
                 max_queries=3, max_length=64) for s in (0, 2, 4)]
    result = matchsig.compare(runs, out=tmp_path / "cmp")
    assert result.steps == [0, 2, 4] and result.names == ["step-000000", "step-000002", "step-000004"]
    series = pd.read_csv(tmp_path / "cmp" / "series.csv").set_index("step")
    last = _fractions(runs[-1])
    for step, run in zip((0, 2, 4), runs):
        mine = _fractions(run)
        x = np.array([mine[c] for c in last]), np.array([last[c] for c in last])
        ok = np.isfinite(x[0]) & np.isfinite(x[1])
        if ok.sum() >= 3:
            assert series.loc[step, "r_final"] == pytest.approx(np.corrcoef(x[0][ok], x[1][ok])[0, 1], abs=1e-9)
            assert series.loc[step, "mad_final"] == pytest.approx(np.abs(x[0][ok] - x[1][ok]).mean(), abs=1e-9)
        else:
            assert np.isnan(series.loc[step, "r_final"])
        heads = pd.read_csv(run / "contrast" / "heads.csv")
        share = heads[heads["kind"] != "none"].groupby("layer")["head"].nunique().sum() / (heads["layer"].nunique() * 12)
        assert series.loc[step, "matching"] == pytest.approx(share)
    assert "Checkpoint series" in (tmp_path / "cmp" / "compare.html").read_text()
    assert (tmp_path / "cmp" / "figures" / "series.png").is_file()


def test_series_similarity_to_the_last_step_by_value(runs, tmp_path):
    """Runs given explicit steps (--series): each one's Table 1 pattern against the last step's, re-derived."""
    order = [runs["four"], runs["two_again"], runs["two"]]
    result = matchsig.compare(order, names=["a", "b", "c"], steps=[20, 0, 10], out=tmp_path / "c")
    series = result.series
    assert list(series["step"]) == [0, 10, 20] and list(series["run"]) == ["b", "c", "a"]
    last = _fractions(runs["four"])
    for _, row in series.iterrows():
        mine = _fractions(order[["a", "b", "c"].index(row["run"])])
        x, y = np.array([mine[c] for c in last]), np.array([last[c] for c in last])
        assert np.isfinite(x).all() and np.isfinite(y).all()
        assert row["r_final"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
        assert row["mad_final"] == pytest.approx(np.abs(x - y).mean(), abs=1e-9)
    assert series.iloc[-1]["r_final"] == pytest.approx(1.0) and series.iloc[-1]["mad_final"] == 0
    assert series.iloc[0]["r_final"] == pytest.approx(series.iloc[1]["r_final"])  # the same model twice
    assert np.isnan(series.iloc[0]["matching"])  # two_again ran no contrast: no head share, not 0
    with pytest.raises(MatchsigError, match="2 steps for 3"):
        matchsig.compare(order, steps=[0, 1])


def test_train_save_steps_bad_input_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from matchsig.cli import app

    for value, message in (("10,x", "bad --save-steps"), ("0,999", "--save-steps 999: must lie in 0 .. 320")):
        res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "t"), "--data", str(tmp_path),
                                       "--save-steps", value])
        assert isinstance(res.exception, MatchsigError) and message in str(res.exception)
