"""The core engine against an independent float64 reference, on a real pretrained model and tiny configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import bert_score, cuts_for, torch_reference_ids
from conftest import make_tiny_model

from matchsig import Ablation, CrossEncoder, MatchsigError

QUERIES = ["what is a flea", "how long do cats live", "cost of a new roof in florida"]
DOCS = [
    "The cat flea is a small wingless insect that feeds on the blood of cats and dogs.",
    "Indoor cats live 12 to 18 years; some cats live for more than 20 years.",
    "A new roof costs between 5,000 and 10,000 dollars, depending on the roofing material.",
]

CASES = [
    ("D<-D", None, None),
    ("CLS<-*", None, None),
    ("Q<-D,D<-Q", [3], [0, 5]),
    ("CLS<-Q", [4, 5], None),
    ("D<-Q", None, [1, 2, 11]),
    ("SEP1<-*,*<-SEP2", [0, 2], None),
    ("Q<-Q,Q<-CLS", [0], [7]),
]


@pytest.mark.parametrize("spec,layers,heads", CASES)
def test_ablation_equals_manual_reference_on_real_model(ce, hf_model, tokenizer, spec, layers, heads):
    ab = Ablation.parse(spec, layers=layers, heads=heads)
    for kernel in ("auto", "eager"):
        got = ce.score(QUERIES, DOCS, ablation=ab, kernel=kernel)
        for i, (q, d) in enumerate(zip(QUERIES, DOCS)):
            ids, types = torch_reference_ids(tokenizer, q, d)
            want = bert_score(hf_model, ids, types, cuts_for(spec, layers, heads, 6, 12))
            assert abs(got[i] - want) <= 1e-5, (spec, kernel, i, got[i], want)


def test_ablations_change_scores(ce):
    """Guard against a silently ignored intervention: these cuts must move the scores."""
    base = ce.score(QUERIES, DOCS)
    for spec in ("D<-D", "CLS<-*", "Q<-D"):
        assert np.abs(ce.score(QUERIES, DOCS, ablation=spec) - base).max() > 1e-3, spec


def test_empty_ablation_reproduces_hugging_face(ce, hf_model, tokenizer):
    enc = tokenizer(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = torch.log_softmax(hf_model(**enc).logits, -1)[:, 1].numpy()
    for ab in (None, Ablation.none(), Ablation.parse("D<-D", layers=[]), "none"):
        np.testing.assert_allclose(ce.score(QUERIES, DOCS, ablation=ab), want, atol=1e-6)


def test_padding_invariance(ce):
    alone = [ce.score([q], [d])[0] for q, d in zip(QUERIES, DOCS)]
    long_doc = "word " * 300
    mixed = ce.score(QUERIES + ["x"], DOCS + [long_doc], batch_size=4)
    np.testing.assert_allclose(mixed[:3], alone, atol=1e-6)
    ab = Ablation.parse("D<-D,CLS<-Q")
    alone_ab = [ce.score([q], [d], ablation=ab)[0] for q, d in zip(QUERIES, DOCS)]
    mixed_ab = ce.score(QUERIES + ["x"], DOCS + [long_doc], ablation=ab, batch_size=4)
    np.testing.assert_allclose(mixed_ab[:3], alone_ab, atol=1e-6)


def test_score_many_equals_separate_runs(ce):
    specs = ["none", "D<-D", Ablation.parse("CLS<-*", layers=[5]), Ablation.parse("Q<-D", heads=[3])]
    many = ce.score_many(QUERIES, DOCS, specs, batch_size=5)
    for k, spec in enumerate(specs):
        np.testing.assert_allclose(many[k], ce.score(QUERIES, DOCS, ablation=spec), atol=1e-6)


def test_layer_curve_shares_prefix_exactly(ce):
    curve = ce.score_layer_curve(QUERIES, DOCS, "D<-D")
    assert curve.shape == (6, 3)
    for layer in range(6):
        direct = ce.score(QUERIES, DOCS, ablation=Ablation.parse("D<-D", up_to_layer=layer))
        np.testing.assert_allclose(curve[layer], direct, atol=1e-6)


def test_real_pairs_order_and_truncation(ce, dl19_pairs):
    qs = [q for q, _, _ in dl19_pairs]
    ds = [d for _, d, _ in dl19_pairs]
    s = ce.score(qs, ds, batch_size=4)
    assert s.shape == (len(qs),) and np.isfinite(s).all()
    np.testing.assert_allclose(s[::-1], ce.score(qs[::-1], ds[::-1], batch_size=3), atol=1e-6)
    short = CrossEncoder.load(ce_folder(ce), device="cpu", max_length=32)
    enc = short.encode(qs[:2], ds[:2])
    assert max(len(x) for x in enc.input_ids) <= 32
    assert enc.part_ids[0][-1] == 4 and enc.part_ids[0].count(1) == len(short.tokenizer(qs[0], add_special_tokens=False)["input_ids"])


def ce_folder(ce):
    return ce.name


# ---- tiny hand-made configs ---------------------------------------------------------------------


def _tiny(tmp_path, kind: str, num_labels: int, tokenizer):
    folder = tmp_path / kind
    return folder, make_tiny_model(folder, tokenizer, seed=7, kind=kind, num_labels=num_labels, max_positions=128)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_tiny_bert_matches_reference(tmp_path, tokenizer, num_labels):
    folder, model = _tiny(tmp_path, "bert", num_labels, tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    assert (ce.num_layers, ce.num_heads) == (3, 4)
    for spec, layers, heads in [("D<-D", None, None), ("Q<-D,D<-Q", [1], [0, 3]), ("CLS<-*", [2], None), ("none", None, None)]:
        got = ce.score(QUERIES, DOCS, ablation=Ablation.parse(spec, layers=layers, heads=heads))
        for i, (q, d) in enumerate(zip(QUERIES, DOCS)):
            ids, types = torch_reference_ids(tokenizer, q, d)
            cuts = {} if spec == "none" else cuts_for(spec, layers, heads, 3, 4)
            assert abs(got[i] - bert_score(model, ids, types, cuts)) <= 1e-5


def test_tiny_electra_ablation_matches_patched_eager(tmp_path, tokenizer):
    """ELECTRA (another head, a projected embedding) against HF eager attention patched in the test."""
    import transformers.models.electra.modeling_electra as me

    folder, model = _tiny(tmp_path, "electra", 2, tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    pairs = list(zip(QUERIES, DOCS))
    got = ce.score(QUERIES, DOCS, ablation="Q<-D,D<-D")
    plain = ce.score(QUERIES, DOCS)
    original = me.eager_attention_forward
    for i, (q, d) in enumerate(pairs):
        enc = tokenizer(q, d, return_tensors="pt")
        seq = enc.sequence_ids(0)
        qmask = torch.tensor([s == 0 for s in seq])
        dmask = torch.tensor([s == 1 for s in seq])
        cut = (qmask[:, None] | dmask[:, None]) & dmask[None, :]

        def patched(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
            w = torch.softmax(query @ key.transpose(2, 3) * scaling, -1)
            w = w.masked_fill(cut, 0.0)
            return (w @ value).transpose(1, 2).contiguous(), w

        ref = me.ElectraForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            base = torch.log_softmax(ref(**enc).logits, -1)[0, 1].item()
            me.eager_attention_forward = patched
            try:
                want = torch.log_softmax(ref(**enc).logits, -1)[0, 1].item()
            finally:
                me.eager_attention_forward = original
        assert abs(plain[i] - base) <= 1e-5
        assert abs(got[i] - want) <= 1e-5 and abs(want - base) > 1e-6


# ---- parts, parsing and errors -------------------------------------------------------------------


def test_parts_labelling(ce):
    labelled = ce.parts("what is a flea", "The cat flea.")
    assert [p for _, p in labelled] == ["CLS", "Q", "Q", "Q", "Q", "SEP1", "D", "D", "D", "D", "SEP2"]
    assert labelled[0][0] == "[CLS]" and labelled[5][0] == "[SEP]"


def test_parts_from_roberta_style_layout():
    from matchsig.engine.parts import PairLayout, label_parts

    seq = [None, 0, 0, None, None, 1, 1, None]  # <s> q q </s></s> d d </s>
    assert label_parts(seq) == [0, 1, 1, 2, 2, 3, 3, 4]
    assert label_parts([None, 0, None, None], PairLayout(1, 1, 1)) == [0, 1, 2, 4]


def test_ablation_parse():
    ab = Ablation.parse("cls<-*", layers=range(12))
    assert len(ab.directions) == 5 and ab.layers == tuple(range(12)) and ab.heads is None
    assert Ablation.parse("D<-D", up_to_layer=3).layers == (0, 1, 2, 3)
    assert Ablation.parse("Q<-D, D<-Q", layers=[3], heads=[5, 0]).heads == (0, 5)
    assert Ablation.parse("Q<-D,D<-Q") == Ablation.parse("D<-Q,Q<-D")
    assert hash(Ablation.parse("D<-D")) == hash(Ablation.parse("d<-d"))
    with pytest.raises(ValueError, match="'DOC'.*CLS, Q, SEP1, D, SEP2"):
        Ablation.parse("Q<-DOC")
    with pytest.raises(ValueError, match="TARGET<-SOURCE"):
        Ablation.parse("Q->D")
    with pytest.raises(ValueError, match="heads must be >= 0"):
        Ablation.parse("D<-D", heads=[-1])


def test_out_of_range_layer_or_head(ce):
    with pytest.raises(MatchsigError, match="layer 6 is out of range.*6 layers"):
        ce.score(QUERIES, DOCS, ablation=Ablation.parse("D<-D", layers=[6]))
    with pytest.raises(MatchsigError, match="head 12 is out of range"):
        ce.score(QUERIES, DOCS, ablation=Ablation.parse("D<-D", heads=[12]))


def test_clear_errors(tmp_path, ce, tokenizer):
    with pytest.raises(MatchsigError, match="longer than max_length"):
        ce.score(["word " * 600], ["doc"])
    with pytest.raises(MatchsigError, match="does not exist"):
        CrossEncoder.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MatchsigError, match="no config.json"):
        CrossEncoder.load(tmp_path / "empty")
    from conftest import minilm_path

    with pytest.raises(MatchsigError, match="no sequence-classification head"):
        CrossEncoder.load(minilm_path())
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=16, num_labels=3)).save_pretrained(tmp_path / "three")
    tokenizer.save_pretrained(tmp_path / "three")
    with pytest.raises(MatchsigError, match="3 output labels"):
        CrossEncoder.load(tmp_path / "three")
    with pytest.raises(MatchsigError, match="2 queries but 1 documents"):
        ce.score(["a", "b"], ["c"])


def test_save_round_trip(ce, tmp_path):
    out = ce.save(tmp_path / "saved")
    again = CrossEncoder.load(out, device="cpu")
    np.testing.assert_allclose(again.score(QUERIES, DOCS, "D<-D"), ce.score(QUERIES, DOCS, "D<-D"), atol=1e-6)
    import json

    assert json.loads((out / "config.json").read_text()).get("_attn_implementation", "sdpa") != "matchsig"


def test_ablation_set_of_heads_matches_reference(ce, hf_model, tokenizer):
    from _reference import expand

    from matchsig.engine.ablation import AblationSet

    chosen = [(1, 3), (4, 7), (4, 0)]
    ab = AblationSet.heads("Q<-D,D<-Q", chosen, label="top3")
    assert ab.name == "top3"
    got = ce.score(QUERIES, DOCS, ablation=ab)
    cuts: dict = {}
    for layer, head in chosen:
        cuts.setdefault(layer, {})[head] = expand("Q<-D,D<-Q")
    for i, (q, d) in enumerate(zip(QUERIES, DOCS)):
        ids, types = torch_reference_ids(tokenizer, q, d)
        assert abs(got[i] - bert_score(hf_model, ids, types, cuts)) <= 1e-5


def test_tiny_electra_layer_curve_equals_direct(tmp_path, tokenizer):
    folder, _ = _tiny(tmp_path, "electra", 1, tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    curve = ce.score_layer_curve(QUERIES, DOCS, "Q<-D,D<-D")
    for layer in range(3):
        direct = ce.score(QUERIES, DOCS, ablation=Ablation.parse("Q<-D,D<-D", up_to_layer=layer))
        np.testing.assert_allclose(curve[layer], direct, atol=1e-6)
    assert np.abs(curve[0] - curve[2]).max() > 1e-4
