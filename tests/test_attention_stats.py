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
    from transformers import BertForSequenceClassification

    ce = CrossEncoder.load(minilm_folder, device="cpu")
    stats = ce.attention_stats(QUERIES, DOCS, batch_size=2)
    assert stats.values.shape == (3, 6, 12, 2, 4)
    ref_model = BertForSequenceClassification.from_pretrained(minilm_folder, attn_implementation="eager").eval()
    for n, (q, d) in enumerate(zip(QUERIES, DOCS)):
        enc = tokenizer(q, d, return_tensors="pt")
        with torch.no_grad():
            maps = ref_model(**enc, output_attentions=True).attentions
        attn = torch.stack([m[0] for m in maps]).double().numpy()
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
