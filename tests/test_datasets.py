"""Collections by id: local folders (real TREC DL data), the bundled demo, ir_datasets (faked), errors."""

from __future__ import annotations

import gzip
from collections import namedtuple
from pathlib import Path

import pytest

from matchsig import datasets
from matchsig.datasets import Collection, available_collections, load_collection, register_collection
from matchsig.errors import MatchsigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DL19 = SHARED / "trec-dl-2019"
DL20 = SHARED / "trec-dl-2020"
needs_data = pytest.mark.skipif(not DL19.is_dir(), reason=f"real TREC DL data not found at {SHARED}")


@needs_data
@pytest.mark.parametrize(
    "folder, queries, judgments, grades",
    [
        (DL19, 43, 9260, {0: 5158, 1: 1601, 2: 1804, 3: 697}),
        (DL20, 54, 11386, {0: 7780, 1: 1940, 2: 1020, 3: 646}),
    ],
)
def test_real_folders_have_official_counts(folder, queries, judgments, grades):
    collection = load_collection(str(folder))
    assert len(collection.queries) == queries
    assert len(collection.judged_qids()) == queries
    assert collection.num_judgments == judgments
    assert collection.grade_counts() == grades


@needs_data
def test_folder_passage_text_is_lazy_and_correct():
    collection = load_collection(DL19)
    assert collection._cache == {}  # nothing read yet
    text = collection.doc_text("6641238")
    assert text.startswith("The life cycle of a flea can last anywhere from 20 days")
    docs = collection.docs(["6641238", "4239616"])
    assert docs["4239616"].startswith("The cat flea's primary host")
    with pytest.raises(MatchsigError, match="passage '0000' not found"):
        collection.doc_text("0000")


def _write_gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


def test_gzipped_folder_and_three_column_qrels(tmp_path):
    _write_gz(tmp_path / "queries.tsv.gz", "1\tfirst query\n2\tsecond query\n")
    _write_gz(tmp_path / "qrels.txt.gz", "1 0 a 2\n1 Q0 b 0\n2 0 c 1\n")
    _write_gz(tmp_path / "passages.tsv.gz", "a\talpha text\nb\tbeta\nc\tgamma\nd\tdelta\n")
    collection = load_collection(str(tmp_path))
    assert collection.queries == {"1": "first query", "2": "second query"}
    assert collection.qrels == {"1": {"a": 2, "b": 0}, "2": {"c": 1}}
    assert collection.doc_text("a") == "alpha text"
    assert list(collection.negative_candidates()) == ["a", "b", "c", "d"]


def test_demo_is_bundled_small_and_loads():
    folder = Path(datasets.__file__).parent / "data" / "demo"
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size <= 2 * 1024 * 1024
    assert "non-commercial research" in (folder / "README.md").read_text(encoding="utf-8")
    demo = load_collection("demo")
    assert demo.name == "demo"
    assert len(demo.judged_qids()) == 43
    assert demo.num_judgments == 9260
    # every judged passage has its text, plus a few hundred extra easy-negative candidates
    judged = {d for docs in demo.qrels.values() for d in docs}
    assert len(demo.docs(judged)) == 9139
    assert len(demo.negative_candidates()) >= 9139 + 200


@needs_data
def test_demo_equals_real_dl19():
    demo, real = load_collection("demo"), load_collection(DL19)
    assert demo.queries == real.queries
    assert demo.qrels == real.qrels
    some = sorted(real.qrels["264014"])[:5]
    assert demo.docs(some) == real.docs(some)


def test_registry_add_and_refuse_duplicates():
    def factory() -> Collection:
        return Collection("tiny", {"q": "text"}, {"q": {"d": 1}}, lambda ids: {i: "doc" for i in ids if i == "d"})

    register_collection("tiny-test", factory, overwrite=True)
    assert "tiny-test" in available_collections()
    assert load_collection("tiny-test").doc_text("d") == "doc"
    with pytest.raises(MatchsigError, match="already registered"):
        register_collection("tiny-test", factory)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-such-dataset/at-all", "unknown dataset id 'no-such-dataset/at-all'"),
        ("./does/not/exist", "does not exist"),
        ("", "empty dataset id"),
    ],
)
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(MatchsigError, match=message) as info:
        load_collection(spec)
    assert "\n" not in str(info.value)


def test_folder_missing_files(tmp_path):
    with pytest.raises(MatchsigError, match="missing file: no queries.tsv"):
        load_collection(tmp_path)
    (tmp_path / "queries.tsv").write_text("1\tq\n")
    with pytest.raises(MatchsigError, match="missing file: no qrels.txt"):
        load_collection(tmp_path)
    (tmp_path / "qrels.txt").write_text("1 0 a 1\n")
    collection = load_collection(tmp_path)  # passages are only needed for texts
    with pytest.raises(MatchsigError, match="missing file: no passages.tsv"):
        collection.doc_text("a")
    (tmp_path / "qrels.txt").write_text("1 0 a high\n")
    with pytest.raises(MatchsigError, match="grade 'high' is not an integer"):
        load_collection(tmp_path)


# ---- ir_datasets, faked: the real ids need downloads that fail offline -------------------------

Query = namedtuple("Query", "query_id text")
Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")
Doc = namedtuple("Doc", "doc_id text")


class FakeStore:
    def __init__(self, docs):
        self.docs = docs
        self.calls = 0

    def get(self, docid):
        self.calls += 1
        return Doc(docid, self.docs[docid])


class FakeDataset:
    def __init__(self):
        self.store = FakeStore({"d1": "passage one", "d2": "passage two", "d3": "passage three", "d4": "four"})

    def queries_iter(self):
        yield from [Query("q1", "first"), Query("q2", "second")]

    def qrels_iter(self):
        yield from [Qrel("q1", "d1", 2, "0"), Qrel("q1", "d2", 0, "0"), Qrel("q2", "d3", 3, "0")]

    def docs_store(self):
        return self.store


def test_ir_datasets_path_with_fake(monkeypatch):
    import ir_datasets

    fake = FakeDataset()
    seen = []

    def fake_load(name):
        seen.append(name)
        if name != "msmarco-passage/trec-dl-2019/judged":
            raise KeyError(f"{name} not found")
        return fake

    monkeypatch.delenv("MATCHSIG_DATA", raising=False)  # no offline copy may stand in
    monkeypatch.setattr(ir_datasets, "load", fake_load)
    collection = load_collection("msmarco-passage/trec-dl-2019/judged")
    assert seen == ["msmarco-passage/trec-dl-2019/judged"]
    assert collection.queries == {"q1": "first", "q2": "second"}
    assert collection.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 3}}
    assert fake.store.calls == 0  # texts are lazy
    assert collection.doc_text("d3") == "passage three"
    assert collection.docs(["d1", "d3"]) == {"d1": "passage one", "d3": "passage three"}
    assert fake.store.calls == 2  # d3 came from the cache
    # no docs_count/docs_iter on the fake: easy negatives come from the judged passages
    assert list(collection.negative_candidates()) == ["d1", "d2", "d3"]
    with pytest.raises(MatchsigError, match="passage 'nope' not found"):
        collection.doc_text("nope")
    with pytest.raises(MatchsigError, match="unknown dataset id 'msmarco-passage/nope'"):
        load_collection("msmarco-passage/nope")


def test_ir_datasets_download_failure_is_one_line(monkeypatch):
    import ir_datasets

    class Offline(FakeDataset):
        def queries_iter(self):
            raise ConnectionError("no network\nsecond line")

    monkeypatch.delenv("MATCHSIG_DATA", raising=False)
    monkeypatch.setattr(ir_datasets, "load", lambda name: Offline())
    with pytest.raises(MatchsigError) as info:
        load_collection("msmarco-passage-v2/trec-dl-2022/judged")
    assert "could not load 'msmarco-passage-v2/trec-dl-2022/judged'" in str(info.value)
    assert "\n" not in str(info.value)


def test_paper_ids_are_known_to_ir_datasets():
    import ir_datasets

    for dataset_id in datasets.PAPER_COLLECTIONS:
        assert dataset_id in ir_datasets.registry


@needs_data
def test_paper_id_uses_offline_copy_from_env(monkeypatch):
    import ir_datasets

    def no_download(name):
        raise AssertionError("ir_datasets must not be touched when an offline copy exists")

    monkeypatch.setattr(ir_datasets, "load", no_download)
    monkeypatch.setenv("MATCHSIG_DATA", str(SHARED))
    collection = load_collection("msmarco-passage/trec-dl-2019/judged")
    assert collection.name == "msmarco-passage/trec-dl-2019/judged"
    assert collection.num_judgments == 9260
    # no offline qrels for 2022 in the shared copy: falls through to ir_datasets
    with pytest.raises(AssertionError, match="must not be touched"):
        load_collection("msmarco-passage-v2/trec-dl-2022/judged")


def test_crlf_bom_and_untexted_queries(tmp_path):
    (tmp_path / "queries.tsv").write_bytes("\ufeffq1\tfirst\r\nq2\tsecond\r\nq9\tunjudged\r\n".encode("utf-8"))
    (tmp_path / "qrels.txt").write_bytes(b"q1 0 a 1\r\nq2 0 b 0\r\nq3 0 c 2\r\n")
    (tmp_path / "passages.tsv").write_bytes(b"a\tA text\r\nb\tB\r\nc\tC\r\n")
    collection = load_collection(tmp_path)
    assert collection.queries == {"q1": "first", "q2": "second", "q9": "unjudged"}
    assert collection.judged_qids() == ["q1", "q2"]
    assert collection.untexted_qids() == ["q3"]
    assert collection.doc_text("a") == "A text"
