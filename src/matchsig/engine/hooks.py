"""Named intervention sites: read or replace an activation of the model by its name.

Sites are named as TransformerLens names them (``blocks.{layer}.<kind>``), so code written against
TransformerLens' ``HookedEncoder`` vocabulary reads the same here, but the model stays the real
Hugging Face one (exact weights, token-type ids, dynamic padding):

==============================  ================  =============================================
name                            shape             what it is in a BERT-family layer (post-LN)
==============================  ================  =============================================
``blocks.{l}.hook_resid_pre``   (B, T, d_model)   the layer's input: embeddings for l = 0, else
                                                  ``blocks.{l-1}.hook_resid_post``
``blocks.{l}.attn.hook_z``      (B, T, H, d_head) each head's attention output (probabilities x
                                                  values), before the output projection
``blocks.{l}.hook_attn_out``    (B, T, d_model)   the attention output projection (``W_O z + b_O``),
                                                  before dropout, residual and LayerNorm
``blocks.{l}.hook_resid_mid``   (B, T, d_model)   after the attention sub-block's LayerNorm
``blocks.{l}.hook_mlp_out``     (B, T, d_model)   the MLP's second linear map, before dropout,
                                                  residual and LayerNorm
``blocks.{l}.hook_resid_post``  (B, T, d_model)   the layer's output (after the MLP's LayerNorm)
==============================  ================  =============================================

Two more sites belong to the attention computation itself (:data:`ATTENTION_KINDS`); they can be
hooked and cached but not patched (they have no position axis at 1):

=================================  ==========================  ==================================
``blocks.{l}.attn.hook_pattern``   (B, H, T, T) fp32           post-softmax probabilities before
                                                               the layer's ablation (a returned
                                                               tensor replaces them; naming this
                                                               site makes the layer run the
                                                               explicit softmax)
``blocks.{l}.attn.hook_stats``     (B, H, directions, stats)   the layer's attention statistics
                                                               (:mod:`matchsig.attention_stats`),
                                                               read-only; naming this site is how
                                                               statistics are asked for
=================================  ==========================  ==================================

A hook is a function ``fn(activation, hook) -> Tensor | None`` (TransformerLens' signature):
``hook`` is the :class:`HookPoint` being run (``hook.name``, ``hook.layer``, ``hook.kind``); return
a tensor of the same shape to replace the activation, or ``None`` to leave it (e.g. to record it).
Rows are the padded batch: padding positions hold whatever the model computed there.

Dispatch. Hooks travel in :class:`~matchsig.attention.ForwardContext` (``ctx.hooks``, a mapping
name -> function), so any forward that matchsig runs can carry them
(:meth:`~matchsig.model.CrossEncoder.forward`). The ``attn.*`` sites are applied by matchsig's
attention function itself (``attn.hook_z`` is exactly the tensor it returns); the other sites are PyTorch
forward hooks that :func:`install` puts once on the layer's modules and that do nothing unless the
current context names their site. :func:`run_with_hooks` and :func:`run_with_cache` are the plain
front ends; activation patching (:mod:`matchsig.patching`) is built on them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .context import current_context
from ..errors import MatchsigError

#: Site kinds, in the order a layer computes them, with their activation shape.
SITE_KINDS: dict[str, str] = {
    "hook_resid_pre": "(B, T, d_model)",
    "attn.hook_z": "(B, T, H, d_head)",
    "hook_attn_out": "(B, T, d_model)",
    "hook_resid_mid": "(B, T, d_model)",
    "hook_mlp_out": "(B, T, d_model)",
    "hook_resid_post": "(B, T, d_model)",
}

#: Sites of the attention computation, without a position axis at 1: hookable, not patchable.
ATTENTION_KINDS: dict[str, str] = {
    "attn.hook_pattern": "(B, H, T, T)",
    "attn.hook_stats": "(B, H, directions, statistics)",
}
_ALL_KINDS = ("hook_resid_pre", "attn.hook_pattern", "attn.hook_stats", *list(SITE_KINDS)[1:])

#: Short aliases accepted wherever a site kind is given.
ALIASES: dict[str, str] = {
    "resid_pre": "hook_resid_pre", "z": "attn.hook_z", "head": "attn.hook_z", "hook_z": "attn.hook_z",
    "attn_out": "hook_attn_out", "resid_mid": "hook_resid_mid", "mlp_out": "hook_mlp_out", "mlp": "hook_mlp_out",
    "resid_post": "hook_resid_post", "residual": "hook_resid_post", "resid": "hook_resid_post",
    "pattern": "attn.hook_pattern", "hook_pattern": "attn.hook_pattern", "stats": "attn.hook_stats",
    "hook_stats": "attn.hook_stats",
}

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]

_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HookPoint:
    """One named site: ``name == f"blocks.{layer}.{kind}"``."""

    layer: int
    kind: str
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", site_name(self.kind, self.layer))


def canonical_kind(kind: str) -> str:
    """``"z"`` -> ``"attn.hook_z"``; a one-line :class:`MatchsigError` for an unknown kind."""
    k = str(kind).strip()
    k = ALIASES.get(k, k)
    if k not in _ALL_KINDS:
        raise MatchsigError(f"unknown site {kind!r}: use one of {', '.join(_ALL_KINDS)} "
                            f"(or {', '.join(ALIASES)}), optionally as blocks.<layer>.<site>")
    return k


def site_name(kind: str, layer: int) -> str:
    """The canonical name of ``kind`` in ``layer``: ``site_name("z", 3) == "blocks.3.attn.hook_z"``."""
    return f"blocks.{int(layer)}.{canonical_kind(kind)}"


def parse_site(name: str, num_layers: int | None = None) -> HookPoint:
    """``"blocks.3.attn.hook_z"`` -> ``HookPoint(3, "attn.hook_z")``, checking the layer against ``num_layers``."""
    m = _NAME.match(str(name).strip())
    if not m:
        raise MatchsigError(f"bad site name {name!r}: expected blocks.<layer>.<site>, e.g. blocks.0.attn.hook_z")
    layer, kind = int(m.group(1)), canonical_kind(m.group(2))
    if num_layers is not None and not 0 <= layer < num_layers:
        raise MatchsigError(f"site {name}: layer {layer} out of range (the model has layers 0..{num_layers - 1})")
    return HookPoint(layer, kind)


def site_names(num_layers: int, kinds: Sequence[str] | None = None) -> list[str]:
    """Site names of a model with ``num_layers`` layers, in compute order: of ``kinds``, default the
    activation sites :data:`SITE_KINDS` (the attention sites only when named in ``kinds``)."""
    ks = [canonical_kind(k) for k in kinds] if kinds is not None else list(SITE_KINDS)
    return [site_name(k, layer) for layer in range(num_layers) for k in _ALL_KINDS if k in ks]


# ---- dispatch ------------------------------------------------------------------------------------


def apply_hook(point: HookPoint, value: torch.Tensor) -> torch.Tensor | None:
    """Run the current context's hook for ``point`` on ``value``; the replacement, or None."""
    ctx = current_context()
    fn = None if ctx is None or ctx.hooks is None else ctx.hooks.get(point.name)
    if fn is None:
        return None
    out = fn(value, point)
    if out is not None and out.shape != value.shape:
        raise MatchsigError(f"hook on {point.name} returned shape {tuple(out.shape)}, expected {tuple(value.shape)}")
    return out


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    mod = root
    for attr in path.split("."):
        mod = getattr(mod, attr, None)
        if mod is None:
            return None
    return mod


#: The module-based sites (their paths inside a layer come from the model's family).
_MODULE_SITES = ("hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


def install(ce) -> None:
    """Put the dispatching PyTorch hooks on ``ce``'s layers (once per model; idempotent).

    They cost one dictionary look-up per module call when the running context has no hooks.
    """
    if getattr(ce, "_hooks_installed", None) is not None:
        return
    _, _, layers = ce._encoder_layers()
    missing = []
    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(_pre_hook(index), with_kwargs=True))
        for kind in _MODULE_SITES:
            path = ce.family.sites.get(kind)
            mod = None if path is None else _submodule(layer, path) if path else layer
            if mod is None:
                missing.append(f"{kind} ({path or 'none in ' + ce.family.name + ' layers'})")
                continue
            handles.append(mod.register_forward_hook(_post_hook(HookPoint(index, kind))))
    ce._hooks_installed = handles
    ce._hooks_missing = sorted(set(missing))


def check_supported(ce, kinds: Sequence[str]) -> None:
    """One-line error if one of ``kinds`` cannot be hooked in this model's layer structure."""
    install(ce)
    for kind in kinds:
        k = canonical_kind(kind)
        if k in ATTENTION_KINDS or k == "attn.hook_z":
            continue  # applied by the attention function: every model matchsig loads has them
        if any(m.startswith(k + " ") for m in ce._hooks_missing):
            path = ce.family.sites.get(k)
            where = f"no module {path}" if path is not None else f"no module for it ({ce.family.name} family)"
            raise MatchsigError(f"model {ce.name} ({type(ce.model).__name__}): site {k} is not supported, its layers "
                                f"have {where}")


def _pre_hook(index: int):
    point = HookPoint(index, "hook_resid_pre")

    def pre(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        out = apply_hook(point, hidden)
        if out is None:
            return None
        if args:
            return (out,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = out
        return args, kwargs

    return pre


def _post_hook(point: HookPoint):
    def post(module, args, output):
        value = output[0] if isinstance(output, tuple) else output
        out = apply_hook(point, value)
        if out is None:
            return None
        return (out,) + tuple(output[1:]) if isinstance(output, tuple) else out

    return post


# ---- front ends ----------------------------------------------------------------------------------


def _check_names(ce, names: Sequence[str]) -> list[HookPoint]:
    points = [parse_site(n, ce.num_layers) for n in names]
    check_supported(ce, sorted({p.kind for p in points}))
    return points


def run_with_hooks(ce, queries: Sequence[str], documents: Sequence[str], hooks: Mapping[str, HookFn],
                   batch_size: int = 32) -> np.ndarray:
    """Scores of the pairs with ``hooks`` (name -> function) active in every forward.

    Pairs run in length-sorted, dynamically padded batches; a hook sees each batch's (B, T, ...) tensor.
    """
    _check_names(ce, list(hooks))
    enc = ce.encode(queries, documents)
    out = np.zeros(len(enc), dtype=np.float64)
    with torch.inference_mode():
        for batch in ce.padded_batches(enc, batch_size) if len(enc) else []:
            out[batch.rows] = ce.scores_from_logits(ce.forward(batch, hooks=dict(hooks)).logits)
    return out


def _unpad(kind: str, value: torch.Tensor, length: int) -> torch.Tensor:
    """One row's activation without its padding: (T_i, ...), (H, T_i, T_i) for the pattern."""
    if kind == "attn.hook_pattern":
        return value[:, :length, :length]
    return value if kind == "attn.hook_stats" else value[:length]


def run_with_cache(ce, queries: Sequence[str], documents: Sequence[str], names: Sequence[str],
                   batch_size: int = 32) -> tuple[np.ndarray, dict[str, list[torch.Tensor]]]:
    """Scores and the activations at ``names``: ``cache[name][i]`` is pair i's tensor without padding
    ((T_i, ...); (H, T_i, T_i) at ``attn.hook_pattern``), on the CPU."""
    points = _check_names(ce, names)
    enc = ce.encode(queries, documents)
    n = len(enc)
    cache: dict[str, list] = {p.name: [None] * n for p in points}
    lengths = enc.lengths()
    current: dict = {}

    def record(value: torch.Tensor, hook: HookPoint) -> None:
        for r, i in enumerate(current["rows"]):
            cache[hook.name][i] = _unpad(hook.kind, value[r], int(lengths[i])).detach().to("cpu", copy=True)

    scores = np.zeros(n, dtype=np.float64)
    with torch.inference_mode():
        for batch in ce.padded_batches(enc, batch_size) if n else []:
            current["rows"] = batch.rows
            scores[batch.rows] = ce.scores_from_logits(ce.forward(batch, hooks={p.name: record for p in points}).logits)
    return scores, cache
