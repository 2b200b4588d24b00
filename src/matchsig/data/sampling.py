"""The paper's sampling protocol (§3.1): per-query pools of judged and easy-negative passages.

For every query with judgments and a text:

* **judged passages**: up to ``per_grade`` passages of each relevance grade, drawn at random
  (``None`` = all of them);
* **easy negatives**: ``easy_negatives`` passages drawn at random from the collection's passages
  that are *not* judged for that query, given grade ``-1`` (gain 0 in evaluation).

Seeding. Each draw has its own random stream, derived from the seed and what is drawn, never from
the order queries are processed in::

    rng = numpy.random.default_rng([seed, int(sha256(f"{qid}\\x1f{stream}")[:16 hex], 16)])

with ``stream`` = ``"grade=<g>"`` or ``"easy"``. The judged passages of a grade are sorted by
docid, shuffled with that stream, and the first ``per_grade`` kept; easy negatives are the first
``easy_negatives`` eligible ids of a seeded draw. Hence pools with a smaller cap (or fewer easy
negatives) are subsets of those with a larger one for the same seed, and adding a query or a grade
never changes the other draws.

Every pool has a :attr:`Pool.fingerprint`: the first 16 hex digits of the SHA-256 of its sorted
``(qid, docid, grade)`` rows (one ``qid<TAB>docid<TAB>grade`` line each, joined by newlines), so two
results can prove they were computed on the same sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import MatchsigError
from .datasets import Collection, natural_key

__all__ = ["EASY_NEGATIVE", "Pool", "PoolRow", "fingerprint", "query_rng", "read_pool", "sample_pool"]

#: Grade given to easy negatives (SPEC §2).
EASY_NEGATIVE = -1

DEFAULT_PER_GRADE = 20


class PoolRow(NamedTuple):
    """One sampled (query, passage) pair and its grade (-1 for an easy negative)."""

    qid: str
    docid: str
    grade: int


def fingerprint(rows: Sequence[tuple[str, str, int]]) -> str:
    """First 16 hex digits of SHA-256 over the sorted ``qid<TAB>docid<TAB>grade`` lines."""
    lines = "\n".join(f"{q}\t{d}\t{int(g)}" for q, d, g in sorted((str(q), str(d), int(g)) for q, d, g in rows))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()[:16]


def query_rng(seed: int, qid: str, stream: str) -> np.random.Generator:
    """The random stream for one (query, stream) draw; independent of query order."""
    digest = hashlib.sha256(f"{qid}\x1f{stream}".encode()).hexdigest()[:16]
    return np.random.default_rng([int(seed), int(digest, 16)])


@dataclass(frozen=True)
class Pool:
    """A sample of (qid, docid, grade) rows, with the settings that drew it and text access.

    ``rows`` are in canonical order: queries in natural order, then grade descending (easy
    negatives last), then docid. This is also the order :meth:`pairs` returns texts in, so scores
    from a model line up with ``rows``.
    """

    rows: tuple[PoolRow, ...]
    collection: Collection | None = field(default=None, repr=False, compare=False)
    dataset: str = ""
    per_grade: int | None = DEFAULT_PER_GRADE
    easy_negatives: int = 0
    seed: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[PoolRow]:
        return iter(self.rows)

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.rows)

    @property
    def qids(self) -> list[str]:
        """Queries in the pool, in row order."""
        return list(dict.fromkeys(r.qid for r in self.rows))

    def by_query(self) -> dict[str, list[PoolRow]]:
        """Rows grouped by query."""
        groups: dict[str, list[PoolRow]] = {}
        for row in self.rows:
            groups.setdefault(row.qid, []).append(row)
        return groups

    def grade_counts(self) -> dict[int, int]:
        """Number of rows per grade."""
        counts: dict[int, int] = {}
        for row in self.rows:
            counts[row.grade] = counts.get(row.grade, 0) + 1
        return dict(sorted(counts.items()))

    def qrels(self) -> dict[str, dict[str, int]]:
        """Gains for evaluation: {qid: {docid: max(grade, 0)}} — easy negatives count as 0."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            out.setdefault(row.qid, {})[row.docid] = max(row.grade, 0)
        return out

    def filter(self, grades: Sequence[int]) -> Pool:
        """The sub-pool of rows whose grade is in ``grades`` (e.g. ``(3, 0, -1)`` for SPEC §4)."""
        keep = set(grades)
        return Pool(
            tuple(r for r in self.rows if r.grade in keep),
            self.collection,
            self.dataset,
            self.per_grade,
            self.easy_negatives,
            self.seed,
        )

    def _require_collection(self) -> Collection:
        if self.collection is None:
            raise MatchsigError("this pool has no collection attached, so it has no texts")
        return self.collection

    def query_text(self, qid: str) -> str:
        """Text of a query of the pool."""
        return self._require_collection().query_text(qid)

    def doc_text(self, docid: str) -> str:
        """Text of a passage of the pool."""
        return self._require_collection().doc_text(docid)

    def pairs(self) -> tuple[list[str], list[str]]:
        """(query texts, passage texts), one entry per row, in row order — ready for scoring."""
        collection = self._require_collection()
        docs = collection.docs(r.docid for r in self.rows)
        return [collection.query_text(r.qid) for r in self.rows], [docs[r.docid] for r in self.rows]

    def describe(self) -> dict[str, object]:
        """The settings and identity of the sample, to save with any result."""
        return {
            "dataset": self.dataset,
            "per_grade": self.per_grade,
            "easy_negatives": self.easy_negatives,
            "seed": self.seed,
            "queries": len(self.qids),
            "pairs": len(self.rows),
            "sample_fingerprint": self.fingerprint,
        }

    def to_pyterrier(self) -> Any:
        """Topics, the pool's qrels and its candidates as PyTerrier frames (needs the pyterrier extra).

        See :func:`matchsig.data.frames.to_pyterrier`.
        """
        from .frames import to_pyterrier

        return to_pyterrier(self)

    def write_tsv(self, path: str | Path) -> Path:
        """Save the rows as ``qid<TAB>docid<TAB>grade`` lines (see :func:`read_pool`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{r.qid}\t{r.docid}\t{r.grade}\n" for r in self.rows), encoding="utf-8")
        return path


def read_pool(path: str | Path, collection: Collection | None = None, **settings: object) -> Pool:
    """Read rows saved by :meth:`Pool.write_tsv`; ``settings`` fill ``dataset``, ``per_grade``...

    The fingerprint depends on the rows only, so a re-read pool proves it is the same sample.
    """
    path = Path(path)
    if not path.is_file():
        raise MatchsigError(f"missing file: pool {path} does not exist")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            rows.append(PoolRow(parts[0], parts[1], int(parts[2])))
        except (IndexError, ValueError):
            raise MatchsigError(f"{path}:{lineno}: expected 'qid<TAB>docid<TAB>grade'") from None
    if collection is not None:
        settings.setdefault("dataset", collection.name)
    return Pool(tuple(rows), collection, **settings)  # type: ignore[arg-type]


def _check_count(name: str, value: int | None, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MatchsigError(f"bad {name}: {value!r} (expected an integer)")
    minimum = 1 if name == "per_grade" else 0
    if value < minimum:
        raise MatchsigError(f"bad {name}: {value} (must be >= {minimum})")


def _draw_easy(
    rng: np.random.Generator, candidates: Sequence[str], judged: set[str], count: int
) -> list[str]:
    """``count`` distinct ids of ``candidates`` not in ``judged``, in draw order."""
    n = len(candidates)
    if count <= 0 or n == 0:
        return []
    if n <= 1_000_000:
        # Small enough to shuffle whole: exact, and the prefix property holds.
        picked: list[str] = []
        for i in rng.permutation(n):
            docid = candidates[int(i)]
            if docid not in judged:
                picked.append(docid)
                if len(picked) == count:
                    break
        return picked
    # A large corpus (8.8M MS MARCO passages): rejection sampling, nearly every draw is eligible.
    picked_set: dict[str, None] = {}
    tries = 0
    while len(picked_set) < count:
        tries += 1
        if tries > 100 * count + 1000:
            break
        docid = candidates[int(rng.integers(n))]
        if docid not in judged:
            picked_set.setdefault(docid)
    return list(picked_set)


def sample_pool(
    collection: Collection,
    per_grade: int | None = DEFAULT_PER_GRADE,
    easy_negatives: int = 0,
    seed: int = 0,
    qids: Sequence[str] | None = None,
) -> Pool:
    """Draw the paper's pools from ``collection`` (see the module docstring for the protocol).

    ``per_grade=None`` keeps every judged passage. ``qids`` restricts the pool to some queries
    (default: every query with judgments and a text).
    """
    _check_count("per_grade", per_grade, allow_none=True)
    _check_count("easy_negatives", easy_negatives, allow_none=False)
    _check_count("seed", seed, allow_none=False)
    if qids is None:
        chosen = collection.judged_qids()
    else:
        unknown = [q for q in qids if q not in collection.qrels]
        if unknown:
            raise MatchsigError(f"query {unknown[0]!r} has no judgments in {collection.name!r}")
        chosen = sorted(dict.fromkeys(qids), key=natural_key)
    if not chosen:
        raise MatchsigError(f"collection {collection.name!r} has no judged queries")

    candidates = collection.negative_candidates() if easy_negatives else ()
    rows: list[PoolRow] = []
    for qid in chosen:
        judged = collection.qrels[qid]
        by_grade: dict[int, list[str]] = {}
        for docid, grade in judged.items():
            by_grade.setdefault(grade, []).append(docid)
        for grade in sorted(by_grade, reverse=True):
            docids = sorted(by_grade[grade])
            if per_grade is not None and len(docids) > per_grade:
                order = query_rng(seed, qid, f"grade={grade}").permutation(len(docids))
                docids = sorted(docids[i] for i in order[:per_grade])
            rows.extend(PoolRow(qid, d, grade) for d in docids)
        if easy_negatives:
            easy = _draw_easy(query_rng(seed, qid, "easy"), candidates, set(judged), easy_negatives)
            rows.extend(PoolRow(qid, d, EASY_NEGATIVE) for d in sorted(easy))
    return Pool(tuple(rows), collection, collection.name, per_grade, int(easy_negatives), int(seed))
