"""TREC runs: strict reading, re-ranking pools, `matchsig rerank`, and `ablate`/`layers --run`.

Every number is re-derived here from the files (the run written, the qrels) with ir_measures and
scipy, never with the code that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import make_tiny_model, matchsig_cli

from matchsig.data.datasets import load_collection, read_folder
from matchsig.errors import MatchsigError
from matchsig.data.evaluation import evaluate_scores, random_baseline
from matchsig.analysis.rerank import rerank
from matchsig.data.runs import RunPool, evaluate_run, pool_from_run, read_trec_run, with_passages

NDCG10 = ir_measures.nDCG @ 10


# ---- a small collection with judged and unjudged candidates -------------------------------------


@pytest.fixture()
def folder(tmp_path) -> Path:
    """3 queries; q1 has a relevant passage (j9) that no run retrieves; q3 has no judgments."""
    d = tmp_path / "col"
    d.mkdir()
    (d / "queries.tsv").write_text("q1\tcat flea life cycle\nq2\twhat is an axon\nq3\tunjudged query\n", encoding="utf-8")
    (d / "qrels.txt").write_text(
        "q1 0 j1 3\nq1 0 j2 0\nq1 0 j3 1\nq1 0 j9 2\nq2 0 j4 2\nq2 0 j5 0\nq2 0 j6 1\n", encoding="utf-8")
    (d / "passages.tsv").write_text(
        "".join(f"{p}\tjudged passage {p} about fleas and axons\n" for p in ("j1", "j2", "j3", "j4", "j5", "j6", "j9")),
        encoding="utf-8")
    (tmp_path / "extra.tsv").write_text(
        "".join(f"{p}\tunjudged candidate {p}\n" for p in ("u1", "u2", "u3", "u4")), encoding="utf-8")
    return d


RUN = """q1 Q0 j1 1 9.5 bm25
q1 Q0 u1 2 9.0 bm25
q1 Q0 j2 3 8.0 bm25
q1 Q0 j3 4 7.0 bm25
q1 Q0 u2 5 6.0 bm25
q2 Q0 j5 1 5.0 bm25
q2 Q0 u3 2 4.0 bm25
q2 Q0 j4 3 3.0 bm25
q2 Q0 j6 4 2.0 bm25
q3 Q0 u4 1 1.0 bm25
"""


@pytest.fixture()
def run_file(tmp_path) -> Path:
    path = tmp_path / "run.txt"
    path.write_text(RUN, encoding="utf-8")
    return path


class FakeEncoder:
    """Deterministic distinct scores from the texts (a stand-in model: the protocol is under test here)."""

    name = "fake"

    def score(self, queries, documents, ablation=None, batch_size=32, progress=False):
        import zlib

        return np.array([zlib.crc32(f"{q}|{d}|{ablation}".encode()) / 2**32 for q, d in zip(queries, documents)])


def _qrels(folder: Path) -> list:
    return list(ir_measures.read_trec_qrels(str(folder / "qrels.txt")))


def _per_query(measure, qrels, run) -> dict[str, float]:
    return {m.query_id: m.value for m in ir_measures.iter_calc([measure], qrels, run)}


# ---- reading ----------------------------------------------------------------------------------


def test_read_and_top_k_order(run_file):
    run = read_trec_run(run_file)
    assert len(run) == 10 and run.qids == ["q1", "q2", "q3"] and run.tag == "bm25"
    assert [e.docid for e in run.by_query()["q1"]] == ["j1", "u1", "j2", "j3", "u2"]
    top = run.top(2)
    assert [(e.qid, e.docid) for e in top.entries] == [("q1", "j1"), ("q1", "u1"), ("q2", "j5"), ("q2", "u3"), ("q3", "u4")]
    assert run.top(None) is run and len(run.fingerprint) == 16 and top.fingerprint != run.fingerprint


def test_ties_in_the_run_keep_its_rank_order(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("1 Q0 b 2 1.0 t\n1 Q0 a 3 1.0 t\n1 Q0 c 1 1.0 t\n", encoding="utf-8")
    assert [e.docid for e in read_trec_run(path).top(2).entries] == ["c", "b"]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("\n  \n", "is empty"),
    ("q1 Q0 j1 1 9.5\n", ":1: expected 6 columns 'qid Q0 docid rank score tag', got 5"),
    ("q1 Q0 j1 1 9.5 t\nq1 Q0 j2 2 9 t x\n", ":2: expected 6 columns"),
    ("q1 Q0 j1 one 9.5 t\n", ":1: rank 'one' is not an integer"),
    ("q1 Q0 j1 1 high t\n", ":1: score 'high' is not a number"),
    ("q1 Q0 j1 1 nan t\n", ":1: score 'nan' is not a finite number"),
    ("q1 Q0 j1 1 9 t\nq1 Q0 j1 2 8 t\n", ":2: passage 'j1' is listed twice for query 'q1' (first on line 1)"),
])
def test_bad_run_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MatchsigError) as err:
        read_trec_run(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_run_file(tmp_path):
    with pytest.raises(MatchsigError, match="missing file: run .* does not exist"):
        read_trec_run(tmp_path / "nope.txt")


def test_unknown_qid_and_missing_docid_name_the_line(folder, tmp_path):
    collection = read_folder(folder)
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 j1 1 3 t\nq7 Q0 j2 2 2 t\n", encoding="utf-8")
    with pytest.raises(MatchsigError, match=r"bad.txt:2: query 'q7' is not in collection"):
        pool_from_run(read_trec_run(bad), collection)
    bad.write_text("q1 Q0 j1 1 3 t\nq1 Q0 u1 2 2 t\nq1 Q0 u2 3 1 t\n", encoding="utf-8")
    with pytest.raises(MatchsigError) as err:
        pool_from_run(read_trec_run(bad), collection)
    assert "bad.txt:2: passage 'u1' (and 1 more) has no text" in str(err.value)
    assert "--passages" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MatchsigError, match="missing file: passages"):
        with_passages(collection, [tmp_path / "none.tsv"])


# ---- the re-ranking pool ----------------------------------------------------------------------


def test_pool_from_run_grades_unjudged_and_full_qrels(folder, run_file, tmp_path):
    collection = with_passages(read_folder(folder), [tmp_path / "extra.tsv"])
    pool = pool_from_run(read_trec_run(run_file), collection, top_k=4)
    assert isinstance(pool, RunPool)
    assert pool.qids == ["q1", "q2"] and pool.unevaluated == ("q3",)  # q3 has no judgments
    assert sorted((r.docid, r.grade) for r in pool.rows if r.qid == "q1") == [("j1", 3), ("j2", 0), ("j3", 1), ("u1", -1)]
    assert pool.unjudged == 2  # u1 (q1), u3 (q2); u2 is cut by top_k=4
    # The ideal ranking comes from every judgment: j9 (grade 2) is in the qrels though no run found it.
    assert pool.qrels()["q1"] == {"j1": 3, "j2": 0, "j3": 1, "j9": 2, "u1": 0}
    described = pool.describe()
    assert described["protocol"] == "rerank" and described["unjudged"] == 2 and described["judged"] == 6
    assert described["top_k"] == 4 and described["run_fingerprint"] == read_trec_run(run_file).top(4).fingerprint
    q, d = pool.pairs()
    assert d[[r.docid for r in pool.rows].index("u1")] == "unjudged candidate u1"


def test_evaluation_on_a_run_pool_is_trec_eval_on_full_qrels(folder, run_file, tmp_path):
    collection = with_passages(read_folder(folder), [tmp_path / "extra.tsv"])
    run = read_trec_run(run_file)
    pool = pool_from_run(run, collection)
    scores = FakeEncoder().score(*pool.pairs())
    ours = evaluate_scores(pool, scores, ["nDCG@10", "RR@10"]).per_query
    # Independent: the same (distinct) scores through ir_measures with the qrels file itself.
    scored = {}
    for row, s in zip(pool.rows, scores):
        scored.setdefault(row.qid, {})[row.docid] = float(s)
    for measure in (NDCG10, ir_measures.RR @ 10):
        ref = _per_query(measure, _qrels(folder), scored)
        assert ours[str(measure)] == pytest.approx({q: ref[q] for q in ("q1", "q2")}, abs=1e-12)
    # The input run, read by ir_measures from the file (q3 has no qrels: not evaluated).
    ref = _per_query(NDCG10, _qrels(folder), list(ir_measures.read_trec_run(str(run_file))))
    assert evaluate_run(run, pool)["nDCG@10"] == pytest.approx({q: ref[q] for q in ("q1", "q2")}, abs=1e-12)


def test_random_baseline_of_a_run_pool_uses_the_full_qrels(folder, tmp_path):
    # Both candidates have grade 1, so every random order has the same nDCG; the ideal has j9 (2) and
    # j1 (3) too, which the run missed: nDCG = DCG([1, 1]) / IDCG([3, 2, 1, 1]) for every ranking.
    run = tmp_path / "r.txt"
    run.write_text("q1 Q0 j3 1 2 t\n", encoding="utf-8")
    collection = read_folder(folder)
    pool = pool_from_run(read_trec_run(run), collection)
    expected = _per_query(NDCG10, _qrels(folder), {"q1": {"j3": 1.0}})["q1"]
    assert random_baseline(pool, rankings=20).mean == pytest.approx(expected, abs=1e-12)
    assert expected < 0.5  # not 1.0, which the pool's own rows would give


def test_rerank_api_numbers(folder, run_file, tmp_path):
    collection = with_passages(read_folder(folder), [tmp_path / "extra.tsv"])
    result = rerank(FakeEncoder(), read_trec_run(run_file), collection, top_k=None, measures=["nDCG@10", "RR@10"])
    assert result.pool.qids == ["q1", "q2", "q3"] and result.unevaluated == ("q3",) and result.unjudged == 3
    out = tmp_path / "out.txt"
    result.write(out, "fake run")
    written = list(ir_measures.read_trec_run(str(out)))
    assert {(d.query_id, d.doc_id) for d in written} == {(e.qid, e.docid) for e in read_trec_run(run_file).entries}
    lines = [line.split() for line in out.read_text().splitlines()]
    assert all(len(p) == 6 and p[1] == "Q0" and p[5] == "fake_run" for p in lines)
    for qid in ("q1", "q2", "q3"):  # ranks 1..n, scores descending
        mine = [p for p in lines if p[0] == qid]
        assert [int(p[3]) for p in mine] == list(range(1, len(mine) + 1))
        assert [float(p[4]) for p in mine] == sorted((float(p[4]) for p in mine), reverse=True)
    qrels = _qrels(folder)
    for measure in (NDCG10, ir_measures.RR @ 10):
        after = _per_query(measure, qrels, written)
        before = _per_query(measure, qrels, list(ir_measures.read_trec_run(str(run_file))))
        assert result.output_per_query[str(measure)] == pytest.approx(after, abs=1e-12)
        assert result.input_per_query[str(measure)] == pytest.approx(before, abs=1e-12)
        t = stats.ttest_rel([after[q] for q in ("q1", "q2")], [before[q] for q in ("q1", "q2")])
        ours = result.tests[str(measure)]
        if np.isnan(t.pvalue):
            assert ours.pvalue == 1.0
        else:
            assert ours.pvalue == pytest.approx(t.pvalue, abs=1e-12)
            assert ours.statistic == pytest.approx(t.statistic, abs=1e-12)


# ---- the CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer) -> str:
    folder = tmp_path_factory.mktemp("tiny-ce")
    make_tiny_model(folder, tokenizer, seed=5, layers=2)
    return str(folder)


_cli = matchsig_cli


def test_cli_rerank_json_and_written_run(folder, run_file, tmp_path, tiny_model):
    out = tmp_path / "reranked.txt"
    res = _cli("rerank", "--model", tiny_model, "--dataset", str(folder), "--passages", str(tmp_path / "extra.tsv"),
               "--run", str(run_file), "--top-k", "4", "--ablation", "D<-D", "--measure", "P(rel=2)@2",
               "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["protocol"] == "rerank" and payload["ablation"] == "D<-D" and payload["top_k"] == 4
    assert payload["pairs"] == 9 and payload["queries"] == 3 and payload["unevaluated_queries"] == ["q3"]
    assert payload["unjudged"] == 2  # u1, u3 among the evaluated queries' top 4
    qrels = _qrels(folder)
    written = list(ir_measures.read_trec_run(str(out)))
    assert len(written) == 9 and all(line.split()[5] == f"{Path(tiny_model).name}-D<-D" for line in out.read_text().splitlines())
    # The input run cut to its top 4 per query (by score).
    input_top = {}
    for d in sorted(ir_measures.read_trec_run(str(run_file)), key=lambda d: -d.score):
        input_top.setdefault(d.query_id, {})
        if len(input_top[d.query_id]) < 4:
            input_top[d.query_id][d.doc_id] = d.score
    for measure in (NDCG10, ir_measures.P(rel=2) @ 2):
        after = _per_query(measure, qrels, written)
        before = _per_query(measure, qrels, input_top)
        assert payload["output"][str(measure)] == pytest.approx(np.mean([after[q] for q in ("q1", "q2")]), abs=1e-12)
        assert payload["input"][str(measure)] == pytest.approx(np.mean([before[q] for q in ("q1", "q2")]), abs=1e-12)
    # The scores of the written run are the ablated model's.
    from matchsig import CrossEncoder

    pairs = [("q1", "j1"), ("q2", "u3")]
    texts_q = {"q1": "cat flea life cycle", "q2": "what is an axon"}
    texts_d = {"j1": "judged passage j1 about fleas and axons", "u3": "unjudged candidate u3"}
    direct = CrossEncoder.load(tiny_model).score([texts_q[q] for q, _ in pairs], [texts_d[d] for _, d in pairs],
                                                 ablation="D<-D")
    got = {(d.query_id, d.doc_id): d.score for d in written}
    assert [got[p] for p in pairs] == pytest.approx(direct, abs=1e-6)
    table = _cli("rerank", "--model", tiny_model, "--dataset", str(folder), "--passages", str(tmp_path / "extra.tsv"),
                 "--run", str(run_file), "--out", str(tmp_path / "t.txt"))
    assert table.returncode == 0 and "unjudged candidates" in table.stdout and "3 (count as non-relevant)" in table.stdout
    assert "1 query of the run has no judgments" in table.stderr


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "bad --top-k 0"),
    (["--top-k", "many"], "bad --top-k 'many'"),
    (["--ablation", "X<-D"], "bad --ablation 'X<-D': unknown part 'X'"),
    (["--measure", "nDCG@@"], "unknown measure"),
    (["--no-passages"], "has no text in collection"),
    (["--bad-run"], "expected 6 columns"),
    (["--missing-run"], "does not exist"),
    (["--empty-run"], "is empty"),
    (["--unknown-qid"], "run.txt:11: query 'q9' is not in collection"),
])
def test_cli_rerank_errors_are_one_line_exit_2(folder, run_file, tmp_path, tiny_model, args, message):
    base = ["rerank", "--model", tiny_model, "--dataset", str(folder), "--run", str(run_file),
            "--passages", str(tmp_path / "extra.tsv"), "--out", str(tmp_path / "o.txt")]
    if args == ["--no-passages"]:
        base.remove("--passages"), base.remove(str(tmp_path / "extra.tsv"))
        args = []
    elif args == ["--bad-run"]:
        (tmp_path / "bad.txt").write_text("q1 Q0 j1 1\n", encoding="utf-8")
        base[base.index(str(run_file))] = str(tmp_path / "bad.txt")
        args = []
    elif args == ["--missing-run"]:
        base[base.index(str(run_file))] = str(tmp_path / "missing.txt")
        args = []
    elif args == ["--empty-run"]:
        run_file.write_text("\n", encoding="utf-8")
        args = []
    elif args == ["--unknown-qid"]:
        run_file.write_text(RUN + "q9 Q0 j1 1 1.0 bm25\n", encoding="utf-8")
        args = []
    res = _cli(*base, *args)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("matchsig: error:") and message in res.stderr


def test_ablate_and_layers_on_the_rerank_protocol(folder, run_file, tmp_path, tiny_model):
    out = tmp_path / "abl"
    common = ["--model", tiny_model, "--dataset", str(folder), "--run", str(run_file), "--top-k", "4",
              "--passages", str(tmp_path / "extra.tsv"), "--out", str(out)]
    res = _cli("ablate", *common)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    main = summary["pools"]["main"]
    assert main["protocol"] == "rerank" and main["unjudged"] == 2 and main["judged"] == 6 and main["pairs"] == 8
    assert main["unevaluated_queries"] == 1 and main["top_k"] == 4
    caption = (out / "table1.md").read_text().splitlines()[0]
    assert "re-ranking the top 4 of run run.txt" in caption and "2 of them unjudged" in caption
    # Independent: every Table-1 cell from the raw scores, through ir_measures on the qrels file.
    raw = pd.read_csv(out / "table1_scores.csv", dtype={"qid": str, "docid": str})
    table = pd.read_csv(out / "table1.csv")
    qrels = _qrels(folder)
    per_config = {}
    for label in ("none", "D<-D", "Q<-D", "SEP2<-*"):
        # Configurations without ties (CLS<-* makes every score equal: tie rules differ by design).
        assert raw.groupby("qid")[label].nunique().tolist() == raw.groupby("qid").size().tolist(), label
        scored = {}
        for q, d, s in zip(raw["qid"], raw["docid"], raw[label]):
            scored.setdefault(q, {})[d] = float(s)
        per_config[label] = _per_query(NDCG10, qrels, scored)
        assert set(per_config[label]) == {"q1", "q2"}
        value = float(table.loc[table.ablation == label, "ndcg@10"].iloc[0])
        assert value == pytest.approx(np.mean(list(per_config[label].values())), abs=1e-12)
    res = _cli("layers", *common)
    assert res.returncode == 0, res.stderr
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers["layer"]) == {0, 1} and len(layers) == 2 * 11
    # The last layer of a curve cuts all layers: the same as Table 1's cell.
    all_layers = layers[(layers.direction == "D<-D") & (layers.layer == 1)]["ndcg@10"].iloc[0]
    assert all_layers == pytest.approx(float(table.loc[table.ablation == "D<-D", "ndcg@10"].iloc[0]), abs=1e-6)
    report = (out / "report.html").read_text()
    assert "Re-ranking protocol" in report and "<b>2</b> unjudged" in report
    from matchsig.experiments.plots import _pool_text
    from matchsig.analysis.runfolder import RunFolder as FinishedRun

    assert "re-ranking the top 4 of run.txt (2 unjudged)" in _pool_text(FinishedRun(out))  # figure titles


def test_run_options_are_checked(folder, run_file, tmp_path, tiny_model):
    res = _cli("ablate", "--model", tiny_model, "--dataset", str(folder), "--top-k", "5", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "--top-k and --passages go with --run" in res.stderr
    res = _cli("contrast", "--model", tiny_model, "--dataset", str(folder), "--run", str(run_file), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "contrast uses sampled pools" in res.stderr and res.stderr.count("\n") == 1
    res = _cli("ablate", "--model", tiny_model, "--dataset", str(folder), "--dataset", "demo", "--run", str(run_file),
               "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "over one dataset" in res.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 j1 1 2.0 t\nq1 Q0 j2 x 1.0 t\n", encoding="utf-8")
    res = _cli("layers", "--model", tiny_model, "--dataset", str(folder), "--run", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "bad.txt:2: rank 'x' is not an integer" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()  # checked before a run folder is written
