"""Edge attribution (matchsig.engine.edges): EAP-IG converges to the edge's integrated gradient computed
independently in float64 (tests/_edge_reference.py: numpy, central differences, Gauss-Legendre), EAP is
that derivative at the baseline, and in the linear regime EAP equals exact edge patching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _edge_reference import edge_derivative, edge_forward, integrated_edge_gradient
from _reference import bert_score
from conftest import make_tiny_model
from matchsig import CrossEncoder, MatchsigError

QUERIES = ["what is a flea", "how do birds migrate"]
BASE = ["the cat flea is an insect that lives on pets a", "birds fly south in the winter to find food a"]
PERT = ["the cat flea is an insect that lives on pets flea", "birds fly south in the winter to find food migrate"]
EDGES = [("a0.h1", "a2.h3.q"), ("input", "a0.h2.k"), ("m0", "m2"), ("a1.h0", "score"), ("m1", "a2.h0.v"),
         ("input", "m0"), ("a0.h3", "m0"), ("a2.h1", "score"), ("a1.h2", "a2.h2.k")]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory, tokenizer):
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-edges"), tokenizer, seed=5).double()
    return CrossEncoder(model, tokenizer, device="cpu"), model


def _columns(res, edges):
    names = [f"{s}->{r}" for s, r in zip(res.senders, res.receivers)]
    return [names.index(f"{s}->{r}") for s, r in edges]


def test_the_edge_reference_is_the_model(tiny64, tokenizer):
    _, model = tiny64
    enc = tokenizer(QUERIES[0], BASE[0])
    assert edge_forward(model, enc["input_ids"], enc["token_type_ids"])[0] == pytest.approx(
        bert_score(model, enc["input_ids"], enc["token_type_ids"]), abs=1e-12)


def test_eap_is_the_edge_derivative_at_the_baseline(tiny64, tokenizer):
    ce, model = tiny64
    res = ce.attribute_edges(QUERIES, BASE, PERT, method="eap", chunk_size=2)
    # 3 layers x 4 heads: q/k/v readers of layer l see 1 + 5 l nodes, MLP l 5 + 5 l, the score all 16
    assert len(res.edges) == sum(12 * (1 + 5 * l) + 5 + 5 * l for l in range(3)) + 16
    cols = _columns(res, EDGES)
    for i in range(len(QUERIES)):
        eb, ep = tokenizer(QUERIES[i], BASE[i]), tokenizer(QUERIES[i], PERT[i])
        _, base = edge_forward(model, eb["input_ids"], eb["token_type_ids"])
        _, pert = edge_forward(model, ep["input_ids"], ep["token_type_ids"])
        for (node, reader), col in zip(EDGES, cols):
            want = edge_derivative(model, eb["input_ids"], eb["token_type_ids"], base["input"],
                                   pert[node] - base[node], reader, node)
            assert res.scores[i, col] == pytest.approx(want, abs=1e-8), (node, reader)


def test_eap_qk_is_the_exact_pattern_change_linearised_after_the_pattern(tiny64, tokenizer):
    """eap-qk on a query/key edge = sum (A' - A) * d score / d A, with A' the head's pattern when the edge carries
    the perturbed output (the reference run with that edge patched) and the derivative by central differences
    along A' - A (the reference with the pattern overridden); every other edge is EAP's."""
    ce, model = tiny64
    qk = ce.attribute_edges(QUERIES, BASE, PERT, method="eap-qk", chunk_size=2)
    eap = ce.attribute_edges(QUERIES, BASE, PERT, method="eap", chunk_size=2)
    is_qk = np.array([r.endswith((".q", ".k")) for r in qk.receivers])
    np.testing.assert_array_equal(qk.scores[:, ~is_qk], eap.scores[:, ~is_qk])
    picks = [("a0.h1", "a2.h3.q"), ("input", "a0.h2.k"), ("a1.h2", "a2.h2.k"), ("m0", "a1.h3.q"), ("input", "a1.h0.k")]
    cols = _columns(qk, picks)
    for i in range(len(QUERIES)):
        eb, ep = tokenizer(QUERIES[i], BASE[i]), tokenizer(QUERIES[i], PERT[i])
        ids, types = eb["input_ids"], eb["token_type_ids"]
        _, pert = edge_forward(model, ep["input_ids"], ep["token_type_ids"])
        for (node, reader), col in zip(picks, cols):
            layer, head = int(reader[1]), int(reader.split(".")[1][1:])
            seen = {}

            def record(l, h, probs, key):
                if (l, h) == (layer, head):
                    seen[key] = probs
                return probs

            edge_forward(model, ids, types, pattern=lambda l, h, pr: record(l, h, pr, "base"))
            mix = lambda r, u, value: pert[u] if (r, u) == (reader, node) else value  # noqa: E731
            edge_forward(model, ids, types, mix=mix, pattern=lambda l, h, pr: record(l, h, pr, "patched"))
            change = seen["patched"] - seen["base"]
            at = lambda t: edge_forward(model, ids, types, pattern=lambda l, h, pr: pr + t * change  # noqa: E731
                                        if (l, h) == (layer, head) else pr)[0]
            want = (at(1e-5) - at(-1e-5)) / 2e-5
            assert qk.scores[i, col] == pytest.approx(want, abs=1e-8), (node, reader)
            assert np.abs(change).max() > 1e-6  # the edge moves the pattern


def test_eap_ig_converges_to_the_integrated_gradient(tiny64, tokenizer):
    ce, model = tiny64
    coarse = ce.attribute_edges(QUERIES, BASE, PERT, method="eap-ig", steps=2)
    fine = ce.attribute_edges(QUERIES, BASE, PERT, method="eap-ig", steps=64)
    cols = _columns(fine, EDGES)
    want = np.array([[integrated_edge_gradient(model, tokenizer(q, b)["input_ids"], tokenizer(q, b)["token_type_ids"],
                                               tokenizer(q, p)["input_ids"], tokenizer(q, p)["token_type_ids"], r, u)
                      for u, r in EDGES] for q, b, p in zip(QUERIES, BASE, PERT)])
    err_fine = np.abs(fine.scores[:, cols] - want).max()
    err_coarse = np.abs(coarse.scores[:, cols] - want).max()
    scale = np.abs(want).max()
    assert scale > 1e-3
    assert err_fine <= 1e-4 * scale, (err_fine, scale)
    assert err_fine < err_coarse / 100  # midpoint rule: error ~ 1 / steps^2


def test_eap_matches_exact_edge_patching_in_the_linear_regime(tiny64):
    """Perturbed input = baseline + t (perturbed - baseline) in the input node's output, t tiny: the exact
    patched change of every edge, divided by t, equals EAP's estimate divided by t."""
    from matchsig.engine.edges import edge_scores
    from matchsig.engine.graph import graph_for
    from matchsig.engine.path_patching import patched_scores

    ce, _ = tiny64
    enc_b, enc_p = ce.encode(QUERIES, BASE), ce.encode(QUERIES, PERT)
    batch_b, batch_p = ce.collate(enc_b, [0, 1]), ce.collate(enc_p, [0, 1])
    graph = graph_for(ce, batch_b)
    with torch.inference_mode():
        emb_b, emb_far = graph.embed(batch_b), graph.embed(batch_p)
    t = 1e-6
    emb_p = emb_b + t * (emb_far - emb_b)
    est, _, _ = edge_scores(graph, batch_b, emb_b, emb_p, steps=1)
    edges = np.argwhere(graph.edge_mask())
    rng = np.random.default_rng(0)
    sample = edges[rng.choice(len(edges), 60, replace=False)]
    keeps = []
    for r, u in sample:
        k = np.ones((graph.R, graph.U))
        k[r, u] = 0
        keeps.append(k)
    base, _, patched = patched_scores(graph, batch_b, emb_b, emb_p, keeps)
    exact = (np.stack(patched, 1) - base[:, None]) / t
    approx = est[:, sample[:, 0], sample[:, 1]] / t
    assert np.abs(exact).max() > 1e-3
    np.testing.assert_allclose(approx, exact, atol=1e-4 * np.abs(exact).max())


def test_edges_run_on_electra_and_an_unknown_method_is_a_one_line_error(tmp_path, tokenizer):
    model = make_tiny_model(tmp_path, tokenizer, seed=2, kind="electra").double()
    ce = CrossEncoder(model, tokenizer, device="cpu")
    res = ce.attribute_edges(QUERIES, BASE, PERT)  # the graph's forward is checked against the model first
    assert np.isfinite(res.scores).all() and res.scores.shape == (2, len(res.edges))
    with pytest.raises(MatchsigError, match="unknown edge attribution method") as err:
        ce.attribute_edges(QUERIES, BASE, PERT, method="magic")
    assert "\n" not in str(err.value)
