"""Named sites and activation patching against an independent float64 computation (tests/_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import bert_forward_hooked, torch_reference_ids
from conftest import make_tiny_model

from matchsig import CrossEncoder, MatchsigError
from matchsig.engine.hooks import SITE_KINDS, parse_site, site_name, site_names

# Aligned by hand: the baseline inserts the filler "a" where the perturbed document inserts a query
# word of one word-piece; lengths differ across pairs, so batches carry padding.
QUERIES = ["what is a flea", "how long do cats live", "cost of a new roof in florida"]
BASE = [
    "The cat flea is a small wingless insect that feeds on blood. a",
    "a Indoor cats live 12 to 18 years; some cats live for more than 20 years.",
    "A new roof costs between 5,000 and 10,000 dollars, depending on the material a a",
]
PERT = [
    "The cat flea is a small wingless insect that feeds on blood. flea",
    "cats Indoor cats live 12 to 18 years; some cats live for more than 20 years.",
    "A new roof costs between 5,000 and 10,000 dollars, depending on the material florida roof",
]
KINDS = {"hook_resid_pre": "resid_pre", "attn.hook_z": "z", "hook_attn_out": "attn_out",
         "hook_resid_mid": "resid_mid", "hook_mlp_out": "mlp_out", "hook_resid_post": "resid_post"}


_PERTURBED_RUNS: dict = {}


def reference_patch(model, tokenizer, query, base, pert, layer, kind, head=None, position=None):
    """Baseline score with (layer, kind)[position, head] taken from the perturbed run, all in float64."""
    ids_b, types_b = torch_reference_ids(tokenizer, query, base)
    ids_p, types_p = torch_reference_ids(tokenizer, query, pert)
    assert len(ids_b) == len(ids_p)
    key = (id(model), query, pert)
    if key not in _PERTURBED_RUNS:
        _PERTURBED_RUNS[key] = bert_forward_hooked(model, ids_p, types_p)[1]
    seen = _PERTURBED_RUNS[key]
    source = seen[(layer, kind)]
    rows = slice(None) if position is None else position

    def put(value):
        if head is None:
            value[rows] = source[rows]
        else:
            value[rows, head] = source[rows, head]
        return value

    score, _ = bert_forward_hooked(model, ids_b, types_b, {(layer, kind): put})
    return score


def test_site_names():
    assert site_name("z", 3) == "blocks.3.attn.hook_z"
    assert site_name("resid_post", 0) == "blocks.0.hook_resid_post"
    assert parse_site("blocks.5.hook_mlp_out", 6).layer == 5
    assert len(site_names(6)) == 6 * len(SITE_KINDS)
    with pytest.raises(MatchsigError, match="unknown site 'hook_q'"):
        parse_site("blocks.1.hook_q")
    with pytest.raises(MatchsigError, match="layer 6 out of range"):
        parse_site("blocks.6.attn.hook_z", 6)


def test_reference_without_hooks_is_the_plain_reference(hf_model, tokenizer):
    from _reference import bert_score

    ids, types = torch_reference_ids(tokenizer, QUERIES[0], BASE[0])
    assert abs(bert_forward_hooked(hf_model, ids, types)[0] - bert_score(hf_model, ids, types)) < 1e-12


def test_patching_nothing_returns_the_baseline(ce):
    plain = ce.score(QUERIES, BASE)
    # identity hooks at every named site
    hooks = {name: (lambda value, hook: None) for name in site_names(ce.num_layers)}
    np.testing.assert_allclose(ce.run_with_hooks(QUERIES, BASE, hooks), plain, atol=1e-6)
    # perturbed == baseline: every patch of every site is the baseline score
    for kind in SITE_KINDS:
        res = ce.patch(QUERIES, BASE, BASE, site=kind, layers=[0, 3, 5])
        np.testing.assert_allclose(res.baseline, plain, atol=1e-6)
        np.testing.assert_allclose(res.patched, np.broadcast_to(plain[:, None, None, None], res.patched.shape), atol=1e-6)
    # positions where both inputs are the same token: the embeddings there are equal, so nothing moves
    res = ce.patch(QUERIES[:1], BASE[:1], PERT[:1], site="resid_pre", layers=[0], positions=[0, 1, 2, 3])
    np.testing.assert_allclose(res.patched[0, 0, 0], res.baseline[0], atol=1e-6)


def test_full_residual_patch_gives_the_perturbed_score(ce):
    plain_p = ce.score(QUERIES, PERT)
    last = ce.patch(QUERIES, BASE, PERT, site="resid_post", layers=[ce.num_layers - 1])
    np.testing.assert_allclose(last.perturbed, plain_p, atol=1e-6)
    np.testing.assert_allclose(last.patched[:, 0, 0, 0], plain_p, atol=1e-5)
    np.testing.assert_allclose(last.effect[:, 0, 0, 0], 1.0, atol=1e-3)
    first = ce.patch(QUERIES, BASE, PERT, site="resid_pre", layers=[0])
    np.testing.assert_allclose(first.patched[:, 0, 0, 0], plain_p, atol=1e-5)
    assert np.abs(plain_p - last.baseline).min() > 1e-3  # the perturbation moves every pair


@pytest.mark.parametrize("kind,layer,head,position", [
    ("attn.hook_z", 2, 7, None), ("attn.hook_z", 4, 8, 0), ("hook_resid_post", 1, None, None),
    ("hook_resid_pre", 3, None, 5), ("hook_mlp_out", 5, None, None), ("hook_attn_out", 2, None, None),
    ("hook_resid_mid", 4, None, 0),
])
def test_single_site_equals_float64_reference(ce, hf_model, tokenizer, kind, layer, head, position):
    positions = None if position is None else [position]
    heads = None if head is None else [head]
    res = ce.patch(QUERIES, BASE, PERT, site=kind, layers=[layer], heads=heads, positions=positions)
    for i in range(len(QUERIES)):
        want = reference_patch(hf_model, tokenizer, QUERIES[i], BASE[i], PERT[i], layer, KINDS[kind], head, position)
        assert abs(res.patched[i, 0, 0, 0] - want) <= 1e-5, (kind, i, res.patched[i, 0, 0, 0], want)
    assert np.abs(res.patched[:, 0, 0, 0] - res.baseline).max() > 1e-4  # the patch did something


def test_last_layer_acts_only_through_cls(ce):
    """Structure, not arithmetic: in the last layer only the [CLS] row reaches the classifier, so patching
    any other position there cannot move the score, and patching [CLS] does."""
    res = ce.patch(QUERIES, BASE, PERT, site="z", layers=[ce.num_layers - 1], positions=[0, 1, 5, 9])
    assert np.abs(res.patched[..., 1:] - res.baseline[:, None, None, None]).max() <= 1e-6  # float rounding only
    assert np.abs(res.patched[..., 0] - res.baseline[:, None, None]).max() > 1e-3


def test_patched_forwards_run_the_last_layer_for_cls_only(ce):
    """The grid's patched forwards compute the last layer's output for the [CLS] row alone (checked once per
    model) and give the grid of full forwards."""
    _, _, layers = ce._encoder_layers()
    rows = []
    handle = layers[-1].intermediate.register_forward_hook(lambda m, a, out: rows.append(a[0].shape[1]))
    try:
        fast = ce.patch(QUERIES, BASE, PERT, site="z")
        resid = ce.patch(QUERIES, BASE, PERT, site="resid_post", layers=[1, ce.num_layers - 1], positions=[0, 4])
        assert ce._patch_cls_only is True
        assert rows.count(1) >= ce.num_layers * 12 * len(QUERIES) // 64  # the patched forwards, batched
        ce._patch_cls_only = False  # as for a model that failed the check
        full = ce.patch(QUERIES, BASE, PERT, site="z")
        resid_full = ce.patch(QUERIES, BASE, PERT, site="resid_post", layers=[1, ce.num_layers - 1], positions=[0, 4])
    finally:
        handle.remove()
        ce._patch_cls_only = None
    np.testing.assert_allclose(fast.patched, full.patched, atol=2e-6, rtol=0)
    np.testing.assert_allclose(resid.patched, resid_full.patched, atol=2e-6, rtol=0)
    assert np.abs(fast.patched - fast.baseline[:, None, None, None]).max() > 1e-3


def test_a_head_reading_other_rows_is_patched_with_full_forwards(tmp_path, tokenizer):
    """A model whose score reads another row of the last layer (here a pooler on row 1, the first query token)
    fails the check: a warning, then full forwards, which an independent route (a hooked full forward per pair)
    confirms."""
    folder, _ = _tiny(tmp_path, "bert", tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    pooler = ce.model.bert.pooler
    pooler.forward = lambda hidden: torch.tanh(pooler.dense(hidden[:, 1]))
    with pytest.warns(UserWarning, match="reads more than the last layer's \\[CLS\\] row"):
        res = ce.patch(QUERIES, BASE, PERT, site="z", layers=[2], heads=[1], positions=[1])
    assert ce._patch_cls_only is False
    _, cache = ce.run_with_cache(QUERIES, PERT, ["blocks.2.attn.hook_z"])
    for i in range(len(QUERIES)):
        def swap(value, hook, i=i):
            value = value.clone()
            value[0, 1, 1] = cache["blocks.2.attn.hook_z"][i][1, 1]
            return value

        want = ce.run_with_hooks([QUERIES[i]], [BASE[i]], {"blocks.2.attn.hook_z": swap})[0]
        assert abs(res.patched[i, 0, 0, 0] - want) <= 1e-5
    assert np.abs(res.patched[:, 0, 0, 0] - res.baseline).max() > 1e-4  # a non-[CLS] row matters to this head


def test_head_grid_equals_reference_and_is_not_trivial(ce, hf_model, tokenizer):
    res = ce.patch(QUERIES[2:], BASE[2:], PERT[2:], site="z", layers=[1, 4])
    assert res.patched.shape == (1, 2, 12, 1)
    for a, layer in enumerate([1, 4]):
        for head in (0, 9):
            want = reference_patch(hf_model, tokenizer, QUERIES[2], BASE[2], PERT[2], layer, "z", head)
            assert abs(res.patched[0, a, head, 0] - want) <= 1e-5
    assert np.nanstd(res.effect) > 1e-3


def _effect_gap(a, b) -> np.ndarray:
    """|effect a - effect b| in score units (x |perturbed - baseline|): effects are ratios, and this
    model's random head moves these pairs' scores by only ~0.01, which scales fp32 rounding up."""
    return np.abs(a.effect - b.effect) * np.abs(a.perturbed - a.baseline)[:, None, None, None]


def test_padding_and_batch_composition_do_not_change_effects_in_float64(minilm_folder):
    """The logic (row masks, padding, chunking, prefix reuse) in float64, where rounding cannot hide a slip."""
    ce64 = CrossEncoder.load(minilm_folder, device="cpu", dtype=torch.float64)
    for kind, positions in (("z", None), ("resid_post", "each"), ("mlp_out", [0, 4])):
        args = dict(site=kind, positions=positions, layers=[1, 4])
        together = ce64.patch(QUERIES, BASE, PERT, batch_size=64, chunk_size=16, **args)
        small = ce64.patch(QUERIES, BASE, PERT, batch_size=5, chunk_size=2, **args)
        np.testing.assert_allclose(small.effect, together.effect, atol=1e-6)
        for i in range(len(QUERIES)):
            alone = ce64.patch(QUERIES[i:i + 1], BASE[i:i + 1], PERT[i:i + 1], batch_size=7, **args)
            width = alone.patched.shape[-1]
            np.testing.assert_allclose(alone.effect[0], together.effect[i, ..., :width], atol=1e-6)


def test_padding_and_batch_composition_do_not_change_patched_scores(ce):
    """fp32: within the engine's own padding noise (ce.score moves by up to ~1.4e-6 with padding)."""
    together = ce.patch(QUERIES, BASE, PERT, site="z", batch_size=64, chunk_size=16)
    small = ce.patch(QUERIES, BASE, PERT, site="z", batch_size=5, chunk_size=2)
    np.testing.assert_allclose(small.patched, together.patched, atol=2e-6)
    assert _effect_gap(small, together).max() <= 2e-6
    for i in range(len(QUERIES)):
        alone = ce.patch(QUERIES[i:i + 1], BASE[i:i + 1], PERT[i:i + 1], site="z", batch_size=7)
        np.testing.assert_allclose(alone.patched[0], together.patched[i], atol=2e-6)
    # per position: rows past a pair's length are NaN, the others equal the one-pair run
    grid = ce.patch(QUERIES, BASE, PERT, site="resid_post", layers=[2], positions="each")
    n_tokens = [len(x) for x in ce.encode(QUERIES, BASE).input_ids]
    for i, t in enumerate(n_tokens):
        assert np.isfinite(grid.patched[i, 0, 0, :t]).all() and np.isnan(grid.patched[i, 0, 0, t:]).all()
    alone = ce.patch(QUERIES[:1], BASE[:1], PERT[:1], site="resid_post", layers=[2], positions="each")
    np.testing.assert_allclose(alone.patched[0, 0, 0], grid.patched[0, 0, 0, :n_tokens[0]], atol=1e-6)


def test_grid_reuses_the_baseline_and_perturbed_runs(ce):
    """A (layer x head) grid runs each chunk's baseline and perturbed input once, then batches of patches."""
    ce._patch_cls_only = None  # as for a freshly loaded model: the first grid also runs the [CLS]-only check
    calls = []
    handle = ce.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        ce.patch(QUERIES, BASE, PERT, site="z", batch_size=36, chunk_size=16)
        first = len(calls)
        ce.patch(QUERIES, BASE, PERT, site="z", batch_size=36, chunk_size=16)
    finally:
        handle.remove()
    # one chunk: 2 runs, then per layer 12 heads x 3 pairs = 36 rows = one forward (+ the check, once per model)
    assert first == 3 + ce.num_layers and len(calls) - first == 2 + ce.num_layers


def test_bad_input_is_one_line(ce):
    cases = [
        (dict(site="hook_q"), "unknown site 'hook_q'"),
        (dict(site="z", layers=[6]), r"layer 6 out of range \(0..5\)"),
        (dict(site="z", heads=[12]), r"head 12 out of range \(0..11\)"),
        (dict(site="resid_post", heads=[0]), "has no heads"),
        (dict(site="z", positions="all"), "bad positions"),
        (dict(site="z", positions=[999]), "position 999 out of range"),
        (dict(site="blocks.2.attn.hook_z", layers=[3]), "names layer 2"),
        (dict(site="z", layers=[]), "no layers"),
        (dict(site="z", batch_size=0), "batch_size"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MatchsigError, match=message) as err:
            ce.patch(QUERIES, BASE, PERT, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(MatchsigError, match="pair 1: the baseline has .* tokens and the perturbed input"):
        ce.patch(QUERIES, BASE, [PERT[0], PERT[1] + " cats", PERT[2]])
    with pytest.raises(MatchsigError, match="3 queries, 2 baseline"):
        ce.patch(QUERIES, BASE[:2], PERT)

    def bad_shape(value, hook):
        return value[:, :1]

    with pytest.raises(MatchsigError, match="returned shape"):
        ce.run_with_hooks(QUERIES, BASE, {"blocks.0.hook_mlp_out": bad_shape})


def test_run_with_cache_matches_reference(ce, hf_model, tokenizer):
    names = ["blocks.1.attn.hook_z", "blocks.3.hook_resid_post", "blocks.0.hook_mlp_out"]
    scores, cache = ce.run_with_cache(QUERIES, BASE, names)
    np.testing.assert_allclose(scores, ce.score(QUERIES, BASE), atol=1e-6)
    for i in range(len(QUERIES)):
        ids, types = torch_reference_ids(tokenizer, QUERIES[i], BASE[i])
        _, seen = bert_forward_hooked(hf_model, ids, types)
        for name in names:
            point = parse_site(name)
            got = cache[name][i].double().numpy()
            assert got.shape[0] == len(ids)
            np.testing.assert_allclose(got, seen[(point.layer, KINDS[point.kind])], rtol=1e-5, atol=2e-5)


# ---- tiny configs ------------------------------------------------------------------------------


def _tiny(tmp_path, kind, tokenizer):
    folder = tmp_path / kind
    return folder, make_tiny_model(folder, tokenizer, seed=11, kind=kind, max_positions=128)


def test_tiny_bert_head_patch_equals_reference(tmp_path, tokenizer):
    folder, model = _tiny(tmp_path, "bert", tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    res = ce.patch(QUERIES, BASE, PERT, site="z", positions=[3])
    for i in range(len(QUERIES)):
        for layer in range(3):
            for head in (0, 3) if i else range(4):
                want = reference_patch(model, tokenizer, QUERIES[i], BASE[i], PERT[i], layer, "z", head, 3)
                assert abs(res.patched[i, layer, head, 0] - want) <= 1e-5


def test_tiny_electra_residual_identities(tmp_path, tokenizer):
    folder, _ = _tiny(tmp_path, "electra", tokenizer)
    ce = CrossEncoder.load(folder, device="cpu")
    pert = ce.score(QUERIES, PERT)
    for kind, layer in (("resid_post", 2), ("resid_pre", 0)):
        res = ce.patch(QUERIES, BASE, PERT, site=kind, layers=[layer])
        np.testing.assert_allclose(res.patched[:, 0, 0, 0], pert, atol=1e-5)
    mlp = ce.patch(QUERIES, BASE, PERT, site="mlp_out")
    assert np.isfinite(mlp.patched).all() and np.abs(mlp.patched[..., 0, 0] - mlp.baseline[:, None]).max() > 1e-4


# ---- the embedded model on diagnostic pairs -----------------------------------------------------


def test_embedded_model_on_tfc1_pairs():
    from matchsig.data.datasets import load_collection
    from matchsig.analysis.diagnostics import make_pairs
    from matchsig.data.sampling import sample_pool

    emb = CrossEncoder.load("embedded", device="cpu")
    pool = sample_pool(load_collection("demo"), per_grade=1, seed=0)
    pairs = make_pairs(emb, pool, "tfc1", n=8, seed=0)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    # padding and batch composition (fp32): the engine's own rounding level, also on the effects of
    # the pairs that the perturbation really moves
    wide = emb.patch(q, b, p, site="z", layers=[0, 4])
    other = emb.patch(q, b, p, site="z", layers=[0, 4], batch_size=11, chunk_size=3)
    moved = np.abs(wide.perturbed - wide.baseline) >= 0.1
    assert moved.sum() >= 3
    np.testing.assert_allclose(other.patched, wide.patched, atol=5e-6)
    assert np.abs(other.effect - wide.effect)[moved].max() <= 2e-5
    q, b, p = q[:2], b[:2], p[:2]
    res = emb.patch(q, b, p, site="z")
    np.testing.assert_allclose(res.baseline, emb.score(q, b), atol=1e-6)
    np.testing.assert_allclose(res.perturbed, emb.score(q, p), atol=1e-6)
    full = emb.patch(q, b, p, site="resid_post", layers=[5])
    np.testing.assert_allclose(full.patched[:, 0, 0, 0], res.perturbed, atol=1e-5)
    # each head alone against a one-pair run (batch composition) for a sample of heads
    for i in range(len(q)):
        one = emb.patch(q[i:i + 1], b[i:i + 1], p[i:i + 1], site="z", layers=[3], heads=[0, 7])
        np.testing.assert_allclose(one.patched[0, 0, :, 0], res.patched[i, 3, [0, 7], 0], atol=1e-6)
    frame = res.to_frame()
    assert len(frame) == len(q) * 6 * 12 and set(frame.columns) >= {"layer", "head", "effect"}
