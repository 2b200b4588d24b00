"""Path patching (matchsig.engine.path_patching): equal to Wang et al.'s three steps run on the float64
reference with hooks (tests/_reference.py), which shares no code with the engine's graph."""

from __future__ import annotations

import numpy as np
import pytest

from _reference import bert_forward_hooked
from conftest import make_tiny_model
from matchsig import CrossEncoder, MatchsigError

QUERIES = ["what is a flea", "how do birds migrate", "cat food"]
BASE = ["the cat flea is an insect that lives on pets a", "birds fly south in the winter to find food a",
        "dry food for cats and kittens a"]
PERT = ["the cat flea is an insect that lives on pets flea", "birds fly south in the winter to find food migrate",
        "dry food for cats and kittens cat"]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory, tokenizer):
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-path"), tokenizer, seed=11).double()
    return CrossEncoder(model, tokenizer, device="cpu"), model


def _node(name: str):
    """'input' -> ('input',), 'a1.h2' -> ('head', 1, 2), 'm0' -> ('mlp', 0)."""
    if name == "input":
        return ("input",)
    if name.startswith("m"):
        return ("mlp", int(name[1:]))
    layer, head = name[1:].split(".h")
    return ("head", int(layer), int(head))


def wang_path_patch(model, tokenizer, query, base, pert, senders, receiver):
    """Wang et al. (2023): (1) cache both runs; (2) rerun the baseline with the senders' outputs from the
    perturbed run and every other head output (z) and MLP output frozen at the baseline's, recording the
    receiver's input; (3) rerun the baseline with that input given to the receiver alone."""
    eb, ep = tokenizer(query, base), tokenizer(query, pert)
    _, seen_b = bert_forward_hooked(model, eb["input_ids"], eb["token_type_ids"])
    _, seen_p = bert_forward_hooked(model, ep["input_ids"], ep["token_type_ids"])
    nl = model.config.num_hidden_layers
    senders = [_node(s) for s in senders]
    hooks = {}
    for layer in range(nl):
        heads = [s[2] for s in senders if s[:2] == ("head", layer)]

        def z(value, layer=layer, heads=heads):
            out = seen_b[(layer, "z")].copy()
            out[:, heads] = seen_p[(layer, "z")][:, heads]
            return out

        hooks[(layer, "z")] = z
        src = seen_p if ("mlp", layer) in senders else seen_b
        hooks[(layer, "mlp_out")] = lambda value, layer=layer, src=src: src[(layer, "mlp_out")].copy()
    if ("input",) in senders:
        hooks[(0, "resid_pre")] = lambda value: seen_p[(0, "resid_pre")].copy()
    _, frozen = bert_forward_hooked(model, eb["input_ids"], eb["token_type_ids"], hooks)
    if receiver == "score":
        patch = {(nl - 1, "resid_post"): lambda value: frozen[(nl - 1, "resid_post")].copy()}
    elif receiver.startswith("m"):
        layer = int(receiver[1:])
        patch = {(layer, "mlp_in"): lambda value: frozen[(layer, "resid_mid")].copy()}
    else:
        layer, rest = receiver[1:].split(".h")
        head, which = (rest.split(".") + ["qkv"])[:2]
        layer, head = int(layer), int(head)

        def head_in(value):
            for c in which:
                value["qkv".index(c), head] = frozen[(layer, "resid_pre")]
            return value

        patch = {(layer, "head_in"): head_in}
    base_score = bert_forward_hooked(model, eb["input_ids"], eb["token_type_ids"])[0]
    pert_score = bert_forward_hooked(model, ep["input_ids"], ep["token_type_ids"])[0]
    return base_score, pert_score, bert_forward_hooked(model, eb["input_ids"], eb["token_type_ids"], patch)[0]


CASES = [("a0.h1", "a2.h3.q"), ("input", "a1.h0.k"), ("m0", "a2.h2.v"), ("a1.h2", "m1"), ("a1.h3", "score"),
         ("m2", "score"), ("a0.h0", "a1.h1"), (["a0.h2", "m1"], "a2.h0.k"), ("a2.h1", "score")]


@pytest.mark.parametrize("sender,receiver", CASES)
def test_path_patching_equals_wangs_three_steps_on_the_float64_reference(tiny64, tokenizer, sender, receiver):
    ce, model = tiny64
    res = ce.path_patch(QUERIES, BASE, PERT, sender=sender, receiver=receiver, chunk_size=2)
    senders = [sender] if isinstance(sender, str) else sender
    for i in range(len(QUERIES)):
        base, pert, want = wang_path_patch(model, tokenizer, QUERIES[i], BASE[i], PERT[i], senders, receiver)
        assert res.baseline[i] == pytest.approx(base, abs=1e-10)
        assert res.perturbed[i] == pytest.approx(pert, abs=1e-10)
        assert res.patched[i] == pytest.approx(want, abs=1e-10)
    assert np.abs(res.delta).max() > 1e-8  # 100x the tolerance: the path carries something, not a comparison of zeros


def test_the_direct_path_from_the_input_to_the_score_is_zero(tiny64):
    """The chain between nodes is position-wise and the score reads [CLS]; the perturbation changes a
    document token, so the input's direct path to the score carries nothing, while its whole effect does."""
    ce, _ = tiny64
    direct = ce.path_patch(QUERIES, BASE, PERT, sender="input", receiver="score")
    assert np.abs(direct.delta).max() < 1e-12 and np.abs(direct.perturbed - direct.baseline).min() > 1e-3


def test_bad_path_patching_arguments_are_one_line_errors(tiny64):
    ce, _ = tiny64
    for kwargs, what in (({"sender": "a9.h0", "receiver": "score"}, "unknown node"),
                         ({"sender": "a0.h0", "receiver": "a1.h1.x"}, "unknown receiver"),
                         ({"sender": "a2.h0", "receiver": "a1.h1.q"}, "no sender"),
                         ({"sender": "m1", "receiver": "m1"}, "no sender")):
        with pytest.raises(MatchsigError, match=what) as err:
            ce.path_patch(QUERIES, BASE, PERT, **kwargs)
        assert "\n" not in str(err.value)
