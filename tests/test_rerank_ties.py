"""`rerank` evaluates input and output the same way (tie-aware), reports its ties, ranks 2-label scores by
the logit difference, and counts a query without a relevant passage as nDCG 0 (trec_eval's convention for
a judged query). Every number is re-derived with ir_measures over the orders of tied candidates."""

from __future__ import annotations

import itertools
from pathlib import Path

import ir_measures
import numpy as np
import pytest

from matchsig.analysis.rerank import rerank
from matchsig.data.datasets import read_folder
from matchsig.data.evaluation import evaluate_scores
from matchsig.data.runs import pool_from_run, read_trec_run

NDCG10 = ir_measures.nDCG @ 10


@pytest.fixture()
def folder(tmp_path) -> Path:
    """q1 and q2 with relevant passages; q4 judged, but with no relevant passage (every grade 0)."""
    d = tmp_path / "col"
    d.mkdir()
    (d / "queries.tsv").write_text("q1\tcat flea\nq2\taxon\nq4\tnothing relevant\n", encoding="utf-8")
    (d / "qrels.txt").write_text("q1 0 a 3\nq1 0 b 0\nq1 0 c 1\nq2 0 d 2\nq2 0 e 0\nq2 0 f 1\nq4 0 g 0\nq4 0 h 0\n",
                                 encoding="utf-8")
    (d / "passages.tsv").write_text("".join(f"{p}\tpassage {p}\n" for p in "abcdefgh"), encoding="utf-8")
    return d


#: q1: b and a tie exactly in the input run (the backend breaks the tie its own way); q2 no tie.
RUN = """q1 Q0 b 1 5.0 bm25
q1 Q0 a 2 5.0 bm25
q1 Q0 c 3 4.0 bm25
q2 Q0 e 1 3.0 bm25
q2 Q0 d 2 2.0 bm25
q2 Q0 f 3 1.0 bm25
q4 Q0 g 1 2.0 bm25
q4 Q0 h 2 1.0 bm25
"""


@pytest.fixture()
def run_file(tmp_path) -> Path:
    path = tmp_path / "run.txt"
    path.write_text(RUN, encoding="utf-8")
    return path


def _ndcg(qrels, run: dict) -> dict[str, float]:
    out = {q: 0.0 for q in run}
    for m in ir_measures.iter_calc([NDCG10], qrels, run):
        out[m.query_id] = m.value
    return out


def _tie_aware(qrels, groups: dict[str, list[list[str]]]) -> dict[str, float]:
    """Expected nDCG@10 over every order of each tie group (groups best first), by brute force with ir_measures."""
    out = {}
    for qid, tied in groups.items():
        values = []
        for orders in itertools.product(*(itertools.permutations(g) for g in tied)):
            docs = [d for group in orders for d in group]
            values.append(_ndcg(qrels, {qid: {d: float(len(docs) - i) for i, d in enumerate(docs)}})[qid])
        out[qid] = float(np.mean(values))
    return out


class Saturated:
    """A 2-label model whose fp32 log P(relevant) rounds to 0 for confident pairs: the scores it reports tie,
    its logit differences do not."""

    name = "saturated"
    num_labels = 2
    MARGINS = {"a": 30.0, "b": 20.0, "c": 25.0, "d": 18.0, "e": 40.0, "f": -1.0, "g": 3.0, "h": 2.0}

    def margins_from_logits(self, logits):  # the engine's method exists: rerank asks for margins
        raise AssertionError("not called by the fake")

    def score_many(self, queries, documents, ablations, batch_size=32, progress=False, margins=None):
        m = np.array([self.MARGINS[d.split()[-1]] for d in documents])
        if margins is not None:
            margins[0] = m
        return _log_p(m)[None, :]


def _log_p(margins) -> np.ndarray:
    """log P(relevant) as the engine computes it: fp32 log-softmax of logits (0, margin): exactly 0 above ~16.6."""
    import torch

    logits = torch.stack([torch.zeros(len(margins)), torch.tensor(margins, dtype=torch.float32)], dim=1)
    return torch.log_softmax(logits, dim=-1)[:, 1].numpy().astype(np.float64)


def test_input_and_output_are_tie_aware_and_ties_are_reported(folder, run_file):
    qrels = list(ir_measures.read_trec_qrels(str(folder / "qrels.txt")))
    result = rerank(Saturated(), read_trec_run(run_file), read_folder(folder), top_k=None, measures=["nDCG@10"])
    saturated = [r.docid for r, s in zip(result.pool.rows, result.scores) if s == 0.0]
    assert set(saturated) == {"a", "b", "c", "d", "e"}  # the reported scores saturate ...
    # ... the ranking does not: by logit difference, q1: a c b, q2: e d f, q4: g h
    out = result.output_per_query["nDCG@10"]
    expected = _ndcg(qrels, {"q1": {"a": 3, "c": 2, "b": 1}, "q2": {"e": 3, "d": 2, "f": 1}, "q4": {"g": 2, "h": 1}})
    assert out == pytest.approx(expected, abs=1e-12)
    # the input, tie-aware: q1's a and b tie exactly (the expected value over both orders)
    inp = result.input_per_query["nDCG@10"]
    exact = _tie_aware(qrels, {"q1": [["a", "b"], ["c"]], "q2": [["e"], ["d"], ["f"]], "q4": [["g"], ["h"]]})
    assert inp == pytest.approx(exact, abs=1e-12)
    trec_eval = _ndcg(qrels, {q: d for q, d in read_trec_run(run_file).scored().items()})
    assert result.input_trec_eval["nDCG@10"] == pytest.approx(np.mean(list(trec_eval.values())), abs=1e-12)
    assert result.ties["input"]["tied_candidates"] == 2 and result.ties["input"]["queries_with_ties"] == 1
    assert result.ties["output"]["tied_candidates"] == 0 and result.ties["ranked_by"] == "logit difference"
    payload = result.to_dict()
    assert payload["ties"] == result.ties and "tie-aware" in payload["evaluation"]


def test_written_run_orders_by_margin_and_reports_log_p(folder, run_file, tmp_path):
    result = rerank(Saturated(), read_trec_run(run_file), read_folder(folder), top_k=None, measures=["nDCG@10"])
    out = result.write(tmp_path / "out.txt", "sat")
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [p[2] for p in lines if p[0] == "q1"] == ["a", "c", "b"]
    margins = Saturated.MARGINS
    for p in lines:  # the score column: log P(relevant) in fp32, as the model reports it
        assert float(p[4]) == _log_p([margins[p[2]]])[0]


def test_a_query_without_relevant_passage_scores_zero_and_counts(folder, run_file):
    qrels = list(ir_measures.read_trec_qrels(str(folder / "qrels.txt")))
    pool = pool_from_run(read_trec_run(run_file), read_folder(folder))
    assert "q4" in pool.qids
    scores = np.arange(len(pool.rows), dtype=float)[::-1]
    result = evaluate_scores(pool, scores, ["nDCG@10"])
    assert result.per_query["nDCG@10"]["q4"] == 0.0
    by_ir = _ndcg(qrels, {q: {d: float(s) for (qq, d), s in zip(((r.qid, r.docid) for r in pool.rows), scores) if qq == q}
                          for q in pool.qids})
    assert by_ir["q4"] == 0.0
    # the mean counts q4 (3 queries), as trec_eval -c does for a judged query
    assert result.mean["nDCG@10"] == pytest.approx(sum(by_ir.values()) / 3, abs=1e-12)


def test_engine_margins_order_as_float64_log_probabilities():
    from types import SimpleNamespace

    import torch

    from matchsig.engine.model import CrossEncoder

    logits = torch.tensor([[0.0, 30.0], [1.0, 20.0], [-3.0, 25.0], [2.0, 1.0], [0.5, 0.5]])
    two = SimpleNamespace(num_labels=2)
    margins = CrossEncoder.margins_from_logits(two, logits)
    scores = CrossEncoder.scores_from_logits(two, logits)
    x = logits.numpy().astype(np.float64)
    log_p = x[:, 1] - np.logaddexp(x[:, 0], x[:, 1])  # float64 log-softmax: no saturation at these gaps
    assert np.argsort(-margins, kind="stable").tolist() == np.argsort(-log_p, kind="stable").tolist()
    assert (scores[:3] == 0.0).all()  # fp32 log-softmax ties the three confident pairs
    one = SimpleNamespace(num_labels=1)
    assert CrossEncoder.margins_from_logits(one, logits[:, :1]).tolist() == x[:, 0].tolist()
