"""The experiment runner: outputs against independent computations, resume after a crash, sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matchsig import Ablation, CrossEncoder, MatchsigError
from matchsig.experiments import FIGURE1_DIRECTIONS, TABLE1_CELLS, Run, RunConfig

SETTINGS = dict(datasets=["demo"], per_grade=2, max_queries=3, contrast_per_grade=2, contrast_easy=2,
                heads_k=[1, 3], heads_random_seeds=2, chunk_size=7, batch_size=4, rankings=50)


@pytest.fixture(scope="module")
def full_run(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    Run(out, RunConfig(model=tiny_model, **SETTINGS), progress=False).run()
    return out


def test_outputs_exist_and_have_the_contract_columns(full_run):
    t1 = pd.read_csv(full_run / "table1.csv")
    assert len(t1) == len(TABLE1_CELLS) + 2 == 32
    assert {"target", "source", "ablation", "ndcg@10", "delta", "p_value", "p_holm", "significant", "lower"} <= set(t1.columns)
    layers = pd.read_csv(full_run / "layers.csv")
    assert set(layers["direction"]) == set(FIGURE1_DIRECTIONS) and set(layers["layer"]) == {0, 1, 2}
    heads = pd.read_csv(full_run / "contrast" / "heads.csv")
    assert len(heads) == 3 * 4 * 2 and set(heads["kind"]) <= {"syntactic", "semantic", "none"}
    hh = pd.read_csv(full_run / "heads.csv")
    assert set(hh["selection"]) == {"top", "random"} and sorted(set(hh["k"])) == [1, 3]
    md = (full_run / "table1.md").read_text()
    assert "up to 2 passages per grade" in md and md.count("\n| **") == 5
    assert "\\begin{tabular}" in (full_run / "table1.tex").read_text()
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["pools"]["main"]["fingerprint"] and summary["model_info"]["num_layers"] == 3
    pools = pd.read_csv(full_run / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    assert {"qid", "docid", "grade", "query", "document"} <= set(pools.columns)


def test_table1_and_layers_equal_independent_computation(full_run, tiny_model):
    """Recompute some cells with the public API and ir_measures directly, not through the runner."""
    import ir_measures

    pools = pd.read_csv(full_run / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    main = pools[pools["pool"].str.contains("main")]
    ce = CrossEncoder.load(tiny_model, device="cpu")
    qrels = [ir_measures.Qrel(q, d, int(g)) for q, d, g in zip(main.qid, main.docid, main.grade)]

    def ndcg(scores):
        run = [ir_measures.ScoredDoc(q, d, float(s)) for q, d, s in zip(main.qid, main.docid, scores)]
        return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]

    t1 = pd.read_csv(full_run / "table1.csv").set_index("ablation")
    for spec in ("none", "D<-D", "Q<-*", "Q<-SEP1"):  # (CLS<-* ties every score: see test_ties)
        scores = ce.score(list(main["query"]), list(main["document"]), ablation=spec)
        assert abs(t1.loc[spec, "ndcg@10"] - ndcg(scores)) < 1e-9, spec
    raw = pd.read_csv(full_run / "table1_scores.csv", dtype={"qid": str, "docid": str})
    got = ce.score(list(main["query"]), list(main["document"]), "D<-D")
    assert list(raw["docid"]) == list(main["docid"])
    np.testing.assert_allclose(raw["D<-D"], got, atol=1e-5)  # other batch/padding: fp32 noise
    layers = pd.read_csv(full_run / "layers.csv").set_index(["direction", "layer"])
    s = ce.score(list(main["query"]), list(main["document"]), ablation=Ablation.parse("CLS<-Q,CLS<-D", up_to_layer=1))
    assert abs(layers.loc[("CLS<-Q,CLS<-D", 1), "ndcg@10"] - ndcg(s)) < 1e-9


def test_contrast_statistics_equal_public_api(full_run, tiny_model):
    pools = pd.read_csv(full_run / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    con = pools[pools["pool"].str.contains("contrast")]
    assert set(con["grade"]) <= {3, 0, -1} and (con["grade"] == -1).any()
    ce = CrossEncoder.load(tiny_model, device="cpu")
    stats = ce.attention_stats(list(con["query"]), list(con["document"]))
    per_query = pd.read_csv(full_run / "contrast" / "per_query.csv", dtype={"qid": str})
    q = con["qid"].iloc[0]
    sel = ((con["qid"] == q) & (con["grade"] == -1)).to_numpy()
    want = stats.get("Q<-D", "max")[sel].mean(0)  # (layers, heads)
    got = per_query[(per_query.qid == q) & (per_query.level == -1) & (per_query.direction == "Q<-D")]
    got = got.sort_values(["layer", "head"])["max"].to_numpy().reshape(3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_resume_after_crash_gives_identical_tables(full_run, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    calls = {"n": 0}
    original = CrossEncoder.score_many

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt("killed")
        return original(self, *a, **k)

    monkeypatch.setattr(CrossEncoder, "score_many", flaky)
    with pytest.raises(KeyboardInterrupt):
        Run(out, RunConfig(model=tiny_model, **SETTINGS), progress=False).run()
    done_before = len(list((out / "store").rglob("*.npy")))
    assert done_before == 11
    monkeypatch.setattr(CrossEncoder, "score_many", original)
    calls["n"] = 0
    counted = {"n": 0}

    def counting(self, *a, **k):
        counted["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(CrossEncoder, "score_many", counting)
    Run(out, RunConfig(model=tiny_model, **SETTINGS), progress=False).run()
    total_units = len(list((out / "store").rglob("*.npy")))
    scored_units = len(list((out / "store" / "scores").rglob("*.npy")))
    assert counted["n"] == scored_units - 11  # nothing finished was recomputed
    for name in ("table1.csv", "layers.csv", "heads.csv", "contrast/heads.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(full_run / name))
    assert total_units > done_before
    # --force recomputes everything
    counted["n"] = 0
    Run(out, RunConfig(model=tiny_model, **SETTINGS), force=True, progress=False).run()
    assert counted["n"] == scored_units


def test_config_round_trip_and_mismatch(full_run, tiny_model, tmp_path):
    cfg = RunConfig.read(full_run / "config.json")
    assert cfg == RunConfig(model=tiny_model, **SETTINGS)
    with pytest.raises(MatchsigError, match="another configuration \\(seed"):
        Run(full_run, RunConfig(model=tiny_model, **{**SETTINGS, "seed": 1}), progress=False)
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"model": "x", "colour": 1}))
    with pytest.raises(MatchsigError, match="unknown configuration key 'colour'"):
        RunConfig.read(bad)
    with pytest.raises(MatchsigError, match="unknown experiment 'tables'"):
        RunConfig(experiments=["tables"]).validate()


def test_unwritable_output_folder(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MatchsigError, match="cannot write to output folder"):
        Run(blocker / "sub", RunConfig(model=tiny_model, **SETTINGS), progress=False)


def _cli(*args, cwd=None, env_extra=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "matchsig", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_cli_errors_are_one_line(tmp_path, tiny_model):
    res = _cli("ablate", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "-n", "2", "--max-queries", "1")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "does not exist" in res.stderr
    res = _cli("ablate", "--model", tiny_model, "--dataset", "no/such/dataset-xyz", "--out", str(tmp_path / "o2"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.strip(), res.stderr
    res = _cli("report", str(tmp_path))
    assert res.returncode == 2 and "not a matchsig run folder" in res.stderr


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(tmp_path, tiny_model, full_run):
    """2 CPU processes (gloo) split the units; the merged tables equal the single-process run."""
    out = tmp_path / "dist"
    cfg = RunConfig(model=tiny_model, **{**SETTINGS, "experiments": ["table1"]})
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                          "-m", "matchsig", "run", str(out / "config.json"), "--no-report"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "table1.csv"), pd.read_csv(full_run / "table1.csv"))
    pairs = json.loads((full_run / "summary.json").read_text())["pools"]["main"]["pairs"]
    chunks = -(-pairs // SETTINGS["chunk_size"])
    names = sorted(str(u.relative_to(out / "store")) for u in (out / "store").rglob("*.npy"))
    assert len(names) == len(set(names)) == (len(TABLE1_CELLS) + 1) * chunks  # every unit once, none lost


def test_ties_cls_all_makes_scores_constant(full_run):
    """CLS<-* cuts everything CLS reads, so every pair gets the same score: the ranking is the tie-break."""
    raw = pd.read_csv(full_run / "table1_scores.csv", dtype={"qid": str, "docid": str})
    assert np.ptp(raw["CLS<-*"]) < 1e-5 and np.ptp(raw["none"]) > 1e-3


def test_cli_parts(tiny_model):
    res = _cli("parts", "--model", tiny_model, "-q", "what is a flea", "-d", "The cat flea.", "--json")
    assert res.returncode == 0, res.stderr
    tokens = json.loads(res.stdout)["tokens"]
    assert [p for _, p in tokens] == ["CLS", "Q", "Q", "Q", "Q", "SEP1", "D", "D", "D", "D", "SEP2"]
