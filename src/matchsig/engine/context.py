"""The per-forward context: what matchsig's attention function, its kernels and its hook sites read.

A :class:`ForwardContext` is set around each forward (a context variable, :class:`use_context`) by
:class:`~matchsig.engine.model.CrossEncoder`; :mod:`matchsig.engine.attention`,
:mod:`matchsig.engine.kernels` and :mod:`matchsig.engine.hooks` read it. It lives below all three so
none of them imports another for it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .parts import PAD

_NP = PAD + 1  # part ids 0..4 plus padding

_current: contextvars.ContextVar["ForwardContext | None"] = contextvars.ContextVar("matchsig_ctx", default=None)


@dataclass
class ForwardContext:
    """What the attention function needs to know about the batch being run.

    ``part_ids``: (B, T) long, ``PAD`` on padding. ``input_ids``: (B, T) token ids (statistics
    need them). ``blocks[l]``: None, or a (B or 1, H, 6, 6) bool tensor of cut part pairs in layer l
    (per row, so several ablations can share one batch). ``kernel``: a kernel order of
    :data:`matchsig.engine.kernels.KERNELS` (``"auto"``: its default; ``"eager"``: explicit math everywhere).
    ``hooks``: named intervention sites (:mod:`matchsig.engine.hooks`), ``{"blocks.3.attn.hook_z": fn, ...}``;
    each ``fn(activation, hook)`` may return a replacement. The attention sites (``attn.hook_pattern``,
    ``attn.hook_stats``, ``attn.hook_z``) are applied in this module, the others by module hooks.
    ``cross[l]``: None, or a (B or 1, H, 6) bool tensor of the encoder parts the decoder token may not read
    in decoder layer l's cross-attention (monoT5's ``DEC<-Y``, :mod:`matchsig.engine.t5`).
    ``probe``: when a list, attention modules append ``(module, heads)`` in call order (used once,
    when a model is loaded, to number the layers).
    """

    part_ids: torch.Tensor
    blocks: list[torch.Tensor | None] | None = None
    cross: list[torch.Tensor | None] | None = None
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
