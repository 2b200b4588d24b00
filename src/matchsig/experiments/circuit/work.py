"""The circuit experiment's computations: edge attribution per chunk, node means, the faithfulness curve
(exact runs of growing circuits on held-out pairs) and the agreement of attribution with exact patching."""

from __future__ import annotations

import numpy as np

from ...analysis.faithfulness import bootstrap_faithfulness, faithfulness

__all__ = ["ABLATIONS", "connected_sizes", "split_queries", "attribution_work", "means_work", "size_grid", "curve_work", "curve_frame",
           "agreement_rows"]

#: What a non-circuit edge carries on the held-out pairs (``--ablation``).
ABLATIONS = ("mean", "counterfactual")
#: Node attribution method matching each edge method (for the agreement with exact node patching).
NODE_METHOD = {"eap": "atp", "eap-ig": "ig", "eap-qk": "atp*"}  # the node form of each edge method


def split_queries(pairs, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) pair indices, split by query (a seeded share ``heldout`` of the queries held out)."""
    qids = np.array([t.qid for t in pairs.triples])
    names = np.unique(qids)
    order = np.random.default_rng(seed).permutation(len(names))
    k = min(len(names) - 1, max(1, int(round(heldout * len(names)))))
    held = set(names[order[:k]].tolist())
    mask = np.array([q in held for q in qids])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _texts(pairs, rows):
    t = [pairs.triples[i] for i in rows]
    return [x.query for x in t], [x.baseline for x in t], [x.perturbed for x in t]


def attribution_work(ce, pairs, rows, method: str, steps: int) -> np.ndarray:
    """(n, 2 + E): baseline, perturbed and each edge's attribution score of the pairs ``rows``."""
    q, b, p = _texts(pairs, rows)
    res = ce.attribute_edges(q, b, p, method=method, steps=steps)
    return np.concatenate([res.baseline[:, None], res.perturbed[:, None], res.scores], 1)


def means_work(ce, pairs, rows) -> np.ndarray:
    """Each node's mean output per part over the baseline inputs of ``rows`` (flattened (U, parts, d))."""
    from ...engine.circuits import node_means

    q, b, _ = _texts(pairs, rows)
    return node_means(ce, q, b)


def size_grid(n_edges: int, sizes: list[int] | None, edges: int | None) -> list[int]:
    """Circuit sizes to measure: 0, the given ``sizes`` (default 1, 2, 5, 10, 20, 50, ... below
    ``n_edges``), ``edges`` when given, and all edges."""
    if not sizes:
        sizes = [m * 10 ** e for e in range(7) for m in (1, 2, 5)]
    grid = {0, n_edges, *[s for s in sizes if 0 < s < n_edges]}
    if edges is not None:
        grid.add(min(int(edges), n_edges))
    return sorted(grid)


def curve_work(ce, pairs, rows, edges: np.ndarray, order: np.ndarray, means: np.ndarray, sizes: list[int],
               target: float | None, refine: int = 6, ablation: str = "mean") -> np.ndarray:
    """(S, 1 + 2n): circuit size, then the held-out pairs' baseline and perturbed scores with the top-``size``
    edges of ``order`` kept (every other edge mean-ablated; ``ablation="counterfactual"``: the baseline's own
    score, and the perturbed input with every other edge carrying the baseline's node outputs), for each size
    of ``sizes``; with ``target``, a bisection (``refine`` steps) between the last size below the target
    faithfulness and the first above."""
    from ...engine.circuits import circuit_scores, counterfactual_scores, keep_matrix
    from ...engine.graph import graph_for

    q, b, p = _texts(pairs, rows)
    graph = graph_for(ce)
    measured: dict[int, np.ndarray] = {}
    if ablation == "counterfactual":  # the baseline run, every edge its own: the graph's plain score
        base = counterfactual_scores(ce, q, b, b, [keep_matrix(graph, np.zeros((0, 2)))])[0]

    def measure(size: int) -> np.ndarray:
        if size not in measured:
            keep = keep_matrix(graph, edges[order[:size]])
            if ablation == "counterfactual":
                measured[size] = np.concatenate([base, counterfactual_scores(ce, q, p, b, [keep])[0]])
            else:
                measured[size] = circuit_scores(ce, q + q, b + p, [keep], means)[0]
        return measured[size]

    for s in sizes:
        measure(s)
    if target is not None:
        diff = lambda s: measured[s][len(q):] - measured[s][: len(q)]  # noqa: E731
        full, empty = diff(sizes[-1]), diff(0)
        f = lambda s: faithfulness(diff(s), full, empty)  # noqa: E731
        above = [s for s in sizes if f(s) >= target]
        if above and above[0] > 0:
            lo, hi = max(s for s in sizes if s < above[0]), above[0]
            for _ in range(refine):
                if hi - lo <= 1:
                    break
                mid = (lo + hi) // 2
                measure(mid)
                lo, hi = (lo, mid) if f(mid) >= target else (mid, hi)
    return np.array([np.concatenate([[s], measured[s]]) for s in sorted(measured)])


def connected_sizes(ce, edges: np.ndarray, order: np.ndarray, sizes) -> list[int]:
    """Per circuit size, how many of its top edges lie on an input -> score path of its own edges."""
    from ...engine.circuits import connected
    from ...engine.graph import graph_for

    graph = graph_for(ce)
    return [int(connected(graph, edges[order[:int(s)]]).sum()) for s in sizes]


def curve_frame(values: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int):
    """``circuit_curve.csv``: per size, faithfulness with its query-clustered bootstrap CI and the mean
    score differences."""
    import pandas as pd

    n = (values.shape[1] - 1) // 2
    sizes = values[:, 0].astype(int)
    diffs = values[:, 1 + n:] - values[:, 1: 1 + n]
    full, empty = diffs[-1], diffs[0]
    rows = []
    for s, d in zip(sizes, diffs):
        point, low, high = bootstrap_faithfulness(d, full, empty, clusters, n_boot=n_boot, seed=seed)
        rows.append({"edges": int(s), "faithfulness": point, "ci_low": low, "ci_high": high,
                     "mean_diff": float(d.mean()), "n_pairs": n, "n_queries": len(set(clusters.tolist()))})
    return pd.DataFrame(rows)


def agreement_rows(ce, pairs, rows, method: str, steps: int, edges: np.ndarray, order: np.ndarray,
                   scores: np.ndarray, top_k: int = 20, seed: int = 0) -> list[dict]:
    """Attribution vs exact patching on the pairs ``rows``: heads (node attribution vs ``ce.patch``) and
    edges (the pairs' edge attribution ``scores`` (n, E) vs exact edge patching, for the top-2k edges of
    ``order`` and 2k random others)."""
    from scipy import stats

    from ...engine.attribution import agreement
    from ...engine.path_patching import patch_edges

    q, b, p = _texts(pairs, rows)
    exact = ce.patch(q, b, p, site="z")
    est = ce.attribute(q, b, p, site="z", method=NODE_METHOD[method], steps=steps)
    out = [{"level": "heads", "method": NODE_METHOD[method], **agreement(est, exact, top_k=top_k // 2)}]
    rng = np.random.default_rng(seed)
    rest = order[2 * top_k:]
    sample = np.concatenate([order[: 2 * top_k], rng.choice(rest, min(len(rest), 2 * top_k), replace=False)])
    base, _, patched = patch_edges(ce, q, b, p, [tuple(e) for e in edges[sample]])
    da = scores[:, sample].mean(0)
    de = (patched - base[:, None]).mean(0)
    k = min(top_k, len(da))
    top = lambda v: set(np.argsort(-np.abs(v), kind="stable")[:k].tolist())  # noqa: E731
    out.append({"level": "edges", "method": method, "nodes": int(len(da)), "pearson": float(stats.pearsonr(da, de)[0]),
                "spearman": float(stats.spearmanr(da, de)[0]), "top_k": k, "top_k_overlap": len(top(da) & top(de)) / k})
    for row in out:
        row["pairs"] = len(q)
    return out
