"""Re-ranking a TREC run with a cross-encoder (``matchsig rerank``): the run's top ``k`` candidates
scored, optionally ablated, and evaluated against the input run (same queries, same candidates)
with a paired t-test per measure. The run, its re-ranking pool and the protocol are
:mod:`matchsig.data.runs`.

Input and output are evaluated the same way, tie-aware (:func:`matchsig.data.evaluation.evaluate_scores`:
the expected value over the orders of tied candidates): the input on the run's own scores, which tie
only when equal as written (``rtol`` 0), the output on the model's ranking keys with the package's fp32
tolerance. A 2-label model's scores, log P(relevant) in fp32, round to exactly 0 for logit gaps above
~16.6, so the output is ranked by the logit difference (same order, no saturation) while the run file
and the JSON still report log P(relevant). ``ties`` counts the tied candidates of both sides. The
trec_eval view of the input (ir_measures on the file, ties broken by the backend) is kept beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Collection
from ..data.evaluation import TIE_RTOL, evaluate_scores, parse_measures, tie_groups
from ..data.runs import RunPool, TrecRun, evaluate_run, pool_from_run
from ..errors import MatchsigError
from .significance import paired_ttest

__all__ = ["RerankResult", "rerank", "tie_counts"]


def tie_counts(pool: RunPool, keys: np.ndarray, rtol: float) -> dict[str, int]:
    """Tied candidates (in groups of two or more), tie groups and queries with a tie, by the evaluation's rule."""
    by_query: dict[str, list[float]] = {}
    for row, key in zip(pool.rows, np.asarray(keys, float)):
        by_query.setdefault(row.qid, []).append(float(key))
    tied = groups = queries = 0
    for values in by_query.values():
        sizes = np.bincount(tie_groups(np.sort(np.asarray(values))[::-1], rtol))
        big = sizes[sizes > 1]
        tied, groups, queries = tied + int(big.sum()), groups + len(big), queries + int(len(big) > 0)
    return {"tied_candidates": tied, "tie_groups": groups, "queries_with_ties": queries, "rtol": rtol}


@dataclass
class RerankResult:
    """A re-ranked run and its evaluation against the input run (same queries, same candidates)."""

    pool: RunPool  # every query of the cut run (judged or not), in pool order
    scores: np.ndarray  # one per pool row
    input_per_query: dict[str, dict[str, float]]
    output_per_query: dict[str, dict[str, float]]
    tests: dict[str, Any]  # measure -> TTest (output vs input)
    seconds: float
    evaluated_queries: int
    unevaluated: tuple[str, ...]
    unjudged: int  # unjudged candidates among the evaluated queries
    ablation: str = "none"
    keys: np.ndarray | None = None  # the ranking keys (2 labels: logit difference), None: the scores
    ties: dict[str, Any] | None = None  # tie_counts of the input run and of the output
    input_trec_eval: dict[str, float] | None = None  # ir_measures on the input file (its own tie order)

    @staticmethod
    def _mean(values: Mapping[str, float]) -> float:
        return float(np.mean(list(values.values()))) if values else float("nan")

    @property
    def input_mean(self) -> dict[str, float]:
        return {m: self._mean(v) for m, v in self.input_per_query.items()}

    @property
    def output_mean(self) -> dict[str, float]:
        return {m: self._mean(v) for m, v in self.output_per_query.items()}

    @property
    def pairs_per_second(self) -> float | None:
        return len(self.pool) / self.seconds if self.seconds > 0 else None

    def write(self, path: str | Path, run_name: str = "matchsig") -> Path:
        """Write the re-ranked candidates as a TREC run (best first, ties by docid)."""
        from ..data.evaluation import write_trec_run

        return write_trec_run(path, self.pool, self.scores, run_name=run_name, keys=self.keys)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            **self.pool.describe(),
            "ablation": self.ablation,
            "evaluated_queries": self.evaluated_queries,
            "unevaluated_queries": list(self.unevaluated),
            "unjudged": self.unjudged,
            "input": self.input_mean,
            "output": self.output_mean,
            "tests": {m: {"statistic": t.statistic, "p_value": t.pvalue, "mean_diff": t.mean_diff, "n": t.n}
                      for m, t in self.tests.items()},
            "evaluation": "tie-aware, input and output (input ties: equal scores; output ties: the model's keys "
                          f"within rtol {TIE_RTOL:g}); input_trec_eval: ir_measures on the input file",
            "ties": self.ties,
            "input_trec_eval": self.input_trec_eval,
            "seconds": self.seconds,
            "pairs_per_second": self.pairs_per_second,
            "per_query": {"input": self.input_per_query, "output": self.output_per_query},
        }


def rerank(
    encoder: Any,
    run: TrecRun,
    collection: Collection,
    top_k: int | None = 100,
    ablation: Any = None,
    measures: Iterable[object] | str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> RerankResult:
    """Re-rank the top-``top_k`` candidates of ``run`` with ``encoder`` (optionally ablated).

    Every query of the run is re-ranked; queries with judgments are evaluated (input run vs
    re-ranked, same candidates, full qrels, unjudged = non-relevant) with a paired t-test per
    measure (:func:`matchsig.analysis.significance.paired_ttest`, re-ranked minus input).
    """
    parsed = parse_measures(measures)  # fail on a typo before scoring
    pool = pool_from_run(run, collection, top_k, judged_only=False)
    started = time.perf_counter()
    scores, keys = _score(encoder, pool, ablation, batch_size, progress)
    seconds = time.perf_counter() - started

    judged = [i for i, r in enumerate(pool.rows) if collection.qrels.get(r.qid)]
    unevaluated = tuple(q for q in pool.qids if not collection.qrels.get(q))
    if not judged:
        raise MatchsigError(f"no query of run {run.path} has judgments in collection {collection.name!r}")
    sub = RunPool(tuple(pool.rows[i] for i in judged), collection, pool.dataset, per_grade=None,
                  run=pool.run, top_k=top_k, run_fingerprint=pool.run_fingerprint,
                  judgments={q: v for q, v in pool.judgments.items() if collection.qrels.get(q)})
    ranked = scores if keys is None else keys
    output = evaluate_scores(sub, ranked[judged], parsed).per_query
    given = run.top(top_k).scored()
    input_scores = np.array([given[r.qid][r.docid] for r in sub.rows], float)
    input_ = evaluate_scores(sub, input_scores, parsed, rtol=0.0).per_query
    trec_eval = {m: float(np.mean(list(v.values()))) for m, v in evaluate_run(run.top(top_k), sub, parsed).items()}
    tests = {m: paired_ttest(output[m], input_[m]) for m in output}
    label = "none" if ablation is None else str(ablation)
    ties = {"input": tie_counts(sub, input_scores, 0.0), "output": tie_counts(sub, ranked[judged], TIE_RTOL),
            "ranked_by": "logit difference" if keys is not None else "score"}
    return RerankResult(pool, scores, input_, output, tests, seconds, len(sub.qids), unevaluated, sub.unjudged, label,
                        keys, ties, trec_eval)


def _score(encoder: Any, pool: RunPool, ablation: Any, batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The reported scores and, for a 2-label CrossEncoder, the ranking keys of the same forwards."""
    queries, documents = pool.pairs()
    if getattr(encoder, "num_labels", None) == 2 and hasattr(encoder, "margins_from_logits"):
        margins = np.zeros((1, len(queries)))
        scores = encoder.score_many(queries, documents, [ablation], batch_size=batch_size, progress=progress,
                                    margins=margins)[0]
        return np.asarray(scores, np.float64), margins[0]
    scores = encoder.score(queries, documents, ablation=ablation, batch_size=batch_size, progress=progress)
    return np.asarray(scores, dtype=np.float64), None
