"""Collections by id: local folders (the bundled DL19, real DL20), ir_datasets (a real dataset on local files), errors."""

from __future__ import annotations

import gzip
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from conftest import DEMO_DIR, SHARED_DATA, needs_shared

from matchsig.data import datasets
from matchsig.data.datasets import Collection, available_collections, load_collection, register_collection
from matchsig.errors import MatchsigError

DL19 = SHARED_DATA / "trec-dl-2019"
DL20 = SHARED_DATA / "trec-dl-2020"


def _check_official_counts(folder, queries, judgments, grades):
    collection = load_collection(str(folder))
    assert len(collection.queries) == queries
    assert len(collection.judged_qids()) == queries
    assert collection.num_judgments == judgments
    assert collection.grade_counts() == grades


def test_bundled_dl19_folder_has_official_counts():
    """The demo folder, read as a plain (gzipped) folder, holds all of TREC DL 2019's judgments."""
    _check_official_counts(DEMO_DIR, 43, 9260, {0: 5158, 1: 1601, 2: 1804, 3: 697})


@needs_shared("trec-dl-2020")
def test_real_dl20_folder_has_official_counts():
    _check_official_counts(DL20, 54, 11386, {0: 7780, 1: 1940, 2: 1020, 3: 646})


def test_folder_passage_text_is_lazy_and_correct():
    collection = load_collection(DEMO_DIR)
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
    folder = Path(datasets.__file__).parent / "demo"
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


@needs_shared("trec-dl-2019")
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


# ---- ir_datasets: a real dataset on local files -------------------------------------------------

Query = namedtuple("Query", "query_id text")
Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")


@pytest.fixture
def local_ir_dataset(tmp_path, monkeypatch):
    """A real ir_datasets Dataset (its own TsvDocs, TsvQueries, TrecQrels over local files), registered
    under a test id: the same classes and docstore (PickleLz4FullStore, with get_many) as msmarco-passage."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    demo = load_collection("demo")
    qids = demo.judged_qids()[:2]
    qrels = {q: dict(sorted(demo.qrels[q].items())[:6]) for q in qids}
    judged = sorted({d for docs in qrels.values() for d in docs})
    extra = [d for d in demo.negative_candidates() if d not in judged][:14]
    texts = demo.docs(judged + extra)
    (tmp_path / "docs.tsv").write_text("".join(f"{d}\t{texts[d]}\n" for d in judged + extra), encoding="utf-8")
    (tmp_path / "queries.tsv").write_text("".join(f"{q}\t{demo.queries[q]}\n" for q in qids), encoding="utf-8")
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q in qids for d, g in qrels[q].items()))
    dataset = Dataset(
        TsvDocs(LocalDownload(tmp_path / "docs.tsv")),
        TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
        TrecQrels(LocalDownload(tmp_path / "qrels.txt"), {0: "not relevant", 1: "related", 2: "highly", 3: "perfect"}),
    )
    name = f"matchsig-test/local-{tmp_path.name}"
    ir_datasets.registry.register(name, dataset)
    monkeypatch.delenv("MATCHSIG_DATA", raising=False)  # no offline copy may stand in
    yield name, qrels, texts, judged + extra, tmp_path
    ir_datasets.registry._registered.pop(name, None)


def test_ir_datasets_path_on_a_real_local_dataset(local_ir_dataset, monkeypatch):
    from ir_datasets.indices import PickleLz4FullStore

    name, qrels, texts, docids, folder = local_ir_dataset
    calls = {"get_many": 0, "get": 0}
    real_many, real_get = PickleLz4FullStore.get_many, PickleLz4FullStore.get

    def get_many(self, ids, *a, **k):
        calls["get_many"] += 1
        return real_many(self, ids, *a, **k)

    def get(self, *a, **k):
        calls["get"] += 1
        return real_get(self, *a, **k)

    monkeypatch.setattr(PickleLz4FullStore, "get_many", get_many)
    monkeypatch.setattr(PickleLz4FullStore, "get", get)
    collection = load_collection(name)
    assert collection.name == name
    assert collection.qrels == qrels
    assert set(collection.queries) == set(qrels)
    assert not list(folder.glob("docs.tsv.pklz4*"))  # texts are lazy: no docstore built yet
    some = docids[:3]
    assert collection.docs(some) == {d: texts[d] for d in some}
    assert calls == {"get_many": 1, "get": 0}  # the batch branch real docstores take
    assert list(folder.glob("docs.tsv.pklz4*"))
    assert collection.doc_text(some[0]) == texts[some[0]] and calls["get_many"] == 1  # cached
    assert collection.doc_text(docids[-1]) == texts[docids[-1]]
    with pytest.raises(MatchsigError, match="passage 'nope' not found"):
        collection.doc_text("nope")
    # easy negatives come from the whole corpus through the docstore (len and [i], not a list)
    from matchsig.data.sampling import EASY_NEGATIVE, sample_pool

    candidates = collection.negative_candidates()
    assert len(candidates) == len(docids) and [candidates[i] for i in range(len(docids))] == docids
    pool = sample_pool(collection, per_grade=2, easy_negatives=3, seed=1)
    easy = [r for r in pool if r.grade == EASY_NEGATIVE]
    assert len(easy) == 3 * len(qrels)
    assert all(r.docid in docids and r.docid not in qrels[r.qid] for r in easy)
    queries, documents = pool.pairs()
    assert documents == [texts[r.docid] for r in pool]


def test_ir_datasets_unknown_id():
    with pytest.raises(MatchsigError, match="unknown dataset id 'msmarco-passage/nope'"):
        load_collection("msmarco-passage/nope")


class FakeDataset:
    """Only for the error path: a dataset whose download fails."""

    def queries_iter(self):
        yield from [Query("q1", "first")]

    def qrels_iter(self):
        yield from [Qrel("q1", "d1", 2, "0")]


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


def test_paper_id_uses_offline_copy_from_env(monkeypatch, tmp_path):
    import ir_datasets

    def no_download(name):
        raise AssertionError("ir_datasets must not be touched when an offline copy exists")

    monkeypatch.setattr(ir_datasets, "load", no_download)
    shutil.copytree(DEMO_DIR, tmp_path / "trec-dl-2019")  # an offline copy, gzipped, like $MATCHSIG_DATA's
    monkeypatch.setenv("MATCHSIG_DATA", str(tmp_path))
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
