"""Collections: queries, graded relevance judgments and passage text, loaded by id.

A collection spec is resolved in this order:

1. a name registered with :func:`register_collection` (built in: ``demo``, a bundled sample of
   TREC DL 2019);
2. a local folder holding ``queries.tsv`` (``qid<TAB>text``), ``qrels.txt`` (TREC qrels,
   ``qid 0 docid grade``) and ``passages.tsv`` (``docid<TAB>text``), each optionally ``.gz``;
3. an ir_datasets id, e.g. ``msmarco-passage/trec-dl-2019/judged`` (ir_datasets is imported
   lazily; its texts come from ``docs_store()``). For the four paper ids, an offline copy in
   ``$MATCHSIG_DATA/trec-dl-20XX/`` (same layout as 2) is used instead when it exists.

Anything else raises :class:`~matchsig.errors.MatchsigError` with a one-line message.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MatchsigError
from .ids import natural_key  # noqa: F401 (importable from here too)

__all__ = [
    "Collection",
    "PAPER_COLLECTIONS",
    "available_collections",
    "load_collection",
    "register_collection",
    "read_folder",
]

#: The four judged TREC DL passage sets the paper uses (SPEC §2), in ir_datasets naming.
PAPER_COLLECTIONS: tuple[str, ...] = (
    "msmarco-passage/trec-dl-2019/judged",
    "msmarco-passage/trec-dl-2020/judged",
    "msmarco-passage-v2/trec-dl-2021/judged",
    "msmarco-passage-v2/trec-dl-2022/judged",
)

Qrels = dict[str, dict[str, int]]


class Collection:
    """Queries, graded judgments and (lazily read) passage texts of one test collection.

    ``queries`` maps qid -> text, ``qrels`` maps qid -> {docid: grade}. Passage texts are only
    read when asked for, through ``doc_lookup`` (a function from a list of docids to
    {docid: text}), and cached.

    ``negative_candidates`` is the sequence of docids that easy negatives are drawn from (the
    whole corpus for ir_datasets, the passages file for a folder); when None, the docids judged
    for any query are used. Only ``len()`` and integer indexing are needed, so a lazy view over
    millions of passages works. ``negative_source`` says which: ``"corpus"`` (the whole corpus),
    ``"folder"`` (the passages file of a folder: mostly passages judged for other queries) or
    ``"judged"`` (the passages judged for any query); it is final once the candidates were read.
    """

    def __init__(
        self,
        name: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        doc_lookup: Callable[[list[str]], Mapping[str, str]],
        negative_candidates: Sequence[str] | Callable[[], Sequence[str]] | None = None,
        negative_source: str | None = None,
    ) -> None:
        self.name = name
        self.negative_source = negative_source or ("judged" if negative_candidates is None else "given")
        self.queries: dict[str, str] = dict(queries)
        self.qrels: Qrels = {q: dict(d) for q, d in qrels.items()}
        self._doc_lookup = doc_lookup
        self._negatives = negative_candidates
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, queries={len(self.queries)}, qrels={self.num_judgments})"

    @property
    def num_judgments(self) -> int:
        """Number of (qid, docid) judgments."""
        return sum(len(d) for d in self.qrels.values())

    def untexted_qids(self) -> list[str]:
        """Judged qids without a query text (left out of pools)."""
        return sorted((q for q in self.qrels if q not in self.queries), key=natural_key)

    def judged_qids(self) -> list[str]:
        """Qids that have both judgments and a query text, in natural order."""
        return sorted((q for q in self.qrels if q in self.queries and self.qrels[q]), key=natural_key)

    def grade_counts(self) -> dict[int, int]:
        """Number of judgments per grade, e.g. ``{0: 5158, 1: 1601, 2: 1804, 3: 697}`` for DL19."""
        counts: dict[int, int] = {}
        for docs in self.qrels.values():
            for grade in docs.values():
                counts[grade] = counts.get(grade, 0) + 1
        return dict(sorted(counts.items()))

    def query_text(self, qid: str) -> str:
        """Text of query ``qid``."""
        try:
            return self.queries[qid]
        except KeyError:
            raise MatchsigError(f"query {qid!r} not found in collection {self.name!r}") from None

    def doc_text(self, docid: str) -> str:
        """Text of passage ``docid`` (read on first use, then cached)."""
        return self.docs([docid])[docid]

    def docs(self, docids: Iterable[str]) -> dict[str, str]:
        """Texts of several passages as {docid: text}; fetches the missing ones in one batch."""
        wanted = list(dict.fromkeys(docids))
        missing = [d for d in wanted if d not in self._cache]
        if missing:
            found = self._doc_lookup(missing)
            self._cache.update((d, found[d]) for d in missing if d in found)
            absent = [d for d in missing if d not in found]
            if absent:
                more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
                raise MatchsigError(f"passage {absent[0]!r}{more} not found in collection {self.name!r}")
        return {d: self._cache[d] for d in wanted}

    def to_pyterrier(self) -> Any:
        """Topics, all judgments and judged passage texts as PyTerrier frames (needs the pyterrier extra)."""
        from .frames import to_pyterrier

        return to_pyterrier(self)

    def negative_candidates(self) -> Sequence[str]:
        """Docids easy negatives are drawn from (see the class docstring)."""
        if callable(self._negatives):
            self._negatives = self._negatives()
        if self._negatives is None:
            judged = {d for docs in self.qrels.values() for d in docs}
            self._negatives = sorted(judged, key=natural_key)
        return self._negatives


# ---- registry ----------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[[], Collection]] = {}


def register_collection(name: str, factory: Callable[[], Collection], *, overwrite: bool = False) -> None:
    """Make ``load_collection(name)`` return ``factory()``.

    Registered names take precedence over folders and ir_datasets ids. Re-registering a name
    raises unless ``overwrite=True``.
    """
    if name in _REGISTRY and not overwrite:
        raise MatchsigError(f"collection {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def available_collections() -> list[str]:
    """Registered collection names (folders and ir_datasets ids work too, see the module doc)."""
    return sorted(_REGISTRY)


def load_collection(spec: str | Path) -> Collection:
    """Load a collection from a registered name, a local folder or an ir_datasets id."""
    text = str(spec).strip()
    if not text:
        raise MatchsigError("empty dataset id")
    if text in _REGISTRY:
        return _REGISTRY[text]()
    path = Path(text).expanduser()
    if path.is_dir():
        return read_folder(path)
    if path.exists():
        raise MatchsigError(f"dataset {text!r} is a file; expected a folder with queries.tsv, qrels.txt, passages.tsv")
    if text.startswith((".", "/", "~")) or "\\" in text:
        raise MatchsigError(f"dataset folder {text!r} does not exist")
    return _from_ir_datasets(text)


# ---- local folders -----------------------------------------------------------------------------

# Accepted names, first match wins; each may also end in .gz.
_QUERY_FILES = ("queries.tsv", "topics.tsv")
_QRELS_FILES = ("qrels.txt", "qrels.tsv", "qrels")
_PASSAGE_FILES = ("passages.tsv", "collection.tsv", "docs.tsv")


def _find(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _open_text(path: Path) -> io.TextIOBase:
    # newline="\n" so stray \r inside texts never split a line; utf-8-sig drops a leading BOM.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="\n")  # type: ignore[return-value]
    return open(path, encoding="utf-8-sig", newline="\n")


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a corrupt .gz or non-UTF-8 file is a one-line error."""
    import zlib

    try:
        with _open_text(path) as fh:
            yield from enumerate(fh, 1)
    except (OSError, EOFError, zlib.error) as exc:
        what = "corrupt or truncated gzip file" if path.suffix == ".gz" else "unreadable file"
        raise MatchsigError(f"{path}: {what} ({_one_line(exc)})") from None
    except UnicodeDecodeError as exc:
        raise MatchsigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _bad_line(path: Path, lineno: int, message: str) -> MatchsigError:
    """A format error at ``path:lineno``; in a .gz file, first rule out corruption (the CRC is only
    checked at the end of the stream, so a damaged file first shows as garbled lines)."""
    if path.suffix == ".gz":
        try:
            for _ in _numbered_lines(path):
                pass
        except MatchsigError as exc:
            return exc
    return MatchsigError(f"{path}:{lineno}: {message}")


def _read_tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for lineno, line in _numbered_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        key, sep, value = line.partition("\t")
        if not sep:
            raise _bad_line(path, lineno, "expected 'id<TAB>text'")
        yield key.strip(), value


def read_queries(path: Path) -> dict[str, str]:
    """Read a ``qid<TAB>text`` file."""
    return dict(_read_tsv_pairs(path))


def read_qrels(path: Path) -> Qrels:
    """Read TREC qrels (``qid iter docid grade``; a 3-column ``qid docid grade`` file works too)."""
    qrels: Qrels = {}
    for lineno, line in _numbered_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 4:
            qid, _, docid, grade = parts
        elif len(parts) == 3:
            qid, docid, grade = parts
        else:
            raise _bad_line(path, lineno, "expected 'qid 0 docid grade'")
        try:
            qrels.setdefault(qid, {})[docid] = int(grade)
        except ValueError:
            raise _bad_line(path, lineno, f"grade {grade!r} is not an integer") from None
    return qrels


def read_folder(folder: str | Path, name: str | None = None) -> Collection:
    """Load a collection folder (``queries.tsv``, ``qrels.txt``, ``passages.tsv``; ``.gz`` allowed).

    Passages are read on first use; until then only queries and qrels are in memory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MatchsigError(f"dataset folder {str(folder)!r} does not exist")
    queries_path = _find(folder, _QUERY_FILES)
    if queries_path is None:
        raise MatchsigError(f"missing file: no queries.tsv in {folder}")
    qrels_path = _find(folder, _QRELS_FILES)
    if qrels_path is None:
        raise MatchsigError(f"missing file: no qrels.txt in {folder}")
    passages_path = _find(folder, _PASSAGE_FILES)

    passages: dict[str, str] | None = None

    def all_passages() -> dict[str, str]:
        nonlocal passages
        if passages is None:
            if passages_path is None:
                raise MatchsigError(f"missing file: no passages.tsv in {folder}")
            passages = dict(_read_tsv_pairs(passages_path))
        return passages

    def lookup(docids: list[str]) -> dict[str, str]:
        texts = all_passages()
        return {d: texts[d] for d in docids if d in texts}

    def candidates() -> Sequence[str]:
        # Every passage of the file; sorted so the draw does not depend on the file's line order.
        return sorted(all_passages(), key=natural_key)

    return Collection(
        name=name or str(folder),
        queries=read_queries(queries_path),
        qrels=read_qrels(qrels_path),
        doc_lookup=lookup,
        negative_candidates=candidates,
        negative_source="folder",
    )


# ---- ir_datasets -------------------------------------------------------------------------------


def _record_text(record: Any) -> str:
    text = getattr(record, "text", None)
    if text is None and hasattr(record, "default_text"):
        text = record.default_text()
    if text is None:
        raise MatchsigError(f"ir_datasets record {type(record).__name__} has no text field")
    return text


class _CorpusIds(Sequence[str]):
    """Lazy docid view over an ir_datasets corpus: ``len`` and ``[i]`` without reading it all.

    Uses ``docs_iter()[i]``, which ir_datasets serves from its docstore (built on first use).
    """

    def __init__(self, dataset: Any, dataset_id: str) -> None:
        self._dataset = dataset
        self._id = dataset_id
        count = dataset.docs_count()
        if count is None:  # msmarco-passage only knows its size once its docstore is built
            count = dataset.docs_store().count()
        self._len = int(count)
        self._iter: Any = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        try:
            if self._iter is None:
                self._iter = self._dataset.docs_iter()
            return self._iter[int(index)].doc_id
        except Exception as exc:
            raise MatchsigError(f"could not read passage #{index} of {self._id!r} ({_one_line(exc)})") from None


def _one_line(exc: BaseException, limit: int = 160) -> str:
    message = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Environment variable naming a folder of offline copies (``trec-dl-2019/``, ``trec-dl-2020/`` ...).
DATA_ENV = "MATCHSIG_DATA"

#: Subfolder of ``$MATCHSIG_DATA`` that stands in for an ir_datasets id.
OFFLINE_FOLDERS: dict[str, str] = {
    "msmarco-passage/trec-dl-2019/judged": "trec-dl-2019",
    "msmarco-passage/trec-dl-2020/judged": "trec-dl-2020",
    "msmarco-passage-v2/trec-dl-2021/judged": "trec-dl-2021",
    "msmarco-passage-v2/trec-dl-2022/judged": "trec-dl-2022",
}


def _offline_copy(dataset_id: str) -> Path | None:
    """The folder ``$MATCHSIG_DATA/<subfolder>`` for a paper id, when it holds qrels."""
    root = os.environ.get(DATA_ENV)
    if not root or dataset_id not in OFFLINE_FOLDERS:
        return None
    folder = Path(root).expanduser() / OFFLINE_FOLDERS[dataset_id]
    return folder if _find(folder, _QRELS_FILES) is not None else None


def _from_ir_datasets(dataset_id: str) -> Collection:
    offline = _offline_copy(dataset_id)
    if offline is not None:
        # Same queries, qrels and (encoding-repaired) texts as ir_datasets, without a download.
        return read_folder(offline, name=dataset_id)
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - ir_datasets is a dependency
        raise MatchsigError(f"unknown dataset id {dataset_id!r} (ir_datasets is not installed)") from None
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise MatchsigError(
            f"unknown dataset id {dataset_id!r}: not a registered collection ({', '.join(available_collections())}),"
            " a folder, or an ir_datasets id"
        ) from None
    for part in ("queries", "qrels"):
        if hasattr(dataset, f"has_{part}") and not getattr(dataset, f"has_{part}")():
            raise MatchsigError(f"ir_datasets id {dataset_id!r} has no {part}")
    try:
        queries = {q.query_id: _record_text(q) for q in dataset.queries_iter()}
        qrels: Qrels = {}
        for qrel in dataset.qrels_iter():
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    except MatchsigError:
        raise
    except Exception as exc:  # downloads fail offline with many exception types
        raise MatchsigError(
            f"could not load {dataset_id!r} through ir_datasets ({_one_line(exc)}); "
            f"download it first, pass a local folder, or set {DATA_ENV} to a folder of offline copies"
        ) from None

    store: Any = None

    def lookup(docids: list[str]) -> dict[str, str]:
        nonlocal store
        try:
            if store is None:
                store = dataset.docs_store()
            if hasattr(store, "get_many"):
                found = store.get_many(docids)
                return {d: _record_text(doc) for d, doc in found.items()}
            out = {}
            for docid in docids:
                try:
                    out[docid] = _record_text(store.get(docid))
                except KeyError:
                    pass
            return out
        except MatchsigError:
            raise
        except Exception as exc:
            raise MatchsigError(f"could not read passages of {dataset_id!r} ({_one_line(exc)})") from None

    def candidates() -> Sequence[str]:
        # Easy negatives come from the whole corpus; a dataset without a corpus (or a test fake)
        # falls back to the passages judged for any of its queries.
        if not (hasattr(dataset, "docs_count") and hasattr(dataset, "docs_iter")) or (
            hasattr(dataset, "has_docs") and not dataset.has_docs()
        ):
            collection.negative_source = "judged"
            return sorted({d for docs in qrels.values() for d in docs}, key=natural_key)
        try:
            collection.negative_source = "corpus"
            return _CorpusIds(dataset, dataset_id)
        except MatchsigError:
            raise
        except Exception as exc:
            raise MatchsigError(f"could not index the corpus of {dataset_id!r} ({_one_line(exc)})") from None

    collection = Collection(dataset_id, queries, qrels, lookup, candidates, negative_source="corpus")
    return collection


# ---- demo --------------------------------------------------------------------------------------

DEMO_DIR = Path(__file__).parent / "demo"


def _demo() -> Collection:
    if not DEMO_DIR.is_dir():  # pragma: no cover - shipped with the package
        raise MatchsigError(f"the bundled demo collection is missing ({DEMO_DIR})")
    return read_folder(DEMO_DIR, name="demo")


register_collection("demo", _demo)
