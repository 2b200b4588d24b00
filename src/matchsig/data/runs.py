"""TREC run files: strict reading and re-ranking pools built from a run (re-ranking a run with a model:
:mod:`matchsig.analysis.rerank`).

The standard re-ranking protocol (e.g. Zhan et al. 2020 re-rank the BM25 top-100 of TREC DL)
differs from the paper's sampled pools (:mod:`matchsig.data.sampling`) in two ways:

* the passages of a query are the top ``k`` candidates of a first-stage run, judged or not.
  Unjudged candidates get grade ``-1`` (:data:`~matchsig.data.sampling.EASY_NEGATIVE`, gain 0): they
  count as non-relevant, as trec_eval counts them;
* the ideal DCG comes from *all* judgments of the query (trec_eval on the full qrels), not from
  the rows of the pool, so a relevant passage the first stage missed still lowers nDCG.

A :class:`RunPool` is a :class:`~matchsig.data.sampling.Pool` that carries both, so everything that
evaluates a pool (``evaluate_scores``, ``random_baseline``, the experiments) follows this protocol
when given one.

Candidates of a query are ordered by the run's score, descending; equal scores keep the run's
rank column order, then docid. The top ``k`` in that order are re-ranked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import MatchsigError
from .datasets import Collection, _read_tsv_pairs, natural_key
from .sampling import EASY_NEGATIVE, Pool, PoolRow

__all__ = [
    "RunEntry",
    "RunPool",
    "TrecRun",
    "evaluate_run",
    "pool_from_run",
    "read_trec_run",
    "with_passages",
]

#: Columns of a TREC run line.
RUN_COLUMNS = "qid Q0 docid rank score tag"


class RunEntry(NamedTuple):
    """One line of a TREC run (``line`` is its 1-based line number in the file)."""

    qid: str
    docid: str
    rank: int
    score: float
    line: int


@dataclass(frozen=True)
class TrecRun:
    """The entries of a TREC run file, in file order."""

    entries: tuple[RunEntry, ...]
    path: str = ""
    tag: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def qids(self) -> list[str]:
        """Queries of the run, in natural order."""
        return sorted({e.qid for e in self.entries}, key=natural_key)

    def by_query(self) -> dict[str, list[RunEntry]]:
        """Per query (natural order), its candidates best first (score desc, then rank, then docid)."""
        groups: dict[str, list[RunEntry]] = {}
        for entry in self.entries:
            groups.setdefault(entry.qid, []).append(entry)
        return {q: sorted(groups[q], key=lambda e: (-e.score, e.rank, e.docid)) for q in self.qids}

    def top(self, k: int | None) -> TrecRun:
        """The run cut to the best ``k`` candidates of each query (``None``: all)."""
        if k is None:
            return self
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise MatchsigError(f"bad top-k {k!r}: must be a positive integer")
        kept = tuple(e for docs in self.by_query().values() for e in docs[:k])
        return TrecRun(kept, self.path, self.tag)

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over the sorted ``qid docid score`` lines."""
        lines = "\n".join(sorted(f"{e.qid}\t{e.docid}\t{e.score!r}" for e in self.entries))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()[:16]

    def scored(self) -> dict[str, dict[str, float]]:
        """{qid: {docid: score}}, as ir_measures takes a run."""
        out: dict[str, dict[str, float]] = {}
        for e in self.entries:
            out.setdefault(e.qid, {})[e.docid] = e.score
        return out


def read_trec_run(path: str | Path) -> TrecRun:
    """Read a 6-column TREC run (``qid Q0 docid rank score tag``), strictly.

    Every problem is a one-line :class:`MatchsigError` naming the file and line: a wrong number of
    columns, a rank that is not an integer, a score that is not a finite number, a passage listed
    twice for a query, or a run with no entries at all.
    """
    path = Path(path)
    if not path.is_file():
        raise MatchsigError(f"missing file: run {path} does not exist")
    entries: list[RunEntry] = []
    seen: dict[tuple[str, str], int] = {}
    tags: set[str] = set()
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise MatchsigError(
                        f"{path}:{lineno}: expected 6 columns '{RUN_COLUMNS}', got {len(parts)}"
                    )
                qid, _, docid, rank_text, score_text, tag = parts
                try:
                    rank = int(rank_text)
                except ValueError:
                    raise MatchsigError(f"{path}:{lineno}: rank {rank_text!r} is not an integer") from None
                try:
                    score = float(score_text)
                except ValueError:
                    raise MatchsigError(f"{path}:{lineno}: score {score_text!r} is not a number") from None
                if not math.isfinite(score):
                    raise MatchsigError(f"{path}:{lineno}: score {score_text!r} is not a finite number")
                first = seen.setdefault((qid, docid), lineno)
                if first != lineno:
                    raise MatchsigError(
                        f"{path}:{lineno}: passage {docid!r} is listed twice for query {qid!r} (first on line {first})"
                    )
                tags.add(tag)
                entries.append(RunEntry(qid, docid, rank, score, lineno))
    except UnicodeDecodeError as exc:
        raise MatchsigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if not entries:
        raise MatchsigError(f"run {path} is empty: no '{RUN_COLUMNS}' lines")
    return TrecRun(tuple(entries), str(path), tags.pop() if len(tags) == 1 else "")


# ---- texts -------------------------------------------------------------------------------------


def with_passages(collection: Collection, files: Iterable[str | Path]) -> Collection:
    """``collection`` with extra passage texts from ``docid<TAB>text`` files (optionally ``.gz``).

    A first-stage run retrieves passages nobody judged, whose texts a judged-only collection does
    not hold (DL19's ``bm25-top100/passages.tsv`` holds the BM25 candidates). The extra files are
    consulted first, the collection's own passages for the rest. Queries and judgments are the
    collection's.
    """
    paths = [Path(f) for f in files]
    if not paths:
        return collection
    extra: dict[str, str] = {}
    for path in paths:
        if not path.is_file():
            raise MatchsigError(f"missing file: passages {path} does not exist")
        extra.update(_read_tsv_pairs(path))

    def lookup(docids: list[str]) -> dict[str, str]:
        found = {d: extra[d] for d in docids if d in extra}
        rest = [d for d in docids if d not in extra]
        if rest:
            found.update(collection._doc_lookup(rest))
        return found

    merged = Collection(
        f"{collection.name}+{'+'.join(p.name for p in paths)}",
        collection.queries,
        collection.qrels,
        lookup,
        negative_candidates=collection.negative_candidates,
    )
    return merged


def _check_run(run: TrecRun, collection: Collection) -> dict[str, str]:
    """Every qid has a query text and every docid a passage text; returns {docid: text}."""
    for e in run.entries:
        if e.qid not in collection.queries:
            raise MatchsigError(f"{run.path}:{e.line}: query {e.qid!r} is not in collection {collection.name!r}")
    docids = list(dict.fromkeys(e.docid for e in run.entries))
    try:
        return collection.docs(docids)
    except MatchsigError:
        pass  # find which ones are missing, to name a line
    found: dict[str, str] = {}
    missing: list[RunEntry] = []
    for docid in docids:
        try:
            found.update(collection.docs([docid]))
        except MatchsigError:
            missing.append(next(e for e in run.entries if e.docid == docid))
    first = min(missing, key=lambda e: e.line)
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise MatchsigError(
        f"{run.path}:{first.line}: passage {first.docid!r}{more} has no text in collection {collection.name!r}; "
        "give the run's passage texts with --passages FILE"
    )


# ---- the re-ranking pool -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunPool(Pool):
    """The top-k candidates of a run as a pool (module docstring: the re-ranking protocol).

    Rows are ``(qid, docid, grade)`` with the query's judgment, or ``-1`` for a candidate nobody
    judged. ``judgments`` holds *every* judgment of the pool's queries, so :meth:`qrels` (and
    therefore nDCG's ideal ranking) follows trec_eval on the full qrels.
    """

    run: str = ""
    top_k: int | None = None
    run_fingerprint: str = ""
    judgments: Mapping[str, Mapping[str, int]] = field(default_factory=dict, repr=False, compare=False)
    #: Queries of the run that have no judgments (left out of the pool; they cannot be evaluated).
    unevaluated: tuple[str, ...] = ()

    def qrels(self) -> dict[str, dict[str, int]]:
        """Gains of all judgments of the pool's queries, plus gain 0 for unjudged candidates."""
        out: dict[str, dict[str, int]] = {}
        for qid in self.qids:
            out[qid] = {d: max(int(g), 0) for d, g in self.judgments.get(qid, {}).items()}
        for row in self.rows:
            out[row.qid].setdefault(row.docid, max(row.grade, 0))
        return out

    @property
    def unjudged(self) -> int:
        """Candidates not judged for their query (grade -1, counted as non-relevant)."""
        return sum(1 for r in self.rows if r.grade == EASY_NEGATIVE)

    def describe(self) -> dict[str, object]:
        """The settings and identity of the pool, with the protocol and the unjudged count."""
        return {
            **super().describe(),
            "protocol": "rerank",
            "run": self.run,
            "top_k": self.top_k,
            "run_fingerprint": self.run_fingerprint,
            "judged": len(self.rows) - self.unjudged,
            "unjudged": self.unjudged,
            "unevaluated_queries": len(self.unevaluated),
        }


def pool_from_run(
    run: TrecRun,
    collection: Collection,
    top_k: int | None = None,
    max_queries: int | None = None,
    judged_only: bool = True,
) -> RunPool:
    """The top-``top_k`` candidates of ``run`` as a :class:`RunPool` over ``collection``.

    Checks every qid and docid of the (cut) run against the collection (one-line errors naming the
    run's line). ``judged_only`` leaves out queries without any judgment (listed in
    ``unevaluated``): they cannot be evaluated. ``max_queries`` keeps the first N queries.
    """
    cut = run.top(top_k)
    _check_run(cut, collection)
    groups = cut.by_query()
    qids = list(groups)
    unevaluated = tuple(q for q in qids if not collection.qrels.get(q))
    if judged_only:
        qids = [q for q in qids if collection.qrels.get(q)]
        if not qids:
            raise MatchsigError(f"no query of run {run.path} has judgments in collection {collection.name!r}")
    if max_queries is not None:
        qids = qids[:max_queries]
    rows: list[PoolRow] = []
    for qid in qids:
        judged = collection.qrels.get(qid, {})
        found = [PoolRow(qid, e.docid, int(judged.get(e.docid, EASY_NEGATIVE))) for e in groups[qid]]
        rows.extend(sorted(found, key=lambda r: (-r.grade, r.docid)))  # the canonical pool order
    judgments = {q: dict(collection.qrels.get(q, {})) for q in qids}
    return RunPool(
        tuple(rows), collection, collection.name, per_grade=None, easy_negatives=0, seed=0,
        run=run.path, top_k=top_k, run_fingerprint=cut.fingerprint, judgments=judgments,
        unevaluated=unevaluated if judged_only else (),
    )


# ---- evaluation --------------------------------------------------------------------------------


def evaluate_run(run: TrecRun, pool: RunPool, measures: Iterable[object] | str | None = None) -> dict[str, dict[str, float]]:
    """Per-query values of ``measures`` for the run's own scores, on the pool's queries and qrels.

    The run is handed to ir_measures as it is (its scores; ties broken by the backend, as
    trec_eval does), so this is what trec_eval reports for the run file. Queries of the pool
    missing from the run score 0.
    """
    import ir_measures

    from .evaluation import parse_measures

    parsed = parse_measures(measures)
    wanted = set(pool.qids)
    scored = {q: docs for q, docs in run.scored().items() if q in wanted}
    per_query = {str(m): {q: 0.0 for q in pool.qids} for m in parsed}
    for metric in ir_measures.iter_calc(parsed, pool.qrels(), scored):
        per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    return per_query
