"""Tokenised (query, document) pairs: the encoder's pair template or a decoder's prompt, and their parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import MatchsigError
from .parts import PairLayout, label_parts
from .prompts import PromptTemplate, encode_prompts


@dataclass
class Encoded:
    """Tokenised pairs: lists of token ids, token type ids and part ids, one list per pair."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    part_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))



def encode_pairs(tokenizer, layout: PairLayout | None, template: PromptTemplate | None, max_length: int,
                 queries: Sequence[str], documents: Sequence[str]) -> Encoded:
    """Tokenise pairs with the tokenizer's pair template (``layout``) or a decoder's ``template``;
    only documents are truncated to fit ``max_length``. Every problem is a one-line error."""
    queries, documents = list(queries), list(documents)
    if len(queries) != len(documents):
        raise MatchsigError(f"{len(queries)} queries but {len(documents)} documents: give one query per document")
    for what, seq in (("query", queries), ("document", documents)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise MatchsigError(f"{what} {i} is {type(s).__name__}, not a string")
    if not queries:
        return Encoded([], None, [])
    q_lens = [len(x) for x in tokenizer(queries, add_special_tokens=False)["input_ids"]]
    for i, n in enumerate(q_lens):
        if n == 0:
            raise MatchsigError(f"query {i} is empty")
    if template is not None:
        ids, parts = encode_prompts(tokenizer, template, queries, documents, max_length)
        return Encoded(ids, None, parts)
    budget = max_length - layout.n_special
    for i, n in enumerate(q_lens):
        if n >= budget:
            raise MatchsigError(
                f"query {i} has {n} tokens: longer than max_length {max_length} allows "
                f"({budget - 1} query tokens at most, leaving one for the document)"
            )
    enc = tokenizer(queries, documents, truncation="only_second", max_length=max_length)
    parts = [label_parts(enc.sequence_ids(i), layout) for i in range(len(queries))]
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), parts)
