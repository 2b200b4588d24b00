"""Per-head attention statistics between query and document, reduced inside the forward pass.

For a direction ``X<-Y`` (``Q<-D``: query tokens attending to document tokens; ``D<-Q``: the
reverse) and each layer/head, from the post-softmax probabilities ``p`` of one pair (SPEC §4):

* ``max``: mean over tokens ``X_i`` of ``max_j p(X_i <- Y_j)`` (the paper's M);
* ``entropy``: Shannon entropy (natural log, as ``scipy.stats.entropy``) of ``p(X_i <- Y_j)``
  renormalised over ``Y``, averaged over ``X_i`` weighted by ``p(X_i <- Y)``;
* ``exact``: the renormalised mass ``X_i`` puts on tokens of ``Y`` with the same token id,
  averaged with the same weights (exact-term matching);
* ``mass``: mean over ``X_i`` of ``p(X_i <- Y)``, the total mass ``X_i`` puts on ``Y``.

Each statistic is defined once, in the table :data:`STATISTICS` (name -> :class:`Statistic`), as

    value = sum_i w_i t_i / sum_i w_i        over the tokens X_i of X,

with ``t_i`` a per-row term of row i's probabilities over the columns of ``Y`` and ``w_i`` its
weight: 1 (the mean over tokens) or the per-row term of another statistic (``weight="mass"``:
``p(X_i <- Y)``). Every reducer reads the table: :func:`reduce_probs` (the eager path: full
(B, H, T, T) maps; also the explorer's) and :func:`reduce_subblocks` (the fused path: only the
X x Y sub-blocks, rebuilt from one fused attention pass and its log-sum-exp). A statistic without a
fused form (``Statistic.fused``) is computed on the fused path by its eager ``term``, on the same
sub-block probabilities. :func:`register_statistic` adds one.

The statistics describe each layer's attention distribution *before* that layer's own ablation,
when statistics and an ablation are combined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import MatchsigError
from .parts import Part

DIRECTIONS: tuple[tuple[str, Part, Part], ...] = (("Q<-D", Part.Q, Part.D), ("D<-Q", Part.D, Part.Q))

# Bound on elements of one temporary (B_chunk * H * T * T): keeps the extra memory of statistics small.
_CHUNK_ELEMENTS = 4_000_000


class Rows:
    """What a per-row term reads: the probabilities of some rows of ``X`` over the columns of ``Y``.

    ``p``: (..., rows, cols) probabilities, 0 on columns outside ``Y`` (and on padding);
    ``same``: (..., rows, cols), 1 (bool or float) where column j is a token of ``Y`` with row i's
    token id; ``log_p``: log ``p`` (a large negative number where ``p`` is 0), fused path only.
    Rows outside ``X`` may be present (the eager path passes all T rows): reducers weight them by 0.
    """

    def __init__(self, p: torch.Tensor, same: torch.Tensor, log_p: torch.Tensor | None = None):
        self.p, self.same, self.log_p = p, same, log_p
        self._mass: torch.Tensor | None = None
        self._normalised: torch.Tensor | None = None

    @property
    def mass(self) -> torch.Tensor:
        """(..., rows): ``p(X_i <- Y)``, the mass each row puts on ``Y``."""
        if self._mass is None:
            self._mass = self.p.sum(-1)
        return self._mass

    @property
    def normalised(self) -> torch.Tensor:
        """(..., rows, cols): ``p`` renormalised over ``Y`` (0 for a row without mass on ``Y``)."""
        if self._normalised is None:
            self._normalised = self.p / self.mass.clamp_min(torch.finfo(self.p.dtype).tiny)[..., None]
        return self._normalised


Term = Callable[[Rows], torch.Tensor]


@dataclass(frozen=True)
class Statistic:
    """One statistic: ``sum_i w_i t_i / sum_i w_i`` over the tokens ``X_i`` of ``X`` (module doc).

    ``term``: ``t_i``, (..., rows) from :class:`Rows`. ``weight``: None (every token of ``X``
    counts 1) or the name of an unweighted statistic whose term is ``w_i``. ``fused``: optional
    ``w_i t_i`` from sub-block rows that carry ``log_p`` (a cheaper or more accurate form there);
    None: the fused path computes ``w_i * term(rows)``.
    """

    name: str
    term: Term
    weight: str | None = None
    fused: Term | None = None
    doc: str = field(default="", compare=False)


def _entropy(r: Rows) -> torch.Tensor:
    pn = r.normalised
    return -torch.special.xlogy(pn, pn).sum(-1)


def _entropy_fused(r: Rows) -> torch.Tensor:
    # m * H(p / m) = m log m - sum_j p_j log p_j: no renormalised copy of the block
    return torch.special.xlogy(r.mass, r.mass) - torch.linalg.vecdot(r.p, r.log_p)


#: The statistics, in the order of the last axis of every statistics array.
STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic("max", lambda r: r.p.amax(-1), doc="mean over X_i of max_j p(X_i <- Y_j) (the paper's M)"),
        Statistic("entropy", _entropy, weight="mass", fused=_entropy_fused,
                  doc="entropy of p(X_i <- Y) renormalised over Y, weighted by p(X_i <- Y)"),
        Statistic("exact", lambda r: (r.normalised * r.same).sum(-1), weight="mass",
                  fused=lambda r: torch.linalg.vecdot(r.p, r.same),
                  doc="renormalised mass on tokens of Y with X_i's token id, weighted by p(X_i <- Y)"),
        Statistic("mass", lambda r: r.mass, doc="mean over X_i of p(X_i <- Y)"),
    )
}

#: Names of the built-in statistics (the first entries of :data:`STATISTICS`).
STATS: tuple[str, ...] = tuple(STATISTICS)


def statistic_names() -> tuple[str, ...]:
    """Names of the statistics now in the table, in array order."""
    return tuple(STATISTICS)


def register_statistic(stat: Statistic) -> None:
    """Add ``stat`` to the table (after the others); one-line error for a taken name or a bad weight."""
    if stat.name in STATISTICS:
        raise MatchsigError(f"statistic {stat.name!r} is already defined")
    if stat.weight is not None and (stat.weight not in STATISTICS or STATISTICS[stat.weight].weight is not None):
        raise MatchsigError(f"statistic {stat.name!r}: weight {stat.weight!r} must name an unweighted statistic "
                            f"({', '.join(n for n, s in STATISTICS.items() if s.weight is None)})")
    STATISTICS[stat.name] = stat


# ---- eager reducer: full maps -------------------------------------------------------------------


def reduce_probs(probs: torch.Tensor, part_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H, len(DIRECTIONS), len(STATISTICS)) float32 statistics."""
    b, h, t, _ = probs.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, h * t * t))
    out = [
        _reduce_chunk(probs[i : i + step], part_ids[i : i + step], input_ids[i : i + step]) for i in range(0, b, step)
    ]
    return torch.cat(out, 0)


def _reduce_chunk(probs: torch.Tensor, part_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    same = input_ids[:, :, None] == input_ids[:, None, :]  # (B, T, T)
    table = list(STATISTICS.values())
    results = []
    for _, x, y in DIRECTIONS:
        rows = (part_ids == int(x)).float()  # (B, T)
        cols = part_ids == int(y)
        block = Rows(probs * cols[:, None, None, :], (same & cols[:, None, :])[:, None])  # only targets in Y
        terms = {s.name: s.term(block) for s in table}  # (B, H, T) each
        del block
        n_rows = rows.sum(-1)[:, None]  # (B, 1)
        weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        values = []
        for s in table:
            if s.weight is None:
                values.append((terms[s.name] * rows[:, None, :]).sum(-1) / n_rows)
                continue
            if s.weight not in weights:
                w = terms[s.weight] * rows[:, None, :]  # zero off X
                weights[s.weight] = (w, w.sum(-1))
            w, wsum = weights[s.weight]
            values.append((w * terms[s.name]).sum(-1) / wsum)
        results.append(torch.stack(values, -1))
    return torch.stack(results, 2)


# ---- fused reducer: sub-blocks from one fused pass ----------------------------------------------


def positions(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the True entries of each row of ``hit``, left-aligned: (B, n_max) long and validity.
    Slots past a row's count hold a valid position (of a False entry or 0), so gathers stay in range."""
    counts = hit.sum(1)
    n_max = max(1, int(counts.max()))
    pos = torch.argsort((~hit).to(torch.int8), dim=1, stable=True)[:, :n_max]
    valid = torch.arange(n_max, device=hit.device)[None, :] < counts[:, None]
    return pos, valid


# Finite stand-in for -inf on padded columns: exp() gives exactly 0 and 0 * _NEG stays 0 (no NaN).
_NEG = -1e30


def _direction_setup(ctx, x: int, y: int) -> dict:
    """Layer-independent tensors of direction X<-Y for the batch (cached in the context)."""
    key = ("stats", x, y)
    hit = ctx._cut_cache.get(key)
    if hit is None:
        px, vx = positions(ctx.part_ids == x)
        py, vy = positions(ctx.part_ids == y)
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


def _weighted_term(s: Statistic, block: Rows, terms: dict) -> torch.Tensor:
    """``w_i t_i`` of statistic ``s`` on sub-block rows (its fused form, else its eager term)."""
    if s.fused is not None:
        return s.fused(block)
    t = s.term(block)
    return t if s.weight is None else terms[s.weight] * t


def reduce_subblocks(query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor, ctx, scaling: float) -> torch.Tensor:
    """(B, H, len(DIRECTIONS), len(STATISTICS)) statistics from the X x Y sub-blocks only.

    ``lse``: (B, H, T) fp32 log-sum-exp of every row of the layer's scores (one fused pass), so the
    block's log probabilities are ``s = q_X . k_Y * scaling - lse_X`` and ``p = exp(s)``: no full map.
    """
    b, h, _, d = query.shape
    table = list(STATISTICS.values())
    results = []
    for _, x, y in DIRECTIONS:
        setup = _direction_setup(ctx, int(x), int(y))
        qx = query.gather(2, setup["px"][:, None, :, None].expand(b, h, -1, d)).float()
        ky = key.gather(2, setup["py"][:, None, :, None].expand(b, h, -1, d)).float()
        lx = lse.gather(2, setup["px"][:, None, :].expand(b, h, -1))
        nx, ny = qx.shape[2], ky.shape[2]
        offset = (setup["col_bias"] - lx[..., None]).reshape(b * h, nx, ny)
        s = torch.baddbmm(offset, qx.reshape(b * h, nx, d), ky.reshape(b * h, ny, d).transpose(1, 2), alpha=scaling)
        s = s.view(b, h, nx, ny)  # log p(X_i <- Y_j); _NEG on padded columns
        block = Rows(torch.exp(s), setup["same"], s)
        weights = {stat.weight: STATISTICS[stat.weight].term(block)
                   for stat in table if stat.weight is not None and stat.fused is None}
        per_row = torch.stack([_weighted_term(stat, block, weights) for stat in table], -1)  # (B, H, |X|, K)
        tot = torch.matmul(setup["rows_t"], per_row).squeeze(2)  # (B, H, K): sums over the tokens of X
        n = setup["n_rows"].expand_as(tot[..., 0])
        index = {stat.name: k for k, stat in enumerate(table)}
        results.append(tot / torch.stack([n if stat.weight is None else tot[..., index[stat.weight]]
                                          for stat in table], -1))
    return torch.stack(results, 2)


@dataclass
class AttentionStats:
    """Statistics for N pairs: ``values[n, layer, head, direction, stat]`` (see :data:`DIRECTIONS`,
    ``names``: the statistics of the last axis, by default the table's)."""

    values: np.ndarray
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.names is None:
            self.names = statistic_names()[: self.values.shape[-1]]

    @property
    def num_pairs(self) -> int:
        return self.values.shape[0]

    def get(self, direction: str, stat: str) -> np.ndarray:
        """(N, layers, heads) array of one statistic, e.g. ``get("Q<-D", "max")``."""
        names = [d for d, _, _ in DIRECTIONS]
        if direction not in names:
            raise ValueError(f"unknown direction {direction!r}: statistics exist for {', '.join(names)}")
        if stat not in self.names:
            raise ValueError(f"unknown statistic {stat!r}: valid are {', '.join(self.names)}")
        return self.values[:, :, :, names.index(direction), self.names.index(stat)]

    def to_frame(self, ids: list | None = None):
        """Long pandas DataFrame: one row per (pair, layer, head, direction) with one column per statistic."""
        import pandas as pd

        n, nl, nh, nd, ns = self.values.shape
        idx = np.indices((n, nl, nh, nd)).reshape(4, -1)
        frame = pd.DataFrame(
            {
                "pair": idx[0] if ids is None else np.asarray(ids, dtype=object)[idx[0]],
                "layer": idx[1],
                "head": idx[2],
                "direction": np.asarray([d for d, _, _ in DIRECTIONS])[idx[3]],
            }
        )
        flat = self.values.reshape(-1, ns)
        for k, s in enumerate(self.names):
            frame[s] = flat[:, k]
        return frame
