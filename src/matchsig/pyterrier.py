"""PyTerrier components: a (possibly ablated) cross-encoder re-ranker, and matchsig data as frames.

Needs PyTerrier 1.x (``pip install "matchsig[pyterrier]"``). Nothing here starts Java or
downloads anything: the re-ranker is a plain ``pt.Transformer`` and ``pt.Experiment`` evaluates
with ir_measures, neither of which needs Terrier's Java side.

Typical use (the paper's protocol inside PyTerrier)::

    import pyterrier as pt
    from matchsig.datasets import load_collection
    from matchsig.sampling import sample_pool
    from matchsig.pyterrier import CrossEncoderScorer, to_pyterrier

    pool = sample_pool(load_collection("demo"), per_grade=20)
    data = to_pyterrier(pool)                 # topics, qrels (the pool's own) and the candidates
    scorer = CrossEncoderScorer("embedded")
    pt.Experiment([data.source >> scorer, data.source >> scorer.ablated("D<-D")],
                  data.topics, data.qrels, ["nDCG@10"], baseline=0)

Ties. ``pt.Experiment`` hands ``qid, docno, score`` to ir_measures (pytrec_eval), which orders
equal scores by docno in *descending* string order, as trec_eval does. matchsig's own evaluation
does not depend on how ties are broken (:mod:`matchsig.evaluation`); :func:`evaluate` gives
matchsig's numbers for a PyTerrier result frame. When no two candidates of a query share a score,
both agree exactly (tested to 1e-9).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import MatchsigError

try:
    import pyterrier as pt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('matchsig.pyterrier needs PyTerrier 1.x: pip install "matchsig[pyterrier]"') from exc

__all__ = [
    "CrossEncoderScorer",
    "PyTerrierData",
    "evaluate",
    "pool_frame",
    "qrels_frame",
    "run_frame",
    "scores_for_pool",
    "text_frame",
    "to_pyterrier",
    "topics_frame",
]


def _add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """PyTerrier's ``add_ranks`` (its rank convention), without the pandas deprecation warning it raises.

    PyTerrier 1.x calls ``DataFrame.drop(..., inplace=True)``, deprecated in pandas 3.1: every re-ranking
    printed that warning though nothing of ours uses ``inplace``. Only that warning, from that call, is
    silenced; ``tests/test_pyterrier.py`` shows when a PyTerrier release no longer needs this.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword", category=DeprecationWarning,
                                module="pyterrier")
        return pt.model.add_ranks(frame)


def _require(frame: Any, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise MatchsigError(f"{what} expects a pandas DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns)) or "none"
            raise MatchsigError(f"{what}: input frame has no {column!r} column (columns: {have})")


class CrossEncoderScorer(pt.Transformer):
    """Re-rank a PyTerrier frame (``qid, query, docno`` and a text column) with a cross-encoder.

    Adds (or replaces) ``score`` and ``rank``; the other columns pass through. ``model`` is a
    matchsig model spec (``"embedded"``, a folder, a hub id) or a loaded
    :class:`~matchsig.model.CrossEncoder`; ``ablation`` a spec such as ``"D<-D"`` or
    ``"CLS<-*"`` (or an :class:`~matchsig.ablation.Ablation`). :meth:`ablated` returns a variant
    that shares the loaded model. ``device``, ``dtype`` and ``max_length`` apply when ``model``
    is a spec (a loaded model keeps its own). Rows are scored in frame order, ``batch_size`` pairs
    per forward pass; ``verbose`` shows a progress bar.
    """

    def __init__(
        self,
        model: Any = "embedded",
        ablation: Any = None,
        batch_size: int = 32,
        text_field: str = "text",
        query_field: str = "query",
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = 512,
        verbose: bool = False,
    ) -> None:
        from .ablation import as_ablation

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MatchsigError(f"bad batch_size {batch_size!r}: must be a positive integer")
        if isinstance(model, str):
            from .model import CrossEncoder

            model = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
        elif not hasattr(model, "score"):
            raise MatchsigError(f"model must be a model spec or a matchsig CrossEncoder, got {type(model).__name__}")
        try:
            self.ablation = as_ablation(ablation)
        except ValueError as exc:
            raise MatchsigError(str(exc)) from None
        self.encoder = model
        self.batch_size = batch_size
        self.text_field = text_field
        self.query_field = query_field
        self.verbose = verbose

    def ablated(self, ablation: Any) -> CrossEncoderScorer:
        """The same scorer (same loaded model, no reload) with ``ablation`` applied."""
        return CrossEncoderScorer(self.encoder, ablation, self.batch_size, self.text_field, self.query_field,
                                  verbose=self.verbose)

    def __repr__(self) -> str:
        name = getattr(self.encoder, "name", "model")
        cut = "" if self.ablation.is_empty else f", ablation={self.ablation.name!r}"
        return f"CrossEncoderScorer({name!r}{cut})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Score every row; return the frame with ``score`` and ``rank`` (PyTerrier's ranks)."""
        _require(inp, ["qid", self.query_field, "docno", self.text_field], repr(self))
        out = inp.drop(columns=["score", "rank"], errors="ignore").reset_index(drop=True)
        if len(out) == 0:
            return out.assign(score=pd.Series(dtype="float64"), rank=pd.Series(dtype="int64"))
        scores = self.encoder.score(
            out[self.query_field].astype(str).tolist(),
            out[self.text_field].astype(str).tolist(),
            ablation=self.ablation,
            batch_size=self.batch_size,
            progress=self.verbose,
        )
        out["score"] = np.asarray(scores, dtype=np.float64)
        return _add_ranks(out)


# ---- matchsig data as PyTerrier frames --------------------------------------------------------


def topics_frame(source: Any) -> pd.DataFrame:
    """``qid, query`` of a pool's queries (pool order) or a collection's judged queries."""
    from .sampling import Pool

    if isinstance(source, Pool):
        collection = source._require_collection()
        qids = source.qids
    else:
        collection, qids = source, source.judged_qids()
    return pd.DataFrame({"qid": qids, "query": [collection.query_text(q) for q in qids]})


def qrels_frame(source: Any) -> pd.DataFrame:
    """``qid, docno, label``: a pool's own qrels (what matchsig evaluates it with) or a collection's.

    For a sampled pool these are its rows (easy negatives as label 0), so nDCG's ideal ranking is
    the pool's, as in :func:`matchsig.evaluation.evaluate_scores`; for a re-ranking pool
    (:class:`matchsig.runs.RunPool`) every judgment of its queries.
    """
    qrels = source.qrels() if callable(getattr(source, "qrels", None)) else source.qrels
    rows = [(q, d, int(g)) for q, docs in qrels.items() for d, g in docs.items()]
    return pd.DataFrame(rows, columns=["qid", "docno", "label"]).astype({"label": "int64"})


def text_frame(collection: Any, docids: Iterable[str] | None = None) -> pd.DataFrame:
    """``docno, text`` of some passages (default: every passage judged for a query)."""
    from .datasets import natural_key

    if docids is None:
        docids = sorted({d for docs in collection.qrels.values() for d in docs}, key=natural_key)
    texts = collection.docs(docids)
    return pd.DataFrame({"docno": list(texts), "text": list(texts.values())})


def pool_frame(pool: Any) -> pd.DataFrame:
    """A pool as a PyTerrier frame to re-rank: ``qid, query, docno, text, grade`` in pool row order.

    ``grade`` is the pool's (-1 for an easy negative or an unjudged candidate); scorers ignore it.
    """
    queries, documents = pool.pairs()
    return pd.DataFrame({
        "qid": [r.qid for r in pool.rows],
        "query": queries,
        "docno": [r.docid for r in pool.rows],
        "text": documents,
        "grade": np.asarray([r.grade for r in pool.rows], dtype=np.int64),
    })


def run_frame(run: Any, collection: Any, top_k: int | None = None) -> pd.DataFrame:
    """A TREC run (:class:`matchsig.runs.TrecRun`) as a PyTerrier result frame with texts.

    ``qid, query, docno, text, score, rank`` (the run's score; ranks 0-based as PyTerrier's),
    best first per query, cut to ``top_k``. Qids and docids are checked against the collection.
    """
    from .runs import pool_from_run

    pool_from_run(run, collection, top_k, judged_only=False)  # validates qids and texts, naming lines
    cut = run.top(top_k)
    entries = [e for docs in cut.by_query().values() for e in docs]
    texts = collection.docs(e.docid for e in entries)
    frame = pd.DataFrame({
        "qid": [e.qid for e in entries],
        "query": [collection.query_text(e.qid) for e in entries],
        "docno": [e.docid for e in entries],
        "text": [texts[e.docid] for e in entries],
        "score": np.asarray([e.score for e in entries], dtype=np.float64),
    })
    return _add_ranks(frame)


@dataclass
class PyTerrierData:
    """Topics, qrels and candidates of a matchsig pool (or texts of a collection), as PyTerrier frames.

    ``results`` is the frame to re-rank (None for a whole collection); ``source`` is
    ``pt.Transformer.from_df(results)``, which hands each topic its candidates, so
    ``source >> scorer`` is a pipeline ``pt.Experiment`` can run on ``topics``.
    """

    topics: pd.DataFrame
    qrels: pd.DataFrame
    texts: pd.DataFrame
    results: pd.DataFrame | None = None

    @property
    def source(self) -> pt.Transformer:
        if self.results is None:
            raise MatchsigError("a collection has no candidates to re-rank: sample a pool (or read a run) first")
        return pt.Transformer.from_df(self.results)


def to_pyterrier(source: Any) -> PyTerrierData:
    """PyTerrier frames of a pool (sampled or from a run) or of a collection.

    A pool gives its topics, its own qrels and its candidates (``results``); a collection its
    judged topics, all its judgments and the texts of its judged passages.
    """
    from .datasets import Collection
    from .sampling import Pool

    if isinstance(source, Pool):
        results = pool_frame(source)
        texts = results[["docno", "text"]].drop_duplicates("docno").reset_index(drop=True)
        return PyTerrierData(topics_frame(source), qrels_frame(source), texts, results)
    if isinstance(source, Collection):
        return PyTerrierData(topics_frame(source), qrels_frame(source), text_frame(source))
    raise MatchsigError(f"to_pyterrier expects a matchsig Pool or Collection, got {type(source).__name__}")


# ---- matchsig's numbers for a PyTerrier result frame -------------------------------------------


def scores_for_pool(results: pd.DataFrame, pool: Any) -> np.ndarray:
    """The ``score`` of each pool row (row order) taken from a PyTerrier result frame."""
    _require(results, ["qid", "docno", "score"], "scores_for_pool")
    keyed = {(str(q), str(d)): float(s) for q, d, s in zip(results["qid"], results["docno"], results["score"])}
    missing = [r for r in pool.rows if (r.qid, r.docid) not in keyed]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MatchsigError(f"result frame has no score for query {missing[0].qid!r}, docno {missing[0].docid!r}{more}")
    return np.asarray([keyed[(r.qid, r.docid)] for r in pool.rows], dtype=np.float64)


def evaluate(results: pd.DataFrame, pool: Any, measures: Iterable[object] | str | None = None):
    """matchsig's evaluation (:func:`matchsig.evaluation.evaluate_scores`) of a result frame on ``pool``.

    Use it to get the numbers ``matchsig evaluate`` / ``matchsig ablate`` report, whatever the
    ties: e.g. ``evaluate((data.source >> scorer).transform(data.topics), pool)``.
    """
    from .evaluation import evaluate_scores

    return evaluate_scores(pool, scores_for_pool(results, pool), measures)
