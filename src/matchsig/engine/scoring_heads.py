"""Score conventions that are not a sequence-classification head: a causal LM read as a reranker.

Qwen3-Reranker and other LLM rerankers are causal language models prompted to answer "yes" or "no";
the relevance score is ``logit("yes") - logit("no")`` at the last position of the prompt.
:class:`YesNoHead` wraps such a model so that matchsig drives it like a 1-label cross-encoder: it
runs the model's transformer, takes each row's last real token and multiplies only the two rows
of the output embedding it needs (no full-vocabulary logits). :meth:`YesNoHead.own_forward` is the
model's full Hugging Face forward read at the same position: the self-check's reference.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import MatchsigError


def _single_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise MatchsigError(f"the tokenizer splits {word!r} into {len(ids)} tokens: yes/no scoring needs one token each")
    return int(ids[0])


class YesNoHead(nn.Module):
    """A causal LM as a reranker: score = logit("yes") - logit("no") at the last real token (module doc)."""

    def __init__(self, lm: nn.Module, tokenizer, yes: str = "yes", no: str = "no"):
        super().__init__()
        self.lm = lm
        self.yes_id, self.no_id = _single_token(tokenizer, yes), _single_token(tokenizer, no)
        self.config = copy.copy(lm.config)  # the cross-encoder's view: one output, the logit difference
        self.config.num_labels = 1

    def set_attn_implementation(self, name: str) -> None:
        self.lm.set_attn_implementation(name)

    def save_pretrained(self, folder, **kwargs) -> None:
        self.lm.save_pretrained(folder, **kwargs)

    @staticmethod
    def _last(attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask.long().sum(1) - 1  # right padding: the last real token of each row

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False,
                **kwargs) -> SequenceClassifierOutput:
        out = self.lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                            output_hidden_states=output_hidden_states)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = out.last_hidden_state[rows, self._last(attention_mask)]
        w = self.lm.get_output_embeddings().weight
        diff = (w[self.yes_id] - w[self.no_id]).to(last.dtype)
        logits = (last @ diff)[:, None]
        bias = getattr(self.lm.get_output_embeddings(), "bias", None)
        if bias is not None:
            logits = logits + (bias[self.yes_id] - bias[self.no_id])
        return SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states if output_hidden_states else None)

    def own_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> SequenceClassifierOutput:
        """The model's full forward (all logits), read at the last real token: the self-check's reference."""
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        at = logits[rows, self._last(attention_mask)]
        return SequenceClassifierOutput(logits=(at[:, self.yes_id] - at[:, self.no_id])[:, None])
