"""Attention kernels: the ways one layer's attention can be computed, by name, with fallback orders.

:data:`KERNELS` holds a name -> :class:`Kernel` table and named *orders* (tuples of kernel names).
For each attention call, :mod:`matchsig.attention` runs the first kernel of the context's order
that handles what the call needs (a cut block, statistics, the full attention pattern), supports
the device and dtype, and is not disabled; a kernel that raises one of its ``errors`` is disabled
for the rest of the process with a one-time ``RuntimeWarning`` and the next one runs (as
ir_measures falls back from one provider to the next).

Kernels (all exact; the tests pin each to a float64 reference):

* ``"sdpa"``: fused SDPA, for layers without intervention (what plain Hugging Face inference runs);
* ``"correct"``: one pass of a fused attention kernel that also returns each row's log-sum-exp
  ``lse`` (PyTorch's private CPU flash op, CUDA's memory-efficient op). A cut row either cuts all
  document columns or none (parts are cut whole) and the non-document columns are few, so with
  ``P_ij = exp(q_i.k_j * scaling - lse_i)`` on those *short* columns only::

      row i cuts D:      out_i = sum_{j short, not cut} P_ij v_j
      row i keeps D:     out_i = SDPA_i - sum_{j short, cut} P_ij v_j

  only for the rows whose part has a partial cut (:mod:`matchsig.engine.correction`). With small
  heads on CPU the pass is widened instead for the document rows (a second value block holding
  the columns they keep). Statistics come from the query x document sub-blocks
  ``exp(q_X . k_Y * scaling - lse_X)`` (:func:`matchsig.attention_stats.reduce_subblocks`), never
  from a full map;
* ``"fused"``: ``softmax(s) with block C zeroed == SDPA(s, -inf on C) * exp(lse(s, -inf on C) -
  lse(s))``, two fused passes (CPU fp32; kept for benchmarks);
* ``"math"``: the explicit softmax, zeroing after it without renormalising (SPEC §3): the
  reference, and the only kernel that materialises the (B, H, T, T) pattern.

Orders: ``"auto"`` (sdpa, correct, math), ``"correct"`` (the same), ``"fused"`` (sdpa, fused,
correct, math), ``"math"`` (sdpa, math) and ``"eager"`` (math only). A context's ``kernel="auto"``
means the table's ``default`` order (``"auto"``; :meth:`KernelTable.use` changes it for a block).
The private ops are looked up defensively; their first use per device type and dtype is checked
against the explicit math, and a failure disables every kernel built on them (family
``"private-op"``). Fused kernels compute in fp32 (also for bf16/fp16 inputs) and cast back.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from . import correction
from .attention_stats import reduce_probs, reduce_subblocks
from ..errors import MatchsigError

if TYPE_CHECKING:
    from .context import ForwardContext


_aten = getattr(torch.ops, "aten", None)
_flash_cpu = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_efficient_cuda = getattr(_aten, "_scaled_dot_product_efficient_attention", None)

#: What a call may need beyond plain attention; a kernel lists what it handles.
CUT, STATS, PATTERN = "cut", "stats", "pattern"
#: A call whose mask is per query row (sliding window, causal), not padding keys only.
MASK = "mask"
PRIVATE_OP = "private-op"
_ERRORS = (RuntimeError, TypeError, NotImplementedError)


@dataclass
class Call:
    """One attention call as a kernel sees it: (B, H, T, D) ``query``/``key``/``value``, the
    additive ``bias`` ((B, 1, 1, T) padding keys, or (B, 1, T, T) where the model's own mask is per
    row: sliding window, causal), the layer's cut ``block`` (or None), whether to return
    statistics, and ``pattern``: None or a function applied to the (B, H, T, T) fp32 post-softmax
    probabilities before the cut (it may return a replacement)."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    bias: torch.Tensor
    scaling: float
    ctx: "ForwardContext"
    block: torch.Tensor | None = None
    stats: bool = False
    pattern: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def needs(self) -> frozenset:
        return frozenset(n for n, on in ((CUT, self.block is not None), (STATS, self.stats),
                                         (PATTERN, self.pattern is not None), (MASK, self.bias.shape[-2] > 1))
                         if on)


#: A kernel returns the (B, T, H, D) output and, when the call asks for them, the (B, H,
#: len(DIRECTIONS), len(STATISTICS)) statistics (else None).
KernelFn = Callable[[Call], "tuple[torch.Tensor, torch.Tensor | None]"]


def _anywhere(device: torch.device, dtype: torch.dtype) -> bool:
    return True


@dataclass(frozen=True)
class Kernel:
    """A named way to compute a layer's attention.

    ``handles``: what it can do besides plain attention (:data:`CUT`, :data:`STATS`,
    :data:`PATTERN`). ``supports(device, dtype)``: whether it runs there. ``family``: kernels that
    fail together (one private op); default its own name. ``errors``: exceptions that mean "this
    kernel is unusable here": the table disables its family and falls back to the next kernel."""

    name: str
    run: KernelFn
    handles: frozenset = frozenset()
    supports: Callable[[torch.device, torch.dtype], bool] = _anywhere
    family: str | None = None
    errors: tuple = _ERRORS
    never: tuple = ()

    @property
    def group(self) -> str:
        return self.family or self.name

    def accepts(self, needs: frozenset) -> bool:
        """Whether it handles a call needing ``needs``: all of them, and none of its ``never``
        combinations (sets of needs it handles one at a time only)."""
        return needs <= self.handles and not any(c <= needs for c in self.never)


@dataclass
class KernelTable:
    """Kernels by name, fallback orders by name, the default order, and what failed.

    ``broken``: family -> the error that disabled it. ``checked``: (device type, dtype) pairs whose
    private op passed its first-call check."""

    kernels: dict[str, Kernel] = field(default_factory=dict)
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default: str = "auto"
    broken: dict[str, str] = field(default_factory=dict)
    checked: set = field(default_factory=set)

    def register(self, kernel: Kernel) -> None:
        """Add a kernel (a one-line error if the name is taken); put it in an order with :meth:`define_order`."""
        if kernel.name in self.kernels:
            raise MatchsigError(f"attention kernel {kernel.name!r} is already registered")
        self.kernels[kernel.name] = kernel

    def define_order(self, name: str, kernels: tuple[str, ...]) -> None:
        """Name a fallback order (tried first to last); usable as ``kernel=name``."""
        unknown = [k for k in kernels if k not in self.kernels]
        if unknown:
            raise MatchsigError(f"order {name!r}: unknown attention kernel {unknown[0]!r} "
                                f"(registered: {', '.join(self.kernels)})")
        self.orders[name] = tuple(kernels)

    def check(self, name: str) -> str:
        """``name`` if it names an order, else a one-line :class:`MatchsigError`."""
        if name not in self.orders:
            raise MatchsigError(f"unknown kernel {name!r}: use one of {', '.join(self.orders)}")
        return name

    def order(self, name: str) -> tuple[str, ...]:
        """The kernels tried for ``kernel=name`` (``"auto"``: the default order)."""
        return self.orders[self.default if name == "auto" else self.check(name)]

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[None]:
        """``with KERNELS.use("math"):`` makes ``name`` the order of ``kernel="auto"`` inside the block."""
        self.check(name)
        keep, self.default = self.default, name
        try:
            yield
        finally:
            self.default = keep

    def usable(self, name: str, device: str | torch.device, dtype: torch.dtype) -> bool:
        k = self.kernels[name]
        return k.group not in self.broken and k.supports(torch.device(device), dtype)

    def chosen(self, order: str, needs: frozenset, device: str | torch.device, dtype: torch.dtype) -> str:
        """The kernel that order ``order`` runs for a call needing ``needs`` on ``device``/``dtype`` now."""
        for name in self.order(order):
            if self.kernels[name].accepts(needs) and self.usable(name, device, dtype):
                return name
        raise MatchsigError(f"kernel order {order!r} has no kernel for {', '.join(sorted(needs)) or 'plain'} "
                            f"attention on {torch.device(device).type} {dtype}")

    def run(self, order: str, call: Call) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the first usable kernel of ``order`` on ``call``, falling back past failures."""
        needs, device, dtype = call.needs, call.query.device, call.query.dtype
        for name in self.order(order):
            k = self.kernels[name]
            if not k.accepts(needs) or k.group in self.broken or not k.supports(device, dtype):
                continue
            try:
                return k.run(call)
            except k.errors as exc:
                self._disable(k, exc)
        return self.kernels[self.chosen(order, needs, device, dtype)].run(call)  # raises the one-line error

    def _disable(self, k: Kernel, exc: Exception) -> None:
        self.broken[k.group] = f"{type(exc).__name__}: {exc}"
        same = sorted(n for n, other in self.kernels.items() if other.group == k.group)
        warnings.warn(f"matchsig: attention kernel {'/'.join(same)} unavailable for the rest of the process, using "
                      f"the next kernel of the order ({self.broken[k.group]})", RuntimeWarning, stacklevel=4)


KERNELS = KernelTable()


def auto_cut_kernel(device: str | torch.device, dtype: torch.dtype, order: str = "auto") -> str:
    """The kernel that ``kernel=order`` runs for cut layers on this device and dtype in this process
    (``"auto"``: the default order; there ``"correct"`` where the private op works, else ``"math"``)."""
    return KERNELS.chosen(order, frozenset({CUT}), device, dtype)


def fused_available() -> bool:
    """Whether the fused CPU kernel for cut layers is usable in this process."""
    return _flash_cpu is not None and KERNELS.usable("correct", "cpu", torch.float32)


# ---- the kernels ---------------------------------------------------------------------------------


def _sdpa(call: Call):
    out = F.scaled_dot_product_attention(call.query, call.key, call.value, attn_mask=call.bias, scale=call.scaling)
    return out.transpose(1, 2).contiguous(), None


def _math(call: Call):
    ctx = call.ctx
    scores = torch.matmul(call.query, call.key.transpose(-1, -2)).float() * call.scaling + call.bias.float()
    probs = torch.softmax(scores, dim=-1)
    del scores
    if call.pattern is not None:
        probs = call.pattern(probs)
    stats = reduce_probs(probs, ctx.part_ids, ctx.input_ids) if call.stats else None
    if call.block is not None:
        probs = probs.masked_fill(ctx.cut_mask(call.block), 0.0)
    out = torch.matmul(probs.to(call.value.dtype), call.value)
    return out.transpose(1, 2).contiguous(), stats


def _correct(call: Call):
    q, k, v, ctx = call.query, call.key, call.value, call.ctx
    if call.block is None:
        out_full, lse = _sdpa_lse(q, k, v, call.bias, call.scaling)
        out = out_full.transpose(1, 2).contiguous()
    else:
        pl = correction.plan(ctx, call.block, correction.can_widen(q))
        out_pass, lse = _sdpa_lse(*(correction.widened_inputs(q, k, v, pl, ctx) if pl.widened else (q, k, v)),
                                  call.bias, call.scaling)
        out = _corrected(q, k, v, out_pass, lse, call.block, ctx, call.scaling, call.bias, pl)
    if not call.stats:
        return out, None
    with _serial():
        return out, reduce_subblocks(q, k, lse, ctx, call.scaling)


def _fused(call: Call):
    """Post-softmax zeroing as SDPA(masked) * exp(lse_masked - lse_full); two passes."""
    q, k, v = call.query, call.key, call.value
    _, lse_full = _flash_cpu(q, k, v, attn_mask=call.bias, scale=call.scaling)
    out_cut, lse_cut = _flash_cpu(q, k, v, attn_mask=call.ctx.cut_bias(call.block, q.dtype), scale=call.scaling)
    weight = torch.sub(lse_cut.float(), lse_full.float()).exp_()  # (B, H, T), <= 1
    b, h, t, d = out_cut.shape
    out = torch.empty((b, t, h, d), dtype=q.dtype, device=q.device)
    torch.mul(out_cut.transpose(1, 2), weight.transpose(1, 2).unsqueeze(-1), out=out)
    return out, None


def _correct_supports(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type == "cpu":
        return _flash_cpu is not None and dtype in (torch.float32, torch.bfloat16, torch.float16)
    return device.type == "cuda" and _efficient_cuda is not None


def _fused_supports(device: torch.device, dtype: torch.dtype) -> bool:
    return _flash_cpu is not None and device.type == "cpu" and dtype == torch.float32


for _k in (Kernel("sdpa", _sdpa, frozenset({MASK})),
           Kernel("correct", _correct, frozenset({CUT, STATS, MASK}), _correct_supports, PRIVATE_OP,
                  never=(frozenset({STATS, MASK}),)),
           Kernel("fused", _fused, frozenset({CUT}), _fused_supports, PRIVATE_OP),
           Kernel("math", _math, frozenset({CUT, STATS, PATTERN, MASK}))):
    KERNELS.register(_k)
for _name, _order in (("auto", ("sdpa", "correct", "math")), ("correct", ("sdpa", "correct", "math")),
                      ("fused", ("sdpa", "fused", "correct", "math")), ("math", ("sdpa", "math")),
                      ("eager", ("math",))):
    KERNELS.define_order(_name, _order)


# ---- the private ops and the one-pass correction ------------------------------------------------


def _sdpa_lse(query, key, value, bias, scaling) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused attention pass: ((B, H, T, D) output, (B, H, T) fp32 log-sum-exp of each row).

    The first call per device type and dtype checks both against the explicit math on two rows of
    the batch and raises ``RuntimeError`` if they disagree (a private op whose conventions changed
    must not give silently wrong ablations; the table then falls back to the explicit softmax)."""
    if query.device.type == "cpu":
        out, lse = _flash_cpu(query, key, value, attn_mask=bias, scale=scaling)
        lse = lse.float()
    else:
        out, lse = _efficient_lse(_efficient_cuda, query, key, value, bias, scaling)
    check = (query.device.type, query.dtype)
    if check not in KERNELS.checked:
        _self_check(query, key, value, bias, scaling, out, lse)
        KERNELS.checked.add(check)
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


def _corrected(query, key, value, out_pass, lse, block, ctx: "ForwardContext", scaling,
               bias: torch.Tensor | None = None, pl: "correction.Plan | None" = None) -> torch.Tensor:
    """Post-softmax zeroing of ``block`` from one fused pass (``out_pass``, ``lse``) run as plan ``pl``
    asks (default: a plain pass, not widened); (B, T, H, D)."""
    pl = pl if pl is not None else correction.plan(ctx, block, widen=False)
    out = correction.combine(out_pass, pl)
    return correction.apply(out, query, key, value, lse, pl, ctx, scaling, bias).to(query.dtype)


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
