"""PyTerrier components: a (possibly ablated) cross-encoder re-ranker, and matchsig data as frames.

Needs PyTerrier 1.x (``pip install "matchsig[pyterrier]"``). Nothing here starts Java or
downloads anything: the re-ranker is a plain ``pt.Transformer`` and ``pt.Experiment`` evaluates
with ir_measures, neither of which needs Terrier's Java side.

Typical use (the paper's protocol inside PyTerrier)::

    import pyterrier as pt
    from matchsig.data.datasets import load_collection
    from matchsig.data.sampling import sample_pool
    from matchsig.pyterrier import CrossEncoderScorer, to_pyterrier

    pool = sample_pool(load_collection("demo"), per_grade=20)
    data = to_pyterrier(pool)                 # topics, qrels (the pool's own) and the candidates
    scorer = CrossEncoderScorer("embedded")
    pt.Experiment([data.source >> scorer, data.source >> scorer.ablated("D<-D")],
                  data.topics, data.qrels, ["nDCG@10"], baseline=0)

Ties. ``pt.Experiment`` hands ``qid, docno, score`` to ir_measures (pytrec_eval), which orders
equal scores by docno in *descending* string order, as trec_eval does. matchsig's own evaluation
does not depend on how ties are broken (:mod:`matchsig.data.evaluation`); :func:`evaluate` gives
matchsig's numbers for a PyTerrier result frame. When no two candidates of a query share a score,
both agree exactly (tested to 1e-9).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..data.frames import (PyTerrierData, _add_ranks, _require, pool_frame, qrels_frame, scores_for_pool,  # noqa: F401
                           text_frame, to_pyterrier, topics_frame)
from ..data.runs import pool_from_run
from ..errors import MatchsigError

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


class CrossEncoderScorer(pt.Transformer):
    """Re-rank a PyTerrier frame (``qid, query, docno`` and a text column) with a cross-encoder.

    Adds (or replaces) ``score`` and ``rank``; the other columns pass through. ``model`` is a
    matchsig model spec (``"embedded"``, a folder, a hub id) or a loaded
    :class:`~matchsig.engine.model.CrossEncoder`; ``ablation`` a spec such as ``"D<-D"`` or
    ``"CLS<-*"`` (or an :class:`~matchsig.engine.ablation.Ablation`). :meth:`ablated` returns a variant
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
        from ..engine.ablation import as_ablation

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MatchsigError(f"bad batch_size {batch_size!r}: must be a positive integer")
        if isinstance(model, str):
            from ..engine.model import CrossEncoder

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


def run_frame(run: Any, collection: Any, top_k: int | None = None) -> pd.DataFrame:
    """A TREC run (:class:`matchsig.data.runs.TrecRun`) as a PyTerrier result frame with texts.

    ``qid, query, docno, text, score, rank`` (the run's score; ranks 0-based as PyTerrier's),
    best first per query, cut to ``top_k``. Qids and docids are checked against the collection.
    """
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


# ---- matchsig's numbers for a PyTerrier result frame -------------------------------------------


def evaluate(results: pd.DataFrame, pool: Any, measures: Iterable[object] | str | None = None):
    """matchsig's evaluation (:func:`matchsig.data.evaluation.evaluate_scores`) of a result frame on ``pool``.

    Use it to get the numbers ``matchsig evaluate`` / ``matchsig ablate`` report, whatever the
    ties: e.g. ``evaluate((data.source >> scorer).transform(data.topics), pool)``.
    """
    from ..data.evaluation import evaluate_scores

    return evaluate_scores(pool, scores_for_pool(results, pool), measures)
