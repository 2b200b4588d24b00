"""matchsig data as PyTerrier frames: topics, qrels, texts, a pool's candidates, and a result frame's
scores back in pool order (a TREC run as a frame: ``run_frame`` of the face, which needs the runs module).

Plain pandas (``pt.model.add_ranks`` and ``pt.Transformer.from_df`` are imported when used), so the
data layer converts its own objects (``pool.to_pyterrier()``, ``load_collection(...).to_pyterrier()``)
without importing the face :mod:`matchsig.integrations.pyterrier`, which adds the re-ranker and
re-exports these functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MatchsigError
from .ids import natural_key

__all__ = ["PyTerrierData", "pool_frame", "qrels_frame", "scores_for_pool", "text_frame", "to_pyterrier", "topics_frame"]


def _pt():
    """The pyterrier module, or an ImportError naming the extra."""
    try:
        import pyterrier as pt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('matchsig.pyterrier needs PyTerrier 1.x: pip install "matchsig[pyterrier]"') from exc
    return pt


def _add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """PyTerrier's ``add_ranks`` (its rank convention), without the pandas deprecation warning it raises.

    PyTerrier 1.x calls ``DataFrame.drop(..., inplace=True)``, deprecated in pandas 3.1: every re-ranking
    printed that warning though nothing of ours uses ``inplace``. Only that warning, from that call, is
    silenced; ``tests/test_pyterrier.py`` shows when a PyTerrier release no longer needs this.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword", category=DeprecationWarning,
                                module="pyterrier")
        return _pt().model.add_ranks(frame)


def _require(frame: Any, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise MatchsigError(f"{what} expects a pandas DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns)) or "none"
            raise MatchsigError(f"{what}: input frame has no {column!r} column (columns: {have})")


def _is_pool(source: Any) -> bool:
    """A matchsig Pool (sampled or from a run), told by its shape: this module imports neither class."""
    return hasattr(source, "rows") and hasattr(source, "_require_collection")


def _is_collection(source: Any) -> bool:
    return hasattr(source, "judged_qids") and hasattr(source, "qrels") and hasattr(source, "docs")


def topics_frame(source: Any) -> pd.DataFrame:
    """``qid, query`` of a pool's queries (pool order) or a collection's judged queries."""
    if _is_pool(source):
        collection = source._require_collection()
        qids = source.qids
    else:
        collection, qids = source, source.judged_qids()
    return pd.DataFrame({"qid": qids, "query": [collection.query_text(q) for q in qids]})


def qrels_frame(source: Any) -> pd.DataFrame:
    """``qid, docno, label``: a pool's own qrels (what matchsig evaluates it with) or a collection's.

    For a sampled pool these are its rows (easy negatives as label 0), so nDCG's ideal ranking is
    the pool's, as in :func:`matchsig.data.evaluation.evaluate_scores`; for a re-ranking pool
    (:class:`matchsig.data.runs.RunPool`) every judgment of its queries.
    """
    qrels = source.qrels() if callable(getattr(source, "qrels", None)) else source.qrels
    rows = [(q, d, int(g)) for q, docs in qrels.items() for d, g in docs.items()]
    return pd.DataFrame(rows, columns=["qid", "docno", "label"]).astype({"label": "int64"})


def text_frame(collection: Any, docids: Iterable[str] | None = None) -> pd.DataFrame:
    """``docno, text`` of some passages (default: every passage judged for a query)."""
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
    def source(self) -> Any:
        if self.results is None:
            raise MatchsigError("a collection has no candidates to re-rank: sample a pool (or read a run) first")
        return _pt().Transformer.from_df(self.results)


def to_pyterrier(source: Any) -> PyTerrierData:
    """PyTerrier frames of a pool (sampled or from a run) or of a collection.

    A pool gives its topics, its own qrels and its candidates (``results``); a collection its
    judged topics, all its judgments and the texts of its judged passages.
    """
    _pt()  # the frames are for PyTerrier: say so now if it is missing
    if _is_pool(source):
        results = pool_frame(source)
        texts = results[["docno", "text"]].drop_duplicates("docno").reset_index(drop=True)
        return PyTerrierData(topics_frame(source), qrels_frame(source), texts, results)
    if _is_collection(source):
        return PyTerrierData(topics_frame(source), qrels_frame(source), text_frame(source))
    raise MatchsigError(f"to_pyterrier expects a matchsig Pool or Collection, got {type(source).__name__}")


def scores_for_pool(results: pd.DataFrame, pool: Any) -> np.ndarray:
    """The ``score`` of each pool row (row order) taken from a PyTerrier result frame."""
    _require(results, ["qid", "docno", "score"], "scores_for_pool")
    keyed = {(str(q), str(d)): float(s) for q, d, s in zip(results["qid"], results["docno"], results["score"])}
    missing = [r for r in pool.rows if (r.qid, r.docid) not in keyed]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MatchsigError(f"result frame has no score for query {missing[0].qid!r}, docno {missing[0].docid!r}{more}")
    return np.asarray([keyed[(r.qid, r.docid)] for r in pool.rows], dtype=np.float64)
