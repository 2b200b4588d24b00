"""The attention function matchsig installs in a Hugging Face encoder.

transformers 5 routes BERT-family self-attention through ``AttentionInterface``: the model calls
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v, mask, scaling=...)``. We
register one function under the name ``"matchsig"`` that reads the current :class:`ForwardContext`
(a context variable set by :class:`~matchsig.model.CrossEncoder` around each forward) and

* without ablation or statistics in a layer, calls fused SDPA (as plain Hugging Face inference does);
* with an ablation, computes the softmax, zeroes the cut part-to-part blocks *after* the softmax and
  does *not* renormalise (SPEC §3), then mixes the values;
* with statistics requested, reduces the layer's attention map to per-head numbers on the fly
  (:mod:`matchsig.stats`), so no full attention map outlives its layer.

Padding is masked from the part ids of the context (padding has part id ``PAD``), not from the
mask transformers builds; the name is also registered in ``AttentionMaskInterface`` so that a model
used outside a matchsig context still gets a correct padding mask (without it transformers passes
``attention_mask=None`` and padding is silently attended).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .parts import PAD

ATTN_NAME = "matchsig"
_NP = PAD + 1  # part ids 0..4 plus padding

_current: contextvars.ContextVar["ForwardContext | None"] = contextvars.ContextVar("matchsig_ctx", default=None)


@dataclass
class ForwardContext:
    """What the attention function needs to know about the batch being run.

    ``part_ids``: (B, T) long, ``PAD`` on padding. ``blocks[l]``: None, or a (B or 1, H, 6, 6) bool
    tensor of cut part pairs in layer l (per row, so several ablations can share one batch).
    ``stats_fn``: called as ``stats_fn(layer, probs, ctx)`` with the layer's (B, H, T, T) fp32
    post-softmax probabilities *before* that layer's own ablation.
    ``kernel``: ``"auto"`` (SDPA where nothing is cut) or ``"eager"`` (explicit math everywhere).
    """

    part_ids: torch.Tensor
    blocks: list[torch.Tensor | None] | None = None
    stats_fn: Callable[[int, torch.Tensor, "ForwardContext"], None] | None = None
    kernel: str = "auto"
    input_ids: torch.Tensor | None = None
    probe: list | None = None  # when set, attention modules append themselves in call order
    _key_bias: torch.Tensor | None = field(default=None, repr=False)
    _pair_index: torch.Tensor | None = field(default=None, repr=False)
    _cut_cache: dict = field(default_factory=dict, repr=False)

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, 1, T) additive mask: 0 on real tokens, -inf on padding keys."""
        if self._key_bias is None or self._key_bias.dtype != dtype:
            pad = (self.part_ids == PAD)[:, None, None, :]
            self._key_bias = torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(pad, float("-inf"))
        return self._key_bias

    def cut_mask(self, block: torch.Tensor) -> torch.Tensor:
        """(B, H, T, T) bool: True where block[b, h, part[b, i], part[b, j]] is cut."""
        key = id(block)
        hit = self._cut_cache.get(key)
        if hit is not None and hit[0] is block:
            return hit[1]
        if self._pair_index is None:
            p = self.part_ids
            self._pair_index = (p[:, :, None] * _NP + p[:, None, :]).flatten(1)  # (B, T*T)
        b, t = self.part_ids.shape
        flat = block.flatten(2).expand(b, -1, -1)  # (B, H, 36)
        idx = self._pair_index[:, None, :].expand(b, flat.shape[1], -1)
        cut = torch.gather(flat, 2, idx).view(b, flat.shape[1], t, t)
        self._cut_cache[key] = (block, cut)
        return cut


def current_context() -> ForwardContext | None:
    return _current.get()


class use_context:
    """``with use_context(ctx): model(...)`` runs the model under ``ctx``."""

    def __init__(self, ctx: ForwardContext):
        self.ctx = ctx

    def __enter__(self) -> ForwardContext:
        self._token = _current.set(self.ctx)
        return self.ctx

    def __exit__(self, *exc) -> None:
        _current.reset(self._token)


def matchsig_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Attention with post-softmax direction ablation and streaming statistics (see module doc)."""
    ctx = _current.get()
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if ctx is None:
        # Outside matchsig: behave exactly like transformers' SDPA attention with its own mask.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)

    if ctx.probe is not None:
        ctx.probe.append((module, query.shape[1]))
    layer = getattr(module, "_matchsig_layer", None)
    block = ctx.blocks[layer] if (ctx.blocks is not None and layer is not None) else None
    want_stats = ctx.stats_fn is not None and layer is not None
    bias = ctx.key_bias(query.dtype)

    if block is None and not want_stats and ctx.kernel != "eager":
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scaling + bias.float()
    probs = torch.softmax(scores, dim=-1)
    del scores
    if want_stats:
        ctx.stats_fn(layer, probs, ctx)
    if block is not None:
        probs = probs.masked_fill(ctx.cut_mask(block), 0.0)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


_registered = False


def register() -> None:
    """Register ``"matchsig"`` in transformers' attention and attention-mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, matchsig_attention)
    AttentionMaskInterface.register(ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS.get("sdpa", sdpa_mask))
    _registered = True
