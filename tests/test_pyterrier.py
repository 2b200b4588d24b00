"""PyTerrier components, offline and without Java: a real pt.Experiment against `matchsig evaluate`."""

from __future__ import annotations

import json

import ir_measures
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import pyterrier as pt  # the test extra installs it: a missing PyTerrier fails here rather than skipping

from matchsig.cli import app  # noqa: E402
from matchsig.data.datasets import load_collection  # noqa: E402
from matchsig.errors import MatchsigError  # noqa: E402
from matchsig.data.evaluation import evaluate_scores  # noqa: E402
from matchsig.pyterrier import (  # noqa: E402
    CrossEncoderScorer,
    evaluate,
    qrels_frame,
    run_frame,
    scores_for_pool,
    to_pyterrier,
    topics_frame,
)
from matchsig.data.runs import read_trec_run  # noqa: E402
from matchsig.data.sampling import sample_pool  # noqa: E402

NDCG10 = ir_measures.nDCG @ 10


@pytest.fixture(scope="module")
def scorer() -> CrossEncoderScorer:
    return CrossEncoderScorer("embedded", batch_size=16)


@pytest.fixture(scope="module")
def demo():
    return load_collection("demo")


def test_pt_experiment_equals_matchsig_evaluate(scorer, demo):
    """pt.Experiment's nDCG@10 on a sampled pool = `matchsig evaluate` on the same pool (same fingerprint)."""
    result = CliRunner().invoke(app, ["evaluate", "--model", "embedded", "--dataset", "demo", "--per-grade", "1",
                                      "--seed", "7", "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout.strip().splitlines()[-1])
    pool = sample_pool(demo, per_grade=1, seed=7)
    assert pool.fingerprint == cli["sample_fingerprint"] and len(pool) == cli["pairs"]
    data = pool.to_pyterrier()
    assert data.topics["qid"].tolist() == pool.qids and len(data.qrels) == len(pool)
    frame = pt.Experiment([data.source >> scorer], data.topics, data.qrels, [NDCG10], names=["embedded"],
                          perquery=True)
    per_query = dict(zip(frame["qid"], frame["value"]))
    res = (data.source >> scorer).transform(data.topics)
    # The comparison is exact only without ties (tie rules differ, see the module doc): none here.
    assert (res.groupby("qid")["score"].nunique() == res.groupby("qid").size()).all()
    assert set(per_query) == set(cli["per_query"]["nDCG@10"])
    for qid, value in cli["per_query"]["nDCG@10"].items():
        assert per_query[qid] == pytest.approx(value, abs=1e-9)
    assert np.mean(list(per_query.values())) == pytest.approx(cli["ndcg@10"], abs=1e-9)
    assert evaluate(res, pool)["nDCG@10"] == pytest.approx(cli["ndcg@10"], abs=1e-9)
    assert not pt.java.started()  # nothing here needs (or started) Terrier's Java side


def test_ablated_variants_share_the_model_and_compose(scorer, demo):
    pool = sample_pool(demo, per_grade=1, qids=["19335", "47923", "87181"])
    data = to_pyterrier(pool)
    variants = [scorer, scorer.ablated("D<-D"), scorer.ablated("CLS<-*")]
    assert all(v.encoder is scorer.encoder for v in variants)  # no reload
    assert repr(variants[1]) == "CrossEncoderScorer('embedded', ablation='D<-D')"
    frame = pt.Experiment([data.source >> v for v in variants], data.topics, data.qrels, [NDCG10], baseline=0,
                          names=["none", "D<-D", "CLS<-*"])
    per_query = pt.Experiment([data.source >> v for v in variants], data.topics, data.qrels, [NDCG10],
                              names=["none", "D<-D", "CLS<-*"], perquery=True)
    queries, documents = pool.pairs()
    values = {}
    for name, spec in (("none", None), ("D<-D", "D<-D"), ("CLS<-*", "CLS<-*")):
        direct = scorer.encoder.score(queries, documents, ablation=spec, batch_size=4)
        got = scores_for_pool((data.source >> scorer.ablated(spec)).transform(data.topics), pool)
        # the transformer scores what the model scores (other batches: fp32 rounding, 1e-6 relative or absolute)
        assert got == pytest.approx(direct, rel=1e-6, abs=1e-6)
        rows = per_query[per_query.name == name]
        values[name] = dict(zip(rows["qid"], rows["value"]))
        assert float(frame.loc[frame.name == name, "nDCG@10"].iloc[0]) == pytest.approx(np.mean(list(values[name].values())), abs=1e-12)
        # Independent: ir_measures on the frame's scores, with PyTerrier's tie rule (docno descending).
        # (CLS<-* leaves every score equal up to float noise, so the frame's own scores are used.)
        run = {}
        for row, s in zip(pool.rows, got):
            run.setdefault(row.qid, {})[row.docid] = float(s)
        ref = {m.query_id: m.value for m in ir_measures.iter_calc([NDCG10], pool.qrels(), _untie_docno_desc(run))}
        assert values[name] == pytest.approx(ref, abs=1e-12), name
    qids = sorted(values["none"])
    for name in ("D<-D", "CLS<-*"):
        t = stats.ttest_rel([values[name][q] for q in qids], [values["none"][q] for q in qids])
        assert float(frame.loc[frame.name == name, "nDCG@10 p-value"].iloc[0]) == pytest.approx(t.pvalue, abs=1e-9)


def _untie_docno_desc(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Rank-derived scores: score descending, ties by docno descending (trec_eval's documented rule)."""
    out = {}
    for qid, docs in run.items():
        order = sorted(sorted(docs, reverse=True), key=lambda d: -docs[d])  # stable: docno order within ties
        out[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    return out


class TiedEncoder:
    name = "tied"

    def score(self, queries, documents, ablation=None, batch_size=32, progress=False):
        return np.zeros(len(queries))


def test_ties_pyterrier_orders_by_docno_descending_matchsig_by_its_own_rule(demo):
    """All scores equal: PyTerrier's number is the docno-descending ranking's; `evaluate` gives matchsig's."""
    pool = sample_pool(demo, per_grade=2, qids=["19335", "47923"])
    data = to_pyterrier(pool)
    tied = CrossEncoderScorer(TiedEncoder())
    frame = pt.Experiment([data.source >> tied], data.topics, data.qrels, [NDCG10], perquery=True)
    got = dict(zip(frame["qid"], frame["value"]))
    by_docno_desc = {}
    for row in pool.rows:
        by_docno_desc.setdefault(row.qid, []).append(row.docid)
    run = {q: {d: float(i) for i, d in enumerate(sorted(ds))} for q, ds in by_docno_desc.items()}  # z..a best first
    ref = {m.query_id: m.value for m in ir_measures.iter_calc([NDCG10], pool.qrels(), run)}
    assert got == pytest.approx(ref, abs=1e-12)
    res = (data.source >> tied).transform(data.topics)
    ours = evaluate(res, pool)
    assert ours.mean == evaluate_scores(pool, np.zeros(len(pool))).mean  # matchsig's tie rule, whatever it is
    assert ours.sample_fingerprint == pool.fingerprint


def test_missing_columns_are_one_line_errors(scorer, demo):
    frame = pd.DataFrame({"qid": ["1"], "query": ["q"], "docno": ["d"], "text": ["t"]})
    for column in ("qid", "query", "docno", "text"):
        with pytest.raises(MatchsigError) as err:
            scorer.transform(frame.drop(columns=[column]))
        message = str(err.value)
        assert f"no {column!r} column" in message and "\n" not in message
    body = CrossEncoderScorer(scorer.encoder, text_field="body")
    with pytest.raises(MatchsigError, match="no 'body' column"):
        body.transform(frame)
    out = body.transform(frame.rename(columns={"text": "body"}).assign(score=5.0, rank=9))
    assert out["score"].iloc[0] == pytest.approx(scorer.encoder.score(["q"], ["t"])[0], abs=1e-6) and out["rank"].iloc[0] == 0
    empty = scorer.transform(frame.iloc[:0])
    assert list(empty.columns)[-2:] == ["score", "rank"] and len(empty) == 0
    with pytest.raises(MatchsigError, match="expects a pandas DataFrame"):
        scorer.transform([1, 2])
    with pytest.raises(MatchsigError, match="bad batch_size"):
        CrossEncoderScorer(scorer.encoder, batch_size=0)
    with pytest.raises(MatchsigError, match="unknown part 'X'"):
        scorer.ablated("X<-D")
    with pytest.raises(MatchsigError, match="has no score for query"):
        scores_for_pool(frame.assign(score=1.0), sample_pool(demo, per_grade=1, qids=["19335"]))
    with pytest.raises(MatchsigError, match="expects a matchsig Pool or Collection"):
        to_pyterrier("demo")


def test_collection_and_run_frames(demo, tmp_path):
    data = demo.to_pyterrier()
    assert data.results is None and len(data.topics) == 43 and len(data.qrels) == demo.num_judgments
    assert data.topics.set_index("qid")["query"].to_dict() == {q: demo.queries[q] for q in demo.judged_qids()}
    q = qrels_frame(demo)
    assert int(q.loc[(q.qid == "19335") & (q.docno == "3175481"), "label"].iloc[0]) == demo.qrels["19335"]["3175481"]
    assert set(data.texts["docno"]) == {d for docs in demo.qrels.values() for d in docs}
    with pytest.raises(MatchsigError, match="no candidates to re-rank"):
        data.source
    assert topics_frame(sample_pool(demo, per_grade=1, qids=["47923"]))["qid"].tolist() == ["47923"]
    path = tmp_path / "run.txt"
    path.write_text("19335 Q0 8412684 2 1.5 x\n19335 Q0 3175481 1 2.5 x\n19335 Q0 1017759 3 0.5 x\n", encoding="utf-8")
    frame = run_frame(read_trec_run(path), demo, top_k=2)
    assert frame["docno"].tolist() == ["3175481", "8412684"] and frame["rank"].tolist() == [0, 1]
    assert frame["text"].tolist() == [demo.doc_text("3175481"), demo.doc_text("8412684")]
    path.write_text("19335 Q0 nope 1 1 x\n", encoding="utf-8")
    with pytest.raises(MatchsigError, match=r"run.txt:1: passage 'nope' has no text"):
        run_frame(read_trec_run(path), demo)


def test_ranks_without_pyterriers_pandas_warning(scorer, demo, tmp_path):
    """run_frame and the scorer add PyTerrier's ranks without the pandas deprecation warning (``inplace``,
    pandas >= 3.1) that PyTerrier 1.x's add_ranks raises."""
    import warnings

    path = tmp_path / "run.txt"
    path.write_text("19335 Q0 8412684 2 1.5 x\n19335 Q0 3175481 1 2.5 x\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = run_frame(read_trec_run(path), demo)
        ranked = scorer.transform(frame)
    assert frame["rank"].tolist() == [0, 1] and sorted(ranked["rank"]) == [0, 1]
    assert not [w for w in caught if "inplace" in str(w.message)]
