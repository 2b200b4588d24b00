"""The training data: pool passages, queries, BM25 candidates and DL20 judgments, without DL19."""

from __future__ import annotations

from pathlib import Path

from ..data.datasets import read_qrels
from ..errors import MatchsigError
from .config import DATA_ENV


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _read_tsv(path: Path) -> dict[str, str]:
    """First two columns of a TSV file; {} when the (optional) file is absent."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
    return out


def _read_run(path: Path) -> dict[str, list[str]]:
    """Document ids per query of a TREC run, in file order; {} when the file is absent."""
    out: dict[str, list[str]] = {}
    if not path.is_file():
        return out
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if len(parts) >= 3:
            out.setdefault(parts[0], []).append(parts[2])
    return out


def _topics(folder: Path) -> dict[str, str]:
    """Query texts of a TREC DL year: all topics, the judged ones' file winning on a clash."""
    return {**_read_tsv(folder / "queries.all.tsv"), **_read_tsv(folder / "queries.tsv")}


class _Pool:
    """Passages and queries numbered in order of arrival; DL19 dropped, duplicate texts merged."""

    def __init__(self, dl19: Path) -> None:
        # DL19 is the evaluation data: never train on any of its passages or query texts.
        self.ex_pids: set[str] = set()
        self.ex_texts: set[str] = set()
        for p in (dl19 / "passages.tsv", dl19 / "bm25-top100" / "passages.tsv"):
            for pid, text in _read_tsv(p).items():
                self.ex_pids.add(pid)
                self.ex_texts.add(_norm(text))
        self.ex_queries = {_norm(t) for t in _read_tsv(dl19 / "queries.tsv").values()}
        if not self.ex_pids:
            raise MatchsigError(f"{dl19} is missing: it is needed to exclude the evaluation data from training")
        self.passages: list[str] = []
        self.queries: list[str] = []
        self.pool_ids: dict[str, int] = {}
        self.pool_texts: dict[str, int] = {}
        self.query_ids: dict[str, int] = {}
        self.dropped = {"passages_dl19": 0, "queries_dl19": 0}

    def passage(self, pid: str, text: str) -> int | None:
        """The pool number of a passage, or None when it is DL19's."""
        if pid in self.pool_ids:
            return self.pool_ids[pid]
        n = _norm(text)
        if pid in self.ex_pids or n in self.ex_texts:
            self.dropped["passages_dl19"] += 1
            return None
        if n in self.pool_texts:  # same text under another id (v1/v2): one entry
            self.pool_ids[pid] = self.pool_texts[n]
            return self.pool_texts[n]
        self.pool_ids[pid] = len(self.passages)
        self.pool_texts[n] = len(self.passages)
        self.passages.append(text)
        return self.pool_ids[pid]

    def query(self, text: str) -> int | None:
        """The number of a query text, or None when it is a DL19 query."""
        n = _norm(text)
        if n in self.ex_queries:
            self.dropped["queries_dl19"] += 1
            return None
        if n in self.query_ids:
            return self.query_ids[n]
        self.query_ids[n] = len(self.queries)
        self.queries.append(text)
        return self.query_ids[n]


def _add_judged(pool: _Pool, d20: Path, judged: dict[int, dict[int, int]]) -> None:
    p20 = _read_tsv(d20 / "passages.tsv")
    q20 = _topics(d20)
    for qid, rels in read_qrels(d20 / "qrels.txt").items():
        if qid not in q20:
            continue
        qn = pool.query(q20[qid])
        if qn is None:
            continue
        for pid, grade in rels.items():
            if pid in p20:
                pn = pool.passage(pid, p20[pid])
                if pn is not None:
                    judged.setdefault(qn, {})[pn] = grade


def _add_bm25(pool: _Pool, folder: Path, bm25: dict[int, list[int]]) -> None:
    qs = _topics(folder)
    texts = _read_tsv(folder / "bm25-top100" / "passages.tsv")
    for qid, pids in _read_run(folder / "bm25-top100" / "run.bm25.top100.txt").items():
        if qid not in qs:
            continue
        qn = pool.query(qs[qid])
        if qn is None:
            continue
        lst = bm25.setdefault(qn, [])
        for pid in pids:
            if pid in texts:
                pn = pool.passage(pid, texts[pid])
                if pn is not None and pn not in lst:
                    lst.append(pn)
    for _, text in sorted(qs.items()):  # all topic texts: distillation queries
        pool.query(text)


def _add_triples(pool: _Pool, triples: Path, bm25: dict[int, list[int]]) -> None:
    if not triples.is_file():
        return
    for i, line in enumerate(open(triples, encoding="utf-8")):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:
            continue
        qn = pool.query(parts[0])
        pos = pool.passage(f"triple-pos:{i}", parts[1])
        neg = pool.passage(f"triple-neg:{i}", parts[2])
        if qn is not None and pos is not None and neg is not None:
            bm25.setdefault(qn, []).extend([pos, neg])


def load_training_data(data_dir: Path) -> tuple[list[str], list[str], dict[int, list[int]], dict[int, dict[int, int]], dict]:
    """Pool passages, queries, BM25 candidates and DL20 judgments, with everything of DL19 removed."""
    data_dir = Path(data_dir)
    for p in (data_dir / "trec-dl-2020" / "qrels.txt", data_dir / "trec-dl-2020" / "passages.tsv"):
        if not p.is_file():
            raise MatchsigError(f"training data not found: {p} (give --data or set {DATA_ENV})")
    pool = _Pool(data_dir / "trec-dl-2019")
    bm25: dict[int, list[int]] = {}
    judged: dict[int, dict[int, int]] = {}
    _add_judged(pool, data_dir / "trec-dl-2020", judged)
    for year in ("trec-dl-2020", "trec-dl-2022"):
        _add_bm25(pool, data_dir / year, bm25)
    _add_triples(pool, data_dir / "msmarco-train" / "triples.train.small.head100.tsv", bm25)
    stats = {
        "pool_passages": len(pool.passages),
        "queries": len(pool.queries),
        "judged_queries": len(judged),
        "judged_pairs": sum(len(v) for v in judged.values()),
        "bm25_queries": len(bm25),
        "excluded": pool.dropped,
    }
    return pool.passages, pool.queries, bm25, judged, stats
