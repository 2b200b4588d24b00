"""The one "ablation rows" driver of Table 1, Figure 1 and the head ablations.

Every ranking experiment on the main pool follows the same steps (in the spirit of TransformerLens'
``generic_activation_patch`` + ``partial``): labelled ablations -> scores of every pair of the pool
(:func:`grid_units`: one unit per chunk of pairs, scored for all its configurations with one
``CrossEncoder.score_many`` call, so length-sorted batches mix configurations; or
:func:`curve_units` for up-to-layer curves) -> per-query tie-aware nDCG@10 -> :func:`compare` with
the unablated model (paired t-test, CI) -> :func:`decide` (the family's correction, significance,
marks) -> one row per configuration (:func:`ablation_rows`).

Store layout (unchanged since matchsig 0.1, so older run folders resume): one file per
configuration and chunk, ``{prefix}/{slug(label)}/{k:05d}``; a chunk's unit is done when all its
configurations are stored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..analysis.comparison import compare, decide
from ..engine.ablation import Ablation
from .store import Unit, slug

__all__ = ["ablation_rows", "baseline_scores", "compare", "curve_units", "decide", "evaluate", "gather",
           "gather_curves", "grid_units", "random", "reference"]

SCORES = "scores"  # store prefix of whole-model scores (Table 1 and the head ablations share it)


def grid_units(runner, labelled: Sequence[tuple[str, Ablation]], prefix: str = SCORES) -> list[Unit]:
    """One unit per chunk of the main pool: the chunk's pairs scored under every ablation of ``labelled``."""
    pool, (qs, ds) = runner.pool("main")
    labels = [label for label, _ in labelled]
    ablations = [ab for _, ab in labelled]
    units = []
    for k, rows in enumerate(runner.chunks(len(pool))):
        def work(rows=rows):
            return list(_score_grid(runner, [qs[i] for i in rows], [ds[i] for i in rows], ablations))
        files = [f"{prefix}/{slug(label)}/{k:05d}" for label in labels]
        units.append(Unit(f"{prefix}/chunk-{k:05d}", work, len(rows) * len(labels), files))
    return units


def _score_grid(runner, queries: list[str], documents: list[str], ablations: list[Ablation]) -> np.ndarray:
    """(configurations, pairs): ``score_many`` over groups of ``batch_size`` pairs of similar length (by
    characters), each group scored for every configuration at once, so each batch holds a few pairs under
    many configurations, and the progress bar moves after every group."""
    size = runner.config.batch_size
    order = np.argsort([-(len(q) + len(d)) for q, d in zip(queries, documents)], kind="stable")
    out = np.zeros((len(ablations), len(queries)))
    for start in range(0, len(order), size):
        group = order[start:start + size]
        out[:, group] = runner.encoder.score_many([queries[i] for i in group], [documents[i] for i in group],
                                                  ablations, batch_size=size)
        runner.tick(len(group) * len(ablations))
    return out


def curve_units(runner, specs: Sequence[str], prefix: str = "layers") -> list[Unit]:
    """One unit per (direction, chunk): the chunk's scores with the direction cut in layers 0..l, every l."""
    pool, (qs, ds) = runner.pool("main")
    units = []
    for spec in specs:
        for k, rows in enumerate(runner.chunks(len(pool))):
            def work(spec=spec, rows=rows):
                # parsed in slot names (CLS Q SEP1 D SEP2), whatever the model calls its parts
                return [runner.encoder.score_layer_curve([qs[i] for i in rows], [ds[i] for i in rows], Ablation.parse(spec),
                                                         batch_size=runner.config.batch_size)]
            name = f"{prefix}/{slug(spec)}/{k:05d}"
            units.append(Unit(name, work, len(rows)))
    return units


def gather(runner, labels: Sequence[str], prefix: str = SCORES) -> np.ndarray:
    """(len(labels), pairs): the stored scores of each label, chunks concatenated."""
    pool, _ = runner.pool("main")
    chunks = runner.chunks(len(pool))
    return np.stack([np.concatenate([runner.store.load(f"{prefix}/{slug(l)}/{k:05d}") for k in range(len(chunks))])
                     for l in labels])


def gather_curves(runner, specs: Sequence[str], prefix: str = "layers") -> list[np.ndarray]:
    """Per direction, the (layers, pairs) curve of its stored chunks."""
    pool, _ = runner.pool("main")
    chunks = runner.chunks(len(pool))
    return [np.concatenate([runner.store.load(f"{prefix}/{slug(spec)}/{k:05d}") for k in range(len(chunks))], axis=1)
            for spec in specs]


def baseline_scores(runner) -> np.ndarray:
    """Unablated scores of the main pool; every ranking experiment needs them, they are computed once."""
    if "_base" not in runner.results:
        runner.execute("unablated", grid_units(runner, [("none", Ablation.none())]))
        runner.results["_base"] = gather(runner, ["none"])[0]
    return runner.results["_base"]


def evaluate(runner, scores: np.ndarray) -> dict[str, float]:
    """Tie-aware per-query nDCG@10 of ``scores`` on the main pool."""
    from ..data.evaluation import expected_ndcg

    pool, _ = runner.pool("main")
    return expected_ndcg(pool, scores, 10)


def reference(runner) -> tuple[dict[str, float], float]:
    """Per-query nDCG@10 of the unablated model and its mean (evaluated once per run)."""
    if "_ref" not in runner.results:
        ref = evaluate(runner, baseline_scores(runner))
        runner.results["_ref"] = (ref, float(np.mean(list(ref.values()))))
    return runner.results["_ref"]


def random(runner):
    """The exact random-ranking baseline of the main pool (with the sd of sampled rankings)."""
    from ..data.evaluation import random_baseline

    if "_random" not in runner.results:
        pool, _ = runner.pool("main")
        runner.results["_random"] = random_baseline(pool, rankings=runner.config.rankings, seed=runner.config.seed)
    return runner.results["_random"]


def ablation_rows(runner, rows: Sequence[dict], per_query: Sequence[dict[str, float]],
                  family: np.ndarray | None = None) -> pd.DataFrame:
    """One row per configuration: its descriptive columns (``rows``), then :func:`compare` of its per-query
    nDCG@10 with the unablated model, then :func:`decide` over ``family`` (default: every row)."""
    ref, ref_mean = reference(runner)
    c = runner.config
    frame = pd.DataFrame([{**row, **compare(pq, ref, ref_mean, c.alpha)} for row, pq in zip(rows, per_query)])
    return decide(frame, c.alpha, c.correction, family)
