"""Path patching (Wang et al. 2023) and exact edge patching on (query, baseline, perturbed) triples.

``path_patch(sender=u, receiver=r)``: the baseline input is run with the input of receiver r (a
head's q, k or v input, all three, an MLP's input, or the score's) computed as if only the
sender's output had changed to its value on the perturbed input: every other node's output stays
at its baseline value in r's input, through the residual additions and LayerNorms between them
(:mod:`matchsig.engine.graph`). Everything after r runs normally, so the score moves by exactly
the effect that flows from u to r directly and from r onward. Wang et al.'s three steps (cache
both runs; rerun the baseline with the sender patched and every other node frozen, recording the
receiver's input; rerun the baseline with that input patched into the receiver) give the same
number, which is how it is tested (tests/test_path_patching.py, on a float64 reference with hooks).

Several receivers patch the edges sender -> each receiver together: a path sender -> earlier receiver
-> later receiver is included (Wang et al.'s step 3 would overwrite the later receiver's whole input
and leave it out; for receivers of one layer the two agree).

An *edge* u->r is a (sender, receiver) pair with one reader: exact edge patching
(:func:`patch_edges`) is path patching of each edge on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MatchsigError
from .graph import graph_for
from .patching import encode_triples

__all__ = ["PathPatchResult", "path_patch", "patch_edges"]


@dataclass
class PathPatchResult:
    """Scores of path patching ``senders`` -> ``receivers`` (names) on each pair."""

    senders: list[str]
    receivers: list[str]
    baseline: np.ndarray
    perturbed: np.ndarray
    patched: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.patched - self.baseline

    @property
    def effect(self) -> np.ndarray:
        """``(patched - baseline) / (perturbed - baseline)`` per pair (NaN where perturbed == baseline)."""
        full = self.perturbed - self.baseline
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(full != 0, self.delta / np.where(full != 0, full, 1.0), np.nan)


def _names(value) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise MatchsigError("give at least one sender and one receiver")
    return names


def path_patch(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
               sender: str | Sequence[str], receiver: str | Sequence[str], chunk_size: int = 16) -> PathPatchResult:
    """Path patching from ``sender`` (``input``, ``a<l>.h<h>``, ``m<l>``, or a list: patched together) to
    ``receiver`` (``a<l>.h<h>.q|k|v``, ``a<l>.h<h>`` = its q, k and v, ``m<l>``, ``score``, or a list)."""
    senders, receivers = _names(sender), _names(receiver)
    enc_b, enc_p = encode_triples(ce, queries, baseline_docs, perturbed_docs)
    graph = graph_for(ce)
    us = [graph.parse_node(s) for s in senders]
    rs = sorted({r for name in receivers for r in graph.parse_readers(name)})
    allowed = graph.edge_mask()
    for r in rs:
        if not any(allowed[r, u] for u in us):
            raise MatchsigError(f"no sender of {senders} is before receiver {graph.reader_name(r)}: no path to patch")
    keep = np.ones((graph.R, graph.U))
    for r in rs:
        keep[r, us] = 0.0
    n = len(enc_b)
    res = PathPatchResult(senders, receivers, np.zeros(n), np.zeros(n), np.zeros(n))
    for chunk in ce.batches(enc_b.lengths(), chunk_size) if n else []:
        base, pert, patched = _patch_chunk(ce, enc_b, enc_p, chunk, [keep])
        res.baseline[chunk], res.perturbed[chunk], res.patched[chunk] = base, pert, patched[0]
    return res


def _patch_chunk(ce, enc_b, enc_p, chunk, keeps: list[np.ndarray]):
    """Baseline and perturbed scores of a chunk, and its baseline scores under each ``keep`` (perturbed
    outputs substituted where keep is 0)."""
    batch_b, batch_p = ce.collate(enc_b, chunk), ce.collate(enc_p, chunk)
    graph = graph_for(ce, batch_b)
    with torch.inference_mode():
        return patched_scores(graph, batch_b, graph.embed(batch_b), graph.embed(batch_p), keeps)


def patched_scores(graph, batch, emb_b: torch.Tensor, emb_p: torch.Tensor, keeps: list[np.ndarray]):
    """For one batch whose input node outputs are ``emb_b`` (baseline) and ``emb_p`` (perturbed; aligned
    positions): baseline scores, perturbed scores, and the baseline scores with, for each (R, U) ``keep``,
    reader r's input taking node u's perturbed output where ``keep[r, u]`` is 0."""
    with torch.inference_mode():
        run_b, run_p = graph.run(batch, emb=emb_b), graph.run(batch, emb=emb_p)
        dtype, device = run_b.outs.dtype, run_b.outs.device
        patched = [graph.run(batch, keep=torch.as_tensor(k, dtype=dtype, device=device), subst=run_p.outs,
                             emb=emb_b).scores.double().cpu().numpy() for k in keeps]
    return run_b.scores.double().cpu().numpy(), run_p.scores.double().cpu().numpy(), patched


def patch_edges(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
                edges: Sequence[tuple[int, int]], chunk_size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact edge patching: for each edge ``(reader, node)`` (indices of :class:`~matchsig.engine.graph.EdgeGraph`),
    the path-patched score of every pair; returns (baseline (n,), perturbed (n,), patched (n, edges))."""
    enc_b, enc_p = encode_triples(ce, queries, baseline_docs, perturbed_docs)
    graph = graph_for(ce)
    allowed = graph.edge_mask()
    keeps = []
    for r, u in edges:
        if not (0 <= r < graph.R and 0 <= u < graph.U and allowed[r, u]):
            raise MatchsigError(f"({r}, {u}) is not an edge of the graph (reader, node)")
        k = np.ones((graph.R, graph.U))
        k[r, u] = 0.0
        keeps.append(k)
    n = len(enc_b)
    base, pert, out = np.zeros(n), np.zeros(n), np.zeros((n, len(keeps)))
    for chunk in ce.batches(enc_b.lengths(), chunk_size) if n else []:
        b, p, patched = _patch_chunk(ce, enc_b, enc_p, chunk, keeps)
        base[chunk], pert[chunk] = b, p
        out[chunk] = np.stack(patched, 1) if patched else out[chunk]
    return base, pert, out
