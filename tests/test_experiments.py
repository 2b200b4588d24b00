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
from conftest import matchsig_cli, torchrun_config

from matchsig import Ablation, CrossEncoder, MatchsigError
from matchsig.experiments import FIGURE1_DIRECTIONS, TABLE1_CELLS, RunConfig, Runner

SETTINGS = dict(datasets=["demo"], per_grade=2, max_queries=3, contrast_per_grade=2, contrast_easy=2,
                heads_k=[1, 3], heads_random_seeds=2, chunk_size=10, batch_size=4, rankings=50)


@pytest.fixture(scope="module")
def full_run(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    Runner(out, RunConfig(model=tiny_model, **SETTINGS), progress=False).run()
    return out


def test_outputs_exist_and_have_the_contract_columns(full_run):
    t1 = pd.read_csv(full_run / "table1.csv")
    assert len(t1) == len(TABLE1_CELLS) + 2 == 32
    assert {"target", "source", "ablation", "ndcg@10", "delta", "ci_low", "ci_high", "p_value", "p_holm", "significant",
            "mark", "lower", "n_queries"} <= set(t1.columns)
    assert "p_bonferroni" not in t1.columns
    layers = pd.read_csv(full_run / "layers.csv")
    assert set(layers["direction"]) == set(FIGURE1_DIRECTIONS) and set(layers["layer"]) == {0, 1, 2}
    heads = pd.read_csv(full_run / "contrast" / "heads.csv")
    assert len(heads) == 3 * 4 * 2 and set(heads["kind"]) <= {"syntactic", "semantic", "unclassified", "none"}
    assert {"p_relevant_holm", "p_hard_holm", "p_relevant_hard_holm", "t_relevant", "sign", "matching"} <= set(heads.columns)
    hh = pd.read_csv(full_run / "heads.csv")
    assert set(hh["selection"]) == {"top", "random"} and sorted(set(hh["k"])) == [1, 3]
    md = (full_run / "table1.md").read_text()
    assert "up to 2 passages per grade" in md and md.count("\n| **") == 5
    assert "\\begin{tabular}" in (full_run / "table1.tex").read_text()
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["pools"]["main"]["fingerprint"] and summary["model_info"]["num_layers"] == 3
    pools = pd.read_csv(full_run / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    assert {"qid", "docid", "grade", "query", "document"} <= set(pools.columns)


def test_chunked_run_by_value(full_run, tiny_model):
    """A run whose work is split into several chunks per configuration: every table re-derived by value."""
    from _recompute import check_contrast, check_heads, check_layers, check_table1

    ce = CrossEncoder.load(tiny_model, device="cpu")
    pairs = json.loads((full_run / "summary.json").read_text())["pools"]["main"]["pairs"]
    assert pairs > 2 * SETTINGS["chunk_size"]  # at least three chunks to gather
    check_table1(full_run, ce)
    check_layers(full_run, ce)
    check_contrast(full_run, ce)
    check_heads(full_run, ce)
    assert "up to 2 passages per grade" in (full_run / "table1.md").read_text()


# ---- crash safety, the hard way ---------------------------------------------------------------------

TABLES = ("pools.tsv", "table1.csv", "table1_per_query.csv", "table1_scores.csv", "layers.csv", "heads.csv",
          "contrast/heads.csv", "contrast/per_query.csv")

# Run in a subprocess: every work unit announces itself, then takes a measurable time, so the test can
# kill the process with SIGKILL while a unit is being computed; every stored file is logged too.
_SLOW_RUN = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from matchsig.experiments import Runner, RunConfig, Store
from matchsig.engine.model import CrossEncoder

log = open(sys.argv[3], "a", buffering=1)
for name in ("score_many", "score_layer_curve", "attention_stats"):
    def slow(self, *a, _real=getattr(CrossEncoder, name), _name=name, **k):
        log.write(f"start {_name}\n")
        time.sleep(0.1)
        return _real(self, *a, **k)
    setattr(CrossEncoder, name, slow)
_save = Store.save
def save(self, unit, array):
    _save(self, unit, array)
    log.write(f"saved {unit}\n")
Store.save = save
Runner(sys.argv[2], RunConfig.from_dict(json.loads(open(sys.argv[1]).read())), progress=False).run()
"""


def _stored(out: Path) -> set[str]:
    root = out / "store"
    return {str(p.relative_to(root))[: -len(".npy")] for p in root.rglob("*.npy")} if root.is_dir() else set()


def _recording_saves(monkeypatch) -> list[str]:
    from matchsig.experiments import Store

    saved: list[str] = []
    original = Store.save

    def save(self, unit, array):
        saved.append(unit)
        return original(self, unit, array)

    monkeypatch.setattr(Store, "save", save)
    return saved


def _assert_same_results(out: Path, reference: Path) -> None:
    """Bit for bit: every table's bytes and every stored array."""
    from matchsig.experiments import Store

    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(out / "contrast" / "stats.parquet"),
                                  pd.read_parquet(reference / "contrast" / "stats.parquet"), check_exact=True)
    assert _stored(out) == _stored(reference)
    mine, theirs = Store(out / "store"), Store(reference / "store")
    for unit in _stored(reference):
        a, b = mine.load(unit), theirs.load(unit)
        assert a.dtype == b.dtype and np.array_equal(a, b), unit


def test_sigkill_in_the_middle_of_a_unit_then_resume(full_run, tiny_model, tmp_path, monkeypatch):
    import signal
    import time

    out = tmp_path / "killed"
    cfg = RunConfig(model=tiny_model, **SETTINGS)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "run.py").write_text(_SLOW_RUN)
    progress = tmp_path / "progress.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "config.json"), str(out),
                             str(progress)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = len(_stored(full_run))
    deadline = time.monotonic() + 480  # generous: CI machines can be busy
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not get far enough in time"
            lines = progress.read_text().splitlines() if progress.is_file() else []
            stored = len(_stored(out))
            # some units done, most not, and one announced that has stored nothing yet: inside a unit
            if total // 4 <= stored and lines and lines[-1].startswith("start"):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    present = _stored(out)
    assert total // 4 <= len(present) < total
    assert not (out / "table1.csv").exists()  # killed long before the tables

    saved = _recording_saves(monkeypatch)
    logs: list[str] = []
    Runner(out, RunConfig(model=tiny_model, **SETTINGS), progress=False, log=logs.append).run()
    # only the missing units were computed, each once
    assert sorted(saved) == sorted(_stored(full_run) - present)
    assert any("already done, resuming" in line for line in logs)
    _assert_same_results(out, full_run)


def test_damaged_store_files_are_found_recomputed_and_reported(full_run, tiny_model, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(full_run, out)
    units = sorted(_stored(out))
    truncated = next(u for u in units if u.startswith("scores/D_from_D"))
    flipped = next(u for u in units if u.startswith("layers/"))
    garbage = next(u for u in units if u.startswith("contrast/"))
    path = lambda u: out / "store" / f"{u}.npy"  # noqa: E731
    data = path(truncated).read_bytes()
    path(truncated).write_bytes(data[: len(data) // 2])
    data = bytearray(path(flipped).read_bytes())
    data[-40] ^= 0x01  # one bit of the last value: still a valid .npy, but not what was computed
    path(flipped).write_bytes(bytes(data))
    path(garbage).write_bytes(b"\x93NUMPY garbage")
    leftover = path(units[0]).with_name(f".{path(units[0]).name}.99999.tmp")
    leftover.write_bytes(data[:100])  # a write a killed process never finished

    saved = _recording_saves(monkeypatch)
    logs: list[str] = []
    Runner(out, RunConfig(model=tiny_model, **SETTINGS), progress=False, log=logs.append).run()
    assert sorted(saved) == sorted([truncated, flipped, garbage])  # those three, nothing else
    damaged = [line for line in logs if "damaged" in line]
    assert len(damaged) == 3 and all("\n" not in line for line in damaged), logs
    assert any(line.startswith("table1: 1 stored unit(s) damaged") and truncated in line for line in damaged)
    assert any(line.startswith("layers: 1 stored unit(s) damaged") and flipped in line for line in damaged)
    assert any(line.startswith("contrast: 1 stored unit(s) damaged") and garbage in line for line in damaged)
    assert [line for line in logs if "temporary file" in line] == [
        f"store: removed 1 temporary file(s) an interrupted run left (e.g. {leftover.relative_to(out)}); "
        "their units are recomputed"]
    assert not leftover.exists()
    _assert_same_results(out, full_run)


def test_a_damaged_file_read_at_gather_time_is_a_one_line_error(tmp_path):
    from matchsig.experiments import Store

    store = Store(tmp_path)
    store.save("a/b", np.arange(5.0))
    assert store.has("a/b") and np.array_equal(store.load("a/b"), np.arange(5.0))
    raw = store.path("a/b").read_bytes()
    assert np.array_equal(np.load(store.path("a/b")), np.arange(5.0))  # still a plain .npy file
    store.path("a/b").write_bytes(raw[:-3])
    fresh = Store(tmp_path)
    assert not fresh.has("a/b") and "truncated or corrupt" in fresh.bad["a/b"]
    with pytest.raises(MatchsigError, match="is truncated or corrupt .*run again to recompute it"):
        fresh.load("a/b")


def test_store_files_without_a_checksum_are_read_when_whole(tmp_path):
    """Run folders of matchsig <= 0.1 hold plain .npy files: whole ones are reused, cut ones recomputed."""
    from matchsig.experiments import Store

    values = np.linspace(-3.0, 2.0, 257, dtype=np.float32)
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "whole.npy", values)  # the old writer: no trailer
    np.save(tmp_path / "a" / "cut.npy", values)
    cut = (tmp_path / "a" / "cut.npy").read_bytes()
    (tmp_path / "a" / "cut.npy").write_bytes(cut[:-4])
    (tmp_path / "a" / "long.npy").write_bytes(cut + b"\0" * 8)  # bytes past the array: not a legacy file
    store = Store(tmp_path)
    assert store.has("a/whole") and np.array_equal(store.load("a/whole"), values)
    assert not store.has("a/cut") and "truncated or corrupt" in store.bad["a/cut"]
    assert not store.has("a/long") and "truncated or corrupt" in store.bad["a/long"]


def test_config_round_trip_and_mismatch(full_run, tiny_model, tmp_path):
    cfg = RunConfig.read(full_run / "config.json")
    assert cfg == RunConfig(model=tiny_model, **SETTINGS)
    with pytest.raises(MatchsigError, match="another configuration \\(seed"):
        Runner(full_run, RunConfig(model=tiny_model, **{**SETTINGS, "seed": 1}), progress=False)
    # the chunk size decides which rows each stored unit holds: resuming with another one is refused
    with pytest.raises(MatchsigError, match="another configuration \\(chunk_size"):
        Runner(full_run, RunConfig(model=tiny_model, **{**SETTINGS, "chunk_size": cfg.chunk_size + 1}), progress=False)
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"model": "x", "colour": 1}))
    with pytest.raises(MatchsigError, match="unknown configuration key 'colour'"):
        RunConfig.read(bad)
    with pytest.raises(MatchsigError, match="unknown experiment 'tables'"):
        RunConfig(experiments=["tables"]).validate()


def test_resuming_with_more_or_fewer_experiments(tmp_path, tiny_model):
    """Options of an experiment the folder has not run are free; those of one it has run are kept or refused."""
    def folder(name, **values):
        out = tmp_path / name
        out.mkdir()
        (out / "config.json").write_text(json.dumps(RunConfig(model=tiny_model, **values).to_dict()))
        return out

    both = folder("both", experiments=["contrast", "patch"], pairs=3)
    runner = Runner(both, RunConfig(model=tiny_model, experiments=["contrast"]), progress=False)
    assert runner.config.pairs == 3 and runner.config.experiments == ["contrast", "patch"]  # patch resumes as it was
    assert json.loads((both / "config.json").read_text())["pairs"] == 3
    contrast = folder("contrast", experiments=["contrast"])  # its stored "pairs" (50) is an unused default
    runner = Runner(contrast, RunConfig(model=tiny_model, experiments=["patch"], pairs=3), progress=False)
    assert runner.config.pairs == 3 and runner.config.experiments == ["contrast", "patch"]
    with pytest.raises(MatchsigError, match="another configuration \\(pairs: 3 there, 4 now\\)"):
        Runner(contrast, RunConfig(model=tiny_model, experiments=["patch"], pairs=4), progress=False)
    with pytest.raises(MatchsigError, match="another configuration \\(per_grade: 20 there, 3 now\\)"):
        Runner(contrast, RunConfig(model=tiny_model, experiments=["patch"], per_grade=3), progress=False)


def test_unwritable_output_folder(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MatchsigError, match="cannot write to output folder"):
        Runner(blocker / "sub", RunConfig(model=tiny_model, **SETTINGS), progress=False)


_cli = matchsig_cli


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
    res = torchrun_config(out / "config.json", port=29533)
    assert res.returncode == 0, res.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "table1.csv"), pd.read_csv(full_run / "table1.csv"))
    pairs = json.loads((full_run / "summary.json").read_text())["pools"]["main"]["pairs"]
    chunks = -(-pairs // SETTINGS["chunk_size"])
    names = sorted(str(u.relative_to(out / "store")) for u in (out / "store").rglob("*.npy"))
    assert len(names) == len(set(names)) == (len(TABLE1_CELLS) + 1) * chunks  # every unit once, none lost


def test_ties_cls_all_scores_the_exact_random_baseline(full_run):
    """CLS<-* cuts everything CLS reads, so every pair gets the same score: tie-aware nDCG = random, exactly."""
    raw = pd.read_csv(full_run / "table1_scores.csv", dtype={"qid": str, "docid": str})
    assert np.ptp(raw["CLS<-*"]) < 1e-5 and np.ptp(raw["none"]) > 1e-3
    t1 = pd.read_csv(full_run / "table1.csv").set_index("ablation")
    assert abs(t1.loc["CLS<-*", "ndcg@10"] - t1.loc["random", "ndcg@10"]) < 1e-9
    per_query = pd.read_csv(full_run / "table1_per_query.csv", dtype={"qid": str}).set_index("qid")
    # the exact random baseline, recomputed here: mean gain x the first min(10, n) discounts / ideal DCG
    main = raw.assign(gain=raw["grade"].clip(lower=0))
    for qid, group in main.groupby("qid"):
        gains = np.sort(group["gain"].to_numpy(float))[::-1]
        disc = 1 / np.log2(np.arange(2, min(10, len(gains)) + 2))
        idcg = gains[: len(disc)] @ disc
        expected = gains.mean() * disc.sum() / idcg if idcg else 0.0
        assert abs(per_query.loc[qid, "CLS<-*"] - expected) < 1e-9
        assert abs(per_query.loc[qid, "random"] - expected) < 1e-9


def test_cli_parts(tiny_model):
    res = _cli("parts", "--model", tiny_model, "-q", "what is a flea", "-d", "The cat flea.", "--json")
    assert res.returncode == 0, res.stderr
    tokens = json.loads(res.stdout)["tokens"]
    assert [p for _, p in tokens] == ["CLS", "Q", "Q", "Q", "Q", "SEP1", "D", "D", "D", "D", "SEP2"]


def test_cli_alpha_and_correction_name_the_columns_and_decide_the_marks(tmp_path, tiny_model):
    from statsmodels.stats.multitest import multipletests

    out = tmp_path / "sig"
    res = _cli("ablate", "--model", tiny_model, "--max-queries", "3", "-n", "2", "--correction", "bonferroni",
               "--alpha", "0.1", "--out", str(out), "--rankings", "20")
    assert res.returncode == 0, res.stderr[-2000:]
    t1 = pd.read_csv(out / "table1.csv", keep_default_na=False)
    assert "p_bonferroni" in t1.columns and "p_holm" not in t1.columns
    cells = t1[~t1["ablation"].isin(["none", "random"])]
    assert len(cells) == 30
    np.testing.assert_allclose(cells["p_bonferroni"].astype(float),
                               multipletests(cells["p_value"].astype(float), method="bonferroni")[1])
    assert (t1.loc[t1["ablation"].isin(["none", "random"]), "p_bonferroni"] == "").all()  # tested alone: no corrected p
    expected = ["*" if p <= 0.1 and d < 0 else "\u2191" if p <= 0.1 and d > 0 else ""
                for p, d in zip(cells["p_bonferroni"].astype(float), cells["delta"].astype(float))]
    assert list(cells["mark"]) == expected
    assert "Bonferroni-corrected over the 30 ablations, p <= 0.1" in (out / "table1.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["significance"]["correction"] == "bonferroni" and summary["evaluation"]["tie_rtol"] == 1e-6
    # the statistics can change on a finished run folder: no model call; with "none" the paper's test decides and
    # the Holm view stands beside it
    res = _cli("run", str(out / "config.json"), "--correction", "none", "--alpha", "0.2", "--no-report")
    assert res.returncode == 0, res.stderr[-2000:]
    t1 = pd.read_csv(out / "table1.csv", keep_default_na=False)
    assert [c for c in t1.columns if c.startswith("p_") and c != "p_value"] == ["p_holm"] and "mark_holm" in t1
    cells = t1[~t1["ablation"].isin(["none", "random"])]
    assert list(cells["significant"]) == list(cells["p_value"].astype(float) <= 0.2)
    np.testing.assert_allclose(cells["p_holm"].astype(float), multipletests(cells["p_value"].astype(float),
                                                                            method="holm")[1])
    res = _cli("ablate", "--model", tiny_model, "--correction", "fdr", "--out", str(tmp_path / "bad"))
    assert res.returncode == 2 and "unknown correction 'fdr'" in res.stderr
    res = _cli("experiments", "--preset", "nope", "--out", str(tmp_path / "bad2"))
    assert res.returncode == 2 and "unknown preset 'nope'" in res.stderr


def test_analysis_datasets_feed_only_the_contrast(tmp_path, tiny_model):
    from matchsig.data.datasets import load_collection
    from matchsig.experiments import PAPER_CONFIG

    demo = load_collection("demo")
    folder = tmp_path / "other"
    folder.mkdir()
    qids = [q for q in demo.judged_qids() if 3 in demo.qrels[q].values()][:3]
    extra = [d for d in demo.negative_candidates()][:40]
    with open(folder / "queries.tsv", "w") as fh:
        fh.writelines(f"x{q}\t{demo.queries[q]}\n" for q in qids)
    with open(folder / "qrels.txt", "w") as fh:
        fh.writelines(f"x{q} 0 {d} {g}\n" for q in qids for d, g in demo.qrels[q].items())
    docs = sorted({d for q in qids for d in demo.qrels[q]} | set(extra))
    with open(folder / "passages.tsv", "w") as fh:
        fh.writelines(f"{d}\t{t}\n" for d, t in demo.docs(docs).items())
    out = tmp_path / "scoped"
    cfg = RunConfig(model=tiny_model, **{**SETTINGS, "analysis_datasets": [str(folder)], "experiments": ["contrast", "heads"]})
    Runner(out, cfg, progress=False).run()
    pools = pd.read_csv(out / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    contrast, main = pools[pools["pool"].str.contains("contrast")], pools[pools["pool"].str.contains("main")]
    assert set(contrast["qid"]) == {f"x{q}" for q in qids} and not main["qid"].str.startswith("x").any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pools"]["contrast"]["datasets"] == [str(folder)] and summary["pools"]["main"]["datasets"] == ["demo"]
    source = summary["pools"]["contrast"]["easy_negatives_from"][str(folder)]
    assert source["source"] == "folder" and source["candidates"] == len(docs) and "warning" in source
    assert "judged" in summary["pools"]["contrast"]["easy_negatives_warning"]
    paper_cfg = PAPER_CONFIG()
    assert paper_cfg.datasets == ["msmarco-passage/trec-dl-2019/judged"] and len(paper_cfg.analysis) == 4
    assert paper_cfg.per_grade == 20
