"""Interventions in families that compute their own softmax (DeBERTa's disentangled attention).

Such a family never calls transformers' ``AttentionInterface``: its attention module adds relative
position terms to the scores, masks, takes the softmax and applies a dropout to the probabilities
before multiplying the values. matchsig puts a :class:`ProbabilitySite` in place of that dropout, so
it sees exactly the post-softmax probabilities the model computed and can, under a matchsig
context, hand them to the ``blocks.{l}.attn.hook_pattern`` hook, reduce the statistics
(``attn.hook_stats``) and zero the cut part pairs without renormalising (SPEC §3). Outside a
matchsig context it is the original dropout, so the model's own forward is untouched (the
self-check compares the two). ``attn.hook_z`` is a forward hook on the attention module whose
output is the per-head context, heads concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from .context import current_context
from .attention_stats import reduce_probs


class ProbabilitySite(nn.Module):
    """Stands in for the dropout a family applies right after its softmax (module doc)."""

    def __init__(self, inner: nn.Module, heads: int):
        super().__init__()
        self.inner = inner
        self.heads = heads

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        ctx = current_context()
        if ctx is None:
            return self.inner(probs)
        if ctx.probe is not None:
            ctx.probe.append((self, self.heads))
        layer = getattr(self, "_matchsig_layer", None)
        if layer is None:
            return self.inner(probs)
        t = probs.shape[-1]
        p = probs.view(-1, self.heads, t, t)
        hooks = ctx.hooks
        if hooks:
            from .attention import _sites
            from .hooks import apply_hook

            pattern, stats, _ = _sites(layer)
            if pattern.name in hooks:
                new = apply_hook(pattern, p.float())
                p = p if new is None else new.to(p.dtype)
            if stats.name in hooks:
                apply_hook(stats, reduce_probs(p.float(), ctx.part_ids, ctx.input_ids))
        block = ctx.blocks[layer] if ctx.blocks is not None else None
        if block is not None:
            if block.shape[1] > 1 and bool((block == block[:, :1]).all()):
                block = block[:, :1]  # every head cut alike: one (B, 1, T, T) plane, broadcast over heads
            cut = ctx.cut_mask(block)
            # in place without autograd (the softmax output is used nowhere else); a copy when gradients flow
            p = p.masked_fill(cut, 0.0) if torch.is_grad_enabled() else p.masked_fill_(cut, 0.0)
        return self.inner(p).view(probs.shape)


def _z_hook(site: ProbabilitySite):
    def post(module, args, output):
        ctx = current_context()
        layer = getattr(site, "_matchsig_layer", None)
        if ctx is None or not ctx.hooks or layer is None:
            return None
        from .attention import _sites
        from .hooks import apply_hook

        z = _sites(layer)[2]
        if z.name not in ctx.hooks:
            return None
        context = output[0]
        b, t, _ = context.shape
        new = apply_hook(z, context.view(b, t, site.heads, -1))
        if new is None:
            return None
        return (new.reshape(b, t, -1).to(context.dtype),) + tuple(output[1:])

    return post


def install_probability_sites(model: nn.Module, attention_class: str, dropout: str = "dropout",
                              heads: str = "num_attention_heads") -> int:
    """Put a :class:`ProbabilitySite` in place of attribute ``dropout`` of every module of class
    ``attention_class`` (idempotent); returns how many there are."""
    n = 0
    for module in model.modules():
        if type(module).__name__ != attention_class:
            continue
        inner = getattr(module, dropout)
        if not isinstance(inner, ProbabilitySite):
            site = ProbabilitySite(inner, int(getattr(module, heads)))
            setattr(module, dropout, site)
            module.register_forward_hook(_z_hook(site))
        n += 1
    return n
