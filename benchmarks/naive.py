"""A naive direction ablation written the way published analysis code does it (benchmark baseline only).

Zhan et al. (2020) and later probing code: pad every pair to 512 tokens, run the model with *eager*
attention, zero the ablated post-softmax probabilities in a hook, batch 8, one configuration at a
time, re-tokenising for every configuration. transformers 5 no longer calls a dropout module on
the attention probabilities, so the hook point is a copy of its ``eager_attention_forward`` with a
callback right after the softmax (the place ``attention_probs = self.dropout(attention_probs)``
held in transformers 4, where the published hooks sat).

Nothing here uses matchsig: parts are found from the [SEP] positions of the padded ids.
"""

from __future__ import annotations

import torch
from torch import nn

_hook = None  # callable(module, probs) -> probs, set per batch


def eager_with_hook(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    if _hook is not None:
        attn_weights = _hook(module, attn_weights)  # the post-softmax hook
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask

    AttentionInterface.register("naive_hook", eager_with_hook)
    AttentionMaskInterface.register("naive_hook", ALL_MASK_ATTENTION_FUNCTIONS.get("eager", eager_mask))
    return "naive_hook"


PARTS = ("CLS", "Q", "SEP1", "D", "SEP2")


def part_matrix(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_id: int) -> torch.Tensor:
    """(B, T) part index per token (0..4), -1 on padding, from the [SEP] positions."""
    b, t = input_ids.shape
    out = torch.full((b, t), -1, dtype=torch.long)
    for r in range(b):
        n = int(attention_mask[r].sum())
        seps = (input_ids[r, :n] == sep_id).nonzero().flatten().tolist()
        first, last = seps[0], seps[-1]
        out[r, 0] = 0
        out[r, 1:first] = 1
        out[r, first] = 2
        out[r, first + 1:last] = 3
        out[r, last] = 4
    return out


def parse(spec: str) -> set[tuple[int, int]]:
    """'D<-D' / 'CLS<-*' / 'none' -> {(target, source)} part indices (independent of matchsig's parser)."""
    out: set[tuple[int, int]] = set()
    if spec in ("none", ""):
        return out
    for tok in spec.split(","):
        x, y = tok.split("<-")
        xs = range(5) if x == "*" else [PARTS.index(x)]
        ys = range(5) if y == "*" else [PARTS.index(y)]
        out |= {(a, c) for a in xs for c in ys}
    return out


class NaiveAblation:
    """Score pairs under one configuration: padding to 512, eager attention + post-softmax hook, batch 8."""

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.model.set_attn_implementation(register())
        self.model.eval()

    def score(self, queries: list[str], documents: list[str], spec: str) -> list[float]:
        global _hook
        cut = parse(spec)
        scores: list[float] = []
        for s in range(0, len(queries), self.batch_size):
            enc = self.tokenizer(queries[s:s + self.batch_size], documents[s:s + self.batch_size],
                                 padding="max_length", truncation="only_second", max_length=self.max_length,
                                 return_tensors="pt")
            parts = part_matrix(enc["input_ids"], enc["attention_mask"], self.tokenizer.sep_token_id)
            keep = torch.ones(parts.shape[0], 1, parts.shape[1], parts.shape[1])
            for x, y in cut:
                keep[((parts == x)[:, :, None] & (parts == y)[:, None, :])[:, None]] = 0.0
            _hook = (lambda module, probs: probs * keep) if cut else None
            try:
                with torch.no_grad():
                    logits = self.model(**enc).logits
            finally:
                _hook = None
            scores.extend(torch.log_softmax(logits.float(), -1)[:, 1].tolist())
        return scores
