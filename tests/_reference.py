"""An independent reference: BERT sequence classification written out by hand in float64.

Nothing here calls matchsig. Parts are found from the token ids ([CLS] first, the [SEP] ids),
attention is computed explicitly, and ablated blocks are zeroed after the softmax without
renormalisation, as SPEC §3 states.
"""

from __future__ import annotations

import math

import numpy as np

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]


def bert_parts(input_ids: list[int], sep_id: int) -> list[str]:
    """[CLS] q... [SEP] d... [SEP] -> part names, from the SEP positions."""
    seps = [i for i, t in enumerate(input_ids) if t == sep_id]
    first, last = seps[0], seps[-1]
    out = []
    for i in range(len(input_ids)):
        if i == 0:
            out.append("CLS")
        elif i < first:
            out.append("Q")
        elif i == first:
            out.append("SEP1")
        elif i < last:
            out.append("D")
        else:
            out.append("SEP2")
    return out


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


_STATES: dict = {}


def _float64_state(model) -> dict:
    key = id(model)
    if key not in _STATES:
        _STATES[key] = (model, {k: v.detach().double().numpy() for k, v in model.state_dict().items()})
    return _STATES[key][1]


def bert_score(model, input_ids: list[int], token_type_ids: list[int], cuts: dict[int, dict[int, set]] | None = None,
               sep_id: int = 102, return_probs: bool = False):
    """Score of one unpadded pair under cuts {layer: {head: {(target, source), ...}}}."""
    sd = _float64_state(model)
    cfg = model.config
    eps = cfg.layer_norm_eps
    prefix = "bert."
    n = len(input_ids)
    parts = bert_parts(input_ids, sep_id)
    x = (sd[prefix + "embeddings.word_embeddings.weight"][input_ids]
         + sd[prefix + "embeddings.position_embeddings.weight"][np.arange(n)]
         + sd[prefix + "embeddings.token_type_embeddings.weight"][token_type_ids])
    x = _ln(x, sd[prefix + "embeddings.LayerNorm.weight"], sd[prefix + "embeddings.LayerNorm.bias"], eps)
    nh = cfg.num_attention_heads
    dh = cfg.hidden_size // nh
    all_probs = []
    masks: dict = {}  # directions -> (n, n) cut mask, built once per call with plain loops over the parts
    for layer in range(cfg.num_hidden_layers):
        p = f"{prefix}encoder.layer.{layer}."
        lin = lambda h, name: h @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, nh, dh).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, nh, dh).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, nh, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = s - s.max(-1, keepdims=True)
        probs = np.exp(s)
        probs = probs / probs.sum(-1, keepdims=True)
        all_probs.append(probs.copy())
        for head, dirs in (cuts or {}).get(layer, {}).items():
            key = frozenset(dirs)
            if key not in masks:
                masks[key] = np.array([[(parts[i], parts[j]) in dirs for j in range(n)] for i in range(n)])
            probs[head][masks[key]] = 0.0
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, nh * dh)
        x = _ln(lin(ctx, "attention.output.dense") + x, sd[p + "attention.output.LayerNorm.weight"],
                sd[p + "attention.output.LayerNorm.bias"], eps)
        h = _gelu(lin(x, "intermediate.dense"))
        x = _ln(lin(h, "output.dense") + x, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)
    pooled = np.tanh(x[0] @ sd[prefix + "pooler.dense.weight"].T + sd[prefix + "pooler.dense.bias"])
    logits = pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
    if len(logits) == 2:
        score = logits[1] - np.log(np.exp(logits).sum())
    else:
        score = logits[0]
    return (score, all_probs, parts) if return_probs else score


def attend(s, v, parts: list[str], layer_cuts: dict | None) -> np.ndarray:
    """(heads, n, n) scores (masked entries -inf) and (heads, n, d) values -> the (n, heads x d) context,
    with the cut (target, source) part pairs of each head zeroed after the softmax, not renormalised."""
    n = s.shape[-1]
    s = s - s.max(-1, keepdims=True)
    probs = np.exp(s)
    probs = probs / probs.sum(-1, keepdims=True)
    for head, dirs in (layer_cuts or {}).items():
        cut = np.array([[(parts[i], parts[j]) in dirs for j in range(n)] for i in range(n)])
        probs[head][cut] = 0.0
    return (probs @ v).transpose(1, 0, 2).reshape(n, -1)


def expand(spec: str) -> set:
    """'Q<-D,CLS<-*' -> {('Q','D'), ('CLS','CLS'), ...}, written independently of matchsig's parser."""
    out = set()
    for tok in spec.split(","):
        t, s = tok.split("<-")
        ts = PARTS if t == "*" else [t]
        ss = PARTS if s == "*" else [s]
        out |= {(a, b) for a in ts for b in ss}
    return out


def cuts_for(spec: str, layers, heads, num_layers: int, num_heads: int) -> dict:
    dirs = expand(spec)
    layers = range(num_layers) if layers is None else layers
    heads = range(num_heads) if heads is None else heads
    return {l: {h: dirs for h in heads} for l in layers}


def torch_reference_ids(tokenizer, query: str, document: str):
    enc = tokenizer(query, document)
    return enc["input_ids"], enc["token_type_ids"]


def bert_forward_hooked(model, input_ids: list[int], token_type_ids: list[int], hooks: dict | None = None):
    """Score of one unpadded pair, float64, with TransformerLens-style hooks written out by hand.

    ``hooks``: {(layer, kind): fn(array) -> array or None}, kind one of "resid_pre", "z" (an (n, heads,
    d_head) array: each head's probabilities x values), "attn_out", "resid_mid", "mlp_out",
    "resid_post"; two more replace a reader's input only: "head_in" (fn gets and returns the (3, heads,
    n, d) inputs of each head's query, key and value maps) and "mlp_in" (the MLP's input; the
    residual add around it keeps the stream). Returns (score, {(layer, kind): array}) with every activation as computed
    (after its hook)."""
    sd = _float64_state(model)
    cfg = model.config
    eps = cfg.layer_norm_eps
    prefix = "bert."
    n = len(input_ids)
    hooks = hooks or {}
    seen: dict = {}

    def at(layer, kind, value):
        fn = hooks.get((layer, kind))
        out = fn(value.copy()) if fn is not None else None
        value = value if out is None else out
        seen[(layer, kind)] = value.copy()
        return value

    x = (sd[prefix + "embeddings.word_embeddings.weight"][input_ids]
         + sd[prefix + "embeddings.position_embeddings.weight"][np.arange(n)]
         + sd[prefix + "embeddings.token_type_embeddings.weight"][token_type_ids])
    x = _ln(x, sd[prefix + "embeddings.LayerNorm.weight"], sd[prefix + "embeddings.LayerNorm.bias"], eps)
    nh = cfg.num_attention_heads
    dh = cfg.hidden_size // nh
    for layer in range(cfg.num_hidden_layers):
        p = f"{prefix}encoder.layer.{layer}."
        lin = lambda h, name: h @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]
        x = at(layer, "resid_pre", x)
        # per-head inputs of q, k and v (3, heads, n, d): the layer input unless a "head_in" hook gives them
        fn = hooks.get((layer, "head_in"))
        xin = fn(np.broadcast_to(x, (3, nh, n, x.shape[-1])).copy()) if fn is not None else None
        xin = np.broadcast_to(x, (3, nh, n, x.shape[-1])) if xin is None else xin

        def proj(i, name):
            w, b = sd[p + name + ".weight"], sd[p + name + ".bias"]
            return np.stack([xin[i, h] @ w[h * dh:(h + 1) * dh].T + b[h * dh:(h + 1) * dh] for h in range(nh)])

        q, k, v = proj(0, "attention.self.query"), proj(1, "attention.self.key"), proj(2, "attention.self.value")
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = s - s.max(-1, keepdims=True)
        probs = np.exp(s)
        probs = probs / probs.sum(-1, keepdims=True)
        z = at(layer, "z", (probs @ v).transpose(1, 0, 2))  # (n, heads, d_head)
        attn = at(layer, "attn_out", lin(z.reshape(n, nh * dh), "attention.output.dense"))
        x = at(layer, "resid_mid", _ln(attn + x, sd[p + "attention.output.LayerNorm.weight"],
                                       sd[p + "attention.output.LayerNorm.bias"], eps))
        fn = hooks.get((layer, "mlp_in"))  # the MLP's input alone (the residual add keeps x)
        mlp_in = fn(x.copy()) if fn is not None else None
        mlp_in = x if mlp_in is None else mlp_in
        mlp = at(layer, "mlp_out", lin(_gelu(lin(mlp_in, "intermediate.dense")), "output.dense"))
        x = at(layer, "resid_post", _ln(mlp + x, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps))
    pooled = np.tanh(x[0] @ sd[prefix + "pooler.dense.weight"].T + sd[prefix + "pooler.dense.bias"])
    logits = pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
    score = logits[1] - np.log(np.exp(logits).sum()) if len(logits) == 2 else logits[0]
    return score, seen
