"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024) for every edge at once.

An edge u->r (:mod:`matchsig.engine.graph`) is patched exactly by path patching
(:func:`matchsig.engine.path_patching.patch_edges`): reader r's input is recomputed with node u's
output from the perturbed run, everything else at the baseline. Its first-order estimate is

    delta(u->r)  ~=  (o_u^pert - o_u^base) . J_{r,u}^T  d score / d in_r

where ``d score / d in_r`` is the gradient of the score w.r.t. reader r's input (one backward gives
all readers') and ``J_{r,u}`` the Jacobian of r's input w.r.t. u's output through the residual
additions and LayerNorms between them (post-LN: not the identity; applied to every node's difference at
once by one pass forward through the LayerNorms, :meth:`EdgeGraph.edge_products`).

* ``method="eap"``: gradients and Jacobians at the baseline run;
* ``method="eap-ig"``: averaged over ``steps`` runs whose input embeddings move from the
  baseline's to the perturbed's (midpoints ``(k + 1/2) / steps``); the output differences stay the
  endpoints'. With many steps this is the integrated gradient of the edge.
* ``method="eap-qk"``: EAP with the QK fix of AtP* (Kramar et al. 2024) on every edge into a head's
  query or key input: the patched input and the head's new attention pattern are computed exactly,
  and only the pattern's effect on the score is linearised (``sum (A' - A) * d score / d A``). A
  first-order estimate misses what a saturated softmax does with a changed query or key; this does
  not (:meth:`EdgeGraph.qk_products`). Value, MLP and score edges stay EAP's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MatchsigError
from .attribution import _frozen
from .graph import EdgeGraph, graph_for
from .parts import PAD
from .patching import encode_triples

__all__ = ["EdgeAttribution", "attribute_edges", "EDGE_METHODS", "edge_scores"]

EDGE_METHODS = ("eap", "eap-ig", "eap-qk")


@dataclass
class EdgeAttribution:
    """Estimated score change of patching each edge, per pair: ``scores[i, e]`` for edge ``edges[e]``
    = (reader index, node index) of the graph; ``senders[e]`` and ``receivers[e]`` name it."""

    method: str
    steps: int
    edges: np.ndarray
    senders: list[str]
    receivers: list[str]
    baseline: np.ndarray
    perturbed: np.ndarray
    scores: np.ndarray

    def mean(self) -> np.ndarray:
        """Mean estimated change of each edge over the pairs."""
        return self.scores.mean(0) if len(self.scores) else np.zeros(len(self.edges))

    def ranking(self) -> np.ndarray:
        """Edge indices by decreasing |mean| (ties by index)."""
        return np.argsort(-np.abs(self.mean()), kind="stable")

    def to_frame(self):
        """One row per edge: ``edge`` ("sender->receiver"), ``sender``, ``receiver``, ``score`` (the mean), ``abs``."""
        import pandas as pd

        mean = self.mean()
        return pd.DataFrame({"edge": [f"{s}->{r}" for s, r in zip(self.senders, self.receivers)],
                             "sender": self.senders, "receiver": self.receivers, "score": mean,
                             "abs": np.abs(mean), "method": self.method})


def edge_index(graph: EdgeGraph) -> np.ndarray:
    """(E, 2) (reader, node) of every edge, readers in compute order, nodes in compute order within."""
    return np.argwhere(graph.edge_mask())


def attribute_edges(ce, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
                    method: str = "eap", steps: int = 16, chunk_size: int = 4, progress: bool = False) -> EdgeAttribution:
    """EAP (``method="eap"``) or EAP-IG (``"eap-ig"``, ``steps`` points) scores of every edge of ``ce``'s graph
    on each (query, baseline, perturbed) triple; ``chunk_size``: pairs per forward."""
    if method not in EDGE_METHODS:
        raise MatchsigError(f"unknown edge attribution method {method!r}: use one of {', '.join(EDGE_METHODS)}")
    if steps < 1 or chunk_size < 1:
        raise MatchsigError(f"steps and chunk_size must be >= 1, got {steps} and {chunk_size}")
    enc_b, enc_p = encode_triples(ce, queries, baseline_docs, perturbed_docs)
    graph = graph_for(ce)
    edges = edge_index(graph)
    n = len(enc_b)
    steps = steps if method == "eap-ig" else 1
    qk = method == "eap-qk"
    out = EdgeAttribution(method, steps, edges, [graph.node_name(u) for u in edges[:, 1]],
                          [graph.reader_name(r) for r in edges[:, 0]], np.zeros(n), np.zeros(n),
                          np.zeros((n, len(edges))))
    from .progress import _progress

    bar = _progress(n, progress, f"edge attribution {method}")
    for chunk in ce.batches(enc_b.lengths(), chunk_size) if n else []:
        batch_b, batch_p = ce.collate(enc_b, chunk), ce.collate(enc_p, chunk)
        graph = graph_for(ce, batch_b)
        with torch.inference_mode():
            emb_b, emb_p = graph.embed(batch_b), graph.embed(batch_p)
        full, base, pert = edge_scores(graph, batch_b, emb_b, emb_p, steps, qk=qk)
        out.scores[chunk] = full[:, edges[:, 0], edges[:, 1]]
        out.baseline[chunk], out.perturbed[chunk] = base, pert
        bar.update(len(chunk))
    bar.close()
    return out


def edge_scores(graph: EdgeGraph, batch, emb_b: torch.Tensor, emb_p: torch.Tensor, steps: int, qk: bool = False):
    """(B, R, U) estimated change of each (reader, node) pair (0 where no edge), and the baseline and
    perturbed scores, for one batch whose input node outputs are ``emb_b`` and ``emb_p``; ``steps`` = 1:
    EAP at the baseline, else EAP-IG's midpoints; ``qk``: the QK fix on query and key edges (EAP only)."""
    real = (batch.part_ids != PAD).to(emb_b.dtype)[None, :, :, None]
    with torch.inference_mode():
        run_b, run_p = graph.run(batch, emb=emb_b), graph.run(batch, emb=emb_p)
        delta = ((run_p.outs - run_b.outs) * real).clone()
    total = torch.zeros(len(batch), graph.R, graph.U, dtype=torch.float64, device=emb_b.device)
    alphas = [0.0] if steps == 1 else [(k + 0.5) / steps for k in range(steps)]
    for alpha in alphas:
        emb = emb_b.clone() if alpha == 0.0 else (emb_b + alpha * (emb_p - emb_b)).clone()
        with _frozen(graph.model), torch.enable_grad():
            run = graph.run(batch, emb=emb, grad=True)
        with torch.no_grad():
            total += graph.edge_products(run.grads, run.ln_inputs, delta).double()
    total /= len(alphas)
    if qk:
        with torch.no_grad():
            graph.qk_products(run_b, run, run_p.outs, total)
    return (total.cpu().numpy(), run_b.scores.double().cpu().numpy(), run_p.scores.double().cpu().numpy())
