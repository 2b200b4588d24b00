"""The whole ablation grid against the float64 reference on a tiny config: all 30 Table-1 cells,
``*<-D``, ``D<-*``, per-head and per-layer sets, in one mixed batch (as the experiments score them).

The reference's cut masks come from the pair's own part labels (found from the [SEP] positions in
``tests/_reference.py``) with plain Python loops; nothing here uses matchsig's mask helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import bert_score, torch_reference_ids

from matchsig import Ablation, CrossEncoder
from matchsig.engine import kernels as K
from matchsig.engine.ablation import AblationSet

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
LAYERS, HEADS = 3, 4


def _directions(spec: str) -> set[tuple[str, str]]:
    out = set()
    for token in spec.split(","):
        target, source = token.split("<-")
        for x in PARTS if target == "*" else [target]:
            for y in PARTS if source == "*" else [source]:
                out.add((x, y))
    return out


def _cuts(spec: str, layers=None, heads=None, pairs=None) -> dict:
    """{layer: {head: directions}} with plain loops: every (layer, head) of ``layers x heads``, or the
    listed (layer, head) ``pairs``."""
    dirs = _directions(spec)
    cuts: dict = {}
    if pairs is not None:
        for layer, head in pairs:
            cuts.setdefault(layer, {})[head] = dirs
        return cuts
    for layer in range(LAYERS) if layers is None else layers:
        for head in range(HEADS) if heads is None else heads:
            cuts.setdefault(layer, {})[head] = dirs
    return cuts


def grid() -> list[tuple[str, object, dict]]:
    """(label, what matchsig is given, the reference's cuts)."""
    cells = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS]
    assert len(cells) == 30
    out = [("none", "none", {})]
    out += [(c, c, _cuts(c)) for c in cells]
    out += [("*<-D", "*<-D", _cuts("*<-D")), ("D<-*", Ablation.parse("D<-*"), _cuts("D<-*")), ("*<-*", "*<-*", _cuts("*<-*"))]
    # per-layer sets
    out += [(f"CLS<-*@L{l}", Ablation.parse("CLS<-*", layers=[l]), _cuts("CLS<-*", layers=[l])) for l in range(LAYERS)]
    out += [("D<-D@L0-1", Ablation.parse("D<-D", up_to_layer=1), _cuts("D<-D", layers=[0, 1])),
            ("Q<-D,D<-Q@L0,2", Ablation.parse("Q<-D,D<-Q", layers=[0, 2]), _cuts("Q<-D,D<-Q", layers=[0, 2]))]
    # per-head sets
    out += [(f"D<-D/H{h}", Ablation.parse("D<-D", heads=[h]), _cuts("D<-D", heads=[h])) for h in range(HEADS)]
    chosen = [(0, 1), (2, 3), (2, 0)]
    out += [("matching heads", AblationSet.heads("Q<-D,D<-Q", chosen, label="top3"), _cuts("Q<-D,D<-Q", pairs=chosen)),
            ("CLS<-Q@L1/H2", Ablation.parse("CLS<-Q", layers=[1], heads=[2]), _cuts("CLS<-Q", layers=[1], heads=[2]))]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(11)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=48, max_position_embeddings=512, num_labels=2, initializer_range=0.3)).eval()
    folder = tmp_path_factory.mktemp("grid-ce")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def pairs():
    """Real DL19 pairs of different lengths (padding in every batch)."""
    from matchsig.data.datasets import load_collection

    demo = load_collection("demo")
    out = []
    for qid in demo.judged_qids()[:2]:
        docids = sorted(demo.qrels[qid], key=lambda d: (-demo.qrels[qid][d], d))[:2]
        for d in docids:
            out.append((demo.queries[qid], demo.doc_text(d)))
    out.append(("x", "a b"))  # a one-token query and a very short document
    return out


@pytest.fixture(scope="module")
def reference(tiny, pairs, tokenizer):
    _, model = tiny
    want = np.zeros((len(grid()), len(pairs)))
    for i, (q, d) in enumerate(pairs):
        ids, types = torch_reference_ids(tokenizer, q, d)
        for k, (_, _, cuts) in enumerate(grid()):
            want[k, i] = bert_score(model, ids, types, cuts)
    return want


@pytest.mark.parametrize("cut_kernel", ["auto", "math"])
def test_whole_grid_equals_reference(tiny, pairs, reference, monkeypatch, cut_kernel):
    monkeypatch.setattr(K.KERNELS, "default", cut_kernel)
    folder, _ = tiny
    ce = CrossEncoder.load(folder, device="cpu")
    labels = [label for label, _, _ in grid()]
    qs, ds = [q for q, _ in pairs], [d for _, d in pairs]
    got = ce.score_many(qs, ds, [spec for _, spec, _ in grid()], batch_size=8)
    assert got.shape == reference.shape
    worst = np.abs(got - reference).max(axis=1)
    bad = {labels[k]: float(worst[k]) for k in np.flatnonzero(worst > 1e-5)}
    assert not bad, bad
    # the grid is a real test: most cells move the scores, and distinct cells differ
    moved = [labels[k] for k in range(len(labels)) if np.abs(reference[k] - reference[0]).max() > 1e-4]
    assert len(moved) >= 0.7 * len(labels), moved
    assert np.abs(reference[labels.index("D<-D")] - reference[labels.index("Q<-Q")]).max() > 1e-4


def test_one_configuration_alone_equals_its_grid_row(tiny, pairs, reference):
    """score (one configuration) and score_many (all in shared batches) give the reference's numbers."""
    folder, _ = tiny
    ce = CrossEncoder.load(folder, device="cpu")
    qs, ds = [q for q, _ in pairs], [d for _, d in pairs]
    for k, (label, spec, _) in enumerate(grid()):
        if label in ("D<-D", "CLS<-*", "matching heads", "D<-D@L0-1"):
            np.testing.assert_allclose(ce.score(qs, ds, ablation=spec, batch_size=3), reference[k], atol=1e-5, rtol=0,
                                       err_msg=label)
