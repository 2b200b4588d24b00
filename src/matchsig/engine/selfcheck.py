"""The load-time self-check: matchsig's plain scores must equal the model's own forward.

Every :class:`~matchsig.model.CrossEncoder` runs it once, before it scores anything: a few probe
pairs of mixed lengths (so the batch is padded), one of them longer than twice the model's local
attention window where it has one, are scored through matchsig's attention function and through the
model's own Hugging Face attention (the implementation it was loaded with, outside any matchsig
context). A difference above the tolerance is a one-line :class:`MatchsigError`: an architecture
whose masks or attention matchsig would get wrong is refused, never scored silently wrong.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import MatchsigError

if TYPE_CHECKING:
    from .model import CrossEncoder

#: Tolerance on the largest |score difference|, relative to max(1, largest |score|): fp32 and half precision.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}
HALF_TOLERANCE = 2e-2
_WORDS = ("the quick brown fox jumps over the lazy dog while a small cat sleeps near the warm "
          "fire and rain falls on old roofs of the quiet town").split()


@dataclass(frozen=True)
class SelfCheck:
    """What the self-check compared: ``pairs`` probe pairs (``tokens``: their lengths), the model's
    own attention implementation (``reference``), the largest |score difference|, the tolerance it
    had to be under, and the time it took (both forwards)."""

    pairs: int
    tokens: tuple[int, ...]
    reference: str
    max_abs_diff: float
    tolerance: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _window(config) -> int:
    """The model's local attention span in tokens, or 0 when it has none."""
    names = ["local_attention", "attention_window"]
    if getattr(config, "use_sliding_window", True) is not False:  # Qwen2 declares a window it does not use
        names.append("sliding_window")
    spans = [getattr(config, name, None) for name in names]
    spans = [int(max(s)) if isinstance(s, (list, tuple)) else int(s) for s in spans if s]
    return max(spans, default=0)


def probe_pairs(ce: "CrossEncoder") -> tuple[list[str], list[str]]:
    """Three pairs of very different lengths; the longest reaches past twice the local window
    (or 64 tokens), within ``max_length``."""
    target = min(ce.max_length, 2 * max(_window(ce.model.config), 32) + 24)
    long_doc = " ".join(_WORDS[i % len(_WORDS)] for i in range(target))
    return (["what is a flea", "how long do cats live", "fire"],
            ["fleas", " ".join(_WORDS[:14]), long_doc])


def self_check(ce: "CrossEncoder") -> SelfCheck:
    """Compare plain scores through matchsig with the model's own forward (module doc)."""
    start = time.perf_counter()
    queries, documents = probe_pairs(ce)
    enc = ce.encode(queries, documents)
    rows = list(range(len(enc)))
    batch = ce.collate(enc, rows)
    model = ce.model
    own = getattr(model, "own_forward", model)  # a scoring head's reference: the model's full forward
    with torch.inference_mode():
        ours = ce.scores_from_logits(ce.forward(batch).logits)
        if ce.family.install is not None:  # probability sites are the model's own modules outside a context
            theirs = ce.scores_from_logits(own(**batch.model_inputs).logits)
        else:
            try:
                model.set_attn_implementation(ce._own_attention)
                theirs = ce.scores_from_logits(own(**batch.model_inputs).logits)
            finally:
                model.set_attn_implementation("matchsig")
    dtype = next(model.parameters()).dtype
    scale = max(1.0, float(np.abs(theirs).max()))
    tol = TOLERANCE.get(dtype, HALF_TOLERANCE) * scale
    diff = float(np.abs(ours - theirs).max())
    check = SelfCheck(len(rows), tuple(int(x) for x in enc.lengths()), ce._own_attention, diff, tol,
                      time.perf_counter() - start)
    if not diff <= tol:  # also catches NaN
        raise MatchsigError(
            f"model {ce.name} ({ce.family.name}): matchsig's plain scores differ from the model's own "
            f"{ce._own_attention} forward by {diff:.2e} (tolerance {tol:.1e}) on the self-check pairs; "
            "refusing a model whose attention matchsig cannot reproduce"
        )
    return check
