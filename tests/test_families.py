"""Model families (matchsig.engine.families): each runs exactly as the model's own forward, or is refused.

Tiny random models built here from transformers' config classes (weights do not matter: the engine
must equal the model's forward whatever they are), with real tokenizer templates: BERT WordPiece
from the installed all-MiniLM-L6-v2 package, and a RoBERTa-style byte-level BPE built offline.
ModernBERT's ablations are checked against a float64 re-implementation written in the tests
(``_reference_modernbert.py``), its attention patterns against transformers' eager attention.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _reference import cuts_for
from _reference_modernbert import modernbert_score
from matchsig import CrossEncoder, MatchsigError
from matchsig.engine import families

LOCAL = 16  # ModernBERT local_attention: a token sees 8 tokens on either side in local layers


def _modernbert(tokenizer, seed: int, pooling: str = "cls"):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(seed)
    cfg = ModernBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                           num_attention_heads=4, intermediate_size=48, max_position_embeddings=512,
                           local_attention=LOCAL, global_attn_every_n_layers=2, num_labels=2,
                           pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                           sep_token_id=tokenizer.sep_token_id, bos_token_id=None, eos_token_id=None,
                           classifier_pooling=pooling, initializer_range=0.3)
    return ModernBertForSequenceClassification(cfg).eval()


def _saved(tmp_path_factory, name: str, model, tokenizer):
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mb_folder(tmp_path_factory, tokenizer):
    return _saved(tmp_path_factory, "modernbert-ce", _modernbert(tokenizer, seed=11), tokenizer)


@pytest.fixture(scope="module")
def mb(mb_folder):
    return CrossEncoder.load(mb_folder, device="cpu")


@pytest.fixture(scope="module")
def mb_pairs(dl19_pairs):
    """Real DL19 pairs (almost all far longer than the local window) and two short ones."""
    qs = [q for q, _, _ in dl19_pairs[:6]] + ["flea", "what is a cat"]
    ds = [d for _, d, _ in dl19_pairs[:6]] + ["an insect", "cats"]
    return qs, ds


def _hf_scores(model, tokenizer, qs, ds, batch: bool) -> np.ndarray:
    with torch.inference_mode():
        if batch:
            enc = tokenizer(qs, ds, padding=True, truncation="only_second", max_length=512, return_tensors="pt")
            logits = model(**enc).logits
        else:
            logits = torch.cat([model(**tokenizer(q, d, truncation="only_second", max_length=512,
                                                  return_tensors="pt")).logits for q, d in zip(qs, ds)])
    return torch.log_softmax(logits.double(), -1)[:, 1].numpy()


def test_modernbert_is_its_family_with_local_layers_from_the_model(mb):
    assert mb.family.name == "modernbert" and mb.readout == "first"
    local = [bool(m._matchsig_model_mask) for m in mb.attention_modules]
    assert local == [False, True, False, True]  # global layers: padding from the parts; local: the window
    assert mb.check.max_abs_diff <= mb.check.tolerance and max(mb.check.tokens) > 2 * LOCAL


def test_modernbert_plain_scores_equal_hugging_face(mb, mb_folder, tokenizer, mb_pairs):
    from transformers import ModernBertForSequenceClassification

    qs, ds = mb_pairs
    assert min(len(x) for x in mb.encode(qs[:6], ds[:6]).input_ids) > 2 * LOCAL  # past the window
    hf = ModernBertForSequenceClassification.from_pretrained(mb_folder).eval()
    want = _hf_scores(hf, tokenizer, qs, ds, batch=False)
    np.testing.assert_allclose(mb.score(qs, ds, batch_size=3), want, atol=1e-5)
    np.testing.assert_allclose(_hf_scores(hf, tokenizer, qs, ds, batch=True), want, atol=1e-5)


@pytest.mark.parametrize("spec,layers,heads", [("D<-D", None, None), ("Q<-D", None, None),
                                               ("CLS<-D,SEP2<-*", [1, 3], None), ("D<-Q,Q<-D", [1], [0, 2]),
                                               ("*<-SEP1", None, [3])])
def test_modernbert_ablations_equal_the_float64_reference(mb, tokenizer, mb_pairs, spec, layers, heads):
    from matchsig import Ablation

    qs, ds = mb_pairs
    qs, ds = qs[:3] + qs[-1:], ds[:3] + ds[-1:]
    ab = Ablation.parse(spec, layers=layers, heads=heads)
    cuts = cuts_for(spec, layers, heads, 4, 4)
    for kernel in ("auto", "eager"):
        got = mb.score(qs, ds, ablation=ab, batch_size=4, kernel=kernel)
        for i, ids in enumerate(mb.encode(qs, ds).input_ids):
            assert abs(got[i] - modernbert_score(mb.model, ids, cuts, sep_id=tokenizer.sep_token_id)) <= 1e-5, kernel


def test_modernbert_plain_reference_and_cls_invariant(mb, tokenizer, mb_pairs):
    qs, ds = mb_pairs
    got = mb.score(qs, ds)
    for i, ids in enumerate(mb.encode(qs, ds).input_ids):
        assert abs(got[i] - modernbert_score(mb.model, ids, sep_id=tokenizer.sep_token_id)) <= 1e-5
    cls = mb.score(qs, ds, ablation="CLS<-*")
    assert np.ptp(cls) <= 1e-6  # the first token reads nothing: every pair gets the same score


def test_modernbert_mean_pooling_reads_every_token(tmp_path, tokenizer, mb_pairs):
    model = _modernbert(tokenizer, seed=12, pooling="mean")
    ce = CrossEncoder(model, tokenizer, device="cpu")
    assert ce.readout == "mean"
    qs, ds = mb_pairs
    got = ce.score(qs, ds)
    for i, ids in enumerate(ce.encode(qs, ds).input_ids):
        assert abs(got[i] - modernbert_score(ce.model, ids, sep_id=tokenizer.sep_token_id)) <= 1e-5
    assert np.ptp(ce.score(qs, ds, ablation="CLS<-*")) > 1e-3  # no longer an invariant: said by the readout


def test_modernbert_patterns_equal_hugging_face_eager_attentions(mb, mb_folder, tokenizer, mb_pairs):
    from transformers import ModernBertForSequenceClassification

    qs, ds = mb_pairs
    hf = ModernBertForSequenceClassification.from_pretrained(mb_folder, attn_implementation="eager").eval()
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(4)]
    _, cache = mb.run_with_cache(qs[:2], ds[:2], names)
    for i in range(2):
        with torch.inference_mode():
            out = hf(**tokenizer(qs[i], ds[i], return_tensors="pt"), output_attentions=True)
        for l in range(4):
            want = out.attentions[l][0].numpy()
            got = np.asarray(cache[names[l]][i])
            np.testing.assert_allclose(got, want, atol=1e-6)
            if l % 2:  # local layer: nothing beyond the window
                n = want.shape[-1]
                far = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) > LOCAL // 2
                assert np.all(got[:, far] == 0.0)


def test_modernbert_layer_curve_statistics_and_patching(mb, mb_pairs):
    from matchsig import Ablation

    qs, ds = mb_pairs
    curve = mb.score_layer_curve(qs[:4], ds[:4], "D<-D")
    for l in range(4):
        np.testing.assert_allclose(curve[l], mb.score(qs[:4], ds[:4], Ablation.parse("D<-D", up_to_layer=l)),
                                   atol=1e-6)
    fused, eager = mb.attention_stats(qs[:4], ds[:4]), mb.attention_stats(qs[:4], ds[:4], kernel="eager")
    np.testing.assert_allclose(fused.values, eager.values, atol=1e-5)
    base, pert = [d + " a" for d in ds[:3]], [d + " flea" for d in ds[:3]]
    plain_b, plain_p = mb.score(qs[:3], base), mb.score(qs[:3], pert)
    full = mb.patch(qs[:3], base, pert, site="resid_post", layers=[3])
    np.testing.assert_allclose(full.patched[:, 0, 0, 0], plain_p, atol=1e-5)
    same = mb.patch(qs[:3], base, base, site="z")
    np.testing.assert_allclose(same.patched.reshape(3, -1), np.repeat(plain_b[:, None], 16, 1), atol=1e-5)
    with pytest.raises(MatchsigError, match="resid_mid is not supported") as err:
        mb.patch(qs[:3], base, pert, site="resid_mid")
    assert "\n" not in str(err.value)


def test_the_self_check_refuses_a_padding_mask_on_local_layers(mb_folder, monkeypatch):
    """The bug this guard exists for: local layers run with a plain padding mask differ from the model."""
    broken = dataclasses.replace(families.FAMILIES["modernbert"], model_mask=lambda module: False)
    monkeypatch.setitem(families.FAMILIES, "modernbert", broken)
    with pytest.raises(MatchsigError, match="differ from the model's own sdpa forward") as err:
        CrossEncoder.load(mb_folder, device="cpu")
    assert "\n" not in str(err.value) and "modernbert" in str(err.value)


def test_unsupported_families_are_refused_in_one_line(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification, T5Config, T5ForSequenceClassification

    small = dict(vocab_size=tokenizer.vocab_size, num_labels=2)
    GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=4, pad_token_id=0, **small)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(MatchsigError, match="model type 'gpt2'") as err:
        CrossEncoder.load(tmp_path, device="cpu")
    assert "\n" not in str(err.value) and "modernbert" in str(err.value)  # names the supported families
    t5 = T5ForSequenceClassification(T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=48,
                                              num_layers=2, num_heads=4, num_labels=2))
    with pytest.raises(MatchsigError, match="T5ForSequenceClassification: T5 rerankers are supported as") as err:
        CrossEncoder(t5, tokenizer, device="cpu")  # monoT5 (T5ForConditionalGeneration) only
    assert "\n" not in str(err.value)


def _bpe_tokenizer(texts):
    """A RoBERTa-style byte-level BPE tokenizer trained offline: ``<s> q </s></s> d </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tok.decoder = decoders.ByteLevel()
    return RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def _check_encoder_family(ce, hf, tokenizer, qs, ds, family):
    assert ce.family.name == family
    np.testing.assert_allclose(ce.score(qs, ds, batch_size=3), _hf_scores(hf, tokenizer, qs, ds, batch=False),
                               atol=1e-5)
    assert np.ptp(ce.score(qs, ds, ablation="CLS<-*")) <= 1e-6
    assert np.ptp(ce.score(qs, ds, ablation="D<-D")) > 1e-3


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta"])
def test_roberta_family_with_a_bpe_template(kind, mb_pairs):
    from transformers import (RobertaConfig, RobertaForSequenceClassification, XLMRobertaConfig,
                              XLMRobertaForSequenceClassification)

    qs, ds = mb_pairs
    tok = _bpe_tokenizer(qs + ds)
    parts = CrossEncoder.parts  # labelled token by token below
    cfg_cls, model_cls = ((RobertaConfig, RobertaForSequenceClassification) if kind == "roberta"
                          else (XLMRobertaConfig, XLMRobertaForSequenceClassification))
    torch.manual_seed(4)
    model = model_cls(cfg_cls(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=48, num_labels=2, pad_token_id=tok.pad_token_id,
                              initializer_range=0.3)).eval()
    ce = CrossEncoder(model, tok, device="cpu")
    labelled = parts(ce, "what is a flea", "the cat")
    tokens = [t for t, _ in labelled]
    nq = len(tok.tokenize("what is a flea"))
    nd = len(tok.tokenize("the cat"))
    assert tokens == ["<s>"] + tok.tokenize("what is a flea") + ["</s>", "</s>"] + tok.tokenize("the cat") + ["</s>"]
    assert [p for _, p in labelled] == ["CLS"] + ["Q"] * nq + ["SEP1"] * 2 + ["D"] * nd + ["SEP2"]
    _check_encoder_family(ce, model, tok, qs, ds, "roberta")


def test_distilbert_family(tokenizer, mb_pairs):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(5)
    model = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=48, num_labels=2,
        initializer_range=0.3)).eval()
    ce = CrossEncoder(model, tokenizer, device="cpu")
    qs, ds = mb_pairs
    _check_encoder_family(ce, model, tokenizer, qs, ds, "distilbert")
    base, pert = [d + " a" for d in ds[:2]], [d + " flea" for d in ds[:2]]
    full = ce.patch(qs[:2], base, pert, site="resid_mid", layers=[1])  # DistilBERT's own module names
    mlp = ce.patch(qs[:2], base, pert, site="mlp_out", layers=[1])
    assert np.isfinite(full.patched).all() and np.isfinite(mlp.patched).all()


def test_correct_kernel_with_a_per_row_mask_equals_the_explicit_softmax():
    """The one-pass correction adds the per-row mask's entries on the small columns (sliding window)."""
    import matchsig.engine.kernels as K
    from matchsig.engine.context import ForwardContext

    if not K.fused_available():
        pytest.fail("the fused CPU kernel is unavailable in this torch build")
    torch.manual_seed(6)
    b, h, t, d = 2, 2, 24, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    part_ids = torch.tensor([[0, 1, 1, 2] + [3] * 19 + [4], [0, 1, 2] + [3] * 9 + [4] + [5] * 11])
    ctx = ForwardContext(part_ids=part_ids)
    near = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() <= 4
    bias = ctx.model_bias(near[None, None].expand(b, 1, t, t), torch.float32)
    block = torch.zeros(1, h, 6, 6, dtype=torch.bool)
    block[0, :, 3, 3] = True  # D<-D
    block[0, 1, 3, 0] = True  # D<-CLS in head 1: a small column a window hides from most rows
    block[0, 0, 0, :5] = True  # CLS<-* in head 0
    call = K.Call(q, k, v, bias, 0.5, ctx, block)
    assert K.MASK in call.needs and K.KERNELS.chosen("auto", call.needs, "cpu", torch.float32) == "correct"
    got, _ = K._correct(call)
    want, _ = K._math(call)
    real = (part_ids != 5)[:, :, None, None]
    torch.testing.assert_close(got * real, want * real, atol=1e-5, rtol=0)
    stats = K.Call(q, k, v, bias, 0.5, ctx, block, stats=True)
    assert K.KERNELS.chosen("auto", stats.needs, "cpu", torch.float32) == "math"  # no fused statistics under a window


# ---- DeBERTa-v2/v3: disentangled attention, probabilities zeroed where the model computes them ----


def _deberta(tokenizer, seed: int, **extra):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = DebertaV2Config(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=48, max_position_embeddings=128, relative_attention=True,
                          pos_att_type=["p2c", "c2p"], position_buckets=8, share_att_key=True,
                          norm_rel_ebd="layer_norm", position_biased_input=False, num_labels=2,
                          initializer_range=0.3, pad_token_id=tokenizer.pad_token_id, **extra)
    return DebertaV2ForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def deb_folder(tmp_path_factory, tokenizer):
    return _saved(tmp_path_factory, "deberta-ce", _deberta(tokenizer, seed=21), tokenizer)


@pytest.fixture(scope="module")
def deb(deb_folder):
    return CrossEncoder.load(deb_folder, device="cpu", max_length=128)


def test_deberta_plain_scores_equal_hugging_face_and_the_reference(deb, deb_folder, tokenizer, mb_pairs):
    from _reference_deberta import deberta_score
    from transformers import DebertaV2ForSequenceClassification

    assert deb.family.name == "deberta-v2" and deb.check.reference == "eager"
    qs, ds = mb_pairs
    hf = DebertaV2ForSequenceClassification.from_pretrained(deb_folder).eval()
    with torch.inference_mode():
        logits = torch.cat([hf(**tokenizer(q, d, truncation="only_second", max_length=128, return_tensors="pt")).logits
                            for q, d in zip(qs, ds)])
    want = torch.log_softmax(logits.double(), -1)[:, 1].numpy()
    got = deb.score(qs, ds, batch_size=3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    enc = deb.encode(qs, ds)
    assert max(enc.lengths()) > 8 * 4  # relative distances far into the log buckets
    for i in range(len(qs)):
        assert abs(got[i] - deberta_score(deb.model, enc.input_ids[i], enc.token_type_ids[i])) <= 1e-5


@pytest.mark.parametrize("spec,layers,heads", [("D<-D", None, None), ("Q<-D,D<-Q", None, None),
                                               ("CLS<-D,SEP2<-*", [0, 2], None), ("D<-Q", [1], [1, 3])])
def test_deberta_ablations_equal_the_float64_reference(deb, mb_pairs, spec, layers, heads):
    from _reference_deberta import deberta_score
    from matchsig import Ablation

    qs, ds = mb_pairs
    qs, ds = qs[:3] + qs[-1:], ds[:3] + ds[-1:]
    got = deb.score(qs, ds, ablation=Ablation.parse(spec, layers=layers, heads=heads), batch_size=4)
    enc = deb.encode(qs, ds)
    cuts = cuts_for(spec, layers, heads, 3, 4)
    for i in range(len(qs)):
        assert abs(got[i] - deberta_score(deb.model, enc.input_ids[i], enc.token_type_ids[i], cuts)) <= 1e-5
    assert np.ptp(deb.score(qs, ds, ablation="CLS<-*")) <= 1e-6


def test_deberta_patterns_statistics_curves_and_patching(deb, deb_folder, tokenizer, mb_pairs):
    from transformers import DebertaV2ForSequenceClassification

    from matchsig import Ablation
    from matchsig.engine.attention_stats import reduce_probs

    qs, ds = mb_pairs
    hf = DebertaV2ForSequenceClassification.from_pretrained(deb_folder).eval()
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(3)]
    _, cache = deb.run_with_cache(qs[:2], ds[:2], names)
    for i in range(2):
        with torch.inference_mode():
            out = hf(**tokenizer(qs[i], ds[i], truncation="only_second", max_length=128, return_tensors="pt"),
                     output_attentions=True)
        for l in range(3):
            np.testing.assert_allclose(np.asarray(cache[names[l]][i]), out.attentions[l][0].numpy(), atol=1e-6)
    stats = deb.attention_stats(qs[:1], ds[:1])
    enc = deb.encode(qs[:1], ds[:1])
    parts, ids = torch.tensor(enc.part_ids), torch.tensor(enc.input_ids)
    for l in range(3):
        want = reduce_probs(torch.as_tensor(np.asarray(cache[names[l]][0]))[None], parts, ids)[0].numpy()
        np.testing.assert_allclose(stats.values[0, l], want, atol=1e-5)
    curve = deb.score_layer_curve(qs[:4], ds[:4], "Q<-D")
    for l in range(3):
        np.testing.assert_allclose(curve[l], deb.score(qs[:4], ds[:4], Ablation.parse("Q<-D", up_to_layer=l)),
                                   atol=1e-6)
    base, pert = [d + " a" for d in ds[:3]], [d + " flea" for d in ds[:3]]
    plain_b, plain_p = deb.score(qs[:3], base), deb.score(qs[:3], pert)
    np.testing.assert_allclose(deb.patch(qs[:3], base, pert, site="resid_post", layers=[2]).patched[:, 0, 0, 0],
                               plain_p, atol=1e-5)
    same = deb.patch(qs[:3], base, base, site="z")
    np.testing.assert_allclose(same.patched.reshape(3, -1), np.repeat(plain_b[:, None], 12, 1), atol=1e-5)
    heads = deb.patch(qs[:3], base, pert, site="z", layers=[2])
    assert np.ptp(heads.patched) > 0  # the z site of DeBERTa's own attention module does replace the output


def test_deberta_with_a_convolution_is_refused(tokenizer):
    with pytest.raises(MatchsigError, match="conv_kernel_size") as err:
        CrossEncoder(_deberta(tokenizer, seed=1, conv_kernel_size=3), tokenizer, device="cpu")
    assert "\n" not in str(err.value)


# ---- decoder rerankers: causal masks, prompts PRE q MID d LAST, score head on the last token --------


def _qwen_tokenizer(texts):
    """A Qwen-style byte-level BPE with its chat special tokens, trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


#: A Qwen3-Reranker-style chat prompt (its documented template, shortened instruction).
CHAT = dict(pre="<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
                "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
                "<Query>: ", mid="\n<Document>: ", post="<|im_end|>\n<|im_start|>assistant\n", name="qwen-chat")


def _decoder(kind: str, tok, seed: int):
    import transformers as tf

    cfg_cls, model_cls = {"qwen2": (tf.Qwen2Config, tf.Qwen2ForSequenceClassification),
                          "qwen3": (tf.Qwen3Config, tf.Qwen3ForSequenceClassification),
                          "llama": (tf.LlamaConfig, tf.LlamaForSequenceClassification),
                          "mistral": (tf.MistralConfig, tf.MistralForSequenceClassification)}[kind]
    extra = {"sliding_window": 12} if kind == "mistral" else {}
    torch.manual_seed(seed)
    cfg = cfg_cls(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=48, num_labels=1, pad_token_id=tok.pad_token_id,
                  initializer_range=0.2, **extra)
    return model_cls(cfg).eval()


@pytest.fixture(scope="module")
def qtok(mb_pairs):
    qs, ds = mb_pairs
    return _qwen_tokenizer(qs + ds + [CHAT["pre"], CHAT["mid"], CHAT["post"], "query: document:"] + ["yes no"] * 20)


@pytest.mark.parametrize("kind,chat", [("qwen2", False), ("qwen3", True), ("llama", False), ("mistral", False)])
def test_decoder_rerankers_equal_hugging_face_and_the_float64_reference(kind, chat, qtok, mb_pairs):
    from _reference_decoder import decoder_score
    from matchsig import Ablation
    from matchsig.engine.prompts import PromptTemplate

    qs, ds = mb_pairs
    qs, ds = qs[:3] + qs[-2:], ds[:3] + ds[-2:]
    model = _decoder(kind, qtok, seed=31)
    template = PromptTemplate(**CHAT) if chat else None
    ce = CrossEncoder(model, qtok, device="cpu", max_length=160, template=template)
    assert ce.family.name == "decoder" and ce.readout == "last" and ce.part_names == ("PRE", "Q", "MID", "D", "LAST")
    assert all(m._matchsig_model_mask for m in ce.attention_modules)  # causal: the model's own mask everywhere
    enc = ce.encode(qs, ds)
    with torch.inference_mode():  # the model's own forward on each prompt, unpadded
        want = np.array([float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in enc.input_ids])
    np.testing.assert_allclose(ce.score(qs, ds, batch_size=3), want, atol=1e-5)
    window = 12 if kind == "mistral" else None
    names = [[ce.part_names[p] for p in parts] for parts in enc.part_ids]
    for spec, layers, heads in (("D<-Q", None, None), ("LAST<-D,D<-D", None, None), ("LAST<-*", [1, 2], [0, 3]),
                                ("MID<-Q,Q<-PRE", [0], None)):
        ab = Ablation.parse(_slots(spec), layers=layers, heads=heads)
        got = ce.score(qs, ds, ablation=ab, batch_size=3)
        np.testing.assert_allclose(got, ce.score(qs, ds, ablation=ab, batch_size=3, kernel="eager"), atol=1e-5)
        cuts = _decoder_cuts(spec, layers, heads, ce.part_names)
        for i in range(len(qs)):
            assert abs(got[i] - decoder_score(model, enc.input_ids[i], names[i], cuts, window)) <= 1e-5, spec
    assert np.ptp(ce.score(qs, ds, ablation="LAST<-*")) <= 1e-6  # the scoring position reads nothing


def _decoder_cuts(spec: str, layers, heads, names) -> dict:
    """{layer: {head: {(target, source)}}} of a spec in a decoder's part names, written here by hand."""
    dirs = set()
    for token in spec.split(","):
        t, src = token.split("<-")
        dirs |= {(a, b) for a in (names if t == "*" else [t]) for b in (names if src == "*" else [src])}
    return {l: {h: dirs for h in (heads if heads is not None else range(4))}
            for l in (layers if layers is not None else range(3))}


def _slots(spec: str) -> str:
    from matchsig.engine.prompts import DECODER_PART_NAMES, translate_spec

    return translate_spec(spec, DECODER_PART_NAMES)


def test_decoder_prompt_parts_token_by_token_and_refusals(qtok):
    from matchsig.engine.prompts import PromptTemplate

    ce = CrossEncoder(_decoder("qwen3", qtok, seed=32), qtok, device="cpu", template=PromptTemplate(**CHAT))
    labelled = ce.parts("what is a flea", "the cat")
    text = "".join(qtok.convert_tokens_to_string([t]) for t, _ in labelled)
    assert text == CHAT["pre"] + "what is a flea" + CHAT["mid"] + "the cat" + CHAT["post"]
    by_part = {p: qtok.convert_tokens_to_string([t for t, q in labelled if q == p]) for p in ce.part_names}
    assert by_part == {"PRE": CHAT["pre"][:-1], "Q": " what is a flea", "MID": CHAT["mid"][:-1], "D": " the cat",
                       "LAST": CHAT["post"]}  # the space before a word travels with it
    assert [p for _, p in labelled] == sorted((p for _, p in labelled), key=ce.part_names.index)  # in prompt order
    for spec, what in (("Q<-D", "impossible under the causal mask"), ("CLS<-*", "CLS is an encoder part")):
        with pytest.raises(MatchsigError, match=what) as err:
            ce.score(["flea"], ["an insect"], ablation=spec)
        assert "\n" not in str(err.value)
    long_query = " ".join(["flea"] * 400)
    with pytest.raises(MatchsigError, match="without its document"):
        ce.score([long_query], ["x"])
    truncated = ce.encode(["flea"], [" ".join(["cat"] * 2000)])
    assert len(truncated.input_ids[0]) <= ce.max_length and truncated.part_ids[0][-1] == 4


def test_inspect_and_experiments_on_family_folders(tmp_path, qtok, mb_folder):
    """From the command line: ``inspect`` describes each family (the experiments on a decoder: test_prompt_runs)."""
    import json

    from conftest import matchsig_cli

    folder = tmp_path / "qwen2"
    _decoder("qwen2", qtok, seed=33).save_pretrained(folder)
    qtok.save_pretrained(folder)
    res = matchsig_cli("inspect", "--model", str(folder), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["family"], info["readout"], info["layers"], info["heads"]) == ("decoder", "last", 3, 4)
    assert [p for _, p in info["parts"]][0] == "PRE" and info["parts"][-1][1] == "LAST"
    assert info["self_check"]["max_abs_diff"] <= info["self_check"]["tolerance"]
    res = matchsig_cli("inspect", "--model", str(mb_folder), "--json")
    info = json.loads(res.stdout)
    assert info["family"] == "modernbert" and info["layers_with_model_masks"] == [1, 3]


def test_causal_lm_reranker_scored_yes_minus_no(tmp_path, qtok, mb_pairs):
    """Qwen3-Reranker style: a *ForCausalLM with the documented prompt, score = logit(yes) - logit(no)."""
    import transformers as tf
    from _reference_decoder import decoder_score

    qs, ds = mb_pairs
    qs, ds = qs[:2] + qs[-2:], ds[:2] + ds[-2:]
    torch.manual_seed(34)
    lm = tf.Qwen3ForCausalLM(tf.Qwen3Config(vocab_size=len(qtok), hidden_size=32, num_hidden_layers=3,
                                            num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                            pad_token_id=qtok.pad_token_id, initializer_range=0.2,
                                            tie_word_embeddings=False)).eval()
    lm.save_pretrained(tmp_path)
    qtok.save_pretrained(tmp_path)
    ce = CrossEncoder.load(tmp_path, device="cpu", max_length=200)
    assert ce.template.name == "qwen3-reranker" and ce.num_labels == 1 and ce.readout == "last"
    yes, no = qtok.convert_tokens_to_ids("yes"), qtok.convert_tokens_to_ids("no")
    enc = ce.encode(qs, ds)
    with torch.inference_mode():
        want = []
        for ids in enc.input_ids:
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
            want.append(float(logits[yes] - logits[no]))
    got = ce.score(qs, ds, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    names = [[ce.part_names[p] for p in parts] for parts in enc.part_ids]
    head = lm.lm_head.weight.detach().double().numpy()
    cut = ce.score(qs, ds, ablation="LAST<-D,D<-Q", batch_size=4)
    for i in range(len(qs)):
        ref = decoder_score(lm, enc.input_ids[i], names[i], _decoder_cuts("LAST<-D,D<-Q", None, None, ce.part_names),
                            readout=head[yes] - head[no])
        assert abs(cut[i] - ref) <= 1e-5
    assert np.ptp(ce.score(qs, ds, ablation="LAST<-*")) <= 1e-6
