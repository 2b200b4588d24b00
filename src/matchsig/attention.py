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

import contextvars
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import torch

from .errors import MatchsigError
from .kernels import KERNELS, Call
from .parts import PAD

ATTN_NAME = "matchsig"
_NP = PAD + 1  # part ids 0..4 plus padding

_current: contextvars.ContextVar["ForwardContext | None"] = contextvars.ContextVar("matchsig_ctx", default=None)


@dataclass
class ForwardContext:
    """What the attention function needs to know about the batch being run.

    ``part_ids``: (B, T) long, ``PAD`` on padding. ``input_ids``: (B, T) token ids (statistics
    need them). ``blocks[l]``: None, or a (B or 1, H, 6, 6) bool tensor of cut part pairs in layer l
    (per row, so several ablations can share one batch). ``kernel``: a kernel order of
    :data:`matchsig.kernels.KERNELS` (``"auto"``: its default; ``"eager"``: explicit math everywhere).
    ``hooks``: named intervention sites (:mod:`matchsig.hooks`), ``{"blocks.3.attn.hook_z": fn, ...}``;
    each ``fn(activation, hook)`` may return a replacement. The attention sites (``attn.hook_pattern``,
    ``attn.hook_stats``, ``attn.hook_z``) are applied in this module, the others by module hooks.
    ``probe``: when a list, attention modules append ``(module, heads)`` in call order (used once,
    when a model is loaded, to number the layers).
    """

    part_ids: torch.Tensor
    blocks: list[torch.Tensor | None] | None = None
    kernel: str = "auto"
    input_ids: torch.Tensor | None = None
    hooks: Mapping[str, Callable] | None = None
    probe: list | None = None
    _key_bias: torch.Tensor | None = field(default=None, repr=False)
    _pair_index: torch.Tensor | None = field(default=None, repr=False)
    _cut_cache: dict = field(default_factory=dict, repr=False)

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, 1, T) additive mask: 0 on real tokens, -inf on padding keys."""
        if self._key_bias is None or self._key_bias.dtype != dtype:
            pad = (self.part_ids == PAD)[:, None, None, :]
            self._key_bias = torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(pad, float("-inf"))
        return self._key_bias

    def model_bias(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, T, T) additive mask from the model's own 4-D mask (bool: True = attend; or additive),
        for layers whose mask is more than padding (sliding window, causal): -inf where the model
        masks or the key is padding. Padding query rows attend to every real key instead, so no row
        is fully masked (a NaN there would reach real rows through the next layer's values)."""
        key = ("model", id(mask), dtype)
        hit = self._cut_cache.get(key)
        if hit is not None and hit[0] is mask:
            return hit[1]
        allowed = mask[:, :1] if mask.dtype == torch.bool else mask[:, :1] == 0
        real = self.part_ids != PAD
        keys_ok = real[:, None, None, :]
        allowed = torch.where(real[:, None, :, None], allowed & keys_ok, keys_ok)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
        self._cut_cache[key] = (mask, bias)
        return bias

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

    def cut_bias(self, block: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1 or H, T, T) additive mask of ``dtype``: -inf on padding keys and on cut pairs, else 0.

        Built from the part ids (never from the dtype's minimum: a fully cut row must stay fully
        masked). One head plane when every head of every row is cut alike.
        """
        key = ("bias", id(block), dtype)
        hit = self._cut_cache.get(key)
        if hit is not None and hit[0] is block:
            return hit[1]
        uniform = block.shape[1] == 1 or bool((block == block[:, :1]).all())
        cut = self.cut_mask(block[:, :1] if uniform else block)
        pad = (self.part_ids == PAD)[:, None, None, :]
        bias = torch.zeros(cut.shape, dtype=dtype, device=cut.device).masked_fill_(cut | pad, float("-inf"))
        self._cut_cache[key] = (block, bias)
        return bias


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
    """Attention with post-softmax direction ablation, statistics and named sites (module doc)."""
    ctx = _current.get()
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if ctx is None:
        # Outside matchsig: behave exactly like transformers' SDPA attention with its own mask.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)

    if ctx.probe is not None:
        ctx.probe.append((module, query.shape[1]))
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves a group of heads
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    layer = getattr(module, "_matchsig_layer", None)
    block = ctx.blocks[layer] if (ctx.blocks is not None and layer is not None) else None
    call = Call(query, key, value, _bias(module, attention_mask, query, ctx), scaling, ctx, block)
    hooks = ctx.hooks if layer is not None else None
    if not hooks:
        return KERNELS.run(ctx.kernel, call)[0], None
    from .hooks import apply_hook  # late: hooks imports this module

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
