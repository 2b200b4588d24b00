"""An independent reference: DeBERTa-v2/v3 sequence classification written out by hand in float64.

Nothing here calls matchsig or transformers' modelling code. Disentangled attention as the DeBERTa
papers define it: content-to-content, content-to-position and position-to-content terms, the
relative distance i - j mapped to log buckets beyond half the bucket count, scores scaled by
sqrt(d x number of terms). Ablated blocks are zeroed after the softmax without renormalisation.
"""

from __future__ import annotations

import math

import numpy as np

from _reference import _float64_state, attend, _gelu, _ln, bert_parts


def _bucket(r: np.ndarray, buckets: int, max_position: int) -> np.ndarray:
    """DeBERTa-v3's log buckets: exact within +-buckets/2, logarithmic beyond, odd in r."""
    if buckets <= 0 or max_position <= 0:
        return r
    mid = buckets // 2
    out = r.astype(np.float64).copy()
    far = np.abs(r) > mid
    a = np.abs(r[far]).astype(np.float64)
    out[far] = np.sign(r[far]) * (np.ceil(np.log(a / mid) / np.log((max_position - 1) / mid) * (mid - 1)) + mid)
    return out.astype(np.int64)


def deberta_score(model, input_ids: list[int], token_type_ids: list[int], cuts: dict | None = None,
                  sep_id: int = 102) -> float:
    """Score of one unpadded pair under cuts {layer: {head: {(target, source), ...}}}."""
    sd = _float64_state(model)
    cfg = model.config
    eps = cfg.layer_norm_eps
    n = len(input_ids)
    parts = bert_parts(input_ids, sep_id)
    pre = "deberta."
    x = sd[pre + "embeddings.word_embeddings.weight"][input_ids]
    if cfg.position_biased_input:
        x = x + sd[pre + "embeddings.position_embeddings.weight"][np.arange(n)]
    if cfg.type_vocab_size > 0:
        x = x + sd[pre + "embeddings.token_type_embeddings.weight"][token_type_ids]
    x = _ln(x, sd[pre + "embeddings.LayerNorm.weight"], sd[pre + "embeddings.LayerNorm.bias"], eps)
    rel = sd[pre + "encoder.rel_embeddings.weight"]
    if "layer_norm" in cfg.norm_rel_ebd:
        rel = _ln(rel, sd[pre + "encoder.LayerNorm.weight"], sd[pre + "encoder.LayerNorm.bias"], eps)
    max_rel = cfg.max_relative_positions if cfg.max_relative_positions > 0 else cfg.max_position_embeddings
    span = cfg.position_buckets if cfg.position_buckets > 0 else max_rel
    rel = rel[: 2 * span]
    r = _bucket(np.arange(n)[:, None] - np.arange(n)[None, :], cfg.position_buckets, max_rel)  # [i, j]: i - j
    nh = cfg.num_attention_heads
    dh = cfg.hidden_size // nh
    terms = 1 + len(cfg.pos_att_type)
    heads = lambda h: h.reshape(h.shape[0], nh, dh).transpose(1, 0, 2)  # noqa: E731
    for layer in range(cfg.num_hidden_layers):
        p = f"{pre}encoder.layer.{layer}."
        lin = lambda h, name: h @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]  # noqa: E731
        q, k, v = (heads(lin(x, f"attention.self.{w}_proj")) for w in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1)
        key_proj = "key_proj" if cfg.share_att_key else "pos_key_proj"
        query_proj = "query_proj" if cfg.share_att_key else "pos_query_proj"
        if "c2p" in cfg.pos_att_type:  # query content i . key position of (i - j)
            pk = heads(lin(rel, f"attention.self.{key_proj}"))
            idx = np.clip(r + span, 0, 2 * span - 1)
            s = s + np.take_along_axis(q @ pk.transpose(0, 2, 1), np.broadcast_to(idx, (nh, n, n)), axis=2)
        if "p2c" in cfg.pos_att_type:  # key content j . query position of -(j - i), as DeBERTa's code indexes it
            pq = heads(lin(rel, f"attention.self.{query_proj}"))
            idx = np.clip(-r + span, 0, 2 * span - 1)  # at [j, i]: -(bucket(j - i)) + span
            kp = np.take_along_axis(k @ pq.transpose(0, 2, 1), np.broadcast_to(idx, (nh, n, n)), axis=2)
            s = s + kp.transpose(0, 2, 1)
        s = s / math.sqrt(dh * terms)
        ctx = attend(s, v, parts, (cuts or {}).get(layer))
        x = _ln(lin(ctx, "attention.output.dense") + x, sd[p + "attention.output.LayerNorm.weight"],
                sd[p + "attention.output.LayerNorm.bias"], eps)
        h = _gelu(lin(x, "intermediate.dense"))
        x = _ln(lin(h, "output.dense") + x, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)
    pooled = _gelu(x[0] @ sd["pooler.dense.weight"].T + sd["pooler.dense.bias"])
    logits = pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
    return logits[1] - np.log(np.exp(logits).sum()) if len(logits) == 2 else logits[0]
