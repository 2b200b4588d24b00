"""An independent float64 reference for edges: BERT written out in numpy, every reader with its own input.

Nothing here calls matchsig. Nodes: "input" (embeddings after their LayerNorm), "a{l}.h{h}" (a head's
output projected into the residual), "m{l}" (an MLP's output). Readers: "a{l}.h{h}.q|k|v", "m{l}",
"score". Reader r's input is the chain of residual additions and LayerNorms over the contributions
``mix(r, u, output_u)`` of every node u before it (default: the output itself), so one edge can be
shifted, or cut to a substitute, for one reader only.
"""

from __future__ import annotations

import math

import numpy as np

from _reference import _float64_state, _gelu, _ln


def edge_forward(model, input_ids, token_type_ids, emb=None, mix=None, pattern=None):
    """(score, outputs) of one unpadded pair; ``emb`` replaces the input node's output (n, d); ``pattern(layer,
    head, probs)`` may replace a head's attention pattern (or record it)."""
    sd = _float64_state(model)
    cfg = model.config
    eps, nl, nh = cfg.layer_norm_eps, cfg.num_hidden_layers, cfg.num_attention_heads
    n, dh = len(input_ids), cfg.hidden_size // cfg.num_attention_heads
    pre = "bert."
    if emb is None:
        emb = (sd[pre + "embeddings.word_embeddings.weight"][input_ids]
               + sd[pre + "embeddings.position_embeddings.weight"][np.arange(n)]
               + sd[pre + "embeddings.token_type_embeddings.weight"][token_type_ids])
        emb = _ln(emb, sd[pre + "embeddings.LayerNorm.weight"], sd[pre + "embeddings.LayerNorm.bias"], eps)
    outs = {"input": emb}
    P = lambda layer: f"{pre}encoder.layer.{layer}."  # noqa: E731

    def stream(reader, layer, mid):
        c = (lambda u: mix(reader, u, outs[u])) if mix else (lambda u: outs[u])
        x = c("input")
        for j in range(layer + (1 if mid else 0)):
            p = P(j)
            heads = sum(c(f"a{j}.h{h}") for h in range(nh))
            x = _ln(x + heads + sd[p + "attention.output.dense.bias"], sd[p + "attention.output.LayerNorm.weight"],
                    sd[p + "attention.output.LayerNorm.bias"], eps)
            if j < layer:
                x = _ln(x + c(f"m{j}"), sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)
        return x

    for layer in range(nl):
        p = P(layer)
        for h in range(nh):
            cols = slice(h * dh, (h + 1) * dh)
            proj = lambda c, name: (stream(f"a{layer}.h{h}.{c}", layer, False) @ sd[p + name + ".weight"][cols].T  # noqa: E731
                                    + sd[p + name + ".bias"][cols])
            q, k, v = proj("q", "attention.self.query"), proj("k", "attention.self.key"), proj("v", "attention.self.value")
            s = q @ k.T / math.sqrt(dh)
            probs = np.exp(s - s.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            if pattern is not None:
                probs = pattern(layer, h, probs)
            outs[f"a{layer}.h{h}"] = (probs @ v) @ sd[p + "attention.output.dense.weight"][:, cols].T
        xm = stream(f"m{layer}", layer, True)
        hidden = _gelu(xm @ sd[p + "intermediate.dense.weight"].T + sd[p + "intermediate.dense.bias"])
        outs[f"m{layer}"] = hidden @ sd[p + "output.dense.weight"].T + sd[p + "output.dense.bias"]
    xs = stream("score", nl, False)
    pooled = np.tanh(xs[0] @ sd[pre + "pooler.dense.weight"].T + sd[pre + "pooler.dense.bias"])
    logits = pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
    score = logits[1] - np.log(np.exp(logits).sum()) if len(logits) == 2 else logits[0]
    return score, outs


def edge_derivative(model, ids, types, emb, delta_u, reader, node, eps=1e-5):
    """d score / d t of shifting node's output by ``t delta_u`` in reader's input only (central differences)."""
    def at(t):
        mix = lambda r, u, value: value + t * delta_u if (r, u) == (reader, node) else value  # noqa: E731
        return edge_forward(model, ids, types, emb=emb, mix=mix)[0]

    return (at(eps) - at(-eps)) / (2 * eps)


def integrated_edge_gradient(model, ids, types, ids_p, types_p, reader, node, nodes=12):
    """The edge's integrated gradient: (o_u^pert - o_u^base) . integral over alpha of the derivative of the
    score w.r.t. the edge, input embeddings on the straight line from the baseline's to the perturbed's;
    Gauss-Legendre quadrature with ``nodes`` points."""
    _, base = edge_forward(model, ids, types)
    _, pert = edge_forward(model, ids_p, types_p)
    delta = pert[node] - base[node]
    xs, ws = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for x, w in zip(xs, ws):
        alpha = (x + 1) / 2
        emb = base["input"] + alpha * (pert["input"] - base["input"])
        total += w / 2 * edge_derivative(model, ids, types, emb, delta, reader, node)
    return total
