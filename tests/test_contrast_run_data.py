"""A contrast run folder's numbers against Hugging Face eager attention maps and numpy, end to end.

test_attention_stats.py checks the engine's statistics on hand-written pairs, and _recompute.check_contrast
re-derives a run's tables from the same engine. Here nothing of matchsig computes a reference: the run's
(query, passage) pairs are taken from its own ``pools.tsv``, tokenised by the HF tokenizer, passed through the
same weights loaded by transformers with ``attn_implementation="eager"`` and ``output_attentions=True``, and
every statistic (SPEC §4: max attention M, entropy, exact-match mass, mass; Q<-D and D<-Q) is computed in
float64 numpy from the maps. Then, from those per-pair values alone: the per-pair table
(``contrast/stats.parquet``), the per-query means (``contrast/per_query.csv``) and the per-head columns of
``contrast/heads.csv`` (deltas, n, t and p from scipy, entropy and exact-match means, matching/sign/kind).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _recompute import classify, config, contrast_pool, corrected, corrected_name, expected_p, expected_t
from scipy.stats import entropy

STATS = ("max", "entropy", "exact", "mass")
DIRECTIONS = ("Q<-D", "D<-Q")
LEVELS = (3, 0, -1)
COMPARISONS = {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}
# fp32 engine (fused kernel) against float64 numpy
ATOL, RTOL = 2e-5, 1e-4


@pytest.fixture(scope="module")
def contrast_run(tiny_model, tmp_path_factory):
    """``contrast`` alone on the tiny model (3 layers x 4 heads): 3 queries x (up to 2 relevant, 2 hard, 2 easy)."""
    from matchsig.experiments import RunConfig, Runner

    out = tmp_path_factory.mktemp("contrast-hf") / "run"
    cfg = RunConfig(model=tiny_model, datasets=["demo"], experiments=["contrast"], max_queries=3,
                    contrast_per_grade=2, contrast_easy=2, chunk_size=7, batch_size=4, device="cpu",
                    correction="none", alpha=0.3)
    Runner(out, cfg, progress=False).run()
    return out


def pair_stats(attn: np.ndarray, ids: np.ndarray, seq: list) -> dict:
    """attn: (L, H, T, T) float64 maps of one unpadded pair -> {(direction, stat): (L, H)} by SPEC §4."""
    seq = np.array([-1 if s is None else s for s in seq])
    q, d = np.flatnonzero(seq == 0), np.flatnonzero(seq == 1)
    out = {}
    for direction, rows, cols in (("Q<-D", q, d), ("D<-Q", d, q)):
        block = attn[:, :, rows][:, :, :, cols]  # (L, H, |X|, |Y|): p(X_i <- Y_j)
        mass = block.sum(-1)  # (L, H, |X|)
        same = ids[rows][:, None] == ids[cols][None, :]
        out[(direction, "max")] = block.max(-1).mean(-1)
        out[(direction, "mass")] = mass.mean(-1)
        ent = entropy(block, axis=-1)  # scipy renormalises each row over Y
        exact = (block * same).sum(-1) / mass
        out[(direction, "entropy")] = (mass * ent).sum(-1) / mass.sum(-1)
        out[(direction, "exact")] = (mass * exact).sum(-1) / mass.sum(-1)
    return out


@pytest.fixture(scope="module")
def reference(contrast_run, tiny_model):
    """{(qid, docid, grade): {(direction, stat): (L, H)}} for every pair of the run's contrast pool."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = BertForSequenceClassification.from_pretrained(tiny_model, attn_implementation="eager").eval()
    max_length = config(contrast_run)["max_length"]
    out = {}
    for row in contrast_pool(contrast_run).itertuples():
        enc = tok(row.query, row.document, truncation="only_second", max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            maps = model(**enc, output_attentions=True).attentions
        attn = torch.stack([m[0] for m in maps]).double().numpy()
        np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)  # the maps are post-softmax rows
        out[(row.qid, row.docid, int(row.grade))] = pair_stats(attn, enc["input_ids"][0].numpy(), enc.sequence_ids(0))
    return out


def test_pairs_of_the_run(contrast_run, reference):
    """The per-pair statistics in stats.parquet, every pair, layer, head, direction and statistic."""
    # 3 queries; one of them has no grade-3 passage in the demo sample (so n differs per comparison)
    assert len(reference) >= 12 and {g for _, _, g in reference} == set(LEVELS)
    frame = pd.read_parquet(contrast_run / "contrast" / "stats.parquet")
    frame["qid"], frame["docid"] = frame["qid"].astype(str), frame["docid"].astype(str)
    assert len(frame) == len(reference) * 3 * 4 * 2
    for (qid, docid, grade), want in reference.items():
        rows = frame[(frame.qid == qid) & (frame.docid == docid)]
        assert set(rows["grade"]) == {grade}
        for direction in DIRECTIONS:
            sub = rows[rows.direction == direction].sort_values(["layer", "head"])
            for stat in STATS:
                np.testing.assert_allclose(sub[stat].to_numpy().reshape(3, 4), want[(direction, stat)], atol=ATOL,
                                           rtol=RTOL, err_msg=f"{qid} {docid} {direction} {stat}")
    # the statistics are not degenerate on this model: exact-match mass and entropy spread over pairs
    for stat in ("exact", "entropy", "max"):
        assert frame[stat].std() > 1e-3, stat


def _per_query(reference) -> dict:
    """{(qid, level): {(direction, stat): (L, H) mean over the query's passages of that level}}."""
    groups: dict = {}
    for (qid, _, grade), values in reference.items():
        groups.setdefault((qid, grade), []).append(values)
    return {key: {k: np.mean([v[k] for v in vs], axis=0) for k in vs[0]} for key, vs in groups.items()}


def test_per_query_means(contrast_run, reference):
    means = _per_query(reference)
    got = pd.read_csv(contrast_run / "contrast" / "per_query.csv", dtype={"qid": str})
    assert len(got) == len(means) * 3 * 4 * 2
    for (qid, level), want in means.items():
        for direction in DIRECTIONS:
            sub = got[(got.qid == qid) & (got.level == level) & (got.direction == direction)].sort_values(["layer", "head"])
            for stat in STATS:
                np.testing.assert_allclose(sub[stat].to_numpy().reshape(3, 4), want[(direction, stat)], atol=ATOL,
                                           rtol=RTOL, err_msg=f"{qid} {level} {direction} {stat}")


def test_head_table(contrast_run, reference):
    """heads.csv from the numpy per-query means: deltas, n, t and p (scipy), entropy/exact means, kinds."""
    cfg = config(contrast_run)
    means = _per_query(reference)
    qids = sorted({q for q, _ in means})
    heads = pd.read_csv(contrast_run / "contrast" / "heads.csv")
    keys = list(heads[["layer", "head", "direction"]].itertuples(index=False, name=None))
    assert len(keys) == 3 * 4 * 2
    tests = {}
    for name, (level, ref) in COMPARISONS.items():
        both = [q for q in qids if (q, level) in means and (q, ref) in means]
        assert len(both) >= 2, name
        deltas, ts, ps = [], [], []
        for layer, head, direction in keys:
            x = np.array([means[(q, level)][(direction, "max")][layer, head] for q in both])
            y = np.array([means[(q, ref)][(direction, "max")][layer, head] for q in both])
            deltas.append((x - y).mean())
            ts.append(expected_t(x, y))
            ps.append(expected_p(x, y))
        np.testing.assert_allclose(heads[f"delta_{name}"], deltas, atol=ATOL, rtol=RTOL, err_msg=name)
        # t and p from fp32 inputs: a relative tolerance; p is compared where it decides (near alpha it is exact enough)
        np.testing.assert_allclose(heads[f"t_{name}"], ts, rtol=1e-3, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(heads[f"p_{name}"], ps, rtol=1e-3, atol=1e-4, err_msg=name)
        assert (heads[f"n_{name}"] == len(both)).all(), name
        column = corrected_name(cfg["correction"], f"p_{name}")
        tests[name] = (np.asarray(deltas), corrected(ps, cfg["correction"]) if column else np.asarray(ps))
    rel_ok = [q for q in qids if (q, 3) in means and (q, -1) in means]
    for stat in ("entropy", "exact"):
        for column, level in ((f"{stat}_relevant", 3), (f"{stat}_easy", -1)):
            want = [np.mean([means[(q, level)][(d, stat)][l, h] for q in rel_ok]) for l, h, d in keys]
            np.testing.assert_allclose(heads[column], want, atol=ATOL, rtol=RTOL, err_msg=column)
    margin = np.min(np.abs(tests["relevant"][1] - cfg["alpha"]))
    assert margin > 1e-3  # no decision sits on alpha: fp32 noise cannot flip one
    kinds = classify(heads, tests, cfg["alpha"])
    assert list(heads["kind"]) == list(kinds["kind"]) and list(heads["sign"]) == list(kinds["sign"])
    assert kinds["matching"].any()  # the kinds compared include matching heads, not only "none"
