"""The attention function matchsig installs in a Hugging Face encoder.

transformers 5 routes BERT-family self-attention through ``AttentionInterface``: the model calls
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v, mask, scaling=...)``. We
register one function under the name ``"matchsig"`` that reads the current :class:`ForwardContext`
(a context variable set by :class:`~matchsig.model.CrossEncoder` around each forward) and

* without ablation or statistics in a layer, calls fused SDPA (as plain Hugging Face inference does);
* with an ablation, computes the softmax, zeroes the cut part-to-part blocks *after* the softmax and
  does *not* renormalise (SPEC §3), then mixes the values;
* with statistics requested, reduces the layer's attention map to per-head numbers on the fly
  (:mod:`matchsig.attention_stats`), so no full attention map outlives its layer.

Cut layers have exact implementations chosen by ``CUT_KERNEL``: the explicit softmax ("math", the
reference, used by ``kernel="eager"`` and wherever nothing faster applies), and fused ones built on
one pass of a fused attention kernel that also returns each row's log-sum-exp ``lse``:

* ``"correct"`` (the default where a fused kernel with ``lse`` exists: CPU, CUDA): every cut
  row either cuts all document columns or none (parts are cut whole), and the non-document columns
  (CLS, Q, SEP1, SEP2: a few tokens) are few. With ``P_ij = exp(q_i.k_j * scaling - lse_i)`` on
  those *small* columns only,

      row i cuts D:      out_i = sum_{j small, not cut} P_ij v_j
      row i keeps D:     out_i = SDPA_i - sum_{j small, cut} P_ij v_j

  so a cut layer costs one fused pass (the same as plain inference) plus a (T x |small|) product;
* ``"fused"``: the identity ``softmax(s) with block C zeroed == SDPA(s, -inf on C) *
  exp(lse(s, -inf on C) - lse(s))``, two fused passes (CPU only; kept for benchmarks).

Both compute the correction in fp32 (also for bf16/fp16 inputs) and cast the result back.

The fused kernels are private ops, looked up defensively; any failure falls back to the explicit
softmax for the rest of the process.

Padding is masked from the part ids of the context (padding has part id ``PAD``), not from the
mask transformers builds; the name is also registered in ``AttentionMaskInterface`` so that a model
used outside a matchsig context still gets a correct padding mask (without it transformers passes
``attention_mask=None`` and padding is silently attended).
"""

from __future__ import annotations

import contextvars
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from .parts import PAD, Part

ATTN_NAME = "matchsig"
_NP = PAD + 1  # part ids 0..4 plus padding

#: How cut layers are computed under ``kernel="auto"``: ``"auto"`` (``"correct"`` where a fused kernel
#: with log-sum-exp applies, else the explicit softmax), ``"correct"``, ``"fused"`` (the two-pass
#: identity, CPU fp32 only), or ``"math"`` (always the explicit softmax). ``kernel="eager"`` always
#: uses the math.
CUT_KERNEL = "auto"

_aten = getattr(torch.ops, "aten", None)
_flash_cpu = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_efficient_cuda = getattr(_aten, "_scaled_dot_product_efficient_attention", None)
_fused_broken: str | None = None  # set to the error message when the private op failed once

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
    #: ``reduced_stats_fn(layer, values)``: receives the layer's statistics already reduced, a
    #: (B, H, len(DIRECTIONS), len(STATS)) fp32 tensor (see :mod:`matchsig.attention_stats`); lets the
    #: attention function compute them from query/document sub-blocks without a full attention map.
    reduced_stats_fn: Callable[[int, torch.Tensor], None] | None = None
    #: Named intervention sites (:mod:`matchsig.hooks`): ``{"blocks.3.attn.hook_z": fn, ...}``; each
    #: ``fn(activation, hook)`` may return a replacement. ``attn.hook_z`` is applied in this module.
    hooks: Mapping[str, Callable] | None = None
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
    """Attention with post-softmax direction ablation and streaming statistics (see module doc);
    the per-head output (B, T, H, D) is the named site ``blocks.{layer}.attn.hook_z``."""
    out, weights = _attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    ctx = _current.get()
    if ctx is not None and ctx.hooks:
        layer = getattr(module, "_matchsig_layer", None)
        if layer is not None:
            from .hooks import HookPoint, _apply  # late: hooks imports this module

            point = HookPoint(layer, "attn.hook_z")
            replaced = _apply(point.name, point, out)
            if replaced is not None:
                out = replaced.to(out.dtype).contiguous()
    return out, weights


def _attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs):
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
    want_stats = (ctx.stats_fn is not None or ctx.reduced_stats_fn is not None) and layer is not None
    bias = ctx.key_bias(query.dtype)

    if want_stats and ctx.stats_fn is None and ctx.kernel != "eager" and _use_fused(query):
        out = _fused_stats(query, key, value, bias, block, ctx, layer, scaling)
        if out is not None:
            return out, None

    if block is None and not want_stats and ctx.kernel != "eager":
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    if block is not None and not want_stats and ctx.kernel != "eager" and _use_fused(query):
        if CUT_KERNEL == "fused":
            out = _fused_cut(query, key, value, bias, ctx.cut_bias(block, query.dtype), scaling)
        else:
            out = _correct_cut(query, key, value, bias, block, ctx, scaling)
        if out is not None:
            return out, None

    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scaling + bias.float()
    probs = torch.softmax(scores, dim=-1)
    del scores
    if want_stats:
        if ctx.stats_fn is not None:
            ctx.stats_fn(layer, probs, ctx)
        if ctx.reduced_stats_fn is not None:
            from .attention_stats import reduce_probs

            ctx.reduced_stats_fn(layer, reduce_probs(probs, ctx.part_ids, ctx.input_ids))
    if block is not None:
        probs = probs.masked_fill(ctx.cut_mask(block), 0.0)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


def auto_cut_kernel(device: str | torch.device, dtype: torch.dtype) -> str:
    """The cut-layer kernel ``CUT_KERNEL="auto"`` uses on this device and dtype in this process:
    ``"correct"`` (one fused pass + small-column correction) or ``"math"`` (explicit softmax)."""
    kind = torch.device(device).type
    if _fused_broken is None:
        if kind == "cpu" and _flash_cpu is not None and dtype in (torch.float32, torch.bfloat16, torch.float16):
            return "correct"
        if kind == "cuda" and _efficient_cuda is not None:
            return "correct"
    return "math"


def _use_fused(query: torch.Tensor) -> bool:
    if CUT_KERNEL == "math" or auto_cut_kernel(query.device, query.dtype) == "math":
        return False
    if CUT_KERNEL == "fused":  # the two-pass kernel: CPU fp32 only (benchmarks)
        return query.device.type == "cpu" and query.dtype == torch.float32
    return True


def fused_available() -> bool:
    """Whether the fused CPU kernel for cut layers is usable in this process."""
    return _flash_cpu is not None and _fused_broken is None


def _broken(exc: Exception) -> None:
    global _fused_broken
    _fused_broken = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"matchsig: fused attention kernel unavailable, using the explicit softmax ({_fused_broken})",
                  RuntimeWarning, stacklevel=3)


_FUSED_ERRORS = (RuntimeError, TypeError, NotImplementedError)
_checked: set = set()  # (device type, dtype) pairs whose fused kernel passed the first-call check


def _sdpa_lse(query, key, value, bias, scaling) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused attention pass: ((B, H, T, D) output, (B, H, T) fp32 log-sum-exp of each row).

    The first call per device type and dtype checks both against the explicit math on two rows of
    the batch and raises ``RuntimeError`` if they disagree (a private op whose conventions changed
    must not give silently wrong ablations; the callers then fall back to the explicit softmax)."""
    if query.device.type == "cpu":
        out, lse = _flash_cpu(query, key, value, attn_mask=bias, scale=scaling)
        lse = lse.float()
    else:
        out, lse = _efficient_lse(_efficient_cuda, query, key, value, bias, scaling)
    check = (query.device.type, query.dtype)
    if check not in _checked:
        _self_check(query, key, value, bias, scaling, out, lse)
        _checked.add(check)
    return out, lse


def _efficient_lse(op, query, key, value, bias, scaling) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and fp32 log-sum-exp from ``op`` = CUDA's memory-efficient attention kernel.

    It takes an additive (B, H, T, T) bias whose row stride is a multiple of 16 elements (padded
    here as SDPA's own front end does; the padding-keys-only bias is broadcast, stride 0) and
    returns the log-sum-exp padded along the rows to its block size (sliced back to T)."""
    b, h, t, _ = query.shape
    pad = (-t) % 16
    aligned = F.pad(bias, (0, pad))[..., :t] if pad else bias
    out, lse, *_ = op(query, key, value, aligned.expand(b, h, t, t), True, scale=scaling)
    return out, lse[..., :t].float()


def _self_check(query, key, value, bias, scaling, out, lse) -> None:
    n = min(2, query.shape[0])
    scores = torch.matmul(query[:n].float(), key[:n].float().transpose(-1, -2)) * scaling + bias[:n].float()
    want_lse = torch.logsumexp(scores, -1)
    want = torch.matmul(torch.softmax(scores, -1), value[:n].float())
    half = query.dtype in (torch.float16, torch.bfloat16)
    tol_out = (3e-2 if half else 1e-4) * max(1.0, float(value[:n].abs().max()))
    tol_lse = (3e-2 if half else 1e-4) * max(1.0, float(want_lse.abs().max()))
    d_out = float((out[:n].float() - want).abs().max())
    d_lse = float((lse[:n] - want_lse).abs().max())
    if not (d_out <= tol_out and d_lse <= tol_lse):
        raise RuntimeError(f"fused attention kernel disagrees with the explicit softmax on {query.device.type} "
                           f"{query.dtype} (max |diff| output {d_out:.2e}, log-sum-exp {d_lse:.2e})")


def _small_columns(ctx: "ForwardContext") -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the non-document, non-padding tokens per row, (B, n) long, and their part ids
    (``PAD`` on the slots past a row's count)."""
    hit = ctx._cut_cache.get("small")
    if hit is None:
        p = ctx.part_ids
        pos, valid = _positions((p != Part.D) & (p != PAD))
        hit = (pos, p.gather(1, pos).masked_fill(~valid, PAD))
        ctx._cut_cache["small"] = hit
    return hit


def _correction(ctx: "ForwardContext", block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For cut block ``block``: ``coef`` (B, H', T, n) fp32 and ``keep`` (B, H', T, 1) fp32, H' in {1, H}.

    ``out_i = keep_i * SDPA_i + sum_m coef_im P_i,pos_m v_pos_m``: a row that cuts the document keeps
    nothing of SDPA and adds back its kept small columns (coef 1); a row that keeps the document
    keeps SDPA and subtracts its cut small columns (coef -1).
    """
    key = ("corr", id(block))
    hit = ctx._cut_cache.get(key)
    if hit is not None and hit[0] is block:
        return hit[1]
    original = block
    if block.shape[1] > 1 and bool((block == block[:, :1]).all()):
        block = block[:, :1]
    pos, col_part = _small_columns(ctx)
    p = ctx.part_ids
    b, t = p.shape
    hh = block.shape[1]
    cuts_doc = block[..., int(Part.D)]  # (B', H', 6): per row part
    coef = torch.where(cuts_doc[..., None], ~block, -block.to(torch.int8)).float()  # (B', H', 6, 6)
    coef[..., PAD] = 0.0
    idx = (p[:, :, None] * _NP + col_part[:, None, :]).flatten(1)  # (B, T*n)
    coef_t = torch.gather(coef.flatten(2).expand(b, hh, -1), 2, idx[:, None, :].expand(b, hh, -1))
    keep = torch.gather((~cuts_doc).float().expand(b, hh, -1), 2, p[:, None, :].expand(b, hh, -1))
    value = (coef_t.view(b, hh, t, pos.shape[1]), keep[..., None])
    ctx._cut_cache[key] = (original, value)
    return value


def _corrected(query, key, value, out_full, lse, block, ctx: "ForwardContext", scaling) -> torch.Tensor:
    """Post-softmax zeroing of ``block`` from one fused pass (``out_full``, ``lse``); (B, T, H, D)."""
    coef, keep = _correction(ctx, block)
    pos, _ = _small_columns(ctx)
    b, h, _, d = query.shape
    g = pos[:, None, :, None].expand(b, h, -1, d)
    ks = key.gather(2, g).float()
    vs = value.gather(2, g).float()
    p = torch.matmul(query.float(), ks.transpose(-1, -2))  # (B, H, T, n) scores of the small columns
    p.mul_(scaling).sub_(lse[..., None]).exp_().mul_(coef)
    out = torch.matmul(p, vs).addcmul_(out_full.float(), keep)
    return out.transpose(1, 2).contiguous().to(query.dtype)


def _correct_cut(query, key, value, bias, block, ctx: "ForwardContext", scaling) -> torch.Tensor | None:
    """Cut layer as one fused pass plus the small-column correction; None on failure of the private op."""
    try:
        out_full, lse = _sdpa_lse(query, key, value, bias, scaling)
    except _FUSED_ERRORS as exc:  # private op: fall back for good
        _broken(exc)
        return None
    return _corrected(query, key, value, out_full, lse, block, ctx, scaling)


def _fused_cut(query, key, value, bias, cut_bias, scaling) -> torch.Tensor | None:
    """Post-softmax zeroing as SDPA(masked) * exp(lse_masked - lse_full); (B, T, H, D) or None on failure."""
    try:
        _, lse_full = _flash_cpu(query, key, value, attn_mask=bias, scale=scaling)
        out_cut, lse_cut = _flash_cpu(query, key, value, attn_mask=cut_bias, scale=scaling)
    except _FUSED_ERRORS as exc:  # private op: fall back for good
        _broken(exc)
        return None
    weight = torch.sub(lse_cut.float(), lse_full.float()).exp_()  # (B, H, T), <= 1
    b, h, t, d = out_cut.shape
    out = torch.empty((b, t, h, d), dtype=query.dtype, device=query.device)
    torch.mul(out_cut.transpose(1, 2), weight.transpose(1, 2).unsqueeze(-1), out=out)
    return out


def _fused_stats(query, key, value, bias, block, ctx: ForwardContext, layer: int, scaling) -> torch.Tensor | None:
    """Statistics from sub-blocks + fused attention output; None (nothing delivered) on failure.

    One fused pass gives the layer's output and the log-sum-exp ``lse`` of every row; the
    probabilities the statistics need (query rows x document columns and document rows x query
    columns) are then ``exp(q_X . k_Y * scaling - lse_X)``, small (B, H, |X|, |Y|) blocks.
    """
    try:
        out_full, lse_full = _sdpa_lse(query, key, value, bias, scaling)
    except _FUSED_ERRORS as exc:
        _broken(exc)
        return None
    if block is not None:
        out = _corrected(query, key, value, out_full, lse_full, block, ctx, scaling)
    else:
        out = out_full.transpose(1, 2).contiguous()
    with _serial():
        values = _block_stats(query, key, lse_full, ctx, scaling)
    ctx.reduced_stats_fn(layer, values)
    return out


class _serial:
    """Run a stretch of small ops on one thread when the machine is oversubscribed (restoring the
    thread count after).

    The statistics are ~40 ops on tensors of a few MB per layer. On a loaded machine every parallel
    region waits for its slowest thread (measured on 2 busy cores: statistics cost 1.64x plain
    scoring with 2 threads, 1.06x on one); on a quiet one the threads help (measured on 2 idle
    cores: 1.13x with 2 threads, 1.24x on one). The 1-minute load average, which counts this
    process's own threads, tells the two apart: one thread when it exceeds 1.5x the core count."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        self.cut = self.n > 1 and _oversubscribed()
        if self.cut:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.cut:
            torch.set_num_threads(self.n)


def _oversubscribed() -> bool:
    try:
        return os.getloadavg()[0] > 1.5 * (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return False


def _part_positions(part_ids: torch.Tensor, part: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of ``part``'s tokens per row, left-aligned: (B, n_max) long and (B, n_max) validity."""
    return _positions(part_ids == part)


def _positions(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the True entries of each row of ``hit``, left-aligned: (B, n_max) long and validity.
    Slots past a row's count hold a valid position (of a False entry or 0), so gathers stay in range."""
    counts = hit.sum(1)
    n_max = max(1, int(counts.max()))
    pos = torch.argsort((~hit).to(torch.int8), dim=1, stable=True)[:, :n_max]
    valid = torch.arange(n_max, device=hit.device)[None, :] < counts[:, None]
    return pos, valid


# Finite stand-in for -inf on padded columns: exp() gives exactly 0 and 0 * _NEG stays 0 (no NaN).
_NEG = -1e30


def _direction_setup(ctx: ForwardContext, x: int, y: int) -> dict:
    """Layer-independent tensors of direction X<-Y for the batch (cached in the context)."""
    key = ("stats", x, y)
    hit = ctx._cut_cache.get(key)
    if hit is None:
        px, vx = _part_positions(ctx.part_ids, x)
        py, vy = _part_positions(ctx.part_ids, y)
        same = (ctx.input_ids.gather(1, px)[:, :, None] == ctx.input_ids.gather(1, py)[:, None, :]) & vy[:, None, :]
        rows = vx.float()
        hit = {
            "px": px, "py": py,
            "col_bias": torch.zeros(vy.shape, dtype=torch.float32, device=vy.device).masked_fill_(~vy, _NEG)[:, None, None, :],
            "same": same.float()[:, None],  # (B, 1, |X|, |Y|)
            "rows_t": rows[:, None, None, :],  # (B, 1, 1, |X|)
            "n_rows": rows.sum(-1)[:, None],  # (B, 1)
        }
        ctx._cut_cache[key] = hit
    return hit


def _block_stats(query, key, lse, ctx: ForwardContext, scaling) -> torch.Tensor:
    """(B, H, 2, 4) statistics (:data:`matchsig.attention_stats.DIRECTIONS` x ``STATS``) from sub-blocks.

    With ``p`` the probabilities of the block (rows X, columns Y), ``m = sum_j p`` and the log
    probabilities ``s``: entropy of ``p / m`` = ``log m - sum_j p s / m``; exact-match mass =
    ``sum_j p [same token] / m``; weights ``m`` as in :func:`matchsig.attention_stats.reduce_probs`.
    """
    from .attention_stats import DIRECTIONS

    b, h, _, d = query.shape
    results = []
    for _, x, y in DIRECTIONS:
        st = _direction_setup(ctx, int(x), int(y))
        qx = query.gather(2, st["px"][:, None, :, None].expand(b, h, -1, d)).float()
        ky = key.gather(2, st["py"][:, None, :, None].expand(b, h, -1, d)).float()
        lx = lse.gather(2, st["px"][:, None, :].expand(b, h, -1))
        nx, ny = qx.shape[2], ky.shape[2]
        offset = (st["col_bias"] - lx[..., None]).reshape(b * h, nx, ny)
        s = torch.baddbmm(offset, qx.reshape(b * h, nx, d), ky.reshape(b * h, ny, d).transpose(1, 2), alpha=scaling)
        s = s.view(b, h, nx, ny)  # log p(X_i <- Y_j); _NEG on padded columns
        p = torch.exp(s)
        m = p.sum(-1)
        per_row = torch.stack([p.amax(-1), torch.special.xlogy(m, m) - torch.linalg.vecdot(p, s),
                               torch.linalg.vecdot(p, st["same"]), m], -1)  # (B, H, |X|, 4)
        tot = torch.matmul(st["rows_t"], per_row).squeeze(2)  # (B, H, 4): sums over the tokens of X
        wsum = tot[..., 3]
        n = st["n_rows"].expand_as(wsum)
        results.append(tot / torch.stack([n, wsum, wsum, n], -1))
    return torch.stack(results, 2)


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
