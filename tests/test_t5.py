"""monoT5 (matchsig.engine.t5): scores exactly as pyterrier_t5 computes them, ablations equal a float64
reference, and what is not supported is refused in one line.

A tiny random T5ForConditionalGeneration with a SentencePiece-style (Unigram, Metaspace) tokenizer
trained offline: the real prompt template ``Query: q Document: d Relevant:</s>``. The reference
scores are computed here with the model's own forward, pyterrier_t5's way (the prompt tokenised
with its end-of-sequence token, one decoder step from ``decoder_start_token_id``, log-softmax over
the first tokens of "false" and "true"); the ablation reference runs the model in float64 with a test
attention function (explicit softmax, relative-position bias and mask added as T5's eager code does,
cut probabilities zeroed afterwards, no renormalisation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matchsig import CrossEncoder, MatchsigError

QS = ["what is a flea", "how long do cats live", "fire", "do dogs get fleas"]
DS = ["fleas are small insects that live on cats and dogs", "cats live long " * 9 + "and dogs too",
      "a fire is hot", "dogs and cats get fleas in summer when it is warm"]


def _t5_tokenizer():
    """A T5-style SentencePiece (Unigram) tokenizer trained offline; ``$A </s>`` as T5's template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    texts = QS + DS + ["Query: Document: Relevant:"] * 5 + ["true false"] * 40
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=160, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def _t5(tok, seed: int = 5):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3,
                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=24,
                   decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, initializer_factor=1.5)
    return T5ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def tok():
    return _t5_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return _t5(tok)


@pytest.fixture(scope="module")
def ce(model, tok):
    return CrossEncoder(model, tok, device="cpu", max_length=160)


def _pyterrier_t5_scores(model, tok, qs, ds) -> np.ndarray:
    """pyterrier_t5's MonoT5ReRanker score, written out: padded batch, one decoder step, log P(true), on a
    copy of ``model`` with transformers' own attention."""
    own = _t5(tok)
    own.load_state_dict(model.state_dict())
    model = own
    enc = tok([f"Query: {q} Document: {d} Relevant:" for q, d in zip(qs, ds)], return_tensors="pt", padding=True)
    rel, nrel = tok.encode("true")[0], tok.encode("false")[0]
    start = torch.full((len(qs), 1), model.config.decoder_start_token_id)
    with torch.inference_mode():
        logits = model(**enc, decoder_input_ids=start).logits[:, 0, [rel, nrel]]
    return logits.log_softmax(dim=1)[:, 0].double().numpy()


def test_the_prompt_and_its_parts_token_by_token(ce, tok):
    assert ce.family.name == "t5" and ce.part_names == ("PRE", "Q", "MID", "D", "POST") and ce.readout == "decoder"
    for q, d in zip(QS, DS[:1] * 4):
        enc = ce.encode([q], [d])
        assert enc.input_ids[0] == tok(f"Query: {q} Document: {d} Relevant:")["input_ids"]  # pyterrier_t5's ids
        parts = ce.parts(q, d)
        names = [p for _, p in parts]
        runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
        assert runs == ["PRE", "Q", "MID", "D", "POST"]
        text = {n: tok.convert_tokens_to_string([t for t, p in parts if p == n]).strip() for n in runs}
        assert text["Q"] == q and text["D"] == d
        assert text["PRE"] == "Query:" and text["MID"] == "Document:" and text["POST"] == "Relevant:</s>"


def test_plain_scores_equal_pyterrier_t5_padded_and_alone(ce, model, tok):
    want = _pyterrier_t5_scores(model, tok, QS, DS)
    np.testing.assert_allclose(ce.score(QS, DS, batch_size=3), want, atol=1e-5)
    alone = np.array([_pyterrier_t5_scores(model, tok, [q], [d])[0] for q, d in zip(QS, DS)])
    np.testing.assert_allclose(want, alone, atol=1e-5)
    with torch.inference_mode():  # the wrapped model outside any matchsig context is still the model
        model_now = model(**tok([f"Query: {q} Document: {d} Relevant:" for q, d in zip(QS, DS)], return_tensors="pt",
                                padding=True), decoder_input_ids=torch.zeros((4, 1), dtype=torch.long)).logits
    own = _t5(tok)
    own.load_state_dict(model.state_dict())
    with torch.inference_mode():
        own_now = own(**tok([f"Query: {q} Document: {d} Relevant:" for q, d in zip(QS, DS)], return_tensors="pt",
                            padding=True), decoder_input_ids=torch.zeros((4, 1), dtype=torch.long)).logits
    torch.testing.assert_close(model_now, own_now, atol=1e-5, rtol=0)
    assert np.ptp(want) > 1e-3  # the random model tells the pairs apart, so the checks below can fail
    assert ce.check.max_abs_diff <= ce.check.tolerance and ce.check.reference == "sdpa"


_CUT: dict = {}


def _cut_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None, **kw):
    """T5's eager attention, then the test's cut: probabilities zeroed where _CUT says, no renormalisation."""
    scores = torch.matmul(query, key.transpose(2, 3)) * (1.0 if scaling is None else scaling)
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    cut = _CUT.get(id(module))
    if cut is not None:
        probs = probs.masked_fill(cut, 0.0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _reference_scores(model, tok, q, d, parts: list[str], cuts: dict[int, set], heads, layers) -> float:
    """One pair in float64 with the test's attention function; ``cuts``: {layer: {(target, source)}}."""
    from transformers import AttentionInterface

    AttentionInterface.register("t5_ref_cut", _cut_eager)
    ref = _t5(tok).double().eval()
    ref.load_state_dict(model.state_dict())
    ref.set_attn_implementation("t5_ref_cut")
    n, h = len(parts), ref.config.num_heads
    _CUT.clear()
    for layer, (block, dec) in enumerate(zip(ref.encoder.block, ref.decoder.block)):
        if layer not in layers:
            continue
        m = torch.zeros(1, h, n, n, dtype=torch.bool)
        cross = torch.zeros(1, h, 1, n, dtype=torch.bool)  # the decoder token's reads of the encoder
        for hh in heads:
            for j in range(n):
                cross[0, hh, 0, j] = ("DEC", parts[j]) in cuts
                for i in range(n):
                    m[0, hh, i, j] = (parts[i], parts[j]) in cuts
        _CUT[id(block.layer[0].SelfAttention)] = m
        _CUT[id(dec.layer[1].EncDecAttention)] = cross
    ids = torch.tensor([tok(f"Query: {q} Document: {d} Relevant:")["input_ids"]])
    rel, nrel = tok.encode("true")[0], tok.encode("false")[0]
    with torch.inference_mode():
        logits = ref(input_ids=ids, decoder_input_ids=torch.full((1, 1), ref.config.decoder_start_token_id)).logits
    return float(logits[0, 0, [rel, nrel]].log_softmax(0)[0])


@pytest.mark.parametrize("spec,layers,heads", [
    ("D<-Q", None, None), ("Q<-D,D<-D", [1, 2], None), ("POST<-*", None, [0, 3]), ("MID<-PRE,D<-POST", [0], [1]),
    ("DEC<-D", None, None), ("DEC<-Q,DEC<-POST", [1], [2]), ("DEC<-Q,D<-Q", [0, 2], None),
])
def test_ablations_equal_the_float64_reference(ce, model, tok, spec, layers, heads):
    from matchsig import Ablation
    from matchsig.engine.prompts import translate_spec

    ab = Ablation.parse(translate_spec(spec, ce.part_names), layers=layers, heads=heads)
    got = ce.score(QS, DS, ablation=ab, batch_size=3)
    eager = ce.score(QS, DS, ablation=ab, kernel="eager", batch_size=3)
    names = ce.part_names
    cuts = set()
    for token in spec.split(","):
        x, y = token.split("<-")
        cuts |= {(x, s) for s in (names if y == "*" else (y,))}
    for i, (q, d) in enumerate(zip(QS, DS)):
        parts = [p for _, p in ce.parts(q, d)]
        want = _reference_scores(model, tok, q, d, parts, cuts, heads or range(4), layers or range(3))
        # T5 does not scale q.k: fp32 rounding of its larger scores reaches ~1e-5 (both kernels, measured)
        assert abs(got[i] - want) <= 2e-5 and abs(eager[i] - want) <= 2e-5, (spec, i, got[i], eager[i], want)
    assert np.abs(got - ce.score(QS, DS)).max() > 1e-4  # the cut changes scores


def test_the_decoder_reading_nothing_makes_every_score_equal(ce):
    """DEC<-* in every layer: the decoder token reads no encoder state, so no pair differs from another."""
    got = ce.score(QS, DS, ablation="DEC<-*")
    assert np.ptp(got) <= 1e-6 and np.ptp(ce.score(QS, DS)) > 1e-3
    per_row = ce.score_many(QS, DS, ["none", "DEC<-*", "DEC<-D"])  # rows of one batch cut differently
    # rows cut differently share the explicit cross-attention: fp32 rounding of T5's unscaled scores (~2e-6)
    np.testing.assert_allclose(per_row[1], got, atol=1e-5)
    np.testing.assert_allclose(per_row[2], ce.score(QS, DS, ablation="DEC<-D"), atol=1e-5)
    np.testing.assert_allclose(per_row[0], ce.score(QS, DS), atol=1e-5)


def test_layer_curves_start_mid_stack_with_the_relative_position_bias(ce):
    from matchsig import Ablation

    curve = ce.score_layer_curve(QS, DS, "D<-Q")
    for layer in range(3):
        want = ce.score(QS, DS, Ablation.parse("D<-Q", up_to_layer=layer))
        np.testing.assert_allclose(curve[layer], want, atol=1e-6)


def test_sites_patching_and_statistics(ce, model, tok):
    _, cache = ce.run_with_cache(QS[:2], DS[:2], ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"])
    enc = tok([f"Query: {q} Document: {d} Relevant:" for q, d in zip(QS[:2], DS[:2])], return_tensors="pt",
              padding=True)
    with torch.inference_mode():
        hidden = model.encoder(**enc, output_hidden_states=True).hidden_states  # [l + 1] = after layer l
    for i in range(2):
        n = int(enc["attention_mask"][i].sum())
        np.testing.assert_allclose(np.asarray(cache["blocks.0.hook_resid_post"][i]), hidden[1][i, :n].numpy(),
                                   atol=1e-5)
    words = ["fire", "fleas", "cats", "dogs", "hot", "live", "warm", "long"]
    size = {w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in words}
    a, b = next((a, b) for a in words for b in words if a != b and size[a] == size[b])  # positions must align
    base, pert = [d + " " + a for d in DS[:3]], [d + " " + b for d in DS[:3]]
    full = ce.patch(QS[:3], base, pert, site="resid_post", layers=[2])
    np.testing.assert_allclose(full.patched[:, 0, 0, 0], ce.score(QS[:3], pert), atol=1e-5)
    fused, eager = ce.attention_stats(QS, DS), ce.attention_stats(QS, DS, kernel="eager")
    np.testing.assert_allclose(fused.values, eager.values, atol=1e-5)


def test_refusals_are_one_line(ce, tok, monkeypatch):
    from transformers import AttentionInterface

    from matchsig.engine import attention

    for spec, match in (("Q<-DEC", "DEC can only be cut as a target"), ("CLS<-Q", "part CLS is an encoder part")):
        with pytest.raises(MatchsigError, match=match) as err:
            ce.score(QS[:1], DS[:1], ablation=spec)
        assert "\n" not in str(err.value)
    with pytest.raises(MatchsigError, match="runs after the whole encoder"):
        ce.score_layer_curve(QS[:1], DS[:1], "DEC<-D")

    def no_bias(*args, **kwargs):  # the bug the self-check is for: T5's relative-position bias dropped
        kwargs.pop("position_bias", None)
        return attention.matchsig_attention(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, attention.ATTN_NAME, no_bias)
    with pytest.raises(MatchsigError, match="differ from the model's own sdpa forward") as err:
        CrossEncoder(_t5(tok), tok, device="cpu", max_length=160)
    assert "\n" not in str(err.value) and "(t5)" in str(err.value)


def test_dec_is_refused_in_a_model_without_a_decoder(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=48, num_labels=1)).eval()
    enc = CrossEncoder(bert, tokenizer, device="cpu")
    with pytest.raises(MatchsigError, match="part DEC is an encoder-decoder's decoder token") as err:
        enc.score(QS[:1], DS[:1], ablation="DEC<-Q")  # row PAD of the blocks: it would cut nothing, silently
    assert "\n" not in str(err.value)


def test_loaded_from_a_folder_by_name_and_inspected(tmp_path, ce, model, tok):
    """The real loading path (AutoModelForSeq2SeqLM from a Hugging Face folder) and inspect (the experiments on
    monoT5: test_prompt_runs)."""
    import json

    from conftest import matchsig_cli

    own = _t5(tok)
    own.load_state_dict(model.state_dict())
    own.config.architectures = ["T5ForConditionalGeneration"]
    own.save_pretrained(tmp_path / "monot5")
    tok.save_pretrained(tmp_path / "monot5")
    loaded = CrossEncoder.load(tmp_path / "monot5", device="cpu", max_length=160)
    np.testing.assert_allclose(loaded.score(QS, DS), ce.score(QS, DS), atol=1e-6)
    res = matchsig_cli("inspect", "--model", str(tmp_path / "monot5"), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["family"], info["readout"], info["layers"], info["heads"]) == ("t5", "decoder", 3, 4)
    assert info["parts"][0][1] == "PRE" and info["parts"][-1] == ["</s>", "POST"]
    assert info["score"].startswith('log P("true")') and info["aggregating_part"] == "DEC"
