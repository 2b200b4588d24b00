"""Attribution patching: gradient estimates of every activation-patching effect of a grid at once.

Exact patching (:mod:`matchsig.patching`) runs one forward per patched node. Attribution patching
(Syed et al. 2023; Kramár et al. 2024) estimates all of them from a few forwards and one backward:
the score change of patching node n (a head's output, a residual stream, an MLP output; all
positions or one) from the perturbed run into the baseline run is, to first order,

    delta_n  ~=  (a_pert[n] - a_base[n]) . d score / d a[n]

where the derivative is the *total* one (later layers recompute, as they do under a real patch).

* ``method="atp"``: the derivative at the baseline run (one forward with gradients, one backward);
* ``method="atp*"``: AtP* (Kramár et al. 2024) as far as it applies to these sites: the AtP estimate
  (``delta``) plus GradDrop (``graddrop``), the unsigned score that AtP* ranks nodes by to find the
  ones whose effect cancels along some paths. For each layer l, the gradient is taken again with
  layer l's attention and MLP branch outputs frozen (``hook_attn_out`` and ``hook_mlp_out``
  detached; the skip path still carries gradient), and ``graddrop = sum_l |AtP_l| / (L - 1)`` per
  pair and node (a node inside layer l gets 0 from that layer, hence L - 1). The other half of AtP*,
  the QK fix, corrects nodes that are attention queries or keys; these sites have none (a head's
  output ``z`` reaches the score through no softmax of its own), so it lives in edge attribution
  (``eap-qk``, :mod:`matchsig.engine.edges`). Costs L more gradient runs than ``atp``.
* ``method="ig"``: integrated gradients (EAP-IG, Hanna et al. 2024): the derivative averaged over
  ``steps`` runs whose input embeddings move from the baseline's to the perturbed's (midpoints
  ``(k + 1/2) / steps``), which follows the path instead of extrapolating from one end.

The result has the axes of :class:`~matchsig.patching.PatchResult` (``patched`` = baseline + delta,
``effect``, ``to_frame()``) plus ``delta`` and ``method``; how far to trust it is measured against
exact patching, never assumed (:func:`agreement`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import MatchsigError
from .hooks import HookPoint, check_supported, site_name
from .parts import PAD
from .patching import PatchResult, _resolve, encode_triples

__all__ = ["AttributionResult", "attribute", "agreement", "METHODS"]

METHODS = ("atp", "atp*", "ig")


@dataclass
class AttributionResult(PatchResult):
    """A :class:`~matchsig.patching.PatchResult` estimated by attribution: ``patched`` = baseline +
    ``delta`` (``delta[i, a, b, c]``: the estimated score change of pair i's node, NaN past its length);
    ``graddrop`` (same shape, ``atp*`` only, else None): AtP*'s GradDrop magnitude of each pair and node."""

    method: str = "atp"
    steps: int = 1
    delta: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))
    graddrop: np.ndarray | None = None

    def to_frame(self):
        frame = super().to_frame()
        frame["delta"] = frame["patched"] - frame["baseline"]
        frame["method"] = self.method
        if self.graddrop is not None:  # PatchResult.to_frame's cells: the grid raveled, cells past a pair's end dropped
            frame["graddrop"] = self.graddrop.reshape(-1)[~np.isnan(np.asarray(self.patched).reshape(-1))]
        return frame


def attribute(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
              site: str = "attn.hook_z", method: str = "atp", steps: int = 16, layers=None, heads=None,
              positions=None, chunk_size: int = 8, progress: bool = False) -> AttributionResult:
    """Attribution estimates of the patching grid ``site`` x ``layers`` x ``heads`` x ``positions``
    (the arguments of :func:`matchsig.patching.patch`); ``method``: ``"atp"`` or ``"ig"`` (``steps``
    interpolation points); ``chunk_size``: pairs per forward (x ``steps`` rows for ``"ig"``)."""
    if method not in METHODS:
        raise MatchsigError(f"unknown attribution method {method!r}: use one of {', '.join(METHODS)}")
    if steps < 1 or chunk_size < 1:
        raise MatchsigError(f"steps and chunk_size must be >= 1, got {steps} and {chunk_size}")
    enc_b, enc_p = encode_triples(ce, queries, baseline_docs, perturbed_docs)
    lengths = enc_b.lengths()
    n = len(enc_b)
    kind, layer_list, head_list, pos_list = _resolve(ce, site, layers, heads, positions,
                                                     int(lengths.max()) if n else ce.max_length)
    shape = (n, len(layer_list), len(head_list) if head_list else 1, len(pos_list) if pos_list else 1)
    result = AttributionResult(kind, layer_list, head_list, pos_list, np.zeros(n), np.zeros(n),
                               np.full(shape, np.nan), method=method, steps=steps if method == "ig" else 1,
                               delta=np.full(shape, np.nan),
                               graddrop=np.full(shape, np.nan) if method == "atp*" else None)
    from .progress import _progress

    bar = _progress(n, progress, f"attribution {method} {kind}")
    for chunk in ce.batches(lengths, chunk_size):
        _attribute_chunk(ce, enc_b, enc_p, chunk, kind, layer_list, head_list, pos_list, result)
        bar.update(len(chunk))
    bar.close()
    result.patched = result.baseline[:, None, None, None] + result.delta
    return result


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients inside the block (only activations are differentiated)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _attribute_chunk(ce, enc_b, enc_p, chunk, kind, layer_list, head_list, pos_list, result) -> None:
    """Baseline and perturbed activations of one chunk of pairs, then the gradient run(s)."""
    batch_b, batch_p = ce.collate(enc_b, chunk), ce.collate(enc_p, chunk)
    names = {layer: site_name(kind, layer) for layer in layer_list}
    embed = site_name("hook_resid_pre", 0)
    reps = result.steps
    pert_acts, result.perturbed[chunk] = _cached_run(ce, batch_p, names, embed)
    # atp differentiates at the baseline run itself, so its gradient run also yields the baseline's
    # activations and scores; ig's runs are on the path, so the baseline needs a run of its own
    base_acts, result.baseline[chunk] = _cached_run(ce, batch_b, names, embed) if reps > 1 else ({}, 0.0)
    rows = torch.arange(len(chunk), device=ce.device).repeat_interleave(reps)
    alphas = ((torch.arange(reps, device=ce.device, dtype=torch.float32) + 0.5) / reps).repeat(len(chunk))

    def on_path(value: torch.Tensor) -> torch.Tensor:  # ig: input embeddings on the path from the baseline's to the perturbed's
        e_b, e_p = base_acts[-1][rows].to(value.dtype), pert_acts[-1][rows].to(value.dtype)
        return e_b + alphas.to(value.dtype)[:, None, None] * (e_p - e_b)

    scores, live, grads = _gradient_run(ce, batch_b.select(rows) if reps > 1 else batch_b, names, embed, layer_list,
                                        move=on_path if reps > 1 else None)
    if reps == 1:
        base_acts = {layer: live[layer].detach() for layer in layer_list}
        result.baseline[chunk] = scores.detach().double().cpu().numpy()
    real = (batch_b.part_ids != PAD).double()  # (B, T): padding is never patched
    for li, (layer, g) in enumerate(zip(layer_list, grads)):
        g = g.double().view(len(chunk), reps, *g.shape[1:]).mean(1)  # the path average (ig) or the one point
        _fill(result.delta, chunk, li, (pert_acts[layer].double() - base_acts[layer].double()) * g, real,
              head_list, pos_list)
    if result.graddrop is None:
        return
    # AtP*'s GradDrop: the AtP estimate again with each layer's branch outputs frozen, |.| summed over layers
    check_supported(ce, DROP_KINDS)
    rows_here = np.arange(len(chunk))
    part = np.full((len(chunk),) + result.graddrop.shape[1:], np.nan)
    total = np.zeros_like(part)
    for dropped in range(ce.num_layers):
        _, _, grads = _gradient_run(ce, batch_b, names, embed, layer_list, dropped=dropped)
        for li, (layer, g) in enumerate(zip(layer_list, grads)):
            _fill(part, rows_here, li, (pert_acts[layer].double() - base_acts[layer].double()) * g.double(), real,
                  head_list, pos_list)
        total += np.abs(part)
    result.graddrop[chunk] = total / max(ce.num_layers - 1, 1)


#: The branch outputs a GradDrop run freezes in its dropped layer (the skip path keeps its gradient).
DROP_KINDS = ("hook_attn_out", "hook_mlp_out")


def _gradient_run(ce, batch, names: dict, embed: str, layer_list, move=None, dropped: int | None = None):
    """One forward with gradients of the summed score: (scores, the grid's activations by layer, their
    gradients, zeros where the score does not depend on them). ``move`` replaces the input embeddings
    (ig's path); ``dropped``: the layer whose :data:`DROP_KINDS` outputs are constants (GradDrop)."""
    live: dict[int, torch.Tensor] = {}

    def start(value: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        # the leaf that requires grad: the parameters are frozen, only activations are differentiated
        value = (value if move is None else move(value)).detach().requires_grad_(True)
        if names.get(0) == embed:
            live[0] = value
        return value

    def capture(value: torch.Tensor, hook: HookPoint):
        live[hook.layer] = value
        return value.detach() if hook.layer == dropped and hook.kind in DROP_KINDS else None

    hooks = {name: capture for name in names.values()}
    if dropped is not None:
        for kind in DROP_KINDS:
            hooks.setdefault(site_name(kind, dropped), lambda value, hook: value.detach())
    hooks[embed] = start
    with _frozen(ce.model), torch.enable_grad():
        scores = _scores(ce, ce.forward(batch, hooks=hooks).logits)
        wanted = [live[layer] for layer in layer_list]
        grads = torch.autograd.grad(scores.sum(), wanted, allow_unused=True) if any(w.requires_grad for w in wanted) \
            else [None] * len(wanted)
    return scores, live, [torch.zeros_like(w) if g is None else g for w, g in zip(wanted, grads)]


def _cached_run(ce, batch, names: dict, embed: str) -> tuple[dict, np.ndarray]:
    """Scores of ``batch`` and its activations at the grid's sites (key: layer) and embeddings (key -1)."""
    acts: dict[int, torch.Tensor] = {}

    def keep(value: torch.Tensor, hook: HookPoint) -> None:
        acts[hook.layer] = value.detach().clone()
        if hook.name == embed:
            acts[-1] = acts[hook.layer]

    hooks = {name: keep for name in names.values()}
    hooks[embed] = keep
    with torch.inference_mode():
        scores = ce.scores_from_logits(ce.forward(batch, hooks=hooks).logits)
    return acts, scores


def _scores(ce, logits: torch.Tensor) -> torch.Tensor:
    """Differentiable scores (the convention of :meth:`CrossEncoder.scores_from_logits`)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1)[:, 1] if ce.num_labels == 2 else logits[:, 0]


def _fill(delta: np.ndarray, chunk, li: int, product: torch.Tensor, real: torch.Tensor, head_list, pos_list) -> None:
    """Sum ``product`` ((B, T, H, d) for heads, (B, T, d) otherwise) into the grid's cells of layer ``li``."""
    if product.dim() == 4:
        per_pos = product.sum(-1)[..., head_list]  # (B, T, heads)
    else:
        per_pos = product.sum(-1)[..., None]  # (B, T, 1)
    per_pos = per_pos * real[..., None]
    if pos_list is None:
        delta[chunk, li, :, 0] = per_pos.sum(1).double().cpu().numpy()
        return
    width = per_pos.shape[1]
    values = per_pos.double().cpu().numpy()
    lengths = real.sum(1).long().cpu().numpy()
    for pi, p in enumerate(pos_list):
        if p < width:
            ok = p < lengths
            delta[np.asarray(chunk)[ok], li, :, pi] = values[ok, p, :]


def agreement(attributed: PatchResult, exact: PatchResult, top_k: int = 10) -> dict:
    """How well attribution ranks the nodes exact patching ranks: Pearson and Spearman correlations
    of the per-node mean score changes (over pairs), and the overlap of the top-``top_k`` nodes by
    |mean change|; both results must cover the same grid. An ``atp*`` result adds
    ``graddrop_spearman`` and ``graddrop_top_k_overlap``: its per-node mean GradDrop against the
    per-node mean over pairs of |exact change| (GradDrop is a magnitude)."""
    from scipy import stats

    a, e = np.asarray(attributed.patched), np.asarray(exact.patched)
    if a.shape != e.shape or attributed.site != exact.site or attributed.layers != exact.layers:
        raise MatchsigError(f"attribution grid {attributed.site} {a.shape} and exact grid {exact.site} {e.shape} differ")
    da = np.nanmean(a - attributed.baseline[:, None, None, None], axis=0).ravel()
    de = np.nanmean(e - exact.baseline[:, None, None, None], axis=0).ravel()
    k = min(top_k, da.size)
    top = lambda v: set(np.argsort(-np.abs(v), kind="stable")[:k].tolist())  # noqa: E731
    out = {"nodes": int(da.size), "pearson": float(stats.pearsonr(da, de)[0]) if da.size > 2 else float("nan"),
           "spearman": float(stats.spearmanr(da, de)[0]) if da.size > 2 else float("nan"),
           "top_k": k, "top_k_overlap": len(top(da) & top(de)) / k if k else float("nan")}
    graddrop = getattr(attributed, "graddrop", None)
    if graddrop is not None:  # AtP*'s ranking score is a magnitude: against each node's mean |exact change|
        gd = np.nanmean(graddrop, axis=0).ravel()
        mag = np.nanmean(np.abs(e - exact.baseline[:, None, None, None]), axis=0).ravel()
        out["graddrop_spearman"] = float(stats.spearmanr(gd, mag)[0]) if gd.size > 2 else float("nan")
        out["graddrop_top_k_overlap"] = len(top(gd) & top(mag)) / k if k else float("nan")
    return out
