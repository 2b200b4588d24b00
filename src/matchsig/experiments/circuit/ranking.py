"""From circuit to ranking: nDCG@10 on the ablation pool with only the circuit's edges kept, and with only
its edges cut, against random edge sets of the same size (paired t-tests over queries)."""

from __future__ import annotations

import numpy as np

__all__ = ["edge_sets", "ranking_work", "ranking_frames"]


def edge_sets(n_edges: int, circuit: np.ndarray, sets: int, seed: int) -> list[tuple[str, np.ndarray, bool]]:
    """(label, edge indices, kept?) of each configuration: the full model, the circuit kept and cut, and
    ``sets`` random edge sets of the circuit's size, kept and cut."""
    rng = np.random.default_rng(seed)
    every = np.arange(n_edges)
    out = [("full", every, True), ("circuit kept", circuit, True), ("circuit cut", circuit, False)]
    for k in range(sets):
        pick = np.sort(rng.choice(n_edges, len(circuit), replace=False))
        out += [(f"random {k} kept", pick, True), (f"random {k} cut", pick, False)]
    return out


def ranking_work(ce, queries, documents, edges: np.ndarray, configs, means: np.ndarray) -> np.ndarray:
    """(configurations, n) scores of the pool's pairs under each configuration: kept = only those edges
    kept, cut = every edge but those kept; the others mean-ablated."""
    from ...engine.circuits import circuit_scores, keep_matrix
    from ...engine.graph import graph_for

    graph = graph_for(ce)
    allowed = graph.edge_mask().astype(float)
    keeps = []
    for _, chosen, kept in configs:
        keep = keep_matrix(graph, edges[chosen])
        keeps.append(keep if kept else allowed - keep)
    return circuit_scores(ce, list(queries), list(documents), keeps, means)


def ranking_frames(per_query: dict[str, dict[str, float]], sets: int, alpha: float):
    """(rows, tests): per configuration, mean nDCG@10 and its change against the full model (paired
    t-test, CI); the circuit kept (cut) against each random set kept (cut) and against the random sets'
    per-query mean."""
    import pandas as pd

    from ...analysis.comparison import compare
    from ...analysis.significance import paired_ttest

    ref = per_query["full"]
    ref_mean = float(np.mean(list(ref.values())))
    rows = [{"configuration": label, **compare(values, ref, ref_mean, alpha)} for label, values in per_query.items()]
    tests = []
    for mode in ("kept", "cut"):
        mine = per_query[f"circuit {mode}"]
        randoms = [per_query[f"random {k} {mode}"] for k in range(sets)]
        pooled = {q: float(np.mean([r[q] for r in randoms])) for q in mine} if randoms else {}
        for label, other in [*((f"random {k} {mode}", r) for k, r in enumerate(randoms)),
                             *([(f"random mean {mode}", pooled)] if randoms else [])]:
            t = paired_ttest(mine, other)
            low, high = t.ci(alpha)
            tests.append({"a": f"circuit {mode}", "b": label, "mean_a": float(np.mean(list(mine.values()))),
                          "mean_b": float(np.mean(list(other.values()))), "diff": t.mean_diff, "ci_low": low,
                          "ci_high": high, "p_value": t.pvalue, "n_queries": t.n})
    return pd.DataFrame(rows), pd.DataFrame(tests)
