"""Re-ranking a TREC run with a cross-encoder (``matchsig rerank``): the run's top ``k`` candidates
scored, optionally ablated, and evaluated against the input run (same queries, same candidates)
with a paired t-test per measure. The run, its re-ranking pool and the protocol are
:mod:`matchsig.data.runs`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Collection
from ..data.evaluation import evaluate_scores, parse_measures
from ..data.runs import RunPool, TrecRun, evaluate_run, pool_from_run
from ..errors import MatchsigError
from .significance import paired_ttest

__all__ = ["RerankResult", "rerank"]


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

        return write_trec_run(path, self.pool, self.scores, run_name=run_name)

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
    queries, documents = pool.pairs()
    started = time.perf_counter()
    scores = np.asarray(encoder.score(queries, documents, ablation=ablation, batch_size=batch_size, progress=progress),
                        dtype=np.float64)
    seconds = time.perf_counter() - started

    judged = [i for i, r in enumerate(pool.rows) if collection.qrels.get(r.qid)]
    unevaluated = tuple(q for q in pool.qids if not collection.qrels.get(q))
    if not judged:
        raise MatchsigError(f"no query of run {run.path} has judgments in collection {collection.name!r}")
    sub = RunPool(tuple(pool.rows[i] for i in judged), collection, pool.dataset, per_grade=None,
                  run=pool.run, top_k=top_k, run_fingerprint=pool.run_fingerprint,
                  judgments={q: v for q, v in pool.judgments.items() if collection.qrels.get(q)})
    output = evaluate_scores(sub, scores[judged], parsed).per_query
    input_ = evaluate_run(run.top(top_k), sub, parsed)
    tests = {m: paired_ttest(output[m], input_[m]) for m in output}
    label = "none" if ablation is None else str(ablation)
    return RerankResult(pool, scores, input_, output, tests, seconds, len(sub.qids), unevaluated, sub.unjudged, label)
