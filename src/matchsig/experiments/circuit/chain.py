"""The chain "matching heads -> heads of the last layers -> score", tested by path patching, and its claim.

Senders: the matching heads of the folder's contrast run (``--chain-senders`` names them instead)
below the last two layers; receivers: every head of the last two layers (q, k and v). On each
held-out pair, three exact interventions from the perturbed run (:mod:`matchsig.engine.path_patching`):

* ``via``: the senders' outputs patched into the receivers' inputs only (their path through the last
  layers' heads);
* ``direct``: into the score's input only (the residual path that skips every later node);
* ``total``: into every reader (the senders' whole effect, as patching their outputs).

``circuit_chain.csv`` holds one row per pair. The claim: the senders' effect reaches the score through
the last layers' heads, i.e. ``via - baseline``, signed by the direction of the full effect and
averaged per query, is > 0 (:func:`matchsig.analysis.findings.directional`).
"""

from __future__ import annotations

import numpy as np

from ...analysis.findings import directional, finding, missing

__all__ = ["chain_senders", "chain_work", "judge_chain", "KEY", "RULE"]

KEY = "matching_heads_feed_last_layers"
RULE = ("Per held-out pair, d = (via - baseline) x sign(mean of perturbed - baseline), where via is the score with "
        "the senders' (matching heads below the last two layers) perturbed outputs path-patched into the q, k and v "
        "inputs of every head of the last two layers; d averaged per query; holds when the one-sample t-test over "
        "queries gives p <= alpha with a positive mean; does not hold when p <= alpha with a negative mean or the "
        "CI's upper bound lies below half a standard deviation; otherwise (or with fewer than 5 queries, or no "
        "sender) inconclusive.")


def chain_senders(heads: list[tuple[int, int]], num_layers: int) -> list[str]:
    """Sender names of ``heads`` below the last two layers."""
    return [f"a{l}.h{h}" for l, h in sorted(heads) if l < num_layers - 2]


def chain_work(ce, pairs, rows, senders: list[str]) -> np.ndarray:
    """(n, 5): baseline, perturbed, via, direct and total scores of the pairs ``rows``."""
    from ...engine.graph import graph_for
    from ...engine.path_patching import _patch_chunk
    from ...engine.patching import encode_triples

    t = [pairs.triples[i] for i in rows]
    enc_b, enc_p = encode_triples(ce, [x.query for x in t], [x.baseline for x in t], [x.perturbed for x in t])
    graph = graph_for(ce)
    us = [graph.parse_node(s) for s in senders]
    last = [r for layer in range(max(0, graph.L - 2), graph.L) for name in
            (f"a{layer}.h{h}" for h in range(graph.H)) for r in graph.parse_readers(name)]
    keeps = []
    for readers in (last, [graph.R - 1], list(range(graph.R))):
        keep = np.ones((graph.R, graph.U))
        keep[np.ix_(readers, us)] = 0.0
        keeps.append(keep)
    out = np.zeros((len(t), 5))
    for chunk in ce.batches(enc_b.lengths(), 16) if len(t) else []:
        base, pert, patched = _patch_chunk(ce, enc_b, enc_p, chunk, keeps)
        out[chunk] = np.stack([base, pert, *patched], 1)
    return out


def judge_chain(run):
    """The claim on ``circuit_chain.csv``."""
    import pandas as pd

    path = run.path / "circuit_chain.csv"
    if not path.is_file():
        return missing(KEY, "circuit_chain.csv is missing: it needs a contrast run in the folder (matching heads) "
                       "or --chain-senders", RULE)
    frame = pd.read_csv(path, dtype={"qid": str})
    senders = str(frame["senders"].iloc[0]) if len(frame) else ""
    if not len(frame) or senders in ("", "nan"):
        return finding(KEY, "inconclusive", "No sender below the last two layers: nothing to path-patch.", RULE)
    sign = np.sign((frame["perturbed"] - frame["baseline"]).mean()) or 1.0
    frame["d"] = (frame["via"] - frame["baseline"]) * sign
    per_query = frame.groupby("qid")["d"].mean().to_numpy()
    test = directional(per_query, run.alpha)
    total = (frame["total"] - frame["baseline"]).mean()
    share = lambda col: (frame[col] - frame["baseline"]).mean() / total if total else float("nan")  # noqa: E731
    evidence = (f"Senders {senders.replace(';', ', ')} -> every head of the last two layers: {test.text()}. Of the "
                f"senders' whole effect (mean {total:+.4g}), the path through the last layers' heads carries "
                f"{share('via'):.2f} and the direct residual path to the score {share('direct'):.2f}.")
    return finding(KEY, test.state, evidence, RULE, queries=test.n, via_share=share("via"),
                   direct_share=share("direct"))
