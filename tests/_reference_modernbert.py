"""An independent reference: ModernBERT sequence classification written out by hand in float64.

Nothing here calls matchsig or transformers' modelling code. It follows the ModernBERT paper's
definition: pre-norm layers, rotary positions (one base for global, another for local layers),
GeGLU MLPs, and local layers in which a token sees only the tokens within ``local_attention // 2``
positions on either side. Ablated blocks are zeroed after the softmax without renormalisation.
"""

from __future__ import annotations

import math

import numpy as np

from _reference import _float64_state, attend, _gelu, bert_parts


def _ln(x, sd, name, eps):
    w = sd[name + ".weight"]
    b = sd.get(name + ".bias", np.zeros_like(w))
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _lin(x, sd, name):
    out = x @ sd[name + ".weight"].T
    return out + sd[name + ".bias"] if name + ".bias" in sd else out


def _rotary(x, theta):
    """Rotary positions on (heads, n, d): pairs (i, i + d/2) rotated by pos * theta^(-2i/d)."""
    _, n, d = x.shape
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def modernbert_score(model, input_ids: list[int], cuts: dict | None = None, sep_id: int = 102) -> float:
    """Score of one unpadded pair under cuts {layer: {head: {(target, source), ...}}}."""
    sd = _float64_state(model)
    cfg = model.config
    eps = cfg.norm_eps
    n = len(input_ids)
    parts = bert_parts(input_ids, sep_id)
    x = _ln(sd["model.embeddings.tok_embeddings.weight"][input_ids], sd, "model.embeddings.norm", eps)
    nh = cfg.num_attention_heads
    dh = cfg.hidden_size // nh
    half = cfg.local_attention // 2
    dist = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        local = layer % cfg.global_attn_every_n_layers != 0
        h = x if layer == 0 else _ln(x, sd, p + "attn_norm", eps)
        qkv = _lin(h, sd, p + "attn.Wqkv").reshape(n, 3, nh, dh)
        q, k, v = (qkv[:, i].transpose(1, 0, 2) for i in range(3))
        theta = cfg.rope_parameters["sliding_attention" if local else "full_attention"]["rope_theta"]
        q, k = _rotary(q, theta), _rotary(k, theta)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        if local:
            s = np.where(dist[None] <= half, s, -np.inf)
        ctx = attend(s, v, parts, (cuts or {}).get(layer))
        x = x + _lin(ctx, sd, p + "attn.Wo")
        inp, gate = np.split(_lin(_ln(x, sd, p + "mlp_norm", eps), sd, p + "mlp.Wi"), 2, axis=-1)
        x = x + _lin(_gelu(inp) * gate, sd, p + "mlp.Wo")
    x = _ln(x, sd, "model.final_norm", eps)
    pooled = x.mean(0) if cfg.classifier_pooling == "mean" else x[0]
    pooled = _ln(_gelu(_lin(pooled, sd, "head.dense")), sd, "head.norm", eps)
    logits = _lin(pooled, sd, "classifier")
    return logits[1] - np.log(np.exp(logits).sum()) if len(logits) == 2 else logits[0]
