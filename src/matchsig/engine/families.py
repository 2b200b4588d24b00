"""The model-family table: which Hugging Face architectures matchsig runs, and how.

A :class:`Family` says how matchsig meets one architecture: which ``config.model_type`` values it
covers, whether its attention modules see masks beyond padding (sliding-window layers, causal
decoders: then the attention function combines the model's own mask with the ablation instead of
rebuilding a padding mask from the part ids), and where the score is read (the first token, the
mean of all tokens, the last token). A new family is one :func:`register_family` call.

Nothing outside this table is guessed at: :func:`family_for` refuses any other architecture in one
line naming it and the supported families, and :class:`~matchsig.model.CrossEncoder` checks every
loaded model's plain scores against the model's own Hugging Face forward before it scores anything
(:func:`matchsig.model.CrossEncoder.self_check`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import MatchsigError

#: Where a family reads its score: the first token's state, the mean over real tokens, the last token.
READOUTS = ("first", "mean", "last", "decoder")


def _first(config) -> str:
    return "first"


def _padding_only(module) -> bool:
    return False


def _declared_window_or_causal(module) -> bool:
    """Whether an attention module's own mask is more than padding: a sliding window or causal."""
    return bool(getattr(module, "is_causal", False)) or getattr(module, "sliding_window", None) is not None


#: Where the module-based hook sites live inside one layer, BERT/ELECTRA/RoBERTa naming
#: (:mod:`matchsig.hooks`; ``""`` is the layer itself).
BERT_SITES = {
    "hook_attn_out": "attention.output.dense",
    "hook_resid_mid": "attention",
    "hook_mlp_out": "output.dense",
    "hook_resid_post": "",
}


@dataclass(frozen=True)
class Family:
    """How matchsig runs one architecture.

    ``name``: shown to users (``inspect``, the report); ``model_types``: the ``config.model_type``
    values it covers; ``checkpoints``: popular rerankers of the family (documentation);
    ``readout(config)``: where the score is read (:data:`READOUTS`), which decides which part plays
    the aggregating role (``first``: ``CLS<-*`` makes every score equal); ``model_mask(module)``:
    whether that attention module's mask must come from the model (sliding window, causal) rather
    than from the part ids (padding only); ``sites``: module paths of the hook sites inside a layer
    (a site the family's layers do not have is refused in one line); ``notes``: a line for the docs;
    ``hf_attention``: the attention implementation the model is loaded with (its own forward, the
    self-check's reference); ``install(model)``: for families that compute their own softmax, puts
    matchsig's probability sites in the model (:mod:`matchsig.engine.probability_site`) instead of
    registering an attention function; ``refuses(config)``: why a variant is not supported, or None;
    ``part_names``: the names of the five part slots; ``template``: a decoder's default prompt
    (:class:`matchsig.engine.prompts.PromptTemplate`; None: the tokenizer's pair template); ``lm_template``:
    the default prompt of a causal LM of the family scored yes/no (:mod:`matchsig.engine.scoring_heads`);
    ``causal``: a causal mask makes directions into an earlier part impossible; ``start_patch(layers,
    first)``: a context manager that lets a forward start at layer ``first`` (state the stack computes
    in its first layer only, as T5's relative-position bias)."""

    name: str
    model_types: tuple[str, ...]
    checkpoints: tuple[str, ...] = ()
    readout: Callable[[object], str] = _first
    model_mask: Callable[[object], bool] = _padding_only
    sites: Mapping[str, str] = field(default_factory=lambda: dict(BERT_SITES))
    notes: str = ""
    hf_attention: str = "sdpa"
    part_names: tuple[str, ...] = ("CLS", "Q", "SEP1", "D", "SEP2")
    template: object | None = None
    lm_template: object | None = None
    install: Callable[[object], None] | None = None
    refuses: Callable[[object], str | None] = lambda config: None
    causal: bool = False
    start_patch: Callable | None = None

    @property
    def decoder(self) -> bool:
        """Whether the model reads a prompt (parts PRE, Q, MID, D, LAST) rather than a pair template."""
        return self.template is not None

    def check(self, config) -> None:
        """A one-line :class:`MatchsigError` if this variant of the family is not supported."""
        why = self.refuses(config)
        if why:
            raise MatchsigError(f"model type {getattr(config, 'model_type', None)!r} ({self.name} family): {why}")


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family; a one-line error if one of its model types is already covered."""
    for mt in family.model_types:
        for other in FAMILIES.values():
            if mt in other.model_types:
                raise MatchsigError(f"model type {mt!r} is already covered by family {other.name!r}")
    FAMILIES[family.name] = family
    return family


def family_for(config) -> Family:
    """The family of a Hugging Face ``config``, or a one-line :class:`MatchsigError` naming the
    architecture and the supported families."""
    mt = getattr(config, "model_type", None)
    for fam in FAMILIES.values():
        if mt in fam.model_types:
            fam.check(config)
            return fam
    archs = ", ".join(getattr(config, "architectures", None) or []) or "unknown architecture"
    known = "; ".join(f"{f.name}: {', '.join(f.model_types)}" for f in FAMILIES.values())
    raise MatchsigError(
        f"model type {mt!r} ({archs}) is not supported: matchsig runs only the families whose attention it "
        f"verifies against the model's own forward ({known})"
    )


def _modernbert_readout(config) -> str:
    return "mean" if getattr(config, "classifier_pooling", "cls") == "mean" else "first"


register_family(Family(
    "bert", ("bert",),
    ("castorini/monobert-large-msmarco", "cross-encoder/ms-marco-MiniLM-L6-v2", "cross-encoder/ms-marco-MiniLM-L12-v2"),
    notes="[CLS] q [SEP] d [SEP]; the pooled [CLS] state is classified",
))
register_family(Family(
    "roberta", ("roberta", "xlm-roberta"),
    ("BAAI/bge-reranker-base", "BAAI/bge-reranker-v2-m3"),
    notes="<s> q </s></s> d </s>; the <s> state is classified",
))
register_family(Family(
    "electra", ("electra",), ("cross-encoder/ms-marco-electra-base",),
    notes="[CLS] q [SEP] d [SEP]; the [CLS] state is classified",
))
register_family(Family(
    "distilbert", ("distilbert",), ("cross-encoder/ms-marco-TinyBERT-L2-v2 (BERT)", "distilbert-based rerankers"),
    sites={"hook_attn_out": "attention.out_lin", "hook_resid_mid": "sa_layer_norm", "hook_mlp_out": "ffn.lin2",
           "hook_resid_post": ""},
    notes="no token type ids; the [CLS] state is classified",
))
register_family(Family(
    "modernbert", ("modernbert",), ("Alibaba-NLP/gte-reranker-modernbert-base",),
    readout=_modernbert_readout, model_mask=_declared_window_or_causal,
    # pre-norm layers: the state after the attention residual is no module's output (no resid_mid)
    sites={"hook_attn_out": "attn.Wo", "hook_mlp_out": "mlp.Wo", "hook_resid_post": ""},
    notes="global and sliding-window (local) layers alternate; local layers keep the model's own window mask; "
          "rotary positions; classifier pooling 'cls' (first token) or 'mean'",
))


def _decoder_refuses(config) -> str | None:
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith(("ForSequenceClassification", "ForCausalLM")) for a in archs):
        return (f"{', '.join(archs)}: decoder rerankers are supported as *ForSequenceClassification models (score "
                "head on the last token) or *ForCausalLM models scored logit('yes') - logit('no')")
    if getattr(config, "attn_logit_softcapping", None):
        return "attention logit soft-capping is not supported"
    return None


def _deberta_install(model) -> None:
    from .probability_site import install_probability_sites

    if not install_probability_sites(model, "DisentangledSelfAttention"):
        raise MatchsigError(f"{type(model).__name__}: no DisentangledSelfAttention module to intervene in")


def _deberta_refuses(config) -> str | None:
    if (getattr(config, "conv_kernel_size", 0) or 0) > 0:
        return "the convolution after the first layer (conv_kernel_size > 0, DeBERTa-v2-xlarge style) is not supported"
    return None


register_family(Family(
    "deberta-v2", ("deberta-v2",), ("mixedbread-ai/mxbai-rerank-base-v1", "mixedbread-ai/mxbai-rerank-large-v1"),
    hf_attention="eager", install=_deberta_install, refuses=_deberta_refuses,
    notes="DeBERTa-v2/v3 disentangled attention (content and relative-position terms): matchsig zeroes the "
          "post-softmax probabilities the model computes itself; [CLS] q [SEP] d [SEP], the [CLS] state is pooled",
))


def _decoder_family() -> Family:
    from .prompts import DECODER_PART_NAMES, QWEN3_RERANKER, SEQUENCE_CLASSIFICATION

    return Family(
        "decoder", ("qwen2", "qwen3", "llama", "mistral"),
        ("Qwen/Qwen3-Reranker-0.6B/4B/8B (causal LM, yes/no)", "castorini/rankllama-v1-7b-lora-passage (merged)",
         "Qwen2/Qwen3/Llama/Mistral *ForSequenceClassification"),
        readout=lambda config: "last", model_mask=_declared_window_or_causal,
        sites={"hook_attn_out": "self_attn.o_proj", "hook_mlp_out": "mlp.down_proj", "hook_resid_post": ""},
        part_names=DECODER_PART_NAMES, template=SEQUENCE_CLASSIFICATION, lm_template=QWEN3_RERANKER,
        refuses=_decoder_refuses, causal=True,
        notes="causal decoder; *ForSequenceClassification: score head on the last token, default prompt "
              "'query: q / document: d</s>'; *ForCausalLM: logit('yes') - logit('no') at the last token, default "
              "prompt Qwen3-Reranker's; parts PRE q MID d LAST; the model's causal (and sliding-window) masks are "
              "kept; directions into an earlier part are impossible",
    )


register_family(_decoder_family())


def _t5_family() -> Family:
    from . import t5

    return Family(
        "t5", ("t5",), ("castorini/monot5-base-msmarco", "castorini/monot5-large-msmarco",
                        "castorini/monot5-3b-msmarco (PyTerrier: pyterrier_t5's MonoT5ReRanker)"),
        readout=lambda config: "decoder",
        sites={"hook_attn_out": "layer.0.SelfAttention.o", "hook_resid_mid": "layer.0",
               "hook_mlp_out": "layer.1.DenseReluDense.wo", "hook_resid_post": ""},
        part_names=t5.T5_PART_NAMES, template=t5.MONOT5, refuses=t5.refuses, start_patch=t5.shared_position_bias,
        notes="monoT5 (T5ForConditionalGeneration): score = log-softmax over the 'false'/'true' logits at the first "
              "decoder step, read as log P(true) (pyterrier_t5's); prompt 'Query: q Document: d Relevant:'; parts PRE "
              "q MID d POST; the encoder's self-attention is cut (relative-position bias kept), the decoder keeps the "
              "model's own attention (cross-attention directions DEC<-... are not supported yet)",
    )


register_family(_t5_family())
