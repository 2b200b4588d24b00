"""Fast exact paths agree with an independent float64 reference (tests/_reference.py) to <= 1e-5 in fp32.

The default cut kernel ("correct") computes post-softmax zeroing from one fused pass of PyTorch's
private CPU flash-attention op (output and row log-sum-exp) plus a correction on the non-document
columns; the two-pass kernel ("fused") as SDPA(masked) * exp(lse_masked - lse_full). These tests pin
both to the float64 reference, on a real pretrained model and on tiny configs, with fully cut rows,
padding, per-row mixed configurations, head subsets, RoBERTa-style layouts, long queries, and the
fallback when the private op fails. Only the tests that exercise the private op are skipped when this
torch lacks it (``needs_op``); the others run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import bert_score, cuts_for, torch_reference_ids
from test_attention_stats import reference_stats

from matchsig import Ablation, CrossEncoder
from matchsig.engine import kernels as K
from matchsig.engine.context import ForwardContext

QUERIES = ["what is a flea", "how long do cats live", "cost of a new roof in florida", "x"]
DOCS = [
    "The cat flea is a small wingless insect that feeds on the blood of cats and dogs.",
    "Indoor cats live 12 to 18 years; some cats live for more than 20 years.",
    "A new roof costs between 5,000 and 10,000 dollars, depending on the roofing material.",
    "word " * 60,  # a long one: every other pair of the batch is padded
]

SPECS = [
    Ablation.parse("D<-D"),
    Ablation.parse("CLS<-*"),  # a fully cut row
    Ablation.parse("*<-*"),  # every row fully cut
    Ablation.parse("Q<-D,D<-Q", layers=[1, 4], heads=[0, 5, 11]),  # heads differ: per-head masks
    Ablation.parse("SEP1<-*,*<-SEP2", layers=[0]),
    Ablation.parse("CLS<-Q", up_to_layer=3),
]

needs_op = pytest.mark.skipif(K._flash_cpu is None, reason="private fused CPU attention op not in this torch")


def _cuts(ab) -> dict:
    """{layer: {head: directions}} of an Ablation, from its spec string, layers and heads only."""
    if ab == "none" or (not isinstance(ab, str) and ab.is_empty):
        return {}
    if isinstance(ab, str):
        return cuts_for(ab, None, None, 6, 12)
    return cuts_for(ab.spec, ab.layers, ab.heads, 6, 12)


_MEMO: dict = {}


def reference_pair(model, tokenizer, query: str, doc: str, cuts: dict):
    """(score, per-layer attention maps before the cut) of the float64 reference, memoised per module."""
    frozen = tuple(sorted((l, tuple(sorted((h, tuple(sorted(d))) for h, d in hs.items()))) for l, hs in cuts.items()))
    key = (id(model), query, doc, frozen)
    if key not in _MEMO:
        ids, types = torch_reference_ids(tokenizer, query, doc)
        score, probs, _ = bert_score(model, ids, types, cuts, return_probs=True)
        _MEMO[key] = (score, np.stack(probs))
    return _MEMO[key]


def reference_scores(model, tokenizer, queries, docs, cuts: dict) -> np.ndarray:
    return np.array([reference_pair(model, tokenizer, q, d, cuts)[0] for q, d in zip(queries, docs)])


class _Count:
    """Wrap the private op to count calls (proves the fused path ran)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


@pytest.fixture
def counted(monkeypatch):
    wrapper = _Count(K._flash_cpu)
    monkeypatch.setattr(K, "_flash_cpu", wrapper)
    return wrapper


@pytest.fixture(scope="module")
def spec_references(hf_model, tokenizer):
    return {ab.name: reference_scores(hf_model, tokenizer, QUERIES, DOCS, _cuts(ab)) for ab in SPECS}


@needs_op
@pytest.mark.parametrize("cut_kernel", ["auto", "fused", "math"])
def test_cut_kernels_equal_reference_on_real_model(ce, counted, monkeypatch, cut_kernel, spec_references):
    monkeypatch.setattr(K.KERNELS, "default", cut_kernel)
    for ab in SPECS:
        got = ce.score(QUERIES, DOCS, ablation=ab, kernel="auto", batch_size=4)
        np.testing.assert_allclose(got, spec_references[ab.name], atol=1e-5, rtol=0, err_msg=ab.name)
    assert (counted.calls > 0) == (cut_kernel != "math")


def test_eager_kernel_equals_reference_on_real_model(ce, spec_references):
    """kernel="eager" (the explicit softmax everywhere): needs no private op."""
    for ab in SPECS:
        got = ce.score(QUERIES, DOCS, ablation=ab, kernel="eager", batch_size=4)
        np.testing.assert_allclose(got, spec_references[ab.name], atol=1e-5, rtol=0, err_msg=ab.name)


@needs_op
def test_default_cut_kernel_is_one_fused_pass_per_layer(ce, counted):
    """The default ("correct") kernel runs the private op once per layer, as plain inference does."""
    assert K.auto_cut_kernel("cpu", torch.float32) == "correct"
    ce.score(QUERIES[:2], DOCS[:2], ablation="D<-D", batch_size=2)
    assert counted.calls == ce.num_layers


@needs_op
def test_fused_per_row_mixed_configurations(ce, counted, hf_model, tokenizer):
    """Several configurations of the same pairs in one batch (per-row cut blocks), with padding."""
    specs = ["none", "D<-D", "CLS<-*", Ablation.parse("Q<-D", heads=[3]), "*<-*", Ablation.parse("D<-Q", layers=[5])]
    fused = ce.score_many(QUERIES, DOCS, specs, batch_size=7)
    for k, spec in enumerate(specs):
        want = reference_scores(hf_model, tokenizer, QUERIES, DOCS, _cuts(spec))
        np.testing.assert_allclose(fused[k], want, atol=1e-5, rtol=0, err_msg=str(spec))
    assert counted.calls > 0
    # and each row equals the configuration run alone (batch independence)
    for k, spec in enumerate(specs):
        np.testing.assert_allclose(fused[k], ce.score(QUERIES, DOCS, ablation=spec), atol=1e-6, rtol=0)


def _raw_cut(kernel, q, k, v, ctx, block, scaling):
    bias = ctx.key_bias(q.dtype)
    return (K._fused if kernel == "fused" else K._correct)(K.Call(q, k, v, bias, scaling, ctx, block))[0]


@needs_op
@pytest.mark.parametrize("kernel", ["correct", "fused"])
def test_fully_cut_rows_give_zero_attention_output(kernel):
    """Both kernels on raw tensors: a fully cut row gives 0, an uncut row gives plain SDPA."""
    torch.manual_seed(0)
    b, h, t, d = 2, 3, 7, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    part_ids = torch.tensor([[0, 1, 2, 3, 3, 4, 5], [0, 1, 1, 2, 3, 4, 4]])
    ctx = ForwardContext(part_ids=part_ids)
    block = torch.zeros(1, h, 6, 6, dtype=torch.bool)
    block[0, :, 0, :5] = True  # CLS<-*
    block[0, 1, 3, 3] = True  # D<-D in head 1 only
    bias = ctx.key_bias(q.dtype)
    out = _raw_cut(kernel, q, k, v, ctx, block, 0.5)  # (B, T, H, D)
    scores = (q @ k.transpose(-1, -2)).double() * 0.5 + bias.double()
    probs = torch.softmax(scores, -1).masked_fill(ctx.cut_mask(block), 0.0)
    want = (probs @ v.double()).transpose(1, 2)
    assert torch.allclose(out.double(), want, atol=1e-6)
    assert out[:, 0].abs().max() == 0  # CLS rows: everything cut
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.5).transpose(1, 2)
    if kernel == "fused":
        assert torch.equal(out[:, 1, 0], plain[:, 1, 0])  # an uncut row is bit-identical to SDPA
    else:  # an uncut row is SDPA minus an exact zero correction
        assert torch.allclose(out[:, 1, 0], plain[:, 1, 0], atol=1e-6)


def _random_batch(seed: int, b: int, h: int, t: int, d: int):
    """Random part layouts (RoBERTa-style double separators, queries longer than documents, empty
    documents, padding), q/k/v and per-row, per-head cut blocks that never cut padding."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(b):
        nq, nd = (int(x) for x in torch.randint(0, 12, (2,), generator=g))
        nsep = int(torch.randint(1, 3, (1,), generator=g))
        row = [0] + [1] * nq + [2] * nsep + [3] * nd + [4]
        rows.append((row + [5] * t)[:t])
    part_ids = torch.tensor(rows)
    q, k, v = (torch.randn(b, h, t, d, generator=g) * 2 for _ in range(3))
    block = torch.rand(b, h, 6, 6, generator=g) < 0.3
    block[..., 5, :] = False
    block[..., :, 5] = False
    return part_ids, q, k, v, block


def _zeroed_reference(q, k, v, bias, cut, scaling):
    """Float64 post-softmax zeroing without renormalisation, (B, T, H, D)."""
    scores = (q @ k.transpose(-1, -2)).double() * scaling + bias.double()
    return (torch.softmax(scores, -1).masked_fill(cut, 0.0) @ v.double()).transpose(1, 2)


@needs_op
@pytest.mark.parametrize("rows_mode", ["all", "gathered"])
@pytest.mark.parametrize("head_dim", [8, 16])
@pytest.mark.parametrize("seed", range(4))
def test_correct_kernel_on_random_layouts_and_blocks(seed, head_dim, rows_mode, monkeypatch):
    """Random layouts and per-row, per-head cut blocks: the one-pass kernel equals float64
    post-softmax zeroing, on both routes (head dimension 8: the widened pass, where document rows
    read their own value block; 16: the correction of document rows over the short columns) and
    with the corrected rows taken all at once or gathered."""
    from matchsig.engine import correction

    monkeypatch.setattr(correction, "ALL_ROWS_ABOVE", 0.0 if rows_mode == "all" else 1.0)
    part_ids, q, k, v, block = _random_batch(seed, 5, 4, 23, head_dim)
    ctx = ForwardContext(part_ids=part_ids)
    out = _raw_cut("correct", q, k, v, ctx, block, 0.3)
    pl = correction.plan(ctx, block, correction.can_widen(q))
    assert (pl.value_mask is not None) == (head_dim == 8)  # the route this case is meant to test ran
    assert pl.coef_t is not None and pl.all_rows == (rows_mode == "all")
    want = _zeroed_reference(q, k, v, ctx.key_bias(q.dtype), ctx.cut_mask(block), 0.3)
    real = (part_ids != 5)[:, :, None, None]  # padding rows are never read
    assert torch.allclose((out.double() * real), want * real, atol=1e-5)  # |v| ~ 6: fp32 rounding


@needs_op
@pytest.mark.parametrize("rows_mode", ["all", "gathered"])
@pytest.mark.parametrize("head_dim", [8, 16])
@pytest.mark.parametrize("mask", ["causal", "window", "per-head"])
def test_correct_kernel_with_per_row_masks(mask, head_dim, rows_mode, monkeypatch):
    """A per-row mask (a decoder's causal mask, ModernBERT's sliding window, T5's per-head position
    bias) enters both the fused pass and the short-column correction at the right rows and columns."""
    from matchsig.engine import correction

    monkeypatch.setattr(correction, "ALL_ROWS_ABOVE", 0.0 if rows_mode == "all" else 1.0)
    b, h, t = 5, 4, 23
    part_ids, q, k, v, block = _random_batch(7, b, h, t, head_dim)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = {"causal": j <= i, "window": (i - j).abs() <= 4, "per-head": torch.ones(t, t, dtype=torch.bool)}[mask]
    allowed = allowed.expand(b, 1, t, t) & (part_ids != 5)[:, None, None, :]
    allowed = allowed | (part_ids == 5)[:, None, :, None]  # padding rows read everything: no empty row
    bias = torch.zeros(b, 1, t, t).masked_fill(~allowed, float("-inf"))
    if mask == "per-head":
        bias = bias + torch.randn(b, h, t, t, generator=torch.Generator().manual_seed(1))
    ctx = ForwardContext(part_ids=part_ids)
    out = K._correct(K.Call(q, k, v, bias, 0.3, ctx, block))[0]
    want = _zeroed_reference(q, k, v, bias, ctx.cut_mask(block), 0.3)
    real = (part_ids != 5)[:, :, None, None]
    assert torch.isfinite(out).all()
    assert torch.allclose((out.double() * real), want * real, atol=1e-5)


@needs_op
def test_fallback_when_the_private_op_fails(ce, monkeypatch, hf_model, tokenizer):
    ab = Ablation.parse("D<-D,CLS<-*")
    want = reference_scores(hf_model, tokenizer, QUERIES, DOCS, _cuts(ab))

    def broken(*a, **k):
        raise RuntimeError("private op changed")

    monkeypatch.setattr(K, "_flash_cpu", broken)
    monkeypatch.setattr(K.KERNELS, "broken", {})
    with pytest.warns(RuntimeWarning, match="private op changed"):
        got = ce.score(QUERIES, DOCS, ablation=ab)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # falls back to the explicit softmax
    assert K.KERNELS.broken.get(K.PRIVATE_OP) is not None and not K.fused_available()


@needs_op
def test_self_check_refuses_a_kernel_with_wrong_conventions(ce, monkeypatch, spec_references):
    """A private op whose log-sum-exp convention changed (here: log2 instead of ln) is caught by the
    first-call check and replaced by the explicit softmax, not used to give wrong ablations."""
    real = K._flash_cpu

    def log2_lse(*a, **k):
        out, lse = real(*a, **k)
        return out, lse / np.log(2.0)

    ab = Ablation.parse("D<-D")
    monkeypatch.setattr(K, "_flash_cpu", log2_lse)
    monkeypatch.setattr(K.KERNELS, "broken", {})
    monkeypatch.setattr(K.KERNELS, "checked", set())
    with pytest.warns(RuntimeWarning, match="disagrees with the explicit softmax"):
        got = ce.score(QUERIES, DOCS, ablation=ab)
    np.testing.assert_allclose(got, spec_references["D<-D"], atol=1e-5, rtol=0)
    assert not K.fused_available()


def test_fused_on_tiny_configs_matches_reference(tmp_path, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=160, num_labels=1, initializer_range=0.3)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ce = CrossEncoder.load(tmp_path, device="cpu")
    for spec, layers, heads in [("D<-D", None, None), ("CLS<-*", None, None), ("Q<-D,D<-Q", [1], [0, 3]),
                                ("*<-*", [2], None)]:
        ab = Ablation.parse(spec, layers=layers, heads=heads)
        fused = ce.score(QUERIES, DOCS, ablation=ab, batch_size=4)
        for i in range(len(QUERIES)):
            ids, types = torch_reference_ids(tokenizer, QUERIES[i], DOCS[i])
            want = bert_score(model, ids, types, cuts_for(spec, layers, heads, 3, 4))
            assert abs(fused[i] - want) <= 1e-5, (spec, i)


def test_layer_curve_with_fused_kernel(ce, hf_model, tokenizer):
    curve = ce.score_layer_curve(QUERIES, DOCS, "CLS<-*", batch_size=3)
    for layer in (0, 3, 5):
        want = reference_scores(hf_model, tokenizer, QUERIES, DOCS, cuts_for("CLS<-*", range(layer + 1), None, 6, 12))
        np.testing.assert_allclose(curve[layer], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cut_kernel", [pytest.param("auto", marks=needs_op), "math"])
@pytest.mark.parametrize("ablation", [None, "D<-D", Ablation.parse("CLS<-*,Q<-D", layers=[0, 2], heads=[1, 4])])
def test_statistics_equal_reference_maps(ce, counted, monkeypatch, ablation, cut_kernel, hf_model, tokenizer):
    """Statistics from sub-blocks (fused path) and from full maps (math path) both equal statistics of
    the float64 reference's attention maps (taken before each layer's cut, in the ablated forward)."""
    from matchsig.engine.attention_stats import DIRECTIONS, STATS

    monkeypatch.setattr(K.KERNELS, "default", cut_kernel)
    qs, ds = QUERIES + ["flea"], DOCS + ["flea flea cat"]  # padding, repeated tokens (exact matches)
    got = ce.attention_stats(qs, ds, ablation=ablation, batch_size=5).values
    assert (counted.calls > 0) == (cut_kernel == "auto")
    assert np.isfinite(got).all()
    cuts = {} if ablation is None else _cuts(ablation)
    for n, (q, d) in enumerate(zip(qs, ds)):
        ids, _ = torch_reference_ids(tokenizer, q, d)
        ref = reference_stats(reference_pair(hf_model, tokenizer, q, d, cuts)[1], ids, tokenizer(q, d).sequence_ids(0))
        for k, (direction, _, _) in enumerate(DIRECTIONS):
            for j, stat in enumerate(STATS):
                np.testing.assert_allclose(got[n, :, :, k, j], ref[(direction, stat)], atol=2e-5, rtol=1e-4,
                                           err_msg=f"{direction} {stat} pair {n}")


@needs_op
def test_bf16_on_cpu_one_pass_kernel_and_fp32_agreement(minilm_folder):
    """bf16 weights on CPU: the one-pass cut kernel agrees with the explicit softmax in bf16, and both
    stay close to fp32 (measured here: 0.008 and 0.010 at most, against a score spread (std) of
    0.24-0.46; Spearman >= 0.993)."""
    from scipy.stats import spearmanr

    assert K.auto_cut_kernel("cpu", torch.bfloat16) == "correct"
    ce16 = CrossEncoder.load(minilm_folder, device="cpu", dtype="bf16")
    ce32 = CrossEncoder.load(minilm_folder, device="cpu")
    qs, ds = QUERIES * 3, DOCS[1:] + DOCS[:1] + DOCS + DOCS[2:] + DOCS[:2]  # 12 pairs, some not matching
    specs = ["none", "D<-D", "CLS<-Q", Ablation.parse("Q<-D,D<-Q", heads=[0, 5])]
    one_pass = ce16.score_many(qs, ds, specs, batch_size=6)
    ref32 = ce32.score_many(qs, ds, specs, batch_size=6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K.KERNELS, "default", "math")
        math16 = ce16.score_many(qs, ds, specs, batch_size=6)
    assert np.isfinite(one_pass).all()
    np.testing.assert_allclose(one_pass, math16, atol=0.03, rtol=0)
    np.testing.assert_allclose(one_pass, ref32, atol=0.03, rtol=0)
    for k in range(len(specs)):
        assert spearmanr(one_pass[k], ref32[k]).statistic >= 0.97, specs[k]
    assert not np.allclose(one_pass[0], one_pass[1], atol=0.1)  # the cut did change the scores


def test_cuda_glue_with_an_emulated_efficient_kernel():
    """The CUDA branch's call convention, on CPU: an emulated memory-efficient kernel that enforces
    its input contract (bias row stride a multiple of 16 elements, unit stride along keys) and
    pads its log-sum-exp to 32 rows; the glue must slice it back and feed the one-pass correction."""
    calls = []

    def efficient(q, k, v, bias, compute_lse, scale=None):
        assert compute_lse is True and bias.shape == (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        assert bias.stride(-1) == 1 and all(st % 16 == 0 for st in bias.stride()[:-1]), bias.stride()
        calls.append(bias.stride())
        scores = (q @ k.transpose(-1, -2)) * scale + bias
        lse = torch.logsumexp(scores, -1)
        pad_rows = (-q.shape[2]) % 32
        lse = torch.cat([lse, torch.full(lse.shape[:2] + (pad_rows,), float("inf"))], -1)
        return torch.softmax(scores, -1) @ v, lse, torch.empty(()), torch.empty(())

    torch.manual_seed(5)
    b, h, t, d = 3, 2, 21, 8  # t neither a multiple of 16 nor of 32
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    part_ids = torch.tensor([[0, 1, 1, 2] + [3] * 16 + [4], [0, 1, 2] + [3] * 6 + [4] + [5] * 11,
                             [0] + [1] * 12 + [2, 3, 3, 4] + [5] * 4])
    ctx = ForwardContext(part_ids=part_ids)
    bias = ctx.key_bias(q.dtype)
    out_full, lse = K._efficient_lse(efficient, q, k, v, bias, 0.4)
    assert calls and lse.shape == (b, h, t) and torch.isfinite(lse).all()
    block = torch.zeros(1, h, 6, 6, dtype=torch.bool)
    block[0, :, 3, 3] = True  # D<-D
    block[0, 1, 1, :5] = True  # Q<-* in head 1
    got = K._corrected(q, k, v, out_full, lse, block, ctx, 0.4)
    scores = (q @ k.transpose(-1, -2)).double() * 0.4 + bias.double()
    want = (torch.softmax(scores, -1).masked_fill(ctx.cut_mask(block), 0.0) @ v.double()).transpose(1, 2)
    real = (part_ids != 5)[:, :, None, None]
    assert torch.allclose(got.double() * real, want * real, atol=1e-5)
