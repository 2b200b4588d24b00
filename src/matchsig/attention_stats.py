"""Per-head attention statistics between query and document, reduced inside the forward pass.

For a direction ``X<-Y`` (``Q<-D``: query tokens attending to document tokens; ``D<-Q``: the
reverse) and each layer/head, from the post-softmax probabilities ``p`` of one pair (SPEC §4):

* ``max``: mean over tokens ``X_i`` of ``max_j p(X_i <- Y_j)`` (the paper's M);
* ``entropy``: Shannon entropy (natural log, as ``scipy.stats.entropy``) of ``p(X_i <- Y_j)``
  renormalised over ``Y``, averaged over ``X_i`` weighted by ``p(X_i <- Y)``;
* ``exact``: the renormalised mass ``X_i`` puts on tokens of ``Y`` with the same token id,
  averaged with the same weights (exact-term matching);
* ``mass``: mean over ``X_i`` of ``p(X_i <- Y)``, the total mass ``X_i`` puts on ``Y``.

The statistics describe each layer's attention distribution *before* that layer's own ablation,
when statistics and an ablation are combined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .parts import Part

DIRECTIONS: tuple[tuple[str, Part, Part], ...] = (("Q<-D", Part.Q, Part.D), ("D<-Q", Part.D, Part.Q))
STATS: tuple[str, ...] = ("max", "entropy", "exact", "mass")

# Bound on elements of one temporary (B_chunk * H * T * T): keeps the extra memory of statistics small.
_CHUNK_ELEMENTS = 4_000_000


def reduce_probs(probs: torch.Tensor, part_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H, len(DIRECTIONS), len(STATS)) float32 statistics."""
    b, h, t, _ = probs.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, h * t * t))
    out = [
        _reduce_chunk(probs[i : i + step], part_ids[i : i + step], input_ids[i : i + step]) for i in range(0, b, step)
    ]
    return torch.cat(out, 0)


def _reduce_chunk(probs: torch.Tensor, part_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    same = input_ids[:, :, None] == input_ids[:, None, :]  # (B, T, T)
    results = []
    for _, x, y in DIRECTIONS:
        rows = (part_ids == int(x)).float()  # (B, T)
        cols = part_ids == int(y)
        py = probs * cols[:, None, None, :]  # (B, H, T, T): only targets in Y
        mass = py.sum(-1)  # (B, H, T)
        mx = py.amax(-1)
        pn = py / mass.clamp_min(torch.finfo(py.dtype).tiny)[..., None]
        ent = -torch.special.xlogy(pn, pn).sum(-1)
        exact = (pn * (same & cols[:, None, :])[:, None]).sum(-1)
        del py, pn
        n_rows = rows.sum(-1)[:, None]  # (B, 1)
        w = mass * rows[:, None, :]  # weights p(X_i <- Y), zero off X
        wsum = w.sum(-1)
        stat_max = (mx * rows[:, None, :]).sum(-1) / n_rows
        stat_mass = wsum / n_rows
        stat_ent = (w * ent).sum(-1) / wsum
        stat_exact = (w * exact).sum(-1) / wsum
        results.append(torch.stack([stat_max, stat_ent, stat_exact, stat_mass], -1))
    return torch.stack(results, 2)


@dataclass
class AttentionStats:
    """Statistics for N pairs: ``values[n, layer, head, direction, stat]`` (see :data:`DIRECTIONS`, :data:`STATS`)."""

    values: np.ndarray

    @property
    def num_pairs(self) -> int:
        return self.values.shape[0]

    def get(self, direction: str, stat: str) -> np.ndarray:
        """(N, layers, heads) array of one statistic, e.g. ``get("Q<-D", "max")``."""
        names = [d for d, _, _ in DIRECTIONS]
        if direction not in names:
            raise ValueError(f"unknown direction {direction!r}: statistics exist for {', '.join(names)}")
        if stat not in STATS:
            raise ValueError(f"unknown statistic {stat!r}: valid are {', '.join(STATS)}")
        return self.values[:, :, :, names.index(direction), STATS.index(stat)]

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
        for k, s in enumerate(STATS):
            frame[s] = flat[:, k]
        return frame
