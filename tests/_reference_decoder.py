"""An independent reference: a Llama/Qwen-style causal decoder with a score head, in float64.

Nothing here calls matchsig or transformers' modelling code. Pre-RMSNorm layers, rotary positions
(half-split), grouped-query attention (each key/value head serves a group of query heads), a causal
mask, a SwiGLU MLP, and the score head on the last token. Qwen3's per-head query/key RMSNorm is
applied when the weights have it. Parts come from the caller (the prompt's pieces are known there).
Ablated blocks are zeroed after the softmax without renormalisation.
"""

from __future__ import annotations

import math

import numpy as np

from _reference import _float64_state, attend


def _rms(x, w, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def _rotary(x, theta):
    _, n, d = x.shape
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    return x * cos + np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1) * sin


def _silu(x):
    return x / (1.0 + np.exp(-x))


def decoder_score(model, input_ids: list[int], parts: list[str], cuts: dict | None = None,
                  window: int | None = None, readout: np.ndarray | None = None) -> float:
    """Score (the 1-label logit) of one unpadded prompt under cuts {layer: {head: {(target, source)}}};
    ``window``: a sliding window (Mistral): token i sees j only when i - window < j <= i; ``readout``: the
    score's weight vector on the last state (default the score head; yes/no: lm_head[yes] - lm_head[no])."""
    sd = _float64_state(model)
    cfg = model.config
    eps = cfg.rms_norm_eps
    n = len(input_ids)
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // nh
    theta = cfg.rope_parameters["rope_theta"]
    lin = lambda h, name: h @ sd[name + ".weight"].T + (sd[name + ".bias"] if name + ".bias" in sd else 0.0)  # noqa: E731
    x = sd["model.embed_tokens.weight"][input_ids]
    gap = np.arange(n)[:, None] - np.arange(n)[None, :]  # i - j
    future = (gap < 0) | ((gap >= window) if window else False)
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = _rms(x, sd[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj").reshape(n, nh, dh).transpose(1, 0, 2)
        k = lin(h, p + "self_attn.k_proj").reshape(n, nkv, dh).transpose(1, 0, 2)
        v = lin(h, p + "self_attn.v_proj").reshape(n, nkv, dh).transpose(1, 0, 2)
        if p + "self_attn.q_norm.weight" in sd:
            q = _rms(q, sd[p + "self_attn.q_norm.weight"], eps)
            k = _rms(k, sd[p + "self_attn.k_norm.weight"], eps)
        q, k = _rotary(q, theta), _rotary(k, theta)
        group = nh // nkv
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.where(future[None], -np.inf, s)
        ctx = attend(s, v, parts, (cuts or {}).get(layer))
        x = x + lin(ctx, p + "self_attn.o_proj")
        h = _rms(x, sd[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(_silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = _rms(x, sd["model.norm.weight"], eps)
    return float(x[-1] @ (sd["score.weight"][0] if readout is None else readout))
