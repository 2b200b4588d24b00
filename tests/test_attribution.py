"""Attribution patching (matchsig.engine.attribution): gradients checked by finite differences and by an
independent float64 integrated-gradient loop on the plain Hugging Face model, and agreement with
exact patching on real diagnostic pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from matchsig import CrossEncoder, MatchsigError

QUERIES = ["what is a flea", "how do birds migrate", "cat food"]
BASE = ["the cat flea is an insect that lives on pets a", "birds fly south in the winter to find food a",
        "dry food for cats and kittens a"]
PERT = ["the cat flea is an insect that lives on pets flea", "birds fly south in the winter to find food migrate",
        "dry food for cats and kittens cat"]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory, tokenizer):
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-attr"), tokenizer, seed=8).double()
    return CrossEncoder(model, tokenizer, device="cpu"), model


def _z_runs(ce, layer):
    """Padded batches of the baseline and perturbed inputs and their z at ``layer`` (B, T, H, d)."""
    out = {}
    for name, docs in (("base", BASE), ("pert", PERT)):
        batch = ce.collate(ce.encode(QUERIES, docs), list(range(len(QUERIES))))
        seen = {}
        with torch.inference_mode():
            ce.forward(batch, hooks={f"blocks.{layer}.attn.hook_z": lambda v, h: seen.setdefault("z", v.clone())})
        out[name] = (batch, seen["z"])
    return out


def test_atp_equals_the_derivative_by_central_differences(tiny64):
    ce, _ = tiny64
    res = ce.attribute(QUERIES, BASE, PERT, site="z", chunk_size=2)
    assert res.method == "atp" and res.delta.shape == (3, 3, 4, 1)
    np.testing.assert_allclose(res.patched, res.baseline[:, None, None, None] + res.delta)
    for layer, head in ((0, 1), (1, 3), (2, 0)):
        runs = _z_runs(ce, layer)
        (batch, z_b), (_, z_p) = runs["base"], runs["pert"]
        real = (batch.part_ids != 5)[..., None]

        def score(eps):
            def move(value, hook):
                out = value.clone()
                out[:, :, head] = value[:, :, head] + eps * torch.where(real, z_p[:, :, head] - z_b[:, :, head], 0.0)
                return out

            with torch.inference_mode():
                return ce.scores_from_logits(ce.forward(batch, hooks={f"blocks.{layer}.attn.hook_z": move}).logits)

        eps = 1e-4
        numeric = (score(eps) - score(-eps)) / (2 * eps)
        np.testing.assert_allclose(res.delta[:, layer, head, 0], numeric, atol=1e-4 * max(1.0, np.abs(numeric).max()))


def test_per_position_attribution_sums_to_the_all_positions_one(tiny64):
    ce, _ = tiny64
    whole = ce.attribute(QUERIES, BASE, PERT, site="z", layers=[1])
    each = ce.attribute(QUERIES, BASE, PERT, site="z", layers=[1], positions="each")
    np.testing.assert_allclose(np.nansum(each.delta, axis=3), whole.delta[..., 0], atol=1e-10)
    lengths = [len(x) for x in ce.encode(QUERIES, BASE).input_ids]
    for i, n in enumerate(lengths):
        assert np.isnan(each.delta[i, :, :, n:]).all() and not np.isnan(each.delta[i, :, :, :n]).any()


def test_ig_equals_an_independent_float64_integrated_gradient(tiny64, tokenizer):
    """The reference: the plain HF model (no matchsig), input embeddings interpolated by a forward hook
    on the embedding module, z read as the input of each layer's attention output projection."""
    ce, model = tiny64
    steps, layer = 8, 1
    res = ce.attribute(QUERIES, BASE, PERT, site="z", method="ig", steps=steps, layers=[layer])
    nh = model.config.num_attention_heads
    for i in range(len(QUERIES)):
        enc_b = tokenizer(QUERIES[i], BASE[i], return_tensors="pt")
        enc_p = tokenizer(QUERIES[i], PERT[i], return_tensors="pt")
        grabbed = {}
        dense = model.bert.encoder.layer[layer].attention.output.dense
        grab = dense.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("z", a[0]))
        with torch.no_grad():
            emb_b = model.bert.embeddings(input_ids=enc_b["input_ids"], token_type_ids=enc_b["token_type_ids"])
            emb_p = model.bert.embeddings(input_ids=enc_p["input_ids"], token_type_ids=enc_p["token_type_ids"])
            model(**enc_b)
            z_b = grabbed["z"].clone()
            model(**enc_p)
            z_p = grabbed["z"].clone()
        total = torch.zeros_like(z_b)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            swap = model.bert.embeddings.register_forward_hook(lambda m, a, out: emb_b + alpha * (emb_p - emb_b))
            try:
                logits = model(**enc_b).logits
                score = torch.log_softmax(logits, -1)[0, 1]
                total += torch.autograd.grad(score, grabbed["z"])[0] / steps
            finally:
                swap.remove()
        grab.remove()
        want = ((z_p - z_b) * total).view(1, -1, nh, z_b.shape[-1] // nh).sum((0, 1, 3)).numpy()
        np.testing.assert_allclose(res.delta[i, 0, :, 0], want, atol=1e-8)


def test_graddrop_equals_an_independent_float64_gradient_with_each_layer_frozen(tiny64, tokenizer):
    """AtP*'s GradDrop recomputed on the plain HF model (no matchsig): for each layer l, forward hooks make the
    outputs of its attention and MLP projections constants; z of every layer is read as the input of its
    attention output projection; graddrop = sum_l |(z_p - z_b) . d score / d z| / (L - 1), per pair and head."""
    ce, model = tiny64
    res = ce.attribute(QUERIES, BASE, PERT, site="z", method="atp*", chunk_size=2)
    plain = ce.attribute(QUERIES, BASE, PERT, site="z", method="atp", chunk_size=2)
    assert res.method == "atp*" and res.graddrop.shape == res.delta.shape == (3, 3, 4, 1)
    np.testing.assert_allclose(res.delta, plain.delta, atol=1e-12)  # the signed estimate is AtP's
    assert plain.graddrop is None and "graddrop" in res.to_frame() and "graddrop" not in plain.to_frame()
    layers, nh = model.config.num_hidden_layers, model.config.num_attention_heads
    blocks = model.bert.encoder.layer
    for i in range(len(QUERIES)):
        enc_b = tokenizer(QUERIES[i], BASE[i], return_tensors="pt")
        enc_p = tokenizer(QUERIES[i], PERT[i], return_tensors="pt")
        grabbed = {}
        grabs = [blocks[l].attention.output.dense.register_forward_pre_hook(
            lambda m, a, l=l: grabbed.__setitem__(l, a[0])) for l in range(layers)]
        with torch.no_grad():
            model(**enc_p)
            z_p = {l: grabbed[l].clone() for l in range(layers)}
        total = np.zeros((layers, nh))
        for dropped in range(layers):
            frozen = [blocks[dropped].attention.output.dense.register_forward_hook(lambda m, a, out: out.detach()),
                      blocks[dropped].output.dense.register_forward_hook(lambda m, a, out: out.detach())]
            try:
                score = torch.log_softmax(model(**enc_b).logits, -1)[0, 1]
                grads = torch.autograd.grad(score, [grabbed[l] for l in range(layers)], allow_unused=True)
            finally:
                for h in frozen:
                    h.remove()
            for l, g in enumerate(grads):
                g = torch.zeros_like(grabbed[l]) if g is None else g
                atp = ((z_p[l] - grabbed[l].detach()) * g).view(-1, nh, g.shape[-1] // nh).sum((0, 2))
                total[l] += np.abs(atp.detach().numpy())
                if dropped == l:
                    assert not atp.abs().sum()  # a node inside the frozen layer gets nothing from it
        for h in grabs:
            h.remove()
        np.testing.assert_allclose(res.graddrop[i, :, :, 0], total / (layers - 1), atol=1e-10)
        # the layers below a node do not touch its gradient: for the last layer's heads every term but their own is AtP's
        np.testing.assert_allclose(total[-1] / (layers - 1), np.abs(plain.delta[i, -1, :, 0]), atol=1e-10)


def test_attribution_agrees_with_exact_patching_on_tfc1_pairs(ce):
    """The embedded-size MiniLM on TFC1 diagnostic pairs: both methods rank heads as exact patching does."""
    from matchsig.engine.attribution import agreement
    from matchsig.data.datasets import load_collection
    from matchsig.analysis.diagnostics import make_pairs
    from matchsig.data.sampling import sample_pool

    demo = load_collection("demo")
    pool = sample_pool(demo, per_grade=1, seed=0, qids=demo.judged_qids()[:8])
    pairs = make_pairs(ce, pool, "tfc1", n=5, max_doc_tokens=100)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    exact = ce.patch(q, b, p, site="z")
    for method in ("atp", "atp*", "ig"):
        res = ce.attribute(q, b, p, site="z", method=method, steps=4)
        np.testing.assert_allclose(res.baseline, exact.baseline, atol=1e-5)
        np.testing.assert_allclose(res.perturbed, exact.perturbed, atol=1e-5)
        agree = agreement(res, exact)
        assert agree["spearman"] >= 0.7 and agree["top_k_overlap"] >= 0.5, (method, agree)
        if method == "atp*":  # GradDrop's ranking figure re-derived with pandas and scipy from the long tables
            from scipy import stats

            gd = res.to_frame().groupby(["layer", "head"])["graddrop"].mean()
            long = exact.to_frame().assign(mag=lambda f: (f["patched"] - f["baseline"]).abs())
            mag = long.groupby(["layer", "head"])["mag"].mean().loc[gd.index]
            assert agree["graddrop_spearman"] == pytest.approx(stats.spearmanr(gd, mag)[0], abs=1e-12)
            print("graddrop agreement", agree)
            assert agree["graddrop_spearman"] >= 0.5, agree
    same = agreement(exact, exact)
    assert same["pearson"] == pytest.approx(1.0) and same["top_k_overlap"] == 1.0


def test_bad_attribution_arguments_are_one_line_errors(ce):
    for kwargs, what in (({"method": "magic"}, "unknown attribution method"), ({"steps": 0}, "steps"),
                         ({"site": "attn.hook_pattern"}, "cannot be patched")):
        with pytest.raises(MatchsigError, match=what) as err:
            ce.attribute(QUERIES, BASE, PERT, **kwargs)
        assert "\n" not in str(err.value)
