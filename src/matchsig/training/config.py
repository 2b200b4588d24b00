"""The training recipe's settings (:class:`TrainConfig`) and where the training data lives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "MATCHSIG_DATA"


def default_data_dir() -> Path:
    """``$MATCHSIG_DATA``, else ``../shared/data`` (the offline TREC DL folder)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("..") / "shared" / "data"


@dataclass
class TrainConfig:
    """Everything that determines a training run (the recipe) plus how this invocation runs it."""

    seed: int = 0
    steps: int = 320
    minutes: float = 60.0  # wall-clock stop for this invocation (the run resumes on the next one)
    lr: float = 5e-5
    head_lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    list_size: int = 12
    lists_judged: int = 1
    lists_distill: int = 1
    easy_negatives: int = 2  # per distillation list
    teacher_k: int = 40  # teacher candidates per query
    bm25_depth: int = 30  # BM25 candidates per query kept (and embedded by the teacher)
    tau: float = 0.05  # teacher temperature (cosine / tau)
    beta: float = 1.5  # label temperature (grade * beta)
    label_mix: float = 1.0  # judged lists: weight of the label distribution vs the teacher's
    pointwise: float = 0.1
    max_length: int = 192
    max_query_length: int = 48
    micro_batch: int = 16
    bf16: bool = True
    threads: int = 2
    dropout: float = 0.1
    probe_pairs: int = 512
    checkpoint_minutes: float = 4.0
    teacher_batch: int = 64
    # test hook: a tiny random BERT instead of the pip weights (shape of the real one otherwise)
    tiny: bool = False
    limit_queries: int = 0
    stop_after_steps: int = 0  # test hook: stop this invocation after that many steps (like --minutes)
    # steps after which the model is also saved whole (OUT/checkpoints/step-NNNNNN/, a Hugging Face folder); 0 = the
    # model training starts from (after the head probe). Not part of the recipe: saving changes no weight.
    save_steps: list[int] = dataclasses.field(default_factory=list)

    def recipe(self) -> dict[str, Any]:
        """The settings that change the trained model (not how long or on how many threads)."""
        d = dataclasses.asdict(self)
        for k in ("minutes", "checkpoint_minutes", "threads", "teacher_batch", "stop_after_steps", "save_steps"):
            d.pop(k)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]
