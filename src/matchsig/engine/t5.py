"""monoT5: an encoder-decoder reranker (``T5ForConditionalGeneration``) driven as a cross-encoder.

monoT5 (castorini/monot5-*-msmarco, PyTerrier's ``pyterrier_t5``) reads
``Query: q Document: d Relevant:</s>`` in its encoder and scores the pair at the first decoder step:
the log-softmax over the logits of the tokens "false" and "true", read as log P(true) — exactly
pyterrier_t5's score. :class:`TrueFalseHead` wraps the model so matchsig drives it like a 2-label
cross-encoder (label 1 = "true").

The encoder's self-attention goes through matchsig's attention function (the parts PRE, Q, MID, D,
POST of the prompt; every direction is possible, the encoder is bidirectional). The decoder's
attention goes through :func:`cross_attention`: the model's own SDPA attention, except in a
cross-attention whose layer cuts ``DEC<-Y`` (the decoder token reading encoder part Y), computed
explicitly with those probabilities zeroed after the softmax, without renormalisation. ``DEC<-Y`` in
layer l cuts decoder layer l's cross-attention (monoT5 has as many decoder layers as encoder layers). T5 adds a learned relative-position bias to the attention scores; the
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
from .parts import PAD, DecoderPart
from .prompts import PromptTemplate

#: The attention implementation of the decoder (registered when a monoT5 model is wrapped).
CROSS_ATTN_NAME = "matchsig_cross"

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
        if t5.config.num_decoder_layers != t5.config.num_layers:
            raise MatchsigError(f"a T5 with {t5.config.num_layers} encoder and {t5.config.num_decoder_layers} decoder "
                                "layers: DEC<-Y in layer l cuts decoder layer l, so both stacks must be as deep")
        for i, block in enumerate(t5.decoder.block):
            block.layer[1].EncDecAttention._matchsig_cross = i

    def set_attn_implementation(self, name: str) -> None:
        """matchsig's attention in the encoder and :func:`cross_attention` in the decoder; any other
        implementation everywhere (the self-check's reference)."""
        from .attention import ATTN_NAME

        if name == ATTN_NAME:
            _register_cross()
            self.t5.encoder.config._attn_implementation = name
            self.t5.decoder.config._attn_implementation = CROSS_ATTN_NAME
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


def cross_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """The decoder's attention: the model's own, or, in a cross-attention layer that cuts ``DEC<-Y``,
    T5's explicit softmax with the cut encoder parts' probabilities zeroed afterwards."""
    from .attention import additive, own_attention
    from .context import current_context

    ctx = current_context()
    layer = getattr(module, "_matchsig_cross", None)
    cut = None if ctx is None or ctx.cross is None or layer is None else ctx.cross[layer]
    scaling = 1.0 if scaling is None else scaling
    if cut is None:
        return own_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scaling
    for extra in (kwargs.get("position_bias"), additive(attention_mask, torch.float32)):
        if extra is not None:
            scores = scores + extra.float()
    probs = torch.softmax(scores, dim=-1)
    b, t = ctx.part_ids.shape
    keys = torch.gather(cut.expand(b, -1, -1), 2, ctx.part_ids[:, None, :].expand(b, cut.shape[1], t))
    probs = probs.masked_fill(keys[:, :, None, :], 0.0)  # (B, H, 1, T): the decoder token's reads of cut parts
    return torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous(), None


def _register_cross() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    from .attention import ATTN_NAME, register

    register()
    AttentionInterface.register(CROSS_ATTN_NAME, cross_attention)
    AttentionMaskInterface.register(CROSS_ATTN_NAME, ALL_MASK_ATTENTION_FUNCTIONS[ATTN_NAME])


def split_blocks(blocks: list) -> tuple[list, list]:
    """Per layer: the encoder's blocks without row ``DEC`` (= ``PAD``), and that row, (B or 1, H, 6), for
    the decoder's cross-attention of the same layer (None where nothing is cut)."""
    enc, cross = [], []
    for block in blocks:
        row = None if block is None else block[:, :, PAD, :]
        if row is None or not bool(row.any()):
            enc.append(block)
            cross.append(None)
            continue
        rest = block.clone()
        rest[:, :, PAD, :] = False
        enc.append(rest if bool(rest.any()) else None)
        cross.append(row)
    return enc, cross


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


def check_decoder_part(ce, ab, curve: bool = False) -> None:
    """One line where ``DEC`` is misused: in a model without a decoder, as a source, or in a layer curve."""
    cells = {d for m in getattr(ab, "members", (ab,)) for d in m.directions}
    if not any(DecoderPart.DEC in cell for cell in cells):
        return
    if ce.family.name != "t5":
        raise MatchsigError(f"ablation {ab.name}: part DEC is an encoder-decoder's decoder token; this model's parts "
                            f"are {', '.join(ce.part_names)}")
    if any(y == DecoderPart.DEC for _, y in cells):
        raise MatchsigError(f"ablation {ab.name}: DEC can only be cut as a target (DEC<-Q: the decoder token reading "
                            "the query); the encoder never reads the decoder")
    if curve:
        raise MatchsigError(f"layer curve of {ab.name}: a cross-attention cut (DEC<-...) runs after the whole encoder; "
                            "score each layer range instead")
