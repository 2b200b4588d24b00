"""Circuits: the model run with only some edges, every other edge ablated (:mod:`matchsig.engine.graph`).

A circuit is a set of edges u->r. Running it, reader r's input is computed (residual additions and
LayerNorms) from node u's actual output where u->r is in the circuit, and from u's *ablated* value
where it is not: its mean output over reference inputs, per token part (``CLS``, ``Q``, ``SEP1``,
``D``, ``SEP2``: a [CLS] row is replaced by the mean [CLS] row, a document token by the mean
document token), the mean ablation of Wang et al. (2023) and Hanna et al. (2024) made position-aware
for inputs of different lengths. Every node still computes, from whatever its inputs are.

With every edge in the circuit the run is the model's; with none, every reader sees the means only
and the score is one constant for all inputs of one length pattern.

Counterfactual ablation (:func:`counterfactual_scores`, the interchange ablation of Conmy et al. 2023 and
Hanna et al. 2024) replaces a non-circuit edge's value by its node's output on a *reference* input
lined up token by token with the pair (a diagnostic's baseline document, the perturbed one being run):
with every edge cut the run is the reference's, so the circuit is asked to carry the difference
between the two inputs only, not the whole computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import MatchsigError
from .graph import EdgeGraph, graph_for
from .parts import PAD

__all__ = ["node_means", "circuit_scores", "connected", "counterfactual_scores", "keep_matrix"]


def node_means(ce, queries: Sequence[str], documents: Sequence[str], chunk_size: int = 16) -> np.ndarray:
    """(U, PAD + 1, d) float64: each node's mean output over the tokens of each part of the pairs
    (row PAD, and any part no pair has, is 0)."""
    enc = ce.encode(queries, documents)
    graph = graph_for(ce)
    sums = np.zeros((graph.U, PAD + 1, graph.d))
    counts = np.zeros(PAD + 1)
    for chunk in ce.batches(enc.lengths(), chunk_size) if len(enc) else []:
        batch = ce.collate(enc, chunk)
        graph = graph_for(ce, batch)
        with torch.inference_mode():
            outs = graph.run(batch).outs.double()  # (U, B, T, d)
        onehot = torch.nn.functional.one_hot(batch.part_ids, PAD + 1).to(outs.dtype)  # (B, T, P)
        sums += torch.einsum("ubtd,btp->upd", outs, onehot).cpu().numpy()
        counts += onehot.sum((0, 1)).cpu().numpy()
    means = sums / np.maximum(counts, 1)[None, :, None]
    means[:, PAD] = 0.0
    return means


def keep_matrix(graph: EdgeGraph, edges: np.ndarray) -> np.ndarray:
    """(R, U) float: 1 at the circuit's edges ``edges`` ((k, 2) reader, node), 0 elsewhere."""
    keep = np.zeros((graph.R, graph.U))
    edges = np.asarray(edges, dtype=int).reshape(-1, 2)
    if len(edges) and not graph.edge_mask()[edges[:, 0], edges[:, 1]].all():
        raise MatchsigError("a circuit edge is not an edge of the graph (reader, node)")
    keep[edges[:, 0], edges[:, 1]] = 1.0
    return keep


def circuit_scores(ce, queries: Sequence[str], documents: Sequence[str], keeps: Sequence[np.ndarray],
                   means: np.ndarray, chunk_size: int = 16) -> np.ndarray:
    """(len(keeps), n) scores of the pairs run with each circuit ``keep`` ((R, U): 1 = edge kept),
    every other edge ablated to ``means`` (:func:`node_means`)."""
    enc = ce.encode(queries, documents)
    out = np.zeros((len(keeps), len(enc)))
    for chunk in ce.batches(enc.lengths(), chunk_size) if len(enc) else []:
        batch = ce.collate(enc, chunk)
        graph = graph_for(ce, batch)
        with torch.inference_mode():
            emb = graph.embed(batch)
            table = torch.as_tensor(means, dtype=emb.dtype, device=emb.device)
            subst = table[:, batch.part_ids]  # (U, B, T, d)
            for k, keep in enumerate(keeps):
                run = graph.run(batch, emb=emb, keep=torch.as_tensor(keep, dtype=emb.dtype, device=emb.device),
                                subst=subst)
                out[k, chunk] = run.scores.double().cpu().numpy()
    return out


def counterfactual_scores(ce, queries: Sequence[str], documents: Sequence[str], references: Sequence[str],
                          keeps: Sequence[np.ndarray], chunk_size: int = 16) -> np.ndarray:
    """(len(keeps), n) scores of the pairs (query, document) run with each circuit ``keep`` ((R, U): 1 = edge
    kept), every other edge carrying its node's output on (query, reference) at the same position. The two
    inputs of a pair must line up (same length and parts, as a diagnostic's baseline and perturbed
    documents), else a one-line error."""
    enc, ref = ce.encode(queries, documents), ce.encode(queries, references)
    bad = [i for i in range(len(enc)) if enc.part_ids[i] != ref.part_ids[i]]
    if bad:
        i = bad[0]
        raise MatchsigError(f"counterfactual ablation needs inputs that line up token by token: pair {i} has "
                            f"{len(enc.part_ids[i])} tokens and its reference {len(ref.part_ids[i])} (or other parts)")
    out = np.zeros((len(keeps), len(enc)))
    for chunk in ce.batches(enc.lengths(), chunk_size) if len(enc) else []:
        batch, rbatch = ce.collate(enc, chunk), ce.collate(ref, chunk)
        graph = graph_for(ce, batch)
        with torch.inference_mode():
            subst = graph.run(rbatch).outs  # (U, B, T, d): the reference's node outputs
            emb = graph.embed(batch)
            for k, keep in enumerate(keeps):
                run = graph.run(batch, emb=emb, keep=torch.as_tensor(keep, dtype=emb.dtype, device=emb.device),
                                subst=subst)
                out[k, chunk] = run.scores.double().cpu().numpy()
    return out


def connected(graph: EdgeGraph, edges: np.ndarray) -> np.ndarray:
    """(k,) bool: which of ``edges`` ((k, 2) reader, node) lie on a path input -> ... -> score made of ``edges``.

    Under counterfactual ablation the others change nothing: a node no kept path reaches from the input
    computes the reference's output, and an edge into a node with no kept path to the score reaches no
    score, so the circuit and its connected part score the same (tested)."""
    edges = np.asarray(edges, dtype=int).reshape(-1, 2)
    into = [graph.reader_node(int(r)) for r in edges[:, 0]]
    reached = np.zeros(graph.U, dtype=bool)
    reached[0] = True
    for u in range(graph.U):  # node order is topological: an edge's node comes before its reader's
        if reached[u]:
            for k in np.flatnonzero(edges[:, 1] == u):
                if into[k] is not None:
                    reached[into[k]] = True
    useful = np.zeros(graph.U, dtype=bool)
    for u in range(graph.U - 1, -1, -1):
        ks = np.flatnonzero(edges[:, 1] == u)
        useful[u] = any(into[k] is None or useful[into[k]] for k in ks)
    return np.array([bool(reached[u]) and (into[k] is None or bool(useful[into[k]]))
                     for k, u in enumerate(edges[:, 1])], dtype=bool)
