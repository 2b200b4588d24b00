"""Syntactic and semantic matching heads end to end: contrast run -> heads.csv -> head ablations -> report.

A tiny random model does not yield semantic heads (its heads cannot tell relevant passages from term-sharing
hard negatives), so the run's attention statistics are constructed: the encoder's ``attention_stats`` is
replaced by one that gives each (query, passage) pair, by its qrels grade, a max attention M built so that the
documented rule (matchsig.matching) must classify a chosen set of (layer, head, direction) rows as
syntactic, semantic, unclassified or none. Everything after the statistics is the real pipeline: the store, the
per-query means, the paired tests, the classification, the top-k head ablations (real forward passes of the
tiny model) and the report. The expected kinds and counts come from the construction, not from the package;
_recompute re-derives the tests and kinds from per_query.csv with scipy, the head ablations from the model.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from matchsig import CrossEncoder

# (layer, head, direction) -> (kind, signed effect of a relevant passage, signed effect of a hard negative)
DESIGN = {
    (0, 0, "Q<-D"): ("syntactic", 0.30, 0.30),  # relevant and term-sharing hard negatives both draw the head
    (0, 1, "D<-Q"): ("syntactic", -0.25, -0.25),  # ... both repel it
    (1, 0, "Q<-D"): ("semantic", 0.20, 0.0),  # only relevant passages move it
    (1, 2, "Q<-D"): ("semantic", 0.15, 0.0),
    (2, 3, "D<-Q"): ("semantic", -0.12, 0.0),
    (2, 0, "Q<-D"): ("unclassified", 0.10, -0.10),  # hard negatives move it the other way
}
DIRECTIONS = ("Q<-D", "D<-Q")
L, H = 3, 4


def _unit(text: str) -> float:
    """A stable number in [-1, 1] from a string (crc32), so every process builds the same statistics."""
    return zlib.crc32(text.encode()) / 2 ** 31 - 1.0


def constructed_stats(grades: dict[tuple[str, str], int], qids: dict[str, str]):
    """An ``attention_stats`` replacement: per pair, M = base(query, row) + effect(row, grade) x (1 + 0.3 u(query));
    base and u depend on the query only, so equal-effect levels have exactly equal per-query means."""
    from matchsig.engine.attention_stats import AttentionStats, statistic_names

    def attention_stats(self, queries, documents, batch_size=32, **kwargs):
        values = np.zeros((len(queries), L, H, 2, len(statistic_names())), np.float32)
        values[..., 1:] = 0.5  # entropy, exact, mass: constant
        for n, (q, d) in enumerate(zip(queries, documents)):
            grade = grades.get((q, d), -1)  # an unjudged passage of the pool is an easy negative
            qid = qids[q]
            for layer in range(L):
                for head in range(H):
                    for k, direction in enumerate(DIRECTIONS):
                        kind, rel, hard = DESIGN.get((layer, head, direction), ("none", 0.0, 0.0))
                        effect = rel if grade == 3 else hard if grade == 0 else 0.0
                        base = 0.3 + 0.1 * _unit(f"{qid}/{layer}/{head}/{k}")
                        values[n, layer, head, k, 0] = base + effect * (1 + 0.3 * _unit(qid))
        return AttentionStats(values)

    return attention_stats


@pytest.fixture(scope="module")
def kinds_run(tiny_model, tmp_path_factory):
    from matchsig.data.datasets import load_collection
    from matchsig.experiments import RunConfig, Runner
    from matchsig.report import build_report

    demo = load_collection("demo")
    qids = {text: qid for qid, text in demo.queries.items()}
    judged = [(q, d, g) for q in demo.judged_qids() for d, g in demo.qrels[q].items()]
    texts = demo.docs(sorted({d for _, d, _ in judged}))
    grades = {(demo.queries[q], texts[d]): g for q, d, g in judged}
    out = tmp_path_factory.mktemp("kinds") / "run"
    config = RunConfig(model=tiny_model, datasets=["demo"], experiments=["contrast", "heads"], max_queries=6,
                       per_grade=1, contrast_per_grade=2, contrast_easy=2, heads_k=[2, 5], heads_random_seeds=1,
                       chunk_size=64, batch_size=8, device="cpu", correction="holm", rankings=50)
    mp = pytest.MonkeyPatch()
    mp.setattr(CrossEncoder, "attention_stats", constructed_stats(grades, qids))
    try:
        Runner(out, config, progress=False).run()
        build_report(out)
        yield out, constructed_stats(grades, qids)
    finally:
        mp.undo()


def test_heads_table_has_both_kinds_as_constructed(kinds_run):
    out, _ = kinds_run
    heads = pd.read_csv(out / "contrast" / "heads.csv")
    assert len(heads) == L * H * 2 and (heads["n_relevant"] >= 4).all()
    got = {(int(r.layer), int(r.head), r.direction): (r.kind, int(r.sign)) for r in heads.itertuples()}
    want = {(l, h, d): DESIGN.get((l, h, d), ("none",))[0] for l in range(L) for h in range(H) for d in DIRECTIONS}
    assert {key: kind for key, (kind, _) in got.items()} == want
    for key, (kind, rel, _) in DESIGN.items():
        assert got[key][1] == (1 if rel > 0 else -1), key
    counts = heads.groupby(["direction", "kind"]).size().to_dict()
    assert counts == {("Q<-D", "syntactic"): 1, ("Q<-D", "semantic"): 2, ("Q<-D", "unclassified"): 1,
                      ("Q<-D", "none"): 8, ("D<-Q", "syntactic"): 1, ("D<-Q", "semantic"): 1, ("D<-Q", "none"): 10}


def test_kinds_re_derived_and_reported(kinds_run, tiny_model, monkeypatch):
    """The tests and kinds from per_query.csv with scipy/statsmodels (_recompute), the report's tables (top
    matching heads with their kind, heads per kind), findings.json's top heads, and the head ablations: top-k =
    the k largest constructed effects among matching heads (real ablated forward passes re-scored)."""
    from _recompute import check_contrast, check_heads, check_report

    out, stats = kinds_run
    monkeypatch.setattr(CrossEncoder, "attention_stats", stats)
    ce = CrossEncoder.load(tiny_model, device="cpu")
    check_contrast(out, ce)
    check_report(out)
    frame = check_heads(out, ce)
    top = frame[frame["selection"] == "top"].set_index("k")
    order = sorted(DESIGN, key=lambda key: -abs(DESIGN[key][1]))  # by |effect|: the constructed ranking
    for k in (2, 5):
        assert sorted(top.loc[k, "heads"].split(";")) == sorted(f"{l}/{h}" for l, h, _ in order[:k])
        assert int(top.loc[k, "matching_in_selection"]) == k
    findings = json.loads((out / "findings.json").read_text())
    listed = {(r["layer"], r["head"], r["direction"]): r["kind"] for r in findings["top_matching_heads"]}
    assert listed == {key: kind for key, (kind, _, _) in DESIGN.items()}
