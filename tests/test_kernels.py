"""The kernel table (matchsig.engine.kernels) and the attention sites (attn.hook_pattern, attn.hook_stats).

The table runs, per attention call, the first kernel of the order that handles what the call needs
and works on the device; a kernel that raises one of its errors is disabled with a one-time warning
and the next one runs. Scores are checked against kernel="eager" (the explicit softmax) and the
float64 reference of tests/_reference.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _reference import bert_score, cuts_for, torch_reference_ids

from matchsig import CrossEncoder, MatchsigError
from matchsig.engine import kernels as K

QUERIES = ["what is a flea", "how long do cats live", "flea cat"]
DOCS = [
    "The cat flea is a small wingless insect that feeds on the blood of cats and dogs.",
    "Indoor cats live 12 to 18 years.",
    "A flea on a cat is a cat flea, and the flea bites.",
]


@pytest.fixture(scope="module")
def ce(tiny_model):
    return CrossEncoder.load(tiny_model, device="cpu")


@pytest.fixture
def table(monkeypatch):
    """The process-wide table, restored after the test (kernels, orders, failures)."""
    monkeypatch.setattr(K.KERNELS, "kernels", dict(K.KERNELS.kernels))
    monkeypatch.setattr(K.KERNELS, "orders", dict(K.KERNELS.orders))
    monkeypatch.setattr(K.KERNELS, "broken", {})
    return K.KERNELS


class Spy:
    """A kernel that counts its calls and computes with the explicit softmax (or raises)."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.error = 0, error

    def __call__(self, call):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return K._math(call)


def test_the_built_in_orders():
    assert K.KERNELS.order("eager") == ("math",)
    assert K.KERNELS.order("auto") == K.KERNELS.orders["auto"] == ("sdpa", "correct", "math")
    assert K.KERNELS.order("math") == ("sdpa", "math")
    fused = "correct" if K._flash_cpu is not None else "math"
    assert K.auto_cut_kernel("cpu", torch.float32) == fused
    with K.KERNELS.use("math"):  # kernel="auto" now means the "math" order
        assert K.KERNELS.order("auto") == ("sdpa", "math")
        assert K.auto_cut_kernel("cpu", torch.float32) == "math"
        assert K.auto_cut_kernel("cpu", torch.float32, "correct") == fused
    assert K.KERNELS.order("auto") == ("sdpa", "correct", "math")
    # what each need runs on CPU fp32: plain layers SDPA, the full pattern only the explicit softmax
    assert K.KERNELS.chosen("auto", frozenset(), "cpu", torch.float32) == "sdpa"
    assert K.KERNELS.chosen("auto", frozenset({K.PATTERN}), "cpu", torch.float32) == "math"
    assert K.KERNELS.chosen("eager", frozenset(), "cpu", torch.float32) == "math"


def test_first_kernel_that_handles_the_call_runs_in_order(ce, table):
    first, second, stats_only = Spy(), Spy(), Spy()
    table.register(K.Kernel("stats-only", stats_only, frozenset({K.STATS})))
    table.register(K.Kernel("first", first, frozenset({K.CUT})))
    table.register(K.Kernel("second", second, frozenset({K.CUT})))
    table.define_order("spy", ("sdpa", "stats-only", "first", "second", "math"))
    want = ce.score(QUERIES, DOCS, ablation="D<-D", kernel="eager")
    got = ce.score(QUERIES, DOCS, ablation="D<-D", kernel="spy", batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert first.calls == ce.num_layers * 2 and second.calls == 0 and stats_only.calls == 0
    ce.score(QUERIES, DOCS, kernel="spy")  # nothing cut: SDPA, before every spy
    assert first.calls == ce.num_layers * 2
    ce.score(QUERIES, DOCS, ablation="Q<-D", kernel="spy", batch_size=3)
    assert first.calls == ce.num_layers * 3


def test_a_kernel_that_raises_falls_back_with_one_warning(ce, table):
    boom, after = Spy(RuntimeError("boom kernel broke")), Spy()
    table.register(K.Kernel("boom", boom, frozenset({K.CUT})))
    table.register(K.Kernel("after", after, frozenset({K.CUT})))
    table.define_order("test", ("sdpa", "boom", "after", "math"))
    want = ce.score(QUERIES, DOCS, ablation="CLS<-*", kernel="eager")
    with pytest.warns(RuntimeWarning, match="boom.*boom kernel broke"):
        got = ce.score(QUERIES, DOCS, ablation="CLS<-*", kernel="test")
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert boom.calls == 1 and after.calls == ce.num_layers and "boom" in table.broken
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disabled for the process: no second warning, no second try
        ce.score(QUERIES, DOCS, ablation="CLS<-*", kernel="test")
    assert boom.calls == 1 and after.calls == 2 * ce.num_layers


def test_kernels_that_do_not_support_the_device_are_skipped_and_other_errors_propagate(ce, table):
    never, bad = Spy(), Spy(ValueError("a bug, not an unusable kernel"))
    table.register(K.Kernel("elsewhere", never, frozenset({K.CUT}), supports=lambda device, dtype: device.type == "xpu"))
    table.register(K.Kernel("bad", bad, frozenset({K.CUT})))
    table.define_order("skip", ("sdpa", "elsewhere", "math"))
    table.define_order("bad", ("sdpa", "bad", "math"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ce.score(QUERIES, DOCS, ablation="D<-Q", kernel="skip")
    np.testing.assert_allclose(got, ce.score(QUERIES, DOCS, ablation="D<-Q", kernel="eager"), atol=1e-6, rtol=0)
    assert never.calls == 0
    with pytest.raises(ValueError, match="a bug"):
        ce.score(QUERIES, DOCS, ablation="D<-Q", kernel="bad")


def test_an_order_without_a_suitable_kernel_is_a_one_line_error(ce, table):
    table.define_order("plain-only", ("sdpa",))
    ce.score(QUERIES, DOCS, kernel="plain-only")  # nothing to cut: fine
    with pytest.raises(MatchsigError, match="no kernel for cut attention") as err:
        ce.score(QUERIES, DOCS, ablation="D<-D", kernel="plain-only")
    assert "\n" not in str(err.value)


def test_unknown_kernel_names_are_one_line_errors(ce, table):
    for run in (lambda: ce.score(QUERIES, DOCS, kernel="flash"),
                lambda: ce.score_layer_curve(QUERIES, DOCS, "D<-D", kernel="flash"),
                lambda: ce.attention_stats(QUERIES, DOCS, kernel="flash")):
        with pytest.raises(MatchsigError, match="unknown kernel 'flash': use one of auto, correct, fused, math, eager") as err:
            run()
        assert "\n" not in str(err.value)
    with pytest.raises(MatchsigError, match="unknown kernel 'flash'"):
        with K.KERNELS.use("flash"):
            pass
    with pytest.raises(MatchsigError, match="order 'x': unknown attention kernel 'flash'"):
        table.define_order("x", ("sdpa", "flash"))
    with pytest.raises(MatchsigError, match="'math' is already registered"):
        table.register(K.Kernel("math", K._math))


# ---- the attention sites ------------------------------------------------------------------------


def test_pattern_site_equals_hugging_face_attentions(tiny_model, ce, tokenizer):
    from transformers import BertForSequenceClassification

    hf = BertForSequenceClassification.from_pretrained(tiny_model, attn_implementation="eager").eval()
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(ce.num_layers)]
    scores, cache = ce.run_with_cache(QUERIES, DOCS, names, batch_size=2)  # padded batches
    np.testing.assert_allclose(scores, ce.score(QUERIES, DOCS), atol=1e-6, rtol=0)
    for i, (q, d) in enumerate(zip(QUERIES, DOCS)):
        with torch.no_grad():
            maps = hf(**tokenizer(q, d, return_tensors="pt"), output_attentions=True).attentions
        for layer, name in enumerate(names):
            assert cache[name][i].shape == maps[layer][0].shape
            np.testing.assert_allclose(cache[name][i].numpy(), maps[layer][0].numpy(), atol=1e-6, rtol=0)


def test_replacing_the_pattern_is_an_ablation(ce, tiny_model, tokenizer):
    """A hook that zeroes the D<-D block of the pattern gives the float64 reference's D<-D score."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_model).eval()
    for q, d in zip(QUERIES, DOCS):
        doc = torch.tensor(ce.encode([q], [d]).part_ids[0]) == 3

        def cut(probs, hook):
            return probs.masked_fill((doc[:, None] & doc[None, :])[None, None], 0.0)

        got = ce.run_with_hooks([q], [d], {f"blocks.{layer}.attn.hook_pattern": cut for layer in range(ce.num_layers)})
        ids, types = torch_reference_ids(tokenizer, q, d)
        want = bert_score(model, ids, types, cuts_for("D<-D", None, None, ce.num_layers, ce.num_heads))
        assert abs(got[0] - want) <= 1e-5
        assert abs(got[0] - ce.score([q], [d])[0]) > 1e-4  # the replacement was used


def test_stats_site_and_patching_limits(ce):
    seen = {}

    def keep(value, hook):
        seen[hook.layer] = value.clone()

    ce.run_with_hooks(QUERIES[:1], DOCS[:1], {"blocks.1.attn.hook_stats": keep})
    want = ce.attention_stats(QUERIES[:1], DOCS[:1]).values[0, 1]
    np.testing.assert_array_equal(seen[1][0].numpy(), want)
    with pytest.raises(MatchsigError, match="attn.hook_pattern cannot be patched") as err:
        ce.patch(QUERIES, DOCS, DOCS, site="pattern")
    assert "\n" not in str(err.value)
