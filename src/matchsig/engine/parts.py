"""The five parts of a cross-encoder input: ``CLS``, ``Q``, ``SEP1``, ``D``, ``SEP2``.

The labelling is derived from the tokenizer's own pair template (which token positions hold the
first sequence, the second one, and the special tokens around them), never from hard-coded BERT ids,
so BERT, ELECTRA and RoBERTa-style ``<s> q </s></s> d </s>`` inputs are all labelled correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

from ..errors import MatchsigError


class Part(IntEnum):
    """One of the five parts of a query-document input. Padding belongs to no part."""

    CLS = 0
    Q = 1
    SEP1 = 2
    D = 3
    SEP2 = 4


PARTS: tuple[Part, ...] = tuple(Part)
PART_NAMES: tuple[str, ...] = tuple(p.name for p in Part)
#: Part id given to padding positions in part-id tensors.
PAD = len(PARTS)


class DecoderPart(IntEnum):
    """An encoder-decoder reranker's decoder token (monoT5), as the *target* of a cross-attention
    direction ``DEC<-Y``. It is row ``PAD`` of a layer's cut block: in the encoder that row holds
    padding queries, which reach no real token, so the row is free; only models with a decoder read it."""

    DEC = PAD


def parse_part(token: str) -> Part | DecoderPart:
    """``"d"`` -> ``Part.D``; raises ``ValueError`` naming the token and listing the valid parts."""
    name = token.strip().upper()
    if name in PART_NAMES:
        return Part[name]
    if name == DecoderPart.DEC.name:
        return DecoderPart.DEC
    raise ValueError(f"unknown part {token.strip()!r}: valid parts are {', '.join(PART_NAMES)} (and * for all)")


@dataclass(frozen=True)
class PairLayout:
    """How a tokenizer lays out a pair: numbers of special tokens before, between and after."""

    n_cls: int
    n_sep1: int
    n_sep2: int

    @property
    def n_special(self) -> int:
        return self.n_cls + self.n_sep1 + self.n_sep2


def label_parts(sequence_ids: Sequence[int | None], layout: PairLayout | None = None) -> list[int]:
    """Part id of each token from a fast tokenizer's ``sequence_ids()`` (None = special token).

    Special tokens before the query are CLS, those between query and document SEP1, those after the
    document SEP2. With an empty document the trailing specials are split using ``layout``.
    """
    n = len(sequence_ids)
    q_pos = [i for i, s in enumerate(sequence_ids) if s == 0]
    d_pos = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not q_pos:
        raise MatchsigError("empty query: the tokenizer produced no query tokens")
    first_q, last_q = q_pos[0], q_pos[-1]
    labels = [int(Part.CLS)] * n
    for i, s in enumerate(sequence_ids):
        if s == 0:
            labels[i] = Part.Q
        elif s == 1:
            labels[i] = Part.D
        elif i < first_q:
            labels[i] = Part.CLS
        elif d_pos and i < d_pos[0]:
            labels[i] = Part.SEP1
        elif d_pos:
            labels[i] = Part.SEP2
        else:  # empty document: first n_sep1 trailing specials are SEP1, the rest SEP2
            k = i - last_q - 1
            labels[i] = Part.SEP1 if (layout is None or k < layout.n_sep1) else Part.SEP2
    return [int(x) for x in labels]


def probe_layout(tokenizer) -> PairLayout:
    """Read the pair template of ``tokenizer`` by encoding a two-word probe pair."""
    enc = tokenizer("a", "b")
    seq = enc.sequence_ids(0) if hasattr(enc, "sequence_ids") else None
    if seq is None or 0 not in seq or 1 not in seq:
        raise MatchsigError(
            f"tokenizer {type(tokenizer).__name__} does not encode (query, document) pairs as one input "
            "with sequence ids: a fast tokenizer of a cross-encoder is required"
        )
    q = [i for i, s in enumerate(seq) if s == 0]
    d = [i for i, s in enumerate(seq) if s == 1]
    if q[-1] >= d[0]:
        raise MatchsigError("tokenizer places the document before the query; expected [CLS] q [SEP] d [SEP]")
    return PairLayout(n_cls=q[0], n_sep1=d[0] - q[-1] - 1, n_sep2=len(seq) - d[-1] - 1)
