"""The attention function matchsig installs in a Hugging Face encoder, and its per-forward context.

transformers 5 routes BERT-family self-attention through ``AttentionInterface``: the model calls
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v, mask, scaling=...)``. We
register one function under the name ``"matchsig"`` that reads the current :class:`ForwardContext`
(a context variable set by :class:`~matchsig.model.CrossEncoder` around each forward), works out
what the call needs (the layer's cut block, its statistics, its attention pattern: the last two
asked for by naming the sites ``blocks.{l}.attn.hook_stats`` / ``blocks.{l}.attn.hook_pattern`` in
the context's hooks) and hands it to the first suitable kernel of the context's order
(:mod:`matchsig.kernels`): fused SDPA where nothing is needed, one fused pass plus an exact
correction in cut layers, the explicit softmax where the full pattern is wanted or nothing faster
applies. An ablation zeroes the cut part-to-part blocks *after* the softmax and does *not*
renormalise (SPEC §3); statistics are reduced on the fly (:mod:`matchsig.attention_stats`), so no
full attention map outlives its layer. The per-head output is the site ``blocks.{l}.attn.hook_z``.

Padding is masked from the part ids of the context (padding has part id ``PAD``), not from the
mask transformers builds; the name is also registered in ``AttentionMaskInterface`` so that a model
used outside a matchsig context still gets a correct padding mask (without it transformers passes
``attention_mask=None`` and padding is silently attended).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..errors import MatchsigError
from .context import _current
from .kernels import KERNELS, Call

ATTN_NAME = "matchsig"


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
    """Attention with post-softmax direction ablation, statistics and named sites (module doc)."""
    ctx = _current.get()
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if ctx is None:  # outside matchsig: the model's own attention
        return own_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)

    if ctx.probe is not None:
        ctx.probe.append((module, query.shape[1]))
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves a group of heads
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    layer = getattr(module, "_matchsig_layer", None)
    block = ctx.blocks[layer] if (ctx.blocks is not None and layer is not None) else None
    bias = _bias(module, attention_mask, query, ctx)
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:  # T5's relative-position bias is part of the scores, per head
        bias = bias + position_bias.to(bias.dtype)
    call = Call(query, key, value, bias, scaling, ctx, block)
    hooks = ctx.hooks if layer is not None else None
    if not hooks:
        return KERNELS.run(ctx.kernel, call)[0], None
    from .hooks import apply_hook  # late: hooks are only needed when a context names sites

    pattern, stats, z = _sites(layer)
    call.stats = stats.name in hooks
    if pattern.name in hooks:
        call.pattern = lambda probs: _replaced(apply_hook(pattern, probs), probs)
    out, values = KERNELS.run(ctx.kernel, call)
    if values is not None:
        apply_hook(stats, values)  # read-only site: a returned tensor is not used
    replaced = apply_hook(z, out)
    if replaced is not None:
        out = replaced.to(out.dtype).contiguous()
    return out, None


def additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A transformers attention mask (bool: True = attend, or already additive) as an additive one."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def own_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Exactly transformers' SDPA attention with the model's own mask (and T5's relative-position
    bias, which SDPA's front end does not know: it is added to the mask)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_bias = kwargs.pop("position_bias", None)
    if position_bias is not None:
        mask = additive(attention_mask, query.dtype)
        attention_mask = position_bias if mask is None else mask + position_bias
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def _bias(module: torch.nn.Module, attention_mask: torch.Tensor | None, query: torch.Tensor,
          ctx: ForwardContext) -> torch.Tensor:
    """The additive mask of this call: padding from the part ids, or, in a layer whose family marks
    its mask as the model's own (``module._matchsig_model_mask``: sliding window, causal), the
    model's mask. A causal layer always gets one (the mask function never skips causal masks)."""
    if getattr(module, "_matchsig_model_mask", False) and attention_mask is not None:
        if attention_mask.dim() != 4:
            raise MatchsigError(f"layer {getattr(module, '_matchsig_layer', '?')}: expected a 4-D attention mask from "
                                f"the model, got shape {tuple(attention_mask.shape)}")
        return ctx.model_bias(attention_mask, query.dtype)
    return ctx.key_bias(query.dtype)


def _replaced(new: torch.Tensor | None, old: torch.Tensor) -> torch.Tensor:
    return old if new is None else new.to(old.dtype)


@lru_cache(maxsize=None)
def _sites(layer: int):
    """The attention sites of ``layer``: (``attn.hook_pattern``, ``attn.hook_stats``, ``attn.hook_z``)."""
    from .hooks import HookPoint

    return HookPoint(layer, "attn.hook_pattern"), HookPoint(layer, "attn.hook_stats"), HookPoint(layer, "attn.hook_z")


_registered = False


def register() -> None:
    """Register ``"matchsig"`` in transformers' attention and attention-mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    base = ALL_MASK_ATTENTION_FUNCTIONS.get("sdpa", sdpa_mask)

    def matchsig_mask(*args, **kwargs):
        # transformers may return None for a causal mask and rely on SDPA's is_causal flag, which an
        # attention function that builds its own call never sees: causal masks are always materialised.
        kwargs["allow_is_causal_skip"] = False
        return base(*args, **kwargs)

    AttentionInterface.register(ATTN_NAME, matchsig_attention)
    AttentionMaskInterface.register(ATTN_NAME, matchsig_mask)
    _registered = True
