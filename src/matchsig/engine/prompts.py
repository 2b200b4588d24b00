"""Prompt templates: how a decoder reranker reads a (query, document) pair, and its five parts.

An encoder cross-encoder reads ``[CLS] q [SEP] d [SEP]`` from its tokenizer's pair template
(:mod:`matchsig.parts`). A decoder reranker reads one prompt: template text before the query
(``PRE``), the query (``Q``), template text between (``MID``), the document (``D``), and template
text after it ending at the scoring position (``LAST``: the score is read there, so it plays the
role ``CLS`` plays in an encoder). The parts use the same five slots as the encoder's (``PRE`` in
``CLS``'s, ``MID`` in ``SEP1``'s, ``LAST`` in ``SEP2``'s), under the decoder's names.

The prompt is tokenised whole (as the rerankers' own code does) and each token gets the part of its
first non-space character (offsets from the fast tokenizer); only the document is truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import MatchsigError

#: Part names of decoder rerankers, slot by slot (the encoder's are CLS, Q, SEP1, D, SEP2).
DECODER_PART_NAMES: tuple[str, ...] = ("PRE", "Q", "MID", "D", "LAST")


@dataclass(frozen=True)
class PromptTemplate:
    """``pre + query + mid + document + post``; ``post`` must end at the scoring position.

    ``{eos}`` in any piece stands for the tokenizer's end-of-sequence token."""

    pre: str
    mid: str
    post: str
    name: str = "custom"

    def pieces(self, tokenizer) -> tuple[str, str, str]:
        eos = tokenizer.eos_token or ""
        if "{eos}" in self.pre + self.mid + self.post and not eos:
            raise MatchsigError(f"template {self.name!r} ends with the end-of-sequence token, but the tokenizer has none")
        return tuple(p.replace("{eos}", eos) for p in (self.pre, self.mid, self.post))


#: RankLLaMA-style sequence classification: the score head reads the final end-of-sequence token.
SEQUENCE_CLASSIFICATION = PromptTemplate("query: ", "\ndocument: ", "{eos}", name="query-document")


#: Qwen3-Reranker's documented prompt (its default instruction), scored as logit("yes") - logit("no").
QWEN3_RERANKER = PromptTemplate(
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n<Instruct>: "
    "Given a web search query, retrieve relevant passages that answer the query\n<Query>: ",
    "\n<Document>: ",
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    name="qwen3-reranker",
)


def _tokens(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def _labelled(tokenizer, pieces: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of the concatenated ``pieces`` and each token's slot (the piece of its first character)."""
    bounds, at = [], 0
    for p in pieces:
        at += len(p)
        bounds.append(at)
    text = "".join(pieces)
    ids, offsets = _tokens(tokenizer, text)
    parts = []
    for start, end in offsets:
        # byte-level BPE glues the space before a word to it (" flea"): a token belongs where its first
        # non-space character is (whitespace-only tokens: where they start)
        first = next((j for j in range(start, end) if not text[j].isspace()), start)
        parts.append(next((i for i, b in enumerate(bounds) if first < b), len(pieces) - 1))
    return ids, parts


def encode_prompts(tokenizer, template: PromptTemplate, queries: Sequence[str], documents: Sequence[str],
                   max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and part slots of every pair's prompt; documents truncated to fit ``max_length``."""
    pre, mid, post = template.pieces(tokenizer)
    all_ids, all_parts = [], []
    for i, (q, d) in enumerate(zip(queries, documents)):
        ids, parts = _labelled(tokenizer, (pre, q, mid, d, post))
        if len(ids) > max_length:
            doc_ids, doc_offsets = _tokens(tokenizer, d)
            keep = len(doc_ids) - (len(ids) - max_length)
            while keep > 0 and len(ids) > max_length:
                d_cut = d[: doc_offsets[keep - 1][1]]
                ids, parts = _labelled(tokenizer, (pre, q, mid, d_cut, post))
                keep -= max(1, len(ids) - max_length)
            if len(ids) > max_length:
                raise MatchsigError(f"query {i}: the prompt without its document has {len(ids)} tokens or more, "
                                    f"longer than max_length {max_length} allows")
        if 1 not in parts or 3 not in parts:
            raise MatchsigError(f"pair {i}: the {'query' if 1 not in parts else 'document'} has no token of its own "
                                f"in template {template.name!r}")
        if parts[-1] != 4:
            raise MatchsigError(f"template {template.name!r}: the prompt must end with template text after the "
                                "document (the scoring position, part LAST)")
        all_ids.append(ids)
        all_parts.append(parts)
    return all_ids, all_parts


def translate_spec(spec: str, names: Sequence[str]) -> str:
    """An ablation spec written with a decoder's part names, in the slot names the parser reads
    (``LAST<-*`` -> ``SEP2<-*``); encoder-only names are refused in one line."""
    import re

    from .parts import PART_NAMES

    to_slot = dict(zip(names, PART_NAMES))
    foreign = sorted({w for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", spec)
                      if w.upper() in PART_NAMES and w.upper() not in names})
    if foreign:
        raise MatchsigError(f"ablation {spec!r}: part {foreign[0].upper()} is an encoder part; this model's parts are "
                            f"{', '.join(names)}")
    return re.sub(r"[A-Za-z][A-Za-z0-9]*", lambda m: to_slot.get(m.group(0).upper(), m.group(0)), spec)


def check_padding(model, tokenizer, name: str) -> None:
    """A decoder's score head finds the last real token by the pad id: it needs one, distinct from
    the end-of-sequence token its prompt may end with."""
    if tokenizer.pad_token_id is None:
        raise MatchsigError(f"model {name}: its tokenizer has no padding token; set tokenizer.pad_token "
                            "(not the end-of-sequence token) before loading")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id != tokenizer.pad_token_id:
        raise MatchsigError(f"model {name}: config pad_token_id {model.config.pad_token_id} differs from the "
                            f"tokenizer's {tokenizer.pad_token_id}")
