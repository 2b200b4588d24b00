"""Streaming attention statistics against the same statistics computed from full HF attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from matchsig import CrossEncoder

QUERIES = ["what is a flea", "how long do cats live in the wild", "flea cat"]
DOCS = [
    "The cat flea is a small wingless insect that feeds on the blood of cats and dogs.",
    "Indoor cats live 12 to 18 years.",
    "A flea on a cat is a cat flea, and the flea bites.",
]


def hf_attention_maps(minilm_folder, tokenizer):
    """Per pair of QUERIES/DOCS: (index, its unpadded encoding, its HF eager attention maps (L, H, T, T) in float64)."""
    from transformers import BertForSequenceClassification

    ref_model = BertForSequenceClassification.from_pretrained(minilm_folder, attn_implementation="eager").eval()
    for n, (q, d) in enumerate(zip(QUERIES, DOCS)):
        enc = tokenizer(q, d, return_tensors="pt")
        with torch.no_grad():
            maps = ref_model(**enc, output_attentions=True).attentions
        yield n, enc, torch.stack([m[0] for m in maps]).double().numpy()


def reference_stats(attn: np.ndarray, ids: list[int], seq: list) -> dict:
    """attn: (L, H, T, T) for one unpadded pair; returns {(dir, stat): (L, H)}."""
    q = [i for i, s in enumerate(seq) if s == 0]
    d = [i for i, s in enumerate(seq) if s == 1]
    out = {}
    for name, rows, cols in (("Q<-D", q, d), ("D<-Q", d, q)):
        L, H = attn.shape[:2]
        res = {s: np.zeros((L, H)) for s in ("max", "entropy", "exact", "mass")}
        for l in range(L):
            for h in range(H):
                mx, masses, ents, exacts = [], [], [], []
                for i in rows:
                    p = attn[l, h, i, cols]
                    mass = p.sum()
                    mx.append(p.max())
                    masses.append(mass)
                    ents.append(entropy(p))  # scipy renormalises p over the columns
                    same = np.array([ids[j] == ids[i] for j in cols])
                    exacts.append(p[same].sum() / mass)
                w = np.array(masses)
                res["max"][l, h] = np.mean(mx)
                res["mass"][l, h] = np.mean(masses)
                res["entropy"][l, h] = np.sum(w * np.array(ents)) / w.sum()
                res["exact"][l, h] = np.sum(w * np.array(exacts)) / w.sum()
        for s, v in res.items():
            out[(name, s)] = v
    return out


def test_stats_match_full_attention_maps(minilm_folder, tokenizer):
    ce = CrossEncoder.load(minilm_folder, device="cpu")
    stats = ce.attention_stats(QUERIES, DOCS, batch_size=2)
    assert stats.values.shape == (3, 6, 12, 2, 4)
    for n, enc, attn in hf_attention_maps(minilm_folder, tokenizer):
        ref = reference_stats(attn, enc["input_ids"][0].tolist(), enc.sequence_ids(0))
        for (direction, stat), want in ref.items():
            np.testing.assert_allclose(stats.get(direction, stat)[n], want, atol=2e-5, rtol=1e-4,
                                       err_msg=f"{direction} {stat} pair {n}")
    # exact-match mass is real signal: pair 2 repeats query words in the document
    assert stats.get("Q<-D", "exact")[2].max() > 0.3
    frame = stats.to_frame()
    assert len(frame) == 3 * 6 * 12 * 2 and {"max", "entropy", "exact", "mass"} <= set(frame.columns)


def test_stats_unknown_names(minilm_folder):
    ce = CrossEncoder.load(minilm_folder, device="cpu")
    stats = ce.attention_stats(QUERIES[:1], DOCS[:1])
    with pytest.raises(ValueError, match="unknown direction"):
        stats.get("Q<-Q", "max")
    with pytest.raises(ValueError, match="unknown statistic"):
        stats.get("Q<-D", "mean")


# ---- a statistic added to the table -------------------------------------------------------------


def _toy_reference(attn: np.ndarray, seq: list) -> dict:
    """numpy, from full maps: "second" = mean over X_i of the second-largest p(X_i <- Y_j);
    "collision" = sum_j (p_ij / m_i)^2 weighted by m_i = p(X_i <- Y)."""
    q = [i for i, s in enumerate(seq) if s == 0]
    d = [i for i, s in enumerate(seq) if s == 1]
    out = {}
    for name, rows, cols in (("Q<-D", q, d), ("D<-Q", d, q)):
        block = attn[:, :, rows][..., cols]  # (L, H, |X|, |Y|)
        mass = block.sum(-1)
        out[(name, "second")] = np.sort(block, -1)[..., -2].mean(-1)
        out[(name, "collision")] = ((block / mass[..., None]) ** 2).sum(-1).__mul__(mass).sum(-1) / mass.sum(-1)
    return out


@pytest.fixture
def toy_statistics(monkeypatch):
    """Two statistics registered in the table for one test: one per weighting, neither with a fused form."""
    from matchsig.engine import attention_stats as S

    monkeypatch.setattr(S, "STATISTICS", dict(S.STATISTICS))
    S.register_statistic(S.Statistic("second", lambda r: r.p.topk(2, -1).values[..., 1]))
    S.register_statistic(S.Statistic("collision", lambda r: (r.normalised ** 2).sum(-1), weight="mass"))
    return S


def test_a_registered_statistic_is_computed_by_both_paths(minilm_folder, tokenizer, toy_statistics, monkeypatch):
    """The eager path (full maps) computes a new statistic from its table entry; the fused path, which has
    no fused form for it, falls back to the same eager term on its sub-blocks; both equal numpy on HF maps."""
    from matchsig import MatchsigError
    from matchsig.engine import kernels as K

    S = toy_statistics
    with pytest.raises(MatchsigError, match="weight 'entropy' must name an unweighted statistic"):
        S.register_statistic(S.Statistic("bad", lambda r: r.mass, weight="entropy"))
    with pytest.raises(MatchsigError, match="'max' is already defined"):
        S.register_statistic(S.Statistic("max", lambda r: r.mass))
    calls = []
    real = K._flash_cpu
    monkeypatch.setattr(K, "_flash_cpu", lambda *a, **k: calls.append(1) or real(*a, **k))
    ce = CrossEncoder.load(minilm_folder, device="cpu")
    eager = ce.attention_stats(QUERIES, DOCS, batch_size=2, kernel="eager")
    assert not calls
    fused = ce.attention_stats(QUERIES, DOCS, batch_size=2)
    assert calls or real is None  # the fused path ran where this torch has the op
    assert eager.names == fused.names == ("max", "entropy", "exact", "mass", "second", "collision")
    for n, enc, attn in hf_attention_maps(minilm_folder, tokenizer):
        for (direction, stat), want in _toy_reference(attn, enc.sequence_ids(0)).items():
            for stats in (eager, fused):
                np.testing.assert_allclose(stats.get(direction, stat)[n], want, atol=2e-5, rtol=1e-4,
                                           err_msg=f"{direction} {stat} pair {n}")
    assert np.abs(fused.get("Q<-D", "second") - fused.get("Q<-D", "max")).max() > 1e-3  # not a copy of M
