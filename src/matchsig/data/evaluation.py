"""Ranking metrics on sampled pools, tie-aware; the random-ranking baseline; TREC runs.

Conventions (SPEC §3, §6):

* gains are the grades, and easy negatives (grade -1) count as gain 0;
* the ideal DCG comes from the pool's qrels (:meth:`Pool.qrels`): for a sampled pool, the grades of
  the *sampled pool*, not from all qrels; for a re-ranking pool (:class:`matchsig.data.runs.RunPool`),
  every judgment of the query, as trec_eval does (for sampled pools on DL19 both give
  0.431 for a cap of 20, see the data README, but only the pool's grades are right for easy
  negatives and small caps);
* **ties are evaluated exactly, not broken** (McSherry & Najork, "Computing information retrieval
  performance measures efficiently in the presence of tied scores", ECIR 2008): the value reported
  is the expected value of the measure over all orders of the tied passages, equally likely. For
  nDCG@k and P@k each rank inside a tie group gets the group's mean gain (a cutoff inside a group
  keeps the positions above k); RR and AP use the same paper's closed forms. A ranking whose scores
  all tie then scores exactly the random baseline.
* **tie rule**: a query's scores are sorted; a new tie group starts where the gap between two
  neighbours exceeds ``rtol * max(|a|, |b|)`` (:data:`TIE_RTOL` = 1e-6, i.e. scores equal to about
  fp32 precision; exactly equal scores, zeros included, always tie). Groups are chained: a run of
  neighbours each within the tolerance is one group.

Measures with a tie-aware form: ``nDCG`` and ``nDCG@k``, ``P@k``, ``RR`` / ``RR@k``, ``AP`` /
``AP@k`` (any ``rel=`` threshold; ``judged_only`` is accepted, every pooled passage is judged). Any
other ir_measures measure is computed by ir_measures on the ranking with ties broken by docid
(ascending) and is listed in :attr:`Evaluation.tie_broken` so a caller can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MatchsigError
from .sampling import Pool, query_rng

__all__ = [
    "DEFAULT_MEASURES",
    "TIE_RTOL",
    "TIE_RULE",
    "Evaluation",
    "RandomBaseline",
    "evaluate_scores",
    "expected_ndcg",
    "ndcg_at_k",
    "parse_measures",
    "random_baseline",
    "rank",
    "tie_groups",
    "write_trec_run",
]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10",)

#: Relative tolerance under which two scores of a query tie (see the module docstring).
TIE_RTOL = 1e-6
#: The tie rule in words, for reports and summary.json.
TIE_RULE = (
    "tie-aware (McSherry & Najork, ECIR 2008): expected value over all orders of tied passages; "
    "each rank inside a tie group gets the group's mean gain. Scores tie when neighbours in the "
    "sorted list differ by at most 1e-6 x the larger absolute score (chained)."
)


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


def rank(pool: Pool, scores: Sequence[float] | np.ndarray,
         keys: Sequence[float] | np.ndarray | None = None) -> dict[str, list[tuple[str, float]]]:
    """Per query, [(docid, score)] best first (by ``keys`` when given, else by score), ties broken by docid
    ascending.

    For run files and displays, which need one order; measures do not use it (they are tie-aware).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = scores if keys is None else np.asarray(keys, dtype=np.float64).reshape(-1)
    if len(scores) != len(pool.rows) or len(order) != len(pool.rows):
        raise MatchsigError(f"got {len(scores)} scores for a pool of {len(pool.rows)} pairs")
    if np.isnan(scores).any() or np.isnan(order).any():
        raise MatchsigError("scores contain NaN")
    ranked: dict[str, list[tuple[float, str, float]]] = {}
    for row, score, key in zip(pool.rows, scores, order):
        ranked.setdefault(row.qid, []).append((float(key), row.docid, float(score)))
    return {qid: [(d, s) for _, d, s in sorted(docs, key=lambda item: (-item[0], item[1]))]
            for qid, docs in ranked.items()}


def _tie_free_run(ranked: Mapping[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    return {qid: {docid: float(len(docs) - i) for i, (docid, _) in enumerate(docs)} for qid, docs in ranked.items()}


# ---- tie-aware measures (vectorised over all queries of a pool) --------------------------------


@dataclass(frozen=True)
class _Ranked:
    """A pool's rows sorted by (query, score descending), with the tie structure.

    Arrays are indexed by sorted position: ``qidx`` (the query's index in ``qids``), ``pos`` (0-based
    rank inside the query), ``group`` (global tie-group id), ``gains`` (max(grade, 0)).
    """

    qids: list[str]
    qidx: np.ndarray
    pos: np.ndarray
    group: np.ndarray
    gains: np.ndarray
    ideal: list[np.ndarray]  # per query, the gains of its qrels sorted descending (ideal ranking)

    @property
    def nq(self) -> int:
        return len(self.qids)

    def per_query(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.qidx, weights=values, minlength=self.nq)

    def group_mean(self, values: np.ndarray) -> np.ndarray:
        """Each position's expected value under random order inside its tie group: the group's mean."""
        sums = np.bincount(self.group, weights=values)
        counts = np.bincount(self.group)
        return (sums / counts)[self.group]


def _check_scores(pool: Pool, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pool.rows):
        raise MatchsigError(f"got {len(scores)} scores for a pool of {len(pool.rows)} pairs")
    if np.isnan(scores).any():
        raise MatchsigError("scores contain NaN")
    return scores


def _positions(qidx: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its (contiguous) query block."""
    n = len(qidx)
    starts = np.flatnonzero(np.r_[True, qidx[1:] != qidx[:-1]]) if n else np.zeros(0, int)
    block = np.cumsum(np.r_[True, qidx[1:] != qidx[:-1]]) - 1 if n else np.zeros(0, int)
    return np.arange(n) - starts[block]


def tie_groups(scores: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """Tie-group id of each score of *one* ranking given best first (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.cumsum(np.r_[True, _breaks(s[:-1], s[1:], rtol)]) - 1


def _breaks(prev: np.ndarray, cur: np.ndarray, rtol: float) -> np.ndarray:
    """True where ``cur`` (sorted after ``prev``) starts a new tie group."""
    with np.errstate(invalid="ignore"):
        gap = prev - cur
        tol = rtol * np.maximum(np.abs(prev), np.abs(cur))
        infinite = ~np.isfinite(prev) | ~np.isfinite(cur)
        return (prev != cur) & ((gap > tol) | infinite)


def _rank(pool: Pool, scores: np.ndarray, rtol: float) -> _Ranked:
    qids = pool.qids
    index = {q: i for i, q in enumerate(qids)}
    qidx = np.fromiter((index[r.qid] for r in pool.rows), dtype=np.int64, count=len(pool.rows))
    gains = np.fromiter((max(r.grade, 0) for r in pool.rows), dtype=np.float64, count=len(pool.rows))
    order = np.lexsort((-scores, qidx))
    q, s = qidx[order], scores[order]
    new = np.r_[True, (q[1:] != q[:-1]) | _breaks(s[:-1], s[1:], rtol)] if len(s) else np.zeros(0, bool)
    qrels = pool.qrels()
    ideal = [np.sort(np.fromiter(qrels.get(qid, {}).values(), dtype=np.float64))[::-1] for qid in qids]
    return _Ranked(qids, q, _positions(q), np.cumsum(new) - 1, gains[order], ideal)


def _discount(pos: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(pos + 2.0)


def _ndcg(r: _Ranked, k: float) -> np.ndarray:
    top = r.pos < k
    dcg = r.per_query(r.group_mean(r.gains) * _discount(r.pos) * top)
    idcg = np.array([g[: int(min(k, len(g)))] @ _discount(np.arange(int(min(k, len(g))))) for g in r.ideal])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def _precision(r: _Ranked, k: int, rel: int) -> np.ndarray:
    return r.per_query(r.group_mean((r.gains >= rel).astype(float)) * (r.pos < k)) / k


def _group_layout(r: _Ranked, relevant: np.ndarray):
    """Per position: group size t, relevant in group g, offset m inside the group, relevant before the group."""
    sizes = np.bincount(r.group)
    rel_in = np.bincount(r.group, weights=relevant)
    first = np.flatnonzero(np.r_[True, r.group[1:] != r.group[:-1]])  # start index of each group
    offset = np.arange(len(r.group)) - first[r.group]
    before = np.cumsum(relevant) - relevant  # relevant strictly before each position (global)
    query_first = np.flatnonzero(np.r_[True, r.qidx[1:] != r.qidx[:-1]])
    query_block = np.cumsum(np.r_[True, r.qidx[1:] != r.qidx[:-1]]) - 1
    rel_before_group = before[first[r.group]] - before[query_first[query_block]]
    return sizes[r.group].astype(float), rel_in[r.group], offset.astype(float), rel_before_group


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln

    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def _reciprocal_rank(r: _Ranked, k: float, rel: int) -> np.ndarray:
    relevant = (r.gains >= rel).astype(float)
    t, g, m, before = _group_layout(r, relevant)
    # The first group holding a relevant passage decides RR; inside it (t passages, g relevant) the
    # first relevant one is at offset m with probability C(t-m-1, g-1) / C(t, g).
    live = (before == 0) & (g > 0) & (m <= t - g)
    prob = np.zeros(len(t))
    prob[live] = np.exp(_log_comb(t[live] - m[live] - 1, g[live] - 1) - _log_comb(t[live], g[live]))
    return r.per_query(prob / (r.pos + 1.0) * (r.pos < k))


def _average_precision(r: _Ranked, k: float, rel: int) -> np.ndarray:
    relevant = (r.gains >= rel).astype(float)
    t, g, m, before = _group_layout(r, relevant)
    # E[rel(j) * #relevant in ranks 1..j] for the j-th position, offset m in its group.
    within = np.where(t > 1, m * (g - 1) / np.maximum(t - 1, 1), 0.0)
    expected = (g / t) * (before + 1.0 + within) / (r.pos + 1.0) * (r.pos < k)
    total = np.array([(g >= rel).sum() for g in r.ideal], dtype=float)  # relevant in the qrels, as trec_eval
    summed = r.per_query(expected)
    return np.where(total > 0, summed / np.where(total > 0, total, 1.0), 0.0)


def _tie_aware(measure) -> object | None:
    """A function (ranked pool -> per-query values) for measures with a tie-aware form, else None."""
    name = getattr(measure, "NAME", None)
    params = dict(getattr(measure, "params", {}) or {})
    params.pop("judged_only", None)  # every pooled passage is judged: no effect here
    cutoff = params.pop("cutoff", None)
    k = float("inf") if cutoff is None else int(cutoff)
    rel = int(params.pop("rel", 1))
    if params:  # e.g. nDCG(gains=...), nDCG(dcg=exp-log2): leave them to ir_measures
        return None
    if name == "nDCG" and "rel" not in dict(measure.params):
        return lambda r: _ndcg(r, k)
    if name == "P" and cutoff is not None:
        return lambda r: _precision(r, int(cutoff), rel)
    if name == "RR":
        return lambda r: _reciprocal_rank(r, k, rel)
    if name == "AP":
        return lambda r: _average_precision(r, k, rel)
    return None


def expected_ndcg(pool: Pool, scores: Sequence[float] | np.ndarray, k: int = 10, rtol: float = TIE_RTOL) -> dict[str, float]:
    """Tie-aware nDCG@k per query ({qid: value}, pool order): the fast path of :func:`evaluate_scores`."""
    r = _rank(pool, _check_scores(pool, scores), rtol)
    return dict(zip(r.qids, map(float, _ndcg(r, k))))


@dataclass
class Evaluation:
    """Per-query values and means of some measures on one pool.

    ``per_query[name][qid]`` and ``mean[name]`` are keyed by the measure's ir_measures name
    (``"nDCG@10"``); the mean is over every query of the pool (a query whose pool has no gain
    scores 0). Values are tie-aware (module docstring) except for the measures named in
    ``tie_broken``, which ir_measures computed with ties broken by docid.
    """

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    sample_fingerprint: str = ""
    pool_settings: dict[str, object] = field(default_factory=dict)
    tie_broken: list[str] = field(default_factory=list)
    tie_rtol: float = TIE_RTOL

    def __getitem__(self, measure: str) -> float:
        return self.mean[measure]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"mean": self.mean, "per_query": self.per_query, "ties": self.ties(), **self.pool_settings}

    def ties(self) -> dict[str, object]:
        """How ties were handled, for JSON outputs."""
        out: dict[str, object] = {"rule": TIE_RULE, "rtol": self.tie_rtol}
        if self.tie_broken:
            out["broken_by_docid"] = list(self.tie_broken)
        return out


def evaluate_scores(
    pool: Pool,
    scores: Sequence[float] | np.ndarray,
    measures: Iterable[object] | str | None = None,
    rtol: float = TIE_RTOL,
) -> Evaluation:
    """Evaluate a model's scores (one per pool row, row order), tie-aware (module docstring)."""
    parsed = parse_measures(measures)
    scores = _check_scores(pool, scores)
    ranked = _rank(pool, scores, rtol)
    per_query: dict[str, dict[str, float]] = {}
    fallback = []
    for measure in parsed:
        fn = _tie_aware(measure)
        if fn is None:
            fallback.append(measure)
            continue
        per_query[str(measure)] = dict(zip(ranked.qids, map(float, fn(ranked))))
    if fallback:
        import ir_measures

        run = _tie_free_run(rank(pool, scores))
        for m in fallback:
            per_query[str(m)] = {qid: 0.0 for qid in pool.qids}
        for metric in ir_measures.iter_calc(fallback, pool.qrels(), run):
            per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    per_query = {str(m): per_query[str(m)] for m in parsed}
    mean = {name: float(np.mean(list(values.values()))) if values else 0.0 for name, values in per_query.items()}
    return Evaluation(per_query, mean, pool.fingerprint, pool.describe(), [str(m) for m in fallback], rtol)


# ---- nDCG of explicit rankings; the random baseline ----------------------------------------------


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
    """nDCG@k of a random ranking of a pool.

    ``mean`` and ``per_query`` are exact: the expected nDCG@k of a uniformly random order, i.e. the
    tie-aware nDCG@k of a ranking whose scores all tie (the paper's "random ranking", without
    sampling error). ``sd`` is the spread of the per-ranking mean over queries across ``rankings``
    sampled random rankings, and ``sampled_mean`` their mean (which converges to ``mean``).
    """

    mean: float
    sd: float
    per_query: dict[str, float]
    rankings: int
    seed: int
    k: int = 10
    sampled_mean: float = float("nan")


def random_baseline(pool: Pool, rankings: int = 1000, seed: int = 0, k: int = 10) -> RandomBaseline:
    """Exact expected nDCG@k of a random ranking, and its spread over ``rankings`` sampled rankings.

    Query ``q``'s sampled rankings come from ``query_rng(seed, q, "random-ranking")``, so the
    result does not depend on query order. The sampled rankings equal ir_measures' nDCG@k
    (tested); the exact value equals the brute-force mean over all orders (tested).
    """
    if isinstance(rankings, bool) or not isinstance(rankings, (int, np.integer)) or rankings < 1:
        raise MatchsigError(f"bad number of rankings: {rankings!r} (must be >= 1)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MatchsigError(f"bad cutoff k: {k!r} (must be >= 1)")
    exact = expected_ndcg(pool, np.zeros(len(pool)), int(k))
    per_ranking = np.zeros(rankings)
    by_query = pool.by_query()
    qrels = pool.qrels()
    for qid, rows in by_query.items():
        gains = np.array([max(r.grade, 0) for r in rows], dtype=np.float64)
        rng = query_rng(seed, qid, "random-ranking")
        shuffled = rng.permuted(np.broadcast_to(gains, (rankings, len(gains))), axis=1)
        # The ideal ranking comes from the pool's qrels: its own rows for a sampled pool, every
        # judgment of the query for a re-ranking pool (matchsig.data.runs.RunPool).
        per_ranking += ndcg_at_k(shuffled, np.fromiter(qrels[qid].values(), dtype=np.float64), k)
    per_ranking /= max(len(by_query), 1)
    mean = float(np.mean(list(exact.values()))) if exact else 0.0
    return RandomBaseline(mean, float(per_ranking.std()), exact, int(rankings), int(seed), int(k),
                          float(per_ranking.mean()))


# ---- TREC runs ---------------------------------------------------------------------------------


def write_trec_run(path: str | Path, pool: Pool, scores: Sequence[float] | np.ndarray, run_name: str = "matchsig",
                   keys: Sequence[float] | np.ndarray | None = None) -> Path:
    """Write ``qid Q0 docid rank score run_name`` lines, best first (by ``keys`` when given: the ranking keys of
    scores that saturate), ties broken by docid.

    Scores are written exactly as given; tools that re-rank by score (trec_eval) break ties
    their own way, the rank column keeps ours.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tag = "_".join(run_name.split()) or "matchsig"  # the tag is one whitespace-free column
    with open(path, "w", encoding="utf-8") as fh:
        for qid, docs in rank(pool, scores, keys).items():
            for position, (docid, score) in enumerate(docs, 1):
                fh.write(f"{qid} Q0 {docid} {position} {score!r} {tag}\n")
    return path
