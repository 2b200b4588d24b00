"""The circuit that ``matchsig view`` draws: a ``circuit.json`` of ``matchsig circuit`` read and checked
against the viewed model, reduced to the edges the page can draw."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import MatchsigError

__all__ = ["CIRCUIT_MAX_EDGES", "read_circuit"]


def _number(value) -> float | None:
    """A JSON-safe number from a circuit.json field: None for a missing, NaN or infinite one."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


#: Edges of a circuit sent to the page (the largest by |score|); the page's slider shows any number up to it.
CIRCUIT_MAX_EDGES = 600


def _node_names(num_layers: int, num_heads: int) -> tuple[set[str], set[str]]:
    """The names a circuit.json of this shape can use: senders (the input, heads, MLPs) and readers (a
    head's q, k or v input, an MLP, the score), as :class:`matchsig.engine.graph.EdgeGraph` names them."""
    heads = [f"a{layer}.h{head}" for layer in range(num_layers) for head in range(num_heads)]
    mlps = [f"m{layer}" for layer in range(num_layers)]
    return {"input", *heads, *mlps}, {"score", *mlps, *(f"{h}.{x}" for h in heads for x in "qkv")}


def read_circuit(path: str | Path, num_layers: int, num_heads: int, max_edges: int = CIRCUIT_MAX_EDGES) -> dict:
    """The page's circuit from a ``circuit.json`` of ``matchsig circuit``: its summary, its nodes and its
    ``max_edges`` edges of largest |score| as ``[sender, receiver, score]`` (ties kept in file order).

    A one-line :class:`MatchsigError` when the file is not a circuit of a model with ``num_layers`` x
    ``num_heads`` heads (a node that does not exist, another shape)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MatchsigError(f"cannot read circuit {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise MatchsigError(f"circuit {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("edges"), list) or not isinstance(data.get("nodes"), list):
        raise MatchsigError(f"circuit {path}: not a circuit.json of `matchsig circuit` (no nodes/edges lists)")
    shape = (data.get("layers"), data.get("heads"))
    if shape != (num_layers, num_heads):
        raise MatchsigError(f"circuit {path} is of a model with {shape[0]} layers x {shape[1]} heads, not "
                            f"{num_layers} x {num_heads}: was it made with another model?")
    senders, readers = _node_names(num_layers, num_heads)
    edges = []
    for n, e in enumerate(data["edges"]):
        try:
            sender, receiver, score = e["sender"], e["receiver"], float(e["score"])
        except (TypeError, KeyError, ValueError):
            raise MatchsigError(f"circuit {path}: edge {n} lacks sender, receiver or a numeric score") from None
        if sender not in senders or receiver not in readers or not math.isfinite(score):
            raise MatchsigError(f"circuit {path}: edge {n} ({sender} -> {receiver}, {score}) is not an edge of this model")
        edges.append((sender, receiver, score, bool(e.get("on_path", True))))
    order = sorted(range(len(edges)), key=lambda i: (-abs(edges[i][2]), i))[:max(0, int(max_edges))]
    ci = data.get("ci") or [None, None]
    return {
        "diagnostic": str(data.get("diagnostic", "")),
        "method": str(data.get("method", "")),
        "ablation": str(data.get("ablation", "mean")),
        "target": _number(data.get("target")),
        "reached": bool(data.get("reached", False)),
        "faithfulness": _number(data.get("faithfulness")),
        "ci": [_number(c) for c in ci],
        "size": len(edges),
        "nodes": [str(x) for x in data["nodes"]],
        "edges": [[edges[i][0], edges[i][1], edges[i][2], int(edges[i][3])] for i in order],
    }
