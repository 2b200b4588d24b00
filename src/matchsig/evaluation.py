"""Ranking metrics on sampled pools, through ir_measures; the random-ranking baseline; TREC runs.

Conventions (SPEC §3):

* gains are the grades, and easy negatives (grade -1) count as gain 0;
* the ideal DCG comes from the grades of the *sampled pool*, not from all qrels: the qrels given
  to ir_measures are the pool's own rows (on DL19 both give 0.431 for a cap of 20, see the data
  README, but only the pool's grades are right for easy negatives and small caps);
* ties in scores are broken by docid (ascending string order), so a ranking never depends on the
  order the pairs were scored in or on the metric backend's own tie rule. To make that hold, the
  run handed to ir_measures carries rank-derived scores (``n - rank``), never the raw ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MatchsigError
from .sampling import Pool, query_rng

__all__ = [
    "DEFAULT_MEASURES",
    "Evaluation",
    "RandomBaseline",
    "evaluate_scores",
    "ndcg_at_k",
    "parse_measures",
    "random_baseline",
    "rank",
    "write_trec_run",
]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10",)


def parse_measures(measures: Iterable[object] | str | None = None) -> list:
    """ir_measures Measure objects from names like ``"nDCG@10"`` or ``"RR(rel=2)@10"``."""
    import ir_measures

    if measures is None:
        measures = DEFAULT_MEASURES
    if isinstance(measures, str):
        measures = [measures]
    parsed = []
    for measure in measures:
        if not isinstance(measure, str):
            parsed.append(measure)  # already a Measure
            continue
        try:
            parsed.append(ir_measures.parse_measure(measure.strip()))
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError):
            raise MatchsigError(f"unknown measure {measure!r} (ir_measures syntax, e.g. nDCG@10, RR@10, P(rel=2)@10)") from None
    if not parsed:
        raise MatchsigError("no measure given")
    return parsed


def rank(pool: Pool, scores: Sequence[float] | np.ndarray) -> dict[str, list[tuple[str, float]]]:
    """Per query, [(docid, score)] best first; ties broken by docid ascending (see module doc)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pool.rows):
        raise MatchsigError(f"got {len(scores)} scores for a pool of {len(pool.rows)} pairs")
    if np.isnan(scores).any():
        raise MatchsigError("scores contain NaN")
    ranked: dict[str, list[tuple[str, float]]] = {}
    for row, score in zip(pool.rows, scores):
        ranked.setdefault(row.qid, []).append((row.docid, float(score)))
    for qid, docs in ranked.items():
        docs.sort(key=lambda item: (-item[1], item[0]))
    return ranked


def _tie_free_run(ranked: Mapping[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    return {qid: {docid: float(len(docs) - i) for i, (docid, _) in enumerate(docs)} for qid, docs in ranked.items()}


@dataclass
class Evaluation:
    """Per-query values and means of some measures on one pool.

    ``per_query[name][qid]`` and ``mean[name]`` are keyed by the measure's ir_measures name
    (``"nDCG@10"``); the mean is over every query of the pool (a query whose pool has no gain
    scores 0).
    """

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    sample_fingerprint: str = ""
    pool_settings: dict[str, object] = field(default_factory=dict)

    def __getitem__(self, measure: str) -> float:
        return self.mean[measure]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"mean": self.mean, "per_query": self.per_query, **self.pool_settings}


def evaluate_scores(
    pool: Pool,
    scores: Sequence[float] | np.ndarray,
    measures: Iterable[object] | str | None = None,
) -> Evaluation:
    """Evaluate a model's scores (one per pool row, row order) with ir_measures."""
    import ir_measures

    parsed = parse_measures(measures)
    run = _tie_free_run(rank(pool, scores))
    qrels = pool.qrels()
    per_query: dict[str, dict[str, float]] = {str(m): {qid: 0.0 for qid in pool.qids} for m in parsed}
    for metric in ir_measures.iter_calc(parsed, qrels, run):
        per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    mean = {name: float(np.mean(list(values.values()))) for name, values in per_query.items()}
    return Evaluation(per_query, mean, pool.fingerprint, pool.describe())


# ---- fast nDCG for many rankings ---------------------------------------------------------------


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(gains_in_rank_order: np.ndarray, ideal_gains: np.ndarray, k: int = 10) -> np.ndarray:
    """nDCG@k of rankings given as gain arrays (last axis = rank), linear gains as trec_eval.

    ``ideal_gains`` are the query's gains (any order); a query with no gain scores 0.
    """
    gains = np.asarray(gains_in_rank_order, dtype=np.float64)
    top = gains[..., :k]
    dcg = top @ _discounts(top.shape[-1])
    ideal = np.sort(np.asarray(ideal_gains, dtype=np.float64))[::-1][:k]
    idcg = float(ideal @ _discounts(len(ideal)))
    return dcg / idcg if idcg > 0 else np.zeros_like(dcg)


@dataclass
class RandomBaseline:
    """nDCG@k of random rankings of a pool.

    ``mean`` is the mean over rankings of the mean over queries (the paper's "random ranking"),
    ``sd`` the standard deviation of that per-ranking mean, ``per_query`` each query's expected
    value (mean over rankings).
    """

    mean: float
    sd: float
    per_query: dict[str, float]
    rankings: int
    seed: int
    k: int = 10


def random_baseline(pool: Pool, rankings: int = 1000, seed: int = 0, k: int = 10) -> RandomBaseline:
    """Mean nDCG@k over ``rankings`` uniformly random rankings of each query's pool (vectorised).

    Query ``q``'s rankings come from ``query_rng(seed, q, "random-ranking")``, so the result does
    not depend on query order. Equal to ir_measures' nDCG@k on the same rankings (tested).
    """
    if isinstance(rankings, bool) or not isinstance(rankings, (int, np.integer)) or rankings < 1:
        raise MatchsigError(f"bad number of rankings: {rankings!r} (must be >= 1)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MatchsigError(f"bad cutoff k: {k!r} (must be >= 1)")
    per_ranking = np.zeros(rankings)
    per_query: dict[str, float] = {}
    qrels = pool.qrels()
    for qid, rows in pool.by_query().items():
        gains = np.array([max(r.grade, 0) for r in rows], dtype=np.float64)
        rng = query_rng(seed, qid, "random-ranking")
        shuffled = rng.permuted(np.broadcast_to(gains, (rankings, len(gains))), axis=1)
        # The ideal ranking comes from the pool's qrels: its own rows for a sampled pool, every
        # judgment of the query for a re-ranking pool (matchsig.runs.RunPool).
        values = ndcg_at_k(shuffled, np.fromiter(qrels[qid].values(), dtype=np.float64), k)
        per_ranking += values
        per_query[qid] = float(values.mean())
    per_ranking /= max(len(per_query), 1)
    return RandomBaseline(float(per_ranking.mean()), float(per_ranking.std()), per_query, int(rankings), int(seed), k)


# ---- TREC runs ---------------------------------------------------------------------------------


def write_trec_run(path: str | Path, pool: Pool, scores: Sequence[float] | np.ndarray, run_name: str = "matchsig") -> Path:
    """Write ``qid Q0 docid rank score run_name`` lines, best first, ties broken by docid.

    Scores are written exactly as given; tools that re-rank by score (trec_eval) break ties
    their own way, the rank column keeps ours.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tag = "_".join(run_name.split()) or "matchsig"  # the tag is one whitespace-free column
    with open(path, "w", encoding="utf-8") as fh:
        for qid, docs in rank(pool, scores).items():
            for position, (docid, score) in enumerate(docs, 1):
                fh.write(f"{qid} Q0 {docid} {position} {score!r} {tag}\n")
    return path
