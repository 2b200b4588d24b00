"""The sampling protocol: caps per grade, easy negatives, seeding, fingerprints."""

from __future__ import annotations

from collections import Counter, namedtuple

import pytest
from conftest import SHARED_DATA, needs_shared

from matchsig.data.datasets import Collection, load_collection
from matchsig.errors import MatchsigError
from matchsig.data.sampling import EASY_NEGATIVE, Pool, PoolRow, _draw_easy, fingerprint, sample_pool


def toy() -> Collection:
    qrels = {
        "1": {f"a{i}": i % 4 for i in range(40)},  # 10 per grade
        "2": {"b0": 3, "b1": 0, "b2": 0},
        "3": {"c0": 1},
    }
    queries = {"1": "one", "2": "two", "3": "three", "4": "unjudged"}
    texts = {d: f"text of {d}" for docs in qrels.values() for d in docs}
    texts.update({f"x{i}": f"extra {i}" for i in range(30)})
    return Collection("toy", queries, qrels, lambda ids: {i: texts[i] for i in ids if i in texts}, lambda: sorted(texts))


def test_caps_per_grade_and_keeps_small_grades_whole():
    pool = sample_pool(toy(), per_grade=3, seed=7)
    counts = Counter((r.qid, r.grade) for r in pool)
    assert all(counts[("1", g)] == 3 for g in range(4))
    assert counts[("2", 0)] == 2 and counts[("2", 3)] == 1 and counts[("3", 1)] == 1
    assert pool.qids == ["1", "2", "3"]  # the unjudged query has no pool
    assert len(pool) == 12 + 3 + 1
    assert all(toy().qrels[r.qid][r.docid] == r.grade for r in pool)
    # no cap keeps everything
    assert len(sample_pool(toy(), per_grade=None)) == 40 + 3 + 1


def test_easy_negatives_are_unjudged_for_their_query_and_gain_zero():
    pool = sample_pool(toy(), per_grade=2, easy_negatives=5, seed=3)
    easy = [r for r in pool if r.grade == EASY_NEGATIVE]
    assert Counter(r.qid for r in easy) == {"1": 5, "2": 5, "3": 5}
    for row in easy:
        assert row.docid not in toy().qrels[row.qid]
    assert len({(r.qid, r.docid) for r in pool}) == len(pool)
    assert all(v == 0 for r in easy for v in [pool.qrels()[r.qid][r.docid]])
    queries, docs = pool.pairs()
    assert len(queries) == len(docs) == len(pool)
    assert queries[0] == "one" and docs[-1].startswith(("text of", "extra"))


def test_seeding_is_deterministic_nested_and_order_free():
    a = sample_pool(toy(), per_grade=4, easy_negatives=3, seed=11)
    b = sample_pool(toy(), per_grade=4, easy_negatives=3, seed=11)
    assert a == b and a.fingerprint == b.fingerprint
    assert sample_pool(toy(), per_grade=4, easy_negatives=3, seed=12).fingerprint != a.fingerprint
    # a smaller cap is a subset of a larger one for the same seed
    small = set(sample_pool(toy(), per_grade=2, easy_negatives=1, seed=11).rows)
    assert small <= set(a.rows)
    # drawing one query alone gives the same rows as drawing it among the others
    alone = sample_pool(toy(), per_grade=4, easy_negatives=3, seed=11, qids=["1"])
    assert set(alone.rows) == {r for r in a.rows if r.qid == "1"}


def test_fingerprint_definition():
    rows = [PoolRow("2", "b", 0), PoolRow("1", "a", 3)]
    import hashlib

    expected = hashlib.sha256(b"1\ta\t3\n2\tb\t0").hexdigest()[:16]
    assert fingerprint(rows) == expected == fingerprint(list(reversed(rows)))
    assert Pool(tuple(rows)).fingerprint == expected
    assert fingerprint([PoolRow("1", "a", 2), PoolRow("2", "b", 0)]) != expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_grade": 0}, "bad per_grade: 0"),
        ({"per_grade": -5}, "bad per_grade"),
        ({"per_grade": "20"}, "bad per_grade"),
        ({"easy_negatives": -1}, "bad easy_negatives"),
        ({"seed": -1}, "bad seed"),
        ({"qids": ["99"]}, "query '99' has no judgments"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(MatchsigError, match=message):
        sample_pool(toy(), **kwargs)


def test_rejection_sampling_on_a_huge_corpus():
    import numpy as np

    class Huge:
        def __len__(self):
            return 8_841_823

        def __getitem__(self, i):
            return str(i)

    picked = _draw_easy(np.random.default_rng(0), Huge(), {"1", "2"}, 50)
    assert len(picked) == len(set(picked)) == 50
    again = _draw_easy(np.random.default_rng(0), Huge(), {"1", "2"}, 50)
    assert picked == again


class _FakeIrDataset:
    """An ir_datasets dataset of one query ("q") with one judged passage ("7"); the corpus is up to subclasses."""

    def queries_iter(self):
        return iter([namedtuple("Q", "query_id text")("q", "query")])

    def qrels_iter(self):
        return iter([namedtuple("R", "query_id doc_id relevance")("q", "7", 2)])


def test_ir_datasets_corpus_view_feeds_easy_negatives(monkeypatch):
    import ir_datasets

    D = namedtuple("D", "doc_id text")

    class Docs(list):
        pass

    class Fake(_FakeIrDataset):
        def docs_count(self):
            return 100

        def docs_iter(self):
            return Docs(D(str(i), f"doc {i}") for i in range(100))

        def docs_store(self):
            return None

    monkeypatch.delenv("MATCHSIG_DATA", raising=False)  # no offline copy may stand in
    monkeypatch.setattr(ir_datasets, "load", lambda name: Fake())
    collection = load_collection("msmarco-passage/trec-dl-2019/judged")
    pool = sample_pool(collection, easy_negatives=10, seed=0)
    easy = [r.docid for r in pool if r.grade == EASY_NEGATIVE]
    assert len(easy) == 10 and "7" not in easy and all(0 <= int(d) < 100 for d in easy)


def test_dl19_cap_20_has_2563_pairs_and_stable_fingerprint():
    collection = load_collection("demo")  # all of DL19's judgments
    pool = sample_pool(collection, per_grade=20, seed=0)
    assert len(pool) == 2563 and len(pool.qids) == 43
    assert pool.fingerprint == sample_pool(collection, per_grade=20, seed=0).fingerprint
    # pinned: the protocol (and so every saved result's sample) must not drift between versions
    assert pool.fingerprint == "ff9c50817fb206d1"
    assert pool.fingerprint != sample_pool(collection, per_grade=20, seed=1).fingerprint
    assert pool.describe()["sample_fingerprint"] == pool.fingerprint


@needs_shared("trec-dl-2019")
def test_demo_pool_equals_the_real_dl19_folder_pool():
    real = sample_pool(load_collection(SHARED_DATA / "trec-dl-2019"), per_grade=20, seed=0)
    assert real.fingerprint == sample_pool(load_collection("demo"), per_grade=20, seed=0).fingerprint


def test_corpus_view_counts_through_the_docstore_and_reports_read_errors(monkeypatch):
    import ir_datasets

    class Store:
        def count(self):
            return 2_000_000  # large: rejection sampling path

    class Broken:
        def __getitem__(self, i):
            raise OSError("corrupt docstore")

    class Fake(_FakeIrDataset):
        def docs_count(self):
            return None  # like msmarco-passage before its docstore is built

        def docs_store(self):
            return Store()

        def docs_iter(self):
            return Broken()

    monkeypatch.delenv("MATCHSIG_DATA", raising=False)
    monkeypatch.setattr(ir_datasets, "load", lambda name: Fake())
    collection = load_collection("msmarco-passage/trec-dl-2019/judged")
    assert len(collection.negative_candidates()) == 2_000_000
    with pytest.raises(MatchsigError, match="could not read passage #.* \\(OSError: corrupt docstore\\)"):
        sample_pool(collection, easy_negatives=2)


def test_pool_round_trips_through_tsv(tmp_path):
    from matchsig.data.sampling import read_pool

    pool = sample_pool(toy(), per_grade=3, easy_negatives=2, seed=5)
    path = pool.write_tsv(tmp_path / "pool.tsv")
    again = read_pool(path, toy(), per_grade=3, easy_negatives=2, seed=5)
    assert again.rows == pool.rows and again.fingerprint == pool.fingerprint
    assert again.describe() == pool.describe()
    assert again.pairs() == pool.pairs()
    with pytest.raises(MatchsigError, match="missing file"):
        read_pool(tmp_path / "nope.tsv")
