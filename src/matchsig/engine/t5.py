"""monoT5: an encoder-decoder reranker (``T5ForConditionalGeneration``) driven as a cross-encoder.

monoT5 (castorini/monot5-*-msmarco, PyTerrier's ``pyterrier_t5``) reads
``Query: q Document: d Relevant:</s>`` in its encoder and scores the pair at the first decoder step:
the log-softmax over the logits of the tokens "false" and "true", read as log P(true) — exactly
pyterrier_t5's score. :class:`TrueFalseHead` wraps the model so matchsig drives it like a 2-label
cross-encoder (label 1 = "true").

Only the encoder's self-attention goes through matchsig's attention function (the parts PRE, Q, MID,
D, POST of the prompt; every direction is possible, the encoder is bidirectional); the decoder keeps
the model's own attention. T5 adds a learned relative-position bias to the attention scores; the
attention function adds it (``position_bias``) to its mask, and :func:`shared_position_bias` lends
the first layer's bias table to a later first layer when a forward starts mid-stack (layer curves,
patching), as the stack computes it in layer 0 only. Unlike pyterrier_t5, which truncates the whole
prompt, matchsig truncates only the document, so the scoring text ``Relevant:`` is always read.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import MatchsigError
from .prompts import PromptTemplate

#: monoT5's prompt (castorini's and pyterrier_t5's), ending with the end-of-sequence token.
MONOT5 = PromptTemplate("Query: ", " Document: ", " Relevant:{eos}", name="monot5")
#: The encoder's part names, slot by slot: the template before the query, Q, between, D, after D.
T5_PART_NAMES: tuple[str, ...] = ("PRE", "Q", "MID", "D", "POST")


def _first_token(tokenizer, word: str) -> int:
    """The first token of ``word`` as pyterrier_t5 takes it (``tokenizer.encode(word)[0]``)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise MatchsigError(f"the tokenizer has no token for {word!r}: monoT5 scoring reads 'true' and 'false'")
    return int(ids[0])


class TrueFalseHead(nn.Module):
    """A T5 model as a reranker: logits of ("false", "true") at the first decoder step (module doc)."""

    def __init__(self, t5: nn.Module, tokenizer, true: str = "true", false: str = "false"):
        super().__init__()
        if type(t5).__name__ != "T5ForConditionalGeneration":
            raise MatchsigError(f"{type(t5).__name__}: T5 rerankers are supported as T5ForConditionalGeneration models "
                                "scored monoT5-style (log-softmax over 'false'/'true' at the first decoder step)")
        self.t5 = t5
        self.true_id, self.false_id = _first_token(tokenizer, true), _first_token(tokenizer, false)
        if self.true_id == self.false_id:
            raise MatchsigError(f"the tokenizer gives {true!r} and {false!r} the same first token")
        start = getattr(t5.config, "decoder_start_token_id", None)
        if start is None:
            raise MatchsigError("the T5 model's config has no decoder_start_token_id")
        self.start_id = int(start)
        self.config = copy.copy(t5.config)  # the cross-encoder's view: two labels, ("false", "true")
        self.config.num_labels = 2

    def set_attn_implementation(self, name: str) -> None:
        """matchsig's attention in the encoder only; any other implementation everywhere (the reference)."""
        from .attention import ATTN_NAME

        if name == ATTN_NAME:
            self.t5.encoder.config._attn_implementation = name
        else:
            self.t5.set_attn_implementation(name)

    def save_pretrained(self, folder, **kwargs) -> None:
        self.t5.save_pretrained(folder, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False,
                **kwargs) -> SequenceClassifierOutput:
        start = torch.full((input_ids.shape[0], 1), self.start_id, dtype=torch.long, device=input_ids.device)
        out = self.t5(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=start, use_cache=False,
                      output_hidden_states=output_hidden_states)
        logits = out.logits[:, 0, [self.false_id, self.true_id]]
        return SequenceClassifierOutput(logits=logits,
                                        hidden_states=out.encoder_hidden_states if output_hidden_states else None)


def self_attention(layer: nn.Module) -> nn.Module:
    return layer.layer[0].SelfAttention


@contextlib.contextmanager
def shared_position_bias(layers: nn.ModuleList, first: int) -> Iterator[None]:
    """Inside the block, encoder layer ``first`` computes the relative-position bias with layer 0's table."""
    attn, own = self_attention(layers[first]), self_attention(layers[0])
    if first == 0 or attn.has_relative_attention_bias:
        yield
        return
    attn.has_relative_attention_bias = True
    attn.relative_attention_bias = own.relative_attention_bias
    try:
        yield
    finally:
        del attn.relative_attention_bias
        attn.has_relative_attention_bias = False


def refuses(config) -> str | None:
    archs = getattr(config, "architectures", None) or []
    if archs and "T5ForConditionalGeneration" not in archs:
        return (f"{', '.join(archs)}: T5 rerankers are supported as T5ForConditionalGeneration models scored "
                "monoT5-style (log-softmax over 'false'/'true' at the first decoder step)")
    if getattr(config, "is_encoder_decoder", True) is False:
        return "an encoder-only T5 has no decoder step to score"
    return None


def check_spec(spec: str) -> None:
    """One line for the decoder's cross-attention directions (``DEC<-...``), which matchsig does not cut yet."""
    import re

    if re.search(r"\bDEC\b", spec, re.IGNORECASE):
        raise MatchsigError(f"ablation {spec!r}: monoT5's cross-attention directions (DEC<-...) are not supported; "
                            f"the encoder's parts are {', '.join(T5_PART_NAMES)}")
