"""Activation patching on (query, baseline document, perturbed document) triples.

For each pair, the baseline input ``[CLS] q [SEP] d_base [SEP]`` is run with the activation of one
site (a layer's residual stream, a head's output, an MLP output; :mod:`matchsig.hooks`) replaced by
the activation the perturbed input ``[CLS] q [SEP] d_pert [SEP]`` produces there, at every position
or at one position. The score moves from the baseline score towards the perturbed one by the share
of the perturbation's effect that flows through that site::

    effect = (patched - baseline) / (perturbed - baseline)

(1: the site carries all of it; 0: none; NaN when perturbed == baseline). Baseline and perturbed
inputs must have the same tokens count and the same part of each position, so that "position i" is
the same slot in both: :mod:`matchsig.diagnostics` builds such pairs.

How a grid is computed (cache once, patch many). Pairs are taken in length-sorted chunks; each
chunk runs the baseline once (keeping each needed layer's input, ``hook_resid_pre``) and the
perturbed input once (keeping the site's activation in each needed layer). Every patch of layer l
then starts from the cached baseline input of layer l (layers before l are not recomputed: they
are unchanged by a patch in layer l) and replaces the site's activation with the cached perturbed
one under a per-row mask; many patches (heads, positions) share one forward as rows of a batch.
The score reads the last layer at [CLS] only, so patched forwards compute the last layer's
attention output projection and MLP for the [CLS] row alone (:func:`_last_layer_cls_only`; checked
once per model against its full forward, else not used).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import MatchsigError
from .hooks import ATTENTION_KINDS, HookPoint, canonical_kind, check_supported, parse_site, site_name
from .parts import PAD

if TYPE_CHECKING:
    from .model import Batch

__all__ = ["PatchResult", "patch", "check_aligned", "encode_triples"]


@dataclass
class PatchResult:
    """Scores of a patching grid.

    ``patched[i, a, b, c]``: pair i patched at layer ``layers[a]``, head ``heads[b]`` (the head axis
    has length 1 and ``heads`` is None for sites without heads) and position ``positions[c]`` (the
    axis has length 1 and ``positions`` is None when all positions are patched together); NaN where
    the position is past pair i's length.
    """

    site: str
    layers: list[int]
    heads: list[int] | None
    positions: list[int] | None
    baseline: np.ndarray
    perturbed: np.ndarray
    patched: np.ndarray

    @property
    def effect(self) -> np.ndarray:
        """``(patched - baseline) / (perturbed - baseline)`` per pair and site, same shape as ``patched``."""
        base = self.baseline[:, None, None, None]
        delta = (self.perturbed - self.baseline)[:, None, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(delta != 0, (self.patched - base) / np.where(delta != 0, delta, 1.0), np.nan)

    def names(self) -> list[str]:
        """The site name of each entry of the layer axis."""
        return [site_name(self.site, layer) for layer in self.layers]

    def to_frame(self):
        """Long table: one row per (pair, layer, head, position) with ``patched`` and ``effect``."""
        import pandas as pd

        n, nl, nh, npos = self.patched.shape
        idx = np.indices((n, nl, nh, npos)).reshape(4, -1)
        heads = np.asarray(self.heads if self.heads is not None else [-1])
        positions = np.asarray(self.positions if self.positions is not None else [-1])
        frame = pd.DataFrame({
            "pair": idx[0], "site": self.site, "layer": np.asarray(self.layers)[idx[1]],
            "head": heads[idx[2]], "position": positions[idx[3]],
            "baseline": self.baseline[idx[0]], "perturbed": self.perturbed[idx[0]],
            "patched": self.patched.reshape(-1), "effect": self.effect.reshape(-1),
        })
        return frame.dropna(subset=["patched"]).reset_index(drop=True)


def check_aligned(ce, enc_base, enc_pert) -> None:
    """One-line error unless each baseline/perturbed pair has equal token counts.

    Both share the query, so equal counts also mean every position is in the same part."""
    for i, (a, b) in enumerate(zip(enc_base.input_ids, enc_pert.input_ids)):
        if len(a) != len(b):
            raise MatchsigError(
                f"pair {i}: the baseline has {len(a)} tokens and the perturbed input {len(b)}; patching needs "
                "equal token counts so positions align (pad the baseline with a filler, see matchsig.diagnostics)")


def encode_triples(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str]):
    """The baseline and perturbed inputs of (query, baseline, perturbed) triples, encoded and checked
    position-aligned; a one-line error unless there is one of each per pair."""
    queries, baseline_docs, perturbed_docs = list(queries), list(baseline_docs), list(perturbed_docs)
    if not (len(queries) == len(baseline_docs) == len(perturbed_docs)):
        raise MatchsigError(f"{len(queries)} queries, {len(baseline_docs)} baseline and {len(perturbed_docs)} "
                            "perturbed documents: give one of each per pair")
    enc_b, enc_p = ce.encode(queries, baseline_docs), ce.encode(queries, perturbed_docs)
    check_aligned(ce, enc_b, enc_p)
    return enc_b, enc_p


def _int_list(what: str, values, limit: int) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise MatchsigError(f"bad {what} {v!r}: expected an integer")
        if not 0 <= int(v) < limit:
            raise MatchsigError(f"{what} {int(v)} out of range (0..{limit - 1})")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise MatchsigError(f"repeated {what} in {list(values)}")
    return out


def _resolve(ce, site: str, layers, heads, positions, max_len: int):
    site = str(site).strip()
    if site.startswith("blocks."):
        point = parse_site(site, ce.num_layers)
        if layers is not None and list(layers) != [point.layer]:
            raise MatchsigError(f"site {site} names layer {point.layer}; give layers=None or [{point.layer}]")
        kind, layer_list = point.kind, [point.layer]
    else:
        kind = canonical_kind(site)
        layer_list = list(range(ce.num_layers)) if layers is None else _int_list("layer", _seq(layers), ce.num_layers)
    if not layer_list:
        raise MatchsigError("no layers to patch")
    if kind in ATTENTION_KINDS:
        raise MatchsigError(f"site {kind} cannot be patched (shape {ATTENTION_KINDS[kind]}, no position axis): "
                            "patch attn.hook_z, the heads' outputs, instead")
    check_supported(ce, [kind])
    if kind == "attn.hook_z":
        head_list = list(range(ce.num_heads)) if heads is None else _int_list("head", _seq(heads), ce.num_heads)
        if not head_list:
            raise MatchsigError("no heads to patch")
    elif heads is not None:
        raise MatchsigError(f"site {kind} has no heads: give heads only for attn.hook_z (site 'z')")
    else:
        head_list = None
    if positions is None:
        pos_list = None
    elif isinstance(positions, str):
        if positions != "each":
            raise MatchsigError(f"bad positions {positions!r}: None (all at once), 'each', or a list of positions")
        pos_list = list(range(max_len))
    else:
        pos_list = _int_list("position", _seq(positions), max_len)
        if not pos_list:
            raise MatchsigError("no positions to patch")
    return kind, layer_list, head_list, pos_list


def _seq(values) -> list:
    return [values] if isinstance(values, (int, np.integer)) else list(values)


def patch(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
          site: str = "attn.hook_z", layers: Sequence[int] | int | None = None, heads: Sequence[int] | int | None = None,
          positions: Sequence[int] | int | str | None = None, batch_size: int = 64, chunk_size: int = 16,
          progress: bool = False) -> PatchResult:
    """Patch ``site`` from the perturbed run into the baseline run; see :class:`PatchResult`.

    ``site``: a site kind (``"attn.hook_z"``/``"z"``, ``"hook_resid_post"``/``"resid_post"``,
    ``"hook_mlp_out"``, ``"hook_attn_out"``, ``"hook_resid_pre"``, ``"hook_resid_mid"``) patched in
    each of ``layers`` (default all) separately, or one full name ``"blocks.3.attn.hook_z"``.
    ``heads`` (``attn.hook_z`` only): each head separately (default all). ``positions``: None patches
    every position at once; ``"each"`` or a list patches each position separately.
    ``batch_size``: rows (patches) per forward; ``chunk_size``: pairs whose runs are cached together.
    """
    if batch_size < 1 or chunk_size < 1:
        raise MatchsigError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    enc_b, enc_p = encode_triples(ce, queries, baseline_docs, perturbed_docs)
    lengths = enc_b.lengths()
    n = len(enc_b)
    kind, layer_list, head_list, pos_list = _resolve(ce, site, layers, heads, positions,
                                                     int(lengths.max()) if n else ce.max_length)
    nh = len(head_list) if head_list is not None else 1
    npos = len(pos_list) if pos_list is not None else 1
    result = PatchResult(kind, layer_list, head_list, pos_list, np.zeros(n), np.zeros(n),
                         np.full((n, len(layer_list), nh, npos), np.nan))
    if n == 0:
        return result
    from .progress import _progress

    bar = _progress(n * len(layer_list) * nh * npos, progress, f"patching {kind}")
    with torch.inference_mode():
        for chunk in ce.batches(lengths, chunk_size):
            _patch_chunk(ce, enc_b, enc_p, chunk, lengths, kind, layer_list, head_list, pos_list, batch_size,
                         result, bar)
    bar.close()
    return result


def _patch_chunk(ce, enc_b, enc_p, chunk, lengths, kind, layer_list, head_list, pos_list, batch_size,
                 result: PatchResult, bar) -> None:
    """Baseline and perturbed runs of one chunk of pairs, then every patch of the grid for them."""
    batch_b = ce.collate(enc_b, chunk)
    res = ce.forward(batch_b, output_hidden_states=True)
    result.baseline[chunk] = ce.scores_from_logits(res.logits)
    starts = {layer: res.hidden_states[layer] for layer in layer_list}  # hidden_states[l] = input of layer l
    del res

    cached: dict[int, torch.Tensor] = {}

    def record(value: torch.Tensor, hook: HookPoint) -> None:
        cached[hook.layer] = value.clone()

    logits = ce.forward(ce.collate(enc_p, chunk), hooks={site_name(kind, layer): record for layer in layer_list}).logits
    result.perturbed[chunk] = ce.scores_from_logits(logits)

    if getattr(ce, "_patch_cls_only", None) is None:
        ce._patch_cls_only = _check_cls_only(ce, batch_b, result.baseline[chunk])
    heads = head_list if head_list is not None else [None]
    positions = pos_list if pos_list is not None else [None]
    # Work items of one layer: (head index, position index, row of the chunk); rows past a pair's length skipped.
    chunk_len = lengths[chunk]
    for li, layer in enumerate(layer_list):
        items = [(hi, pi, r) for hi in range(len(heads)) for pi, pos in enumerate(positions)
                 for r in range(len(chunk)) if pos is None or pos < chunk_len[r]]
        for start in range(0, len(items), batch_size):
            part = items[start: start + batch_size]
            rows = torch.tensor([r for _, _, r in part], device=ce.device)
            scores = _patched_forward(ce, batch_b, rows, layer, kind, starts[layer], cached[layer],
                                      [heads[hi] for hi, _, _ in part], [positions[pi] for _, pi, _ in part])
            for (hi, pi, r), s in zip(part, scores):
                result.patched[chunk[r], li, hi, pi] = s
            bar.update(len(part))


def _patched_forward(ce, batch: "Batch", rows: torch.Tensor, layer: int, kind: str, start: torch.Tensor,
                     pert: torch.Tensor, heads: list, positions: list) -> np.ndarray:
    """Scores of baseline rows ``rows`` of the chunk with each row's (head, position) patch at ``layer``.

    Runs layers ``layer..`` only, from the cached baseline input of ``layer``; the site's activation
    is replaced, where a row's mask is set, by the cached perturbed activation of that pair.
    """
    r = len(positions)
    sub = batch.select(rows)
    part_ids = sub.part_ids
    width = part_ids.shape[1]
    real = part_ids != PAD  # padding is never patched (its keys are masked: it cannot matter)
    head_axis = pert.shape[2] if kind == "attn.hook_z" else 1
    mask = torch.zeros((r, width, head_axis), dtype=torch.bool, device=ce.device)
    for k, (h, p) in enumerate(zip(heads, positions)):
        cols = slice(None) if h is None else h
        if p is None:
            mask[k, :, cols] = real[k, :, None] if h is None else real[k]
        else:
            mask[k, p, cols] = True
    source = pert[rows]
    if kind == "attn.hook_z":
        mask = mask[..., None]  # (R, T, H, 1) against (R, T, H, d_head)

    def replace(value: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return torch.where(mask, source.to(value.dtype), value)

    # sites of the last layer other than z and its input would see the [CLS] row only: run those in full
    fast = ce._patch_cls_only and (layer < ce.num_layers - 1 or kind in ("attn.hook_z", "hook_resid_pre"))
    with _last_layer_cls_only(ce) if fast else contextlib.nullcontext():
        logits = ce.forward(sub, hooks={site_name(kind, layer): replace}, start=(layer, start[rows])).logits
    return ce.scores_from_logits(logits)


@contextlib.contextmanager
def _last_layer_cls_only(ce) -> Iterator[bool]:
    """Inside the block, the last layer's attention output projection and MLP run on row 0 ([CLS]) only.

    A sequence-classification head of the BERT family reads the last layer at [CLS] alone (the pooler
    or head takes ``hidden[:, 0]``), so every other row of that layer's output is work thrown away: this
    saves about three quarters of the last layer in every patched forward. Yields False (and changes
    nothing) for layers without an ``attention.output`` module.
    """
    _, _, layers = ce._encoder_layers()
    target = getattr(getattr(layers[-1], "attention", None), "output", None)
    if not isinstance(target, torch.nn.Module):
        yield False
        return

    def cut(value):
        return value[:, :1] if torch.is_tensor(value) and value.dim() == 3 else value

    def pre(module, args, kwargs):
        return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}

    handle = target.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield True
    finally:
        handle.remove()


def _check_cls_only(ce, batch: "Batch", full: np.ndarray) -> bool:
    """Whether this model's scores with :func:`_last_layer_cls_only` equal its full forward's (fp32/fp64 only;
    a model whose head reads other rows, or another layer structure, is patched with full forwards)."""
    if next(ce.model.parameters()).dtype not in (torch.float32, torch.float64):  # scoring heads have no .dtype
        return False
    with _last_layer_cls_only(ce) as active:
        if not active:
            return False
        try:
            scores = ce.scores_from_logits(ce.forward(batch).logits)
        except (RuntimeError, ValueError, IndexError):
            scores = None
    if scores is not None and np.abs(scores - full).max() <= 1e-4:
        return True
    warnings.warn(f"model {ce.name}: its score reads more than the last layer's [CLS] row; patching runs every "
                  "patched forward in full", stacklevel=3)
    return False
