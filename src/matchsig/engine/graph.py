"""The computational graph of a BERT-family cross-encoder: nodes, readers and edges, run with edge interventions.

Nodes write into the residual stream: the **input** (the embeddings after their LayerNorm, the
input of layer 0), each **head** ``a{l}.h{h}`` (its output projected into the residual,
``z_h W_O^h``; the output bias ``b_O`` is a constant, no node's) and each **MLP** ``m{l}`` (its
output before the residual add). Readers read it: each head's **q**, **k** and **v** input
(``a{l}.h{h}.q`` ...; the layer's input, which feeds all three), each MLP's input ``m{l}`` (the
stream after the attention sub-block's LayerNorm) and the **score** (the last layer's output,
read by the pooler and classifier). An edge ``u->r`` joins a node to a reader after it.

Post-LN. In a BERT layer the stream is renormalised after every addition::

    x_{l}^mid = LN1_l(x_l + sum_h o_{l,h} + b_O),   x_{l+1} = LN2_l(x_l^mid + mlp_l(x_l^mid))

so the stream is not a sum of node outputs. The input of reader r is read as a function of every
node output before it: ``in_r = F_r(o_input, o_a0.h0, ..., o_m(l-1), ...)`` where ``F_r`` is the
chain of residual additions and LayerNorms alone (LayerNorm statistics recomputed, no other node
recomputed). With every edge kept, ``F_r`` of the actual outputs is the model's own stream, so the
graph's forward is the model's forward (checked against it: :func:`check`). Cutting edge u->r
replaces ``o_u`` by a substitute *in F_r only* (a mean, or another input's value); every other
reader still sees ``o_u``. This is the definition of edges, path patching and circuits here.

Only BERT-structured layers (``attention.self.query/key/value``, ``attention.output.dense`` and
``LayerNorm``, ``intermediate``, ``output.dense`` and ``LayerNorm``: BERT, RoBERTa, ELECTRA) are
supported; other families are refused in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MatchsigError

__all__ = ["EdgeGraph", "graph_for", "Run"]


@dataclass
class Run:
    """One forward of the graph: ``scores`` (B,), node outputs ``outs`` (U, B, T, d); with ``grad``:
    ``grads[p]`` the score's gradient w.r.t. the inputs of the readers at read point p (R_p, B, T, d)
    and ``ln_inputs[s]`` the input of the s-th LayerNorm of the stream (for the chain's Jacobian)."""

    scores: torch.Tensor
    outs: torch.Tensor
    grads: list | None = None
    ln_inputs: list | None = None
    #: with ``grad``: per layer (q, k, logits with the mask, pattern, d score / d pattern), each (B, H, ...)
    attention: list | None = None


class EdgeGraph:
    """Nodes, readers and edges of ``ce``'s model, and its forward with edge interventions.

    Indices. Nodes: 0 = input, ``1 + l (H+1) + h`` = head (l, h), ``1 + l (H+1) + H`` = MLP l.
    Readers: ``l (3H+1) + {0, H, 2H} + h`` = q/k/v of head (l, h), ``l (3H+1) + 3H`` = MLP l,
    ``L (3H+1)`` = score. Read points: 2l (layer l's input: its heads' q/k/v), 2l+1 (after LN1_l:
    MLP l), 2L (the last layer's output: the score).
    """

    def __init__(self, ce):
        model = ce.model
        base = getattr(model, "base_model", None)
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        paths = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "attention.output.LayerNorm", "intermediate", "output.dense", "output.LayerNorm")
        if ce.family.decoder or layers is None or not all(_get(layers[0], p) is not None for p in paths) \
                or not hasattr(model, "classifier") or getattr(base, "embeddings", None) is None:
            raise MatchsigError(f"model {ce.name} ({type(model).__name__}): edges, path patching and circuits need "
                                "BERT-structured post-LN encoder layers (BERT, RoBERTa, ELECTRA)")
        self.ce, self.model, self.base, self.layers = ce, model, base, list(layers)
        self.L, self.H = ce.num_layers, ce.num_heads
        self.d = model.config.hidden_size
        self.dh = self.d // self.H
        self.U = 1 + self.L * (self.H + 1)
        self.R = self.L * (3 * self.H + 1) + 1
        self._w = [self._layer_weights(layer) for layer in self.layers]

    def _layer_weights(self, layer) -> dict:
        H, dh, d = self.H, self.dh, self.d
        att = layer.attention
        per_head = lambda lin: (lin.weight.T.reshape(d, H, dh).permute(1, 0, 2), lin.bias.reshape(H, dh))  # noqa: E731
        wo = att.output.dense.weight.T.reshape(H, dh, d)
        return {"q": per_head(att.self.query), "k": per_head(att.self.key), "v": per_head(att.self.value),
                "o": (wo, att.output.dense.bias), "ln1": att.output.LayerNorm, "ln2": layer.output.LayerNorm,
                "mlp": (layer.intermediate, layer.output.dense)}

    # ---- names and index sets ----------------------------------------------------------------
    def node_name(self, u: int) -> str:
        if u == 0:
            return "input"
        layer, k = divmod(u - 1, self.H + 1)
        return f"m{layer}" if k == self.H else f"a{layer}.h{k}"

    def reader_name(self, r: int) -> str:
        if r == self.R - 1:
            return "score"
        layer, k = divmod(r, 3 * self.H + 1)
        return f"m{layer}" if k == 3 * self.H else f"a{layer}.h{k % self.H}.{'qkv'[k // self.H]}"

    def reader_node(self, r: int) -> int | None:
        """The node reader ``r`` feeds (a head's q/k/v -> the head, an MLP input -> the MLP); None for the score."""
        if r == self.R - 1:
            return None
        layer, k = divmod(r, 3 * self.H + 1)
        return 1 + layer * (self.H + 1) + (self.H if k == 3 * self.H else k % self.H)

    def node_names(self) -> list[str]:
        return [self.node_name(u) for u in range(self.U)]

    def reader_names(self) -> list[str]:
        return [self.reader_name(r) for r in range(self.R)]

    def point_readers(self, p: int) -> range:
        """Readers at read point p."""
        if p == 2 * self.L:
            return range(self.R - 1, self.R)
        layer, mid = divmod(p, 2)
        start = layer * (3 * self.H + 1)
        return range(start + 3 * self.H, start + 3 * self.H + 1) if mid else range(start, start + 3 * self.H)

    def upstream(self, p: int) -> int:
        """Number of nodes written before read point p (nodes 0..n-1)."""
        layer, mid = divmod(p, 2)
        return 1 + layer * (self.H + 1) + (self.H if mid else 0)

    def reader_point(self, r: int) -> int:
        if r == self.R - 1:
            return 2 * self.L
        layer, k = divmod(r, 3 * self.H + 1)
        return 2 * layer + (1 if k == 3 * self.H else 0)

    def edge_mask(self) -> np.ndarray:
        """(R, U) bool: which (reader, node) pairs are edges (the node is written before the reader reads)."""
        mask = np.zeros((self.R, self.U), dtype=bool)
        for r in range(self.R):
            mask[r, : self.upstream(self.reader_point(r))] = True
        return mask

    def parse_node(self, name: str) -> int:
        names = self.node_names()
        if name not in names:
            raise MatchsigError(f"unknown node {name!r}: use input, a<layer>.h<head> or m<layer> "
                                f"(layers 0..{self.L - 1}, heads 0..{self.H - 1})")
        return names.index(name)

    def parse_readers(self, name: str) -> list[int]:
        """``a3.h5.q`` -> its reader; ``a3.h5`` -> its q, k and v; ``m3``; ``score``."""
        names = self.reader_names()
        if name in names:
            return [names.index(name)]
        if all(f"{name}.{c}" in names for c in "qkv"):
            return [names.index(f"{name}.{c}") for c in "qkv"]
        raise MatchsigError(f"unknown receiver {name!r}: use a<layer>.h<head>[.q|.k|.v], m<layer> or score "
                            f"(layers 0..{self.L - 1}, heads 0..{self.H - 1})")

    # ---- the forward ---------------------------------------------------------------------------
    def embed(self, batch) -> torch.Tensor:
        """The input node's output (B, T, d): the embeddings after their LayerNorm."""
        mi = batch.model_inputs
        kwargs = {"input_ids": mi["input_ids"]}
        if "token_type_ids" in mi:
            kwargs["token_type_ids"] = mi["token_type_ids"]
        x = self.base.embeddings(**kwargs)
        project = getattr(self.base, "embeddings_project", None)  # ELECTRA: embeddings narrower than the stream
        return project(x) if project is not None else x

    def run(self, batch, emb: torch.Tensor | None = None, keep: torch.Tensor | None = None,
            subst: torch.Tensor | None = None, grad: bool = False) -> Run:
        """Scores of ``batch`` (its input node's output ``emb``, default the embeddings) where the input of
        reader r mixes, per node u before it, the actual output (``keep[r, u]`` = 1) and ``subst[u]``
        (``keep[r, u]`` = 0): ``in_r = F_r(subst + keep[r] (outs - subst))``. ``grad``: also the gradients
        of the summed scores w.r.t. every reader's input and the LayerNorm inputs (no interventions)."""
        if grad and keep is not None:
            raise MatchsigError("gradients are taken with every edge kept")
        x = self.embed(batch) if emb is None else emb
        x = x.detach().requires_grad_(True) if grad else x
        outs, reads, lns = [x], [], []
        self._capture = [] if grad else None
        mask = (1.0 - batch.model_inputs["attention_mask"][:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer, w in enumerate(self._w):
            X = self._inputs(2 * layer, x, outs, keep, subst, reads)  # (3H, B, T, d)
            o = self._heads(w, X, mask)  # (H, B, T, d)
            outs.extend(o.unbind(0))
            lns.append(x + o.sum(0) + w["o"][1])
            x = w["ln1"](lns[-1])
            inter, dense = w["mlp"]
            mlp = dense(inter(self._inputs(2 * layer + 1, x, outs, keep, subst, reads)[0]))
            outs.append(mlp)
            lns.append(x + mlp)
            x = w["ln2"](lns[-1])
        logits = self._head(self._inputs(2 * self.L, x, outs, keep, subst, reads)[0])
        scores = _scores(self.ce, logits)
        run = Run(scores, torch.stack(outs))
        if grad:
            captured, self._capture = self._capture, None
            grads = torch.autograd.grad(scores.sum(), reads + [a for *_, a in captured])
            run.grads = list(grads[: len(reads)])
            run.attention = [(q, k, s, a.detach(), g) for (q, k, s, a), g in zip(captured, grads[len(reads):])]
            run.ln_inputs = [t.detach() for t in lns]
            run.outs = run.outs.detach()
        return run

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        pooler = getattr(self.base, "pooler", None)
        if pooler is not None:
            return self.model.classifier(pooler(hidden))
        return self.model.classifier(hidden)

    def _heads(self, w: dict, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        H = self.H
        proj = lambda k, Xs: torch.einsum("hbtd,hde->bhte", Xs, w[k][0]) + w[k][1][None, :, None, :]  # noqa: E731
        q, k, v = proj("q", X[:H]), proj("k", X[H:2 * H]), proj("v", X[2 * H:])
        s = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + mask
        a = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), -1).to(v.dtype)
        if getattr(self, "_capture", None) is not None:  # the QK fix of edge attribution reads these
            self._capture.append((q.detach(), k.detach(), s.detach(), a))
        z = a @ v  # (B, H, T, dh)
        return torch.einsum("bhte,hed->hbtd", z, w["o"][0])

    def _inputs(self, p: int, x: torch.Tensor, outs: list, keep, subst, reads: list) -> torch.Tensor:
        """The inputs (R_p, B, T, d) of the readers at point p: the stream x, or its mixture for readers with cut edges."""
        readers = self.point_readers(p)
        X = x.unsqueeze(0).expand(len(readers), *x.shape)
        if keep is None:
            reads.append(X)
            return X
        n = self.upstream(p)
        k = keep[readers.start: readers.stop, :n]
        cut = torch.nonzero((k < 1).any(1)).flatten()
        if len(cut) == 0:
            return X
        X = X.clone()
        # readers with the same kept edges share one input (a small circuit leaves most readers with none)
        rows, inverse = torch.unique(k[cut], dim=0, return_inverse=True)
        X[cut] = self.chain(p, torch.stack(outs[:n]), subst[:n], rows)[inverse]
        return X

    def chain(self, p: int, outs: torch.Tensor, subst: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``F`` of read point p for R mixtures: node u contributes ``subst[u] + keep[:, u] (outs[u] - subst[u])``."""
        diff = outs - subst

        def contrib(nodes: slice) -> torch.Tensor:
            return subst[nodes].sum(0) + torch.einsum("ru,ubtd->rbtd", keep[:, nodes].to(diff.dtype), diff[nodes])

        x = contrib(slice(0, 1))
        for s in range(p):
            layer, second = divmod(s, 2)
            first = 1 + layer * (self.H + 1)
            w = self._w[layer]
            if second:
                x = w["ln2"](x + contrib(slice(first + self.H, first + self.H + 1)))
            else:
                x = w["ln1"](x + contrib(slice(first, first + self.H)) + w["o"][1])
        return x

    # ---- the chain's Jacobian (for edge attribution) -------------------------------------------
    def edge_products(self, grads: list, ln_inputs: list, delta: torch.Tensor) -> torch.Tensor:
        """``delta[u] . (dF_r/d o_u)^T grads[r]`` for every edge u->r: (B, R, U), 0 where no edge. It is the
        first-order change of the score when o_u moves by ``delta[u]`` (U, B, T, d) along u->r only.

        One pass forward through the LayerNorms: the tangents of every node written so far (each node's
        ``delta`` pushed through the chain's Jacobian, LayerNorm statistics at the run's stream) are
        contracted at each read point with its readers' gradients ``grads[p]`` (R_p, B, T, d)."""
        B, T, d = delta.shape[1:]
        tangents = torch.zeros(self.U, B, T, d, dtype=delta.dtype, device=delta.device)  # node-major: slices stay contiguous
        tangents[0] = delta[0]
        out = torch.zeros(B, self.R, self.U, dtype=delta.dtype, device=delta.device)
        for p in range(2 * self.L + 1):
            n, readers = self.upstream(p), self.point_readers(p)
            g = grads[p].to(delta.dtype).reshape(len(readers), B, T * d).transpose(0, 1)  # (B, R_p, T d)
            t = tangents[:n].reshape(n, B, T * d).transpose(0, 1)  # (B, n, T d)
            out[:, readers.start: readers.stop, :n] = torch.bmm(g, t.transpose(1, 2))
            if p == 2 * self.L:
                break
            layer, second = divmod(p, 2)
            first = 1 + layer * (self.H + 1)
            new = range(first + self.H, first + self.H + 1) if second else range(first, first + self.H)
            tangents[new.start: new.stop] = delta[new.start: new.stop]
            ln = self._w[layer]["ln2" if second else "ln1"]
            tangents[: new.stop] = _layer_norm_jvp(tangents[: new.stop], ln_inputs[p], ln.weight, ln.eps)
        return out

    # ---- AtP*'s QK fix (for edge attribution) --------------------------------------------------
    def qk_products(self, run_b: "Run", grad_run: "Run", outs_p: torch.Tensor, out: torch.Tensor,
                    node_chunk: int = 8) -> None:
        """Overwrite ``out`` (B, R, U) at every edge into a head's query or key input with the change of the
        score when the edge carries the perturbed run's output, its effect on the head's attention pattern
        computed exactly and only what follows linearised, ``sum (A' - A) * d score / d A`` (the QK fix of
        Kramar et al. 2024's AtP*). The reader's patched input is exact too (the chain of additions and
        LayerNorms with only that edge's node swapped)."""
        H, L = self.H, self.L
        scale = 1.0 / math.sqrt(self.dh)
        for layer in range(L):
            p, w = 2 * layer, self._w[layer]
            n, start = self.upstream(p), self.point_readers(p).start
            q, k, s, a, g = grad_run.attention[layer]
            base = self.chain(p, run_b.outs[:n], run_b.outs[:n], torch.zeros(1, n, dtype=s.dtype, device=s.device))
            for lo in range(0, n, node_chunk):
                hi = min(n, lo + node_chunk)
                eye = torch.zeros(hi - lo, n, dtype=s.dtype, device=s.device)
                eye[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
                dx = self.chain(p, outs_p[:n], run_b.outs[:n], eye) - base  # (m, B, T, d)
                for which, weight in (("q", w["q"][0]), ("k", w["k"][0])):
                    d = torch.einsum("mbtd,hde->mbhte", dx, weight)
                    moved = (d @ k.transpose(-1, -2) if which == "q" else q @ d.transpose(-1, -2)) * scale
                    a2 = torch.softmax((s + moved).to(torch.promote_types(s.dtype, torch.float32)), -1)
                    value = ((a2 - a) * g).sum((-1, -2))  # (m, B, H)
                    first = start + (0 if which == "q" else H)  # the layer's q readers, then its k readers
                    out[:, first: first + H, lo:hi] = value.permute(1, 2, 0).to(out.dtype)


def _layer_norm_jvp(t: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Tangents of a LayerNorm's output from tangents ``t`` (n, B, T, d) of its input y (B, T, d)."""
    mu = y.mean(-1, keepdim=True)
    sigma = torch.sqrt(((y - mu) ** 2).mean(-1, keepdim=True) + eps)
    yhat = (y - mu) / sigma
    out = torch.addcmul(t - t.mean(-1, keepdim=True), yhat, (t * yhat).mean(-1, keepdim=True), value=-1.0)
    return out.mul_(weight / sigma)


def _scores(ce, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1)[:, 1] if ce.num_labels == 2 else logits[:, 0]


def _get(module, path: str):
    for attr in path.split("."):
        module = getattr(module, attr, None)
        if module is None:
            return None
    return module


def graph_for(ce, batch=None) -> EdgeGraph:
    """``ce``'s graph (built once), checked on ``batch`` against the model's own scores: a one-line error
    if the graph's forward (every edge kept) is not the model's (a head or layer it does not know)."""
    graph = getattr(ce, "_edge_graph", None)
    if graph is None:
        graph = ce._edge_graph = EdgeGraph(ce)
    if batch is not None and not getattr(ce, "_edge_graph_checked", False):
        with torch.inference_mode():
            mine = graph.run(batch).scores.double().cpu().numpy()
            theirs = ce.scores_from_logits(ce.forward(batch).logits)
        gap = float(np.abs(mine - theirs).max()) if len(mine) else 0.0
        if not gap <= 1e-4 * max(1.0, float(np.abs(theirs).max())):
            raise MatchsigError(f"model {ce.name}: its graph's forward differs from the model's by {gap:.3g}; "
                                "edges, path patching and circuits refuse it")
        ce._edge_graph_checked = True
    return graph
