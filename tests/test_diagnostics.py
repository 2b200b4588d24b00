"""Diagnostic pairs: alignment, recipes re-derived independently, seeding and fingerprints."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from matchsig import CrossEncoder, MatchsigError
from matchsig.data.datasets import load_collection
from matchsig.analysis.diagnostics import STOPWORDS, is_variant, make_pairs, read_pairs
from matchsig.data.sampling import sample_pool


@pytest.fixture(scope="module")
def emb():
    return CrossEncoder.load("embedded", device="cpu")


@pytest.fixture(scope="module")
def pool():
    return sample_pool(load_collection("demo"), per_grade=2, seed=0)


@pytest.fixture(scope="module")
def made(emb, pool):
    return {name: make_pairs(emb, pool, name, n=12, seed=3) for name in ("tfc1", "tdc", "lnc1", "stmc1")}


def _qwords(text):
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in STOPWORDS and len(w) >= 2]


@pytest.mark.parametrize("name", ["tfc1", "tdc", "lnc1", "stmc1"])
def test_tokens_align_and_differ_only_where_inserted(emb, made, name):
    pairs = made[name]
    assert len(pairs) == 24 and pairs.n_rows == 12  # append and prepend per row
    tok = emb.tokenizer
    for t in pairs.triples:
        a = tok(t.query, t.baseline)["input_ids"]
        b = tok(t.query, t.perturbed)["input_ids"]
        assert len(a) == len(b), t
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        k = len(tok(t.term, add_special_tokens=False)["input_ids"])
        assert 1 <= len(diff) <= max(k, len(tok(t.stand_in, add_special_tokens=False)["input_ids"]))
        doc_start = a.index(tok.sep_token_id) + 1
        if t.where == "append":
            assert min(diff) >= len(a) - 1 - max(k, len(diff)) and max(diff) < len(a) - 1
        else:
            assert min(diff) == doc_start
    patched = emb.patch(pairs.queries()[:2], pairs.baselines()[:2], pairs.perturbeds()[:2], site="resid_post", layers=[5])
    np.testing.assert_allclose(patched.patched[:, 0, 0, 0], patched.perturbed, atol=1e-5)


def test_tfc1_inserts_a_query_term_against_the_filler(made):
    for t in made["tfc1"].triples:
        assert t.term in _qwords(t.query)
        assert set(t.stand_in.split()) == {"a"}
        ins = t.perturbed.split()[-1] if t.where == "append" else t.perturbed.split()[0]
        assert ins == t.term


def test_tdc_term_has_higher_idf_than_its_stand_in(made, pool):
    queries, docs = pool.pairs()
    texts = {r.docid: d for r, d in zip(pool.rows, docs)}
    n = len(texts)
    df = {}
    for d in texts.values():
        for w in set(re.findall(r"[a-z]+", d.lower())):
            df[w] = df.get(w, 0) + 1

    def idf(w):
        c = df.get(w, 0)
        return math.log(1 + (n - c + 0.5) / (c + 0.5))

    for t in made["tdc"].triples:
        low = t.stand_in.split()[0]
        assert t.term in _qwords(t.query) and low in _qwords(t.query)
        assert idf(t.term) > idf(low)
        assert idf(t.term) == max(idf(w) for w in _qwords(t.query))


def test_lnc1_adds_a_non_query_word(made):
    for t in made["lnc1"].triples:
        assert t.term not in STOPWORDS and len(t.term) >= 3
        assert not any(t.term.startswith(w) or w.startswith(t.term) for w in _qwords(t.query))


def test_stmc1_neighbour_is_the_embedding_nearest_by_brute_force(emb, made):
    weight = emb.model.get_input_embeddings().weight.detach().double().numpy()
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    vocab = emb.tokenizer.convert_ids_to_tokens(list(range(len(weight))))
    allowed = np.array([v.isalpha() and v.islower() and len(v) >= 3 and v not in STOPWORDS for v in vocab])
    checked = 0
    for t in made["stmc1"].triples[::2]:
        words = _qwords(t.query)
        found = False
        for w in words:
            ids = emb.tokenizer(w, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                continue
            sims = unit @ unit[ids[0]]
            ok = allowed & np.array([not any(is_variant(v, x) for x in words) for v in vocab])
            best = vocab[int(np.argmax(np.where(ok, sims, -np.inf)))]
            found |= best == t.term
        assert found, t
        assert t.term not in words and t.stand_in.split()[0] not in words
        checked += 1
    assert checked >= 6


def test_seeding_subsets_and_fingerprints(emb, pool, made, tmp_path):
    again = make_pairs(emb, pool, "tfc1", n=12, seed=3)
    assert again.fingerprint == made["tfc1"].fingerprint
    assert make_pairs(emb, pool, "tfc1", n=12, seed=4).fingerprint != again.fingerprint
    fewer = make_pairs(emb, pool, "tfc1", n=5, seed=3)
    assert set(fewer.triples) <= set(again.triples)  # a row's choices do not depend on the others drawn
    path = again.write_tsv(tmp_path / "pairs.tsv")
    assert read_pairs(path).fingerprint == again.fingerprint
    d = again.describe()
    assert d["pairs_fingerprint"] == again.fingerprint and d["pool_fingerprint"] == pool.fingerprint


def test_long_passages_are_cut_at_a_word_so_the_insertion_survives(emb, pool):
    pairs = make_pairs(emb, pool, "tfc1", n=4, seed=0, max_doc_tokens=12, where=("append",))
    for t in pairs.triples:
        assert t.perturbed.split()[-1] == t.term
        ids = emb.tokenizer(t.perturbed, add_special_tokens=False)["input_ids"]
        assert len(ids) <= 12 + len(emb.tokenizer(t.term, add_special_tokens=False)["input_ids"])


def test_variant_rule():
    assert is_variant("flea", "fleas") and is_variant("roofing", "roof") and is_variant("costing", "costs")
    assert not is_variant("cat", "dog") and not is_variant("insect", "inside")


def test_bad_input(emb, pool, tmp_path):
    with pytest.raises(MatchsigError, match="unknown diagnostic 'tfc2'"):
        make_pairs(emb, pool, "tfc2")
    with pytest.raises(MatchsigError, match="bad insertion place 'middle'"):
        make_pairs(emb, pool, "tfc1", where=("middle",))
    with pytest.raises(MatchsigError, match="filler 'xylophonist' is"):
        make_pairs(emb, pool, "tfc1", filler="xylophonist")
    with pytest.raises(MatchsigError, match="bad number of rows 0"):
        make_pairs(emb, pool, "tfc1", n=0)
    (tmp_path / "x.tsv").write_text("nope\n")
    with pytest.raises(MatchsigError, match="not a diagnostic pairs file"):
        read_pairs(tmp_path / "x.tsv")
