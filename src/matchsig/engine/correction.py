"""Post-softmax zeroing from one fused attention pass: which rows need what, and the exact correction.

One fused pass gives each row's output ``O_i = sum_j P_ij v_j`` and log-sum-exp ``lse_i``, so any
``P_ij = exp(s_ij - lse_i)`` can be recomputed. A layer's cut block says, per query part (row) and key
part (column), whether that direction is cut; parts are cut whole, so each row falls in one case by
its part's cut set:

* nothing cut: ``O_i``;
* everything cut: 0;
* the document cut, some short columns kept: ``sum_{j short, kept} P_ij v_j``;
* the document kept, some short columns cut: ``O_i - sum_{j short, cut} P_ij v_j``.

The *short* columns are the non-document, non-padding tokens: few, so a corrected row costs one small
(row x short columns) product, and only rows with a partial cut pay it (:class:`Plan`).

Document rows are most rows. When the head dimension is small, the fused CPU pass costs the same
at twice the width, so the pass instead carries a second value block: values masked to the columns
the document rows keep, and those rows read it directly (:func:`widened_inputs`, :func:`combine`):
an exact sum computed by the fused kernel itself, no correction for document rows. Measured by
``benchmarks/widened_pass.py --rounds 41`` (``benchmarks/widened-pass.json``), against plain SDPA of
the same call: 16 pairs x 4 heads x 151 tokens at head dimension 8, twice the width with its padding
0.98x, three times 1.20x; at head dimension 64, twice the width 2.12x. Hence
:data:`WIDEN_MAX_WIDTH` = 16 (one extra block, heads of 8) and never on realistic heads.

The plan is built on the host (numpy on the 6 x 6 cut block and the (B, T) part ids): on a small
model each tensor op costs tens of microseconds here, more than the arithmetic it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .parts import PAD, Part

if TYPE_CHECKING:
    from .context import ForwardContext

_NP = PAD + 1  # part ids 0..4 plus padding
_REAL = slice(0, PAD)  # the key parts a row can read (padding keys are masked by the pass itself)
#: Widen the fused pass (CPU, fp32) only while twice the head dimension stays within this width.
WIDEN_MAX_WIDTH = 16
#: Correct all rows at once (no gather, no scatter) when more than this share of them needs it.
ALL_ROWS_ABOVE = 0.5


@dataclass
class Plan:
    """What one cut block asks of each row of a batch (cached per context and block).

    ``row_keep``: (B, T, H', 1) fp32, 0 on the rows that start from nothing (they keep nothing, or
    they cut the document and add their kept short columns), 1 elsewhere (None: no such row).
    ``rows``: (B, R) positions of the rows corrected over the short columns, or None when there are
    none or ``all_rows`` (every row is taken, R = T); slots past a row's count hold rows that need
    nothing (``coef_t`` 0 there). ``coef_t``: (B, H', n, R) +1 (add a kept short column), -1
    (remove a cut one) or 0. ``value_mask``: (B, H', T, 1) fp32, 1 on the key positions the document
    rows keep, when the pass is widened (else None); ``not_doc``: (B, 1, T, 1) fp32, 1 on rows that
    are not document rows (widened only). H' is 1 when every head is cut alike, else H."""

    row_keep: torch.Tensor | None
    rows: torch.Tensor | None
    coef_t: torch.Tensor | None
    value_mask: torch.Tensor | None = None
    not_doc: torch.Tensor | None = None
    all_rows: bool = False

    @property
    def widened(self) -> bool:
        """Whether the fused pass carries the document rows' value block."""
        return self.value_mask is not None


def _host_positions(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the True entries of each row, left-aligned, (B, n_max), and their validity; the
    slots past a row's count hold distinct positions of its False entries (so scatters never collide)."""
    counts = hit.sum(1)
    n = max(1, int(counts.max()))
    return np.argsort(~hit, axis=1, kind="stable")[:, :n], np.arange(n)[None, :] < counts[:, None]


def _host_parts(ctx: "ForwardContext") -> np.ndarray:
    hit = ctx._cut_cache.get("host parts")
    if hit is None:
        hit = ctx._cut_cache["host parts"] = ctx.part_ids.cpu().numpy()
    return hit


def short_columns(ctx: "ForwardContext") -> tuple[torch.Tensor, np.ndarray]:
    """Positions of the non-document, non-padding tokens per row, (B, n) long on the batch's device,
    and their part ids on the host (``PAD`` on the slots past a row's count)."""
    hit = ctx._cut_cache.get("short")
    if hit is None:
        p = _host_parts(ctx)
        pos, valid = _host_positions((p != Part.D) & (p != PAD))
        hit = (torch.as_tensor(pos, device=ctx.part_ids.device), np.where(valid, p[np.arange(len(p))[:, None], pos], PAD))
        ctx._cut_cache["short"] = hit
    return hit


def can_widen(query: torch.Tensor) -> bool:
    """Whether a cut layer's pass may carry the document rows' value block (CPU, fp32, small heads)."""
    return query.device.type == "cpu" and query.dtype == torch.float32 and 2 * query.shape[-1] <= WIDEN_MAX_WIDTH


def plan(ctx: "ForwardContext", block: torch.Tensor, widen: bool) -> Plan:
    """The :class:`Plan` of cut block ``block`` ((B or 1, H, 6, 6) bool) for the context's batch.

    Built on the host (a cut block is 6 x 6 per head, part ids are (B, T)): a few numpy calls instead
    of dozens of small tensor ops, which cost more than the correction itself on small models."""
    key = ("plan", id(block), widen)
    hit = ctx._cut_cache.get(key)
    if hit is not None and hit[0] is block:
        return hit[1]
    cut = block.cpu().numpy()
    if cut.shape[1] > 1 and (cut == cut[:, :1]).all():
        cut = cut[:, :1]
    real = cut[..., _REAL]
    every, partial = real.all(-1), real.any(-1) & ~real.all(-1)  # (B', H', 6) per row part
    doc = int(Part.D)
    widen = widen and bool(partial[..., doc].any())
    if widen:
        partial[..., doc] = False
    p = _host_parts(ctx)
    device = ctx.part_ids.device

    def per_row(x: np.ndarray, rows: np.ndarray = p) -> np.ndarray:  # (B', H'', 6) -> (B, H'', R)
        if x.shape[0] == 1:
            return x[0][:, rows].transpose(1, 0, 2)
        return x[np.arange(x.shape[0])[:, None, None], np.arange(x.shape[1])[None, :, None], rows[:, None, :]]

    def dev(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), device=device)

    cuts_doc = cut[..., doc] & partial  # (B', H', 6): partial rows that cut the document (they start from 0)
    zero = every | cuts_doc
    kept = (~per_row(zero)).transpose(0, 2, 1)[..., None].astype(np.float32)  # (B, T, H', 1): res's layout
    result = Plan(row_keep=dev(kept) if zero.any() else None, rows=None, coef_t=None)
    if partial.any():
        coef = np.where(cuts_doc[..., None], ~cut, -cut.astype(np.int8)).astype(np.float32) * partial[..., None]
        coef[..., PAD] = 0.0  # slots past a row's short-column count
        rows, valid = _host_positions(per_row(partial.any(1, keepdims=True))[:, 0])
        if rows.shape[1] > ALL_ROWS_ABOVE * p.shape[1]:  # most rows: all at once, no gather and scatter
            result.all_rows, row_part = True, p
        else:
            row_part = np.where(valid, p[np.arange(len(p))[:, None], rows], PAD)  # past the count: no-op rows
            result.rows = dev(rows)
        _, col_part = short_columns(ctx)
        coef = np.broadcast_to(coef, (p.shape[0],) + coef.shape[1:])  # (B, H', 6 rows, 6 columns)
        bidx = np.arange(p.shape[0])[:, None, None, None]
        hidx = np.arange(coef.shape[1])[None, :, None, None]
        result.coef_t = dev(coef[bidx, hidx, row_part[:, None, None, :], col_part[:, None, :, None]])  # (B, H', n, R)
    if widen:
        result.value_mask = dev(per_row(~cut[..., doc, :]).astype(np.float32)[..., None])  # kept by document rows
        result.not_doc = dev((p != Part.D).astype(np.float32)[:, None, :, None])
    ctx._cut_cache[key] = (block, result)
    return result


def widened_inputs(query, key, value, pl: Plan, ctx: "ForwardContext"):
    """(query, key, value) of the widened pass: q and k zero-padded to 2d (scores unchanged), and
    values ``[v * mask, v - v * mask]`` (the document rows' kept columns, the rest: exact for a 0/1
    mask). The buffers live as long as the batch: their zero halves are written once."""
    d = query.shape[-1]
    shape = query.shape[:-1] + (2 * d,)
    bufs = ctx._cut_cache.get(("widened", shape))
    if bufs is None:
        bufs = tuple(torch.zeros(shape, dtype=query.dtype, device=query.device) for _ in range(3))
        ctx._cut_cache[("widened", shape)] = bufs
    q2, k2, v2 = bufs
    q2[..., :d].copy_(query)
    k2[..., :d].copy_(key)
    torch.mul(value, pl.value_mask, out=v2[..., :d])
    torch.sub(value, v2[..., :d], out=v2[..., d:])
    return q2, k2, v2


def combine(out: torch.Tensor, pl: Plan) -> torch.Tensor:
    """The pass's (B, H, T, d or 2d) output as a (B, T, H, d) fp32 tensor this call owns: document
    rows read their kept block, the other rows the sum of both blocks (the full output)."""
    if not pl.widened:
        res = out.transpose(1, 2).contiguous()  # the CPU op's output is laid out (B, T, H, d): no copy
        return res if res.dtype == torch.float32 else res.float()
    b, h, t, d2 = out.shape
    d = d2 // 2
    res = torch.empty((b, t, h, d), dtype=torch.float32, device=out.device)
    torch.addcmul(out[..., :d], out[..., d:], pl.not_doc, out=res.transpose(1, 2))
    return res


def apply(res: torch.Tensor, query, key, value, lse, pl: Plan, ctx: "ForwardContext", scaling: float,
          bias: torch.Tensor | None = None) -> torch.Tensor:
    """Zero the rows that start from nothing and add each partially cut row's signed sum over its
    short columns to ``res`` ((B, T, H, d) fp32, in place); returns ``res``. ``bias``: the pass's
    additive mask, needed only when it is per row ((B, 1 or H, T, T): sliding window, causal, T5's
    position bias)."""
    if pl.row_keep is not None and not pl.all_rows:  # (all rows: fused into the last step)
        res.mul_(pl.row_keep)  # measured 7 us against 46-82 us for masked_fill_ on (16, 151, 4, 8)
    out = res.transpose(1, 2)  # (B, H, T, d) view
    if pl.coef_t is None:
        return res
    pos, _ = short_columns(ctx)
    b, h, t, d = query.shape
    cols = pos[:, None, :, None].expand(b, h, -1, d)
    ks = key.gather(2, cols).float().view(b * h, -1, d)
    vs = value.gather(2, cols).float().view(b * h, -1, d)
    if pl.all_rows:
        qr, lr, r = query.float().reshape(b * h, t, d), lse.reshape(b * h, 1, t), t
    else:
        r = pl.rows.shape[1]
        at = pl.rows[:, None, :, None].expand(b, h, r, d)
        qr = query.gather(2, at).float().view(b * h, r, d)
        lr = lse.gather(2, pl.rows[:, None, :].expand(b, h, r)).view(b * h, 1, r)
    # (B*H, n, R): short columns x corrected rows, s - lse; this orientation multiplies fastest (baddbmm
    # would fold the scale and lse in, but measured 5x the rounding error: 2.3e-5 against 3e-6 here)
    s = torch.bmm(ks, qr.transpose(1, 2)).mul_(scaling).sub_(lr).view(b, h, -1, r)
    if bias is not None and bias.shape[-2] > 1:  # a per-row mask: its entries at these rows and columns
        s.add_(_bias_block(bias, pl, pos, ctx))
    s.exp_().mul_(pl.coef_t)
    s = s.view(b * h, -1, r)
    if d >= 16:  # (B, H, R, d) laid out row by row: the add into the output reads it in order
        corr = torch.bmm(s.transpose(1, 2), vs).view(b, h, r, d)
    else:  # tiny heads: this orientation multiplies 2.4x faster (measured, 16 x 4 heads x 151 tokens)
        corr = torch.bmm(vs.transpose(1, 2), s).view(b, h, d, r).transpose(-1, -2)
    if not pl.all_rows:
        out.scatter_add_(2, at, corr)
    elif pl.row_keep is None:
        out.add_(corr)
    else:  # one pass over the output instead of two: res * row_keep + corr
        torch.addcmul(corr.transpose(1, 2), res, pl.row_keep, out=res)
    return res


def _bias_block(bias: torch.Tensor, pl: Plan, pos: torch.Tensor, ctx: "ForwardContext") -> torch.Tensor:
    """(B, 1 or H, n, R) fp32: a per-row mask's entries at the short columns and corrected rows. The
    model passes the same mask tensor to every layer of a kind, so it is taken once per batch."""
    key = ("bias block", id(bias), id(pl))
    hit = ctx._cut_cache.get(key)
    if hit is not None and hit[0] is bias:
        return hit[1]
    b, hb, t, _ = bias.shape
    sub = bias
    if not pl.all_rows:
        sub = bias.gather(2, pl.rows[:, None, :, None].expand(b, hb, pl.rows.shape[1], t))
    block = sub.gather(3, pos[:, None, None, :].expand(b, hb, sub.shape[2], -1)).transpose(-1, -2).float()
    ctx._cut_cache[key] = (bias, block)
    return block
