"""Diagnostic pairs: (query, baseline document, perturbed document) triples for activation patching.

Each diagnostic takes a (query, passage) row of a pool (:mod:`matchsig.data.sampling`) and inserts words
into the passage, once for the *perturbed* document and once, with a controlled stand-in, for the
*baseline* document, at the same place (``append``: after the passage; ``prepend``: before it):

=========  ============================================  =============================================
name       perturbed document inserts                    baseline document inserts
=========  ============================================  =============================================
``tfc1``   a query term (Fang et al.'s TFC1: one more    the filler word, once per word-piece of the
           occurrence of a query term; Chen et al. 2024) term
``tdc``    the query term of highest IDF                 the query term of lowest IDF (TDC: the more
                                                         discriminative term should count more)
``lnc1``   a word that is not a query term               the filler (LNC1: a non-query word should not
                                                         raise the score)
``stmc1``  the model's nearest embedding neighbour of a  a random non-query word of the collection
           query term (STMC1: a semantically closer      (the contrast is closeness to the query, not
           term should count more)                       the presence of one more word)
=========  ============================================  =============================================

**Position alignment** (as Chen et al. 2024 and MechIR do): patching position i of the baseline
with position i of the perturbed run needs the two token sequences to line up. The shorter of the
two insertions is padded with the filler word (default ``"a"``, MechIR's and Chen et al.'s
choice: one token, a stopword) up to the other's number of word-pieces, so both documents have
equal token counts and differ only at the inserted positions; this is checked after tokenisation
with the model's own tokenizer (a row that does not align is dropped and counted in
``skipped``). Passages are cut at a word boundary beforehand so that the insertion is never
truncated away (``max_doc_tokens``, default: what ``max_length`` leaves).

**Words.** Query terms are the lower-cased alphabetic words of the query (``[a-z]+``) minus a
stopword list (:data:`STOPWORDS`), of two letters or more. *Variants* of a word (excluded where a
word must differ from the query) are words where one is a prefix of the other, or that share
their first ``max(4, shorter length - 2)`` letters (a stemmer-free stand-in: it catches
flea/fleas, cost/costs/costing, roof/roofing). IDF (``tdc``) is BM25's ``log(1 + (N - df + 0.5) /
(df + 0.5))`` over the distinct passages of the pool. Non-query words (``lnc1``, ``stmc1``) are
drawn from the words of the pool's passages that are no query term or variant of one, not
stopwords, three letters or more.

**Semantic neighbour** (``stmc1``), offline from the model itself: among the vocabulary entries
that are whole words (no ``##`` piece, alphabetic, three letters or more, not stopwords), the one
whose input embedding has the highest cosine similarity to the query term's embedding, excluding
the term itself, any query word and their variants. Only query terms that are one token qualify.

**Seeding.** Rows are drawn from the pool by a seeded permutation (seed, diagnostic); each row's
own choices (which query term, which word) come from ``query_rng(seed, qid + docid, diagnostic)``,
so they do not depend on which other rows were drawn. Every set has a :attr:`DiagnosticPairs.fingerprint`
over its triples' texts.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.sampling import Pool, query_rng
from ..errors import MatchsigError

__all__ = ["DIAGNOSTICS", "STOPWORDS", "DiagnosticPairs", "Triple", "make_pairs", "read_pairs"]

#: Diagnostics and a one-line description of each.
DIAGNOSTICS: dict[str, str] = {
    "tfc1": "a query term added to the passage (baseline: filler)",
    "tdc": "the highest-IDF query term added (baseline: the lowest-IDF query term)",
    "lnc1": "a non-query word added (baseline: filler)",
    "stmc1": "the model's nearest embedding neighbour of a query term added (baseline: a random non-query word)",
}

WHERE = ("append", "prepend")

#: English stopwords (Lucene's list plus frequent question and function words of MS MARCO queries).
STOPWORDS = frozenset("""
a an and are as at be but by for if in into is it no not of on or such that the their then there these they
this to was will with what how why when where who whom which whose do does did done is am been being have has
had can could should would may might must shall i me my we our you your he him his she her its them us from
up down out over under again further once here all any both each few more most other some own same so than
too very s t just don now about above after before below between through during off also define definition
meaning mean means long much many""".split())

_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def query_terms(query: str) -> list[str]:
    """The query's content words, in order, without repeats (see the module doc)."""
    return list(dict.fromkeys(w for w in _words(query) if w not in STOPWORDS and len(w) >= 2))


def is_variant(a: str, b: str) -> bool:
    """Whether two words count as variants of each other (stemmer-free rule of the module doc)."""
    if a.startswith(b) or b.startswith(a):
        return True
    k = max(4, min(len(a), len(b)) - 2)
    return len(a) >= k and len(b) >= k and a[:k] == b[:k]


@dataclass(frozen=True)
class Triple:
    """One diagnostic pair: ``term`` is what the perturbed document inserts, ``stand_in`` what the baseline inserts."""

    qid: str
    docid: str
    diagnostic: str
    where: str
    term: str
    stand_in: str
    query: str
    baseline: str
    perturbed: str


_COLUMNS = ("qid", "docid", "diagnostic", "where", "term", "stand_in", "query", "baseline", "perturbed")


@dataclass(frozen=True)
class DiagnosticPairs:
    """A set of triples with the settings that drew it."""

    triples: tuple[Triple, ...]
    diagnostic: str = ""
    dataset: str = ""
    n_rows: int = 0
    seed: int = 0
    filler: str = "a"
    skipped: int = 0
    pool_fingerprint: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.triples)

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over the sorted tab-joined triples (all their fields)."""
        lines = sorted("\t".join(getattr(t, c) for c in _COLUMNS) for t in self.triples)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]

    def queries(self) -> list[str]:
        return [t.query for t in self.triples]

    def baselines(self) -> list[str]:
        return [t.baseline for t in self.triples]

    def perturbeds(self) -> list[str]:
        return [t.perturbed for t in self.triples]

    def describe(self) -> dict[str, object]:
        """Settings and identity, to save with any result."""
        return {"diagnostic": self.diagnostic, "dataset": self.dataset, "rows": self.n_rows, "seed": self.seed,
                "filler": self.filler, "pairs": len(self.triples), "skipped": self.skipped,
                "pool_fingerprint": self.pool_fingerprint, "pairs_fingerprint": self.fingerprint, **self.extra}

    def write_tsv(self, path: str | Path) -> Path:
        """One triple per line, columns ``qid docid diagnostic where term stand_in query baseline perturbed``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ["\t".join(_COLUMNS)] + ["\t".join(getattr(t, c) for c in _COLUMNS) for t in self.triples]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return path


def read_pairs(path: str | Path, **settings) -> DiagnosticPairs:
    """Read triples written by :meth:`DiagnosticPairs.write_tsv` (the fingerprint depends on the triples only)."""
    path = Path(path)
    if not path.is_file():
        raise MatchsigError(f"missing file: diagnostic pairs {path} do not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != _COLUMNS:
        raise MatchsigError(f"{path}: not a diagnostic pairs file (expected the header {' '.join(_COLUMNS)})")
    triples = []
    for lineno, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != len(_COLUMNS):
            raise MatchsigError(f"{path}:{lineno}: expected {len(_COLUMNS)} tab-separated columns, got {len(cells)}")
        triples.append(Triple(*cells))
    return DiagnosticPairs(tuple(triples), **settings)


# ---- construction --------------------------------------------------------------------------------


class _Builder:
    """Per-pool state shared by the rows of one diagnostic: tokenizer, vocabularies, IDF, neighbours."""

    def __init__(self, ce, pool: Pool, filler: str, max_doc_tokens: int | None):
        self.ce = ce
        self.tok = ce.tokenizer
        self.filler = filler
        pieces = self.tok(filler, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise MatchsigError(f"filler {filler!r} is {len(pieces)} tokens for this tokenizer; it must be one token")
        self.max_doc_tokens = max_doc_tokens
        queries, docs = pool.pairs()
        self.texts = {r.docid: d for r, d in zip(pool.rows, docs)}
        self.queries = {r.qid: q for r, q in zip(pool.rows, queries)}
        distinct = list(self.texts.values())
        df = Counter(w for d in distinct for w in set(_words(d)))
        n = len(distinct)
        self.idf = {w: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self.vocabulary = sorted(w for w in df if len(w) >= 3 and w not in STOPWORDS)
        self._embeddings = None

    def n_pieces(self, words: str) -> int:
        return len(self.tok(words, add_special_tokens=False)["input_ids"])

    def other_word(self, rng: np.random.Generator, terms: list[str]) -> str | None:
        """A random pool word that is no query term nor a variant of one."""
        for _ in range(200):
            w = self.vocabulary[int(rng.integers(len(self.vocabulary)))]
            if not any(is_variant(w, t) for t in terms):
                return w
        return None

    def neighbour(self, term: str, terms: list[str]) -> str | None:
        """Nearest whole-word vocabulary entry of ``term`` by input-embedding cosine (module doc)."""
        ids = self.tok(term, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            return None
        if self._embeddings is None:
            import torch

            weight = self.ce.model.get_input_embeddings().weight.detach().float().cpu()
            self._embeddings = torch.nn.functional.normalize(weight, dim=-1)
            vocab = self.tok.convert_ids_to_tokens(list(range(weight.shape[0])))
            self._whole = np.array([t.isalpha() and t.islower() and len(t) >= 3 and t not in STOPWORDS for t in vocab])
            self._vocab = vocab
        sims = (self._embeddings @ self._embeddings[ids[0]]).numpy()
        for j in np.argsort(-sims, kind="stable"):
            if not self._whole[j]:
                continue
            w = self._vocab[int(j)]
            if not any(is_variant(w, t) for t in terms):
                return w
        return None

    def trimmed(self, doc: str, query: str, extra: int) -> str:
        """``doc`` cut at a word boundary so that ``extra`` inserted tokens still fit (module doc)."""
        budget = self.ce.max_length - self.ce.n_template_tokens - self.n_pieces(query) - extra
        if self.max_doc_tokens is not None:
            budget = min(budget, self.max_doc_tokens)
        enc = self.tok(doc, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= budget:
            return doc
        if budget < 1:
            return ""
        word_ids = enc.word_ids()
        cut = budget
        while cut > 0 and word_ids[cut] is not None and word_ids[cut] == word_ids[cut - 1]:
            cut -= 1  # do not split a word into pieces
        return doc[: enc["offset_mapping"][cut][0]].rstrip()

    def insert(self, doc: str, words: str, where: str) -> str:
        return f"{doc} {words}" if where == "append" else f"{words} {doc}"

    def triple(self, qid, docid, name, where, term, stand_in) -> Triple | None:
        """Pad the shorter insertion with the filler, insert both, check token alignment."""
        query, doc = self.queries[qid], self.texts[docid]
        k_t, k_s = self.n_pieces(term), (self.n_pieces(stand_in) if stand_in else 0)
        k = max(k_t, k_s)
        ins_t = " ".join([term] + [self.filler] * (k - k_t))
        ins_s = " ".join(([stand_in] if stand_in else []) + [self.filler] * (k - k_s))
        doc = self.trimmed(doc, query, k)
        base, pert = self.insert(doc, ins_s, where), self.insert(doc, ins_t, where)
        enc = self.ce.encode([query, query], [base, pert])
        if (len(enc.input_ids[0]) != len(enc.input_ids[1]) or enc.part_ids[0] != enc.part_ids[1]
                or enc.input_ids[0] == enc.input_ids[1]):
            return None
        return Triple(qid, docid, name, where, term, ins_s, query, base, pert)


def _choose(builder: _Builder, name: str, qid: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(term, stand-in) of one row, or None if the query does not qualify."""
    terms = query_terms(builder.queries[qid])
    if not terms:
        return None
    if name == "tfc1":
        return terms[int(rng.integers(len(terms)))], ""
    if name == "tdc":
        scored = sorted({t: builder.idf.get(t, max(builder.idf.values(), default=0.0)) for t in terms}.items(),
                        key=lambda kv: (kv[1], kv[0]))
        if len(scored) < 2 or scored[0][1] == scored[-1][1]:
            return None
        return scored[-1][0], scored[0][0]
    if name == "lnc1":
        w = builder.other_word(rng, terms)
        return (w, "") if w else None
    if name == "stmc1":
        order = list(rng.permutation(len(terms)))
        for i in order:
            near = builder.neighbour(terms[int(i)], terms)
            if near is not None:
                other = builder.other_word(rng, terms + [near])
                return (near, other) if other else None
        return None
    raise AssertionError(name)


def make_pairs(ce, pool: Pool, diagnostic: str, n: int = 100, seed: int = 0, where: Sequence[str] = WHERE,
               filler: str = "a", grades: Sequence[int] | None = None, max_doc_tokens: int | None = None) -> DiagnosticPairs:
    """Draw ``n`` pool rows (of ``grades``, default all) that qualify for ``diagnostic`` and build one
    triple per row and insertion place in ``where``; see the module doc for each recipe.

    ``ce`` (a :class:`~matchsig.engine.model.CrossEncoder`) provides the tokenizer that checks alignment and,
    for ``stmc1``, the embedding matrix.
    """
    name = str(diagnostic).strip().lower()
    if name not in DIAGNOSTICS:
        raise MatchsigError(f"unknown diagnostic {diagnostic!r}: use one of {', '.join(DIAGNOSTICS)}")
    where = tuple(where)
    bad = [w for w in where if w not in WHERE]
    if bad or not where:
        raise MatchsigError(f"bad insertion place {bad[0] if bad else None!r}: use append and/or prepend")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise MatchsigError(f"bad number of rows {n!r}: must be an integer >= 1")
    rows = [r for r in pool.rows if grades is None or r.grade in set(grades)]
    if not rows:
        raise MatchsigError(f"the pool has no rows of grades {list(grades or [])}")
    builder = _Builder(ce, pool, filler, max_doc_tokens)
    digest = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16)
    order = np.random.default_rng([int(seed), digest]).permutation(len(rows))
    triples: list[Triple] = []
    used = skipped = 0
    for i in order:
        if used == n:
            break
        row = rows[int(i)]
        choice = _choose(builder, name, row.qid, query_rng(seed, f"{row.qid}\x1f{row.docid}", f"diagnostic={name}"))
        if choice is None:
            continue
        made = [builder.triple(row.qid, row.docid, name, w, *choice) for w in where]
        if any(t is None for t in made):
            skipped += 1
            continue
        triples.extend(made)
        used += 1
    if not triples:
        raise MatchsigError(f"no row of the pool qualifies for {name} (queries need content words)")
    return DiagnosticPairs(tuple(triples), name, pool.dataset, used, int(seed), filler, skipped, pool.fingerprint,
                           {"where": list(where), "grades": None if grades is None else list(grades)})
