"""The sampled pools of a run: ``main`` (Table 1, Figure 1, head ablations; or a TREC run's top-k) and
``contrast`` (the contrastive analysis), each merged over its datasets, with their texts in row order."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..data.sampling import EASY_NEGATIVE, Pool, PoolRow
from ..errors import MatchsigError

__all__ = ["CONTRAST_LEVELS", "Pools", "describe", "protocol_note"]

CONTRAST_LEVELS = (3, 0, EASY_NEGATIVE)
Texts = tuple[list[str], list[str]]


class Pools:
    """The pools of one configuration, each sampled once (collections loaded once per run)."""

    def __init__(self, config, log: Callable[[str], None] = lambda msg: None):
        self.config = config
        self.log = log
        self._collections_by_spec: dict = {}
        self._made: dict[str, tuple[Pool, Texts]] = {}

    def collections(self, specs: Sequence[str] | None = None) -> list:
        """The collections of ``specs`` (default: the ablation datasets), each loaded once."""
        from ..data.datasets import load_collection

        specs = self.config.datasets if specs is None else specs
        for spec in specs:
            if spec not in self._collections_by_spec:
                self._collections_by_spec[spec] = load_collection(spec)
        return [self._collections_by_spec[spec] for spec in specs]

    def sample(self, per_grade: int | None, easy: int, grades: Sequence[int] | None,
               specs: Sequence[str] | None = None) -> tuple[Pool, Texts]:
        """One pool over the datasets ``specs`` (qids must not collide), with its texts in row order."""
        from ..data.sampling import sample_pool

        rows: list[PoolRow] = []
        texts_q: dict[str, str] = {}
        texts_d: dict[tuple[str, str], str] = {}
        seen: dict[str, str] = {}
        collections = self.collections(specs)
        for col in collections:
            qids = col.judged_qids()
            if self.config.max_queries:
                qids = qids[: self.config.max_queries]
            pool = sample_pool(col, per_grade=per_grade, easy_negatives=easy, seed=self.config.seed, qids=qids)
            if grades is not None:
                pool = pool.filter(grades)
            for q in pool.qids:
                if q in seen:
                    raise MatchsigError(f"query id {q!r} occurs in both {seen[q]!r} and {col.name!r}")
                seen[q] = col.name
            qs, ds = pool.pairs()
            for row, qt, dt in zip(pool.rows, qs, ds):
                rows.append(row)
                texts_q[row.qid] = qt
                texts_d[(row.qid, row.docid)] = dt
        merged = Pool(tuple(rows), None, "+".join(c.name for c in collections), per_grade, easy, self.config.seed)
        merged_texts = ([texts_q[r.qid] for r in rows], [texts_d[(r.qid, r.docid)] for r in rows])
        return merged, merged_texts

    def get(self, name: str) -> tuple[Pool, Texts]:
        """Pool ``name`` (``main`` or ``contrast``) with its texts."""
        if name not in self._made:
            c = self.config
            if name == "main":
                self._made[name] = self._run_pool() if c.run else self.sample(c.per_grade, 0, None)
            elif name == "contrast":
                self._made[name] = self.sample(c.contrast_per_grade, c.contrast_easy, CONTRAST_LEVELS, c.analysis)
            else:
                raise MatchsigError(f"unknown pool {name!r}")
        return self._made[name]

    def _run_pool(self) -> tuple[Pool, Texts]:
        """The re-ranking protocol's main pool: the top-k candidates of the configured run."""
        from ..data.runs import pool_from_run, read_trec_run, with_passages

        collection = with_passages(self.collections()[0], self.config.passages or [])
        pool = pool_from_run(read_trec_run(self.config.run), collection, self.config.top_k, self.config.max_queries)
        if pool.unevaluated:
            self.log(f"note: {len(pool.unevaluated)} queries of the run have no judgments and are left out "
                     f"(e.g. {pool.unevaluated[0]})")
        return pool, pool.pairs()

    def easy_negative_sources(self) -> dict[str, dict]:
        """Per analysis dataset: where its easy negatives were drawn from, with a warning when not the corpus."""
        out = {}
        for spec, col in zip(self.config.analysis, self.collections(self.config.analysis)):
            candidates = col.negative_candidates()
            source = col.negative_source
            info: dict = {"source": source, "candidates": len(candidates)}
            if source == "corpus":
                info["description"] = "random passages of the whole corpus (ir_datasets), as in the paper"
            else:
                judged = {d for docs in col.qrels.values() for d in docs}
                n_judged = sum(1 for d in candidates if d in judged)
                info["judged_for_some_query"] = n_judged
                where = "the passages file of the folder" if source == "folder" else "the passages judged for any query"
                info["description"] = (f"random passages among {len(candidates):,} of {where}, {n_judged:,} of them "
                                       "judged for some query of the collection")
                info["warning"] = (
                    "easy negatives come from a folder's passages, i.e. mostly passages judged (retrieved by TREC "
                    "systems) for other queries, not random passages of the corpus as in the paper: they are "
                    "harder than the paper's easy negatives, which shrinks the relevant-vs-easy contrasts"
                )
            out[spec] = info
        return out

    def frame(self, names: Sequence[str]) -> pd.DataFrame | None:
        """``pools.tsv``: every pair of the pools ``names`` with its texts (a pair in several pools: once)."""
        from ..analysis.runfolder import POOLS

        frames = []
        for name in names:
            pool, (qs, ds) = self.get(name)
            frames.append(pd.DataFrame({POOLS.qid: [r.qid for r in pool.rows], POOLS.docid: [r.docid for r in pool.rows],
                                        POOLS.grade: [r.grade for r in pool.rows], POOLS.query: qs,
                                        POOLS.document: ds, POOLS.pool: name}))
        if not frames:
            return None
        frame = pd.concat(frames, ignore_index=True)
        keys = [POOLS.qid, POOLS.docid, POOLS.grade, POOLS.query, POOLS.document]
        return frame.groupby(keys, sort=False, as_index=False)[POOLS.pool].agg(lambda s: "+".join(s))


def describe(pool: Pool) -> dict:
    """A pool's entry in ``summary.json``."""
    info = {"fingerprint": pool.fingerprint, "queries": len(pool.qids), "pairs": len(pool),
            "per_grade": pool.per_grade, "easy_negatives": pool.easy_negatives,
            "grade_counts": {str(g): n for g, n in pool.grade_counts().items()}}
    described = pool.describe()
    if described.get("protocol") == "rerank":  # matchsig.data.runs.RunPool
        info.update({k: described[k] for k in ("protocol", "run", "top_k", "run_fingerprint", "judged", "unjudged",
                                                "unevaluated_queries")})
    return info


def protocol_note(pool: Pool) -> str:
    """One sentence naming the re-ranking protocol and its unjudged passages ("" for sampled pools)."""
    d = pool.describe()
    if d.get("protocol") != "rerank":
        return ""
    top = "all" if d["top_k"] is None else f"the top {d['top_k']}"
    return (f"Re-ranking protocol: {top} candidates of run {Path(str(d['run'])).name} per query, {d['pairs']} pairs, "
            f"{d['unjudged']} of them unjudged (counted as non-relevant); nDCG@10 against all judgments.")
