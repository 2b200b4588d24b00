"""Figures of the circuit experiment: the faithfulness curve and the circuit (layers as rows, edges by weight)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_curve", "draw_circuit"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_curve(frame, target: float | None, chosen: int | None, path: Path) -> Path:
    """Faithfulness (with its CI) against the number of edges kept, log x axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.maximum(frame["edges"].to_numpy(), 0.5)  # the empty circuit drawn at 0.5 on the log axis
    ax.fill_between(x, frame["ci_low"], frame["ci_high"], alpha=0.25, label="95% CI (queries resampled)")
    ax.plot(x, frame["faithfulness"], marker="o", ms=3, label="faithfulness (held-out pairs)")
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
    if chosen is not None:
        ax.axvline(max(chosen, 0.5), color="C3", lw=1, label=f"circuit: {chosen} edges")
    ax.set_xscale("log")
    ax.set_xlabel("edges kept (top by |attribution|; 0 drawn at 0.5)")
    ax.set_ylabel("faithfulness")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _position(name: str, layers: int, heads: int) -> tuple[float, float]:
    """(x, y) of a node or reader: input at the bottom, layer l's heads on row l + 1, its MLP at the
    row's right end (half a row up), the score on top."""
    base = name.split(".")[0] if not name.startswith("a") else ".".join(name.split(".")[:2])
    if base == "input":
        return (heads - 1) / 2, 0.0
    if base == "score":
        return (heads - 1) / 2, layers + 1.0
    if base.startswith("m"):
        return heads + 0.5, int(base[1:]) + 1.5
    layer, head = base[1:].split(".h")
    return float(head), int(layer) + 1.0


def draw_circuit(circuit: dict, path: Path) -> Path:
    """The circuit of ``circuit.json``: every node of the model in grey, the circuit's nodes in black,
    its edges as lines whose width grows with |score| (blue positive, red negative; q/k/v edges end at
    slightly shifted points of the receiving head)."""
    plt = _plt()
    layers, heads = int(circuit["layers"]), int(circuit["heads"])
    fig, ax = plt.subplots(figsize=(max(6, heads * 0.55 + 2), max(4, layers * 0.8 + 1.5)))
    names = ["input", "score"] + [f"a{l}.h{h}" for l in range(layers) for h in range(heads)] + \
        [f"m{l}" for l in range(layers)]
    used = set(circuit["nodes"])
    for n in names:
        x, y = _position(n, layers, heads)
        ax.scatter([x], [y], s=60 if n in used else 18, c="black" if n in used else "lightgrey", zorder=3,
                   marker="s" if n.startswith("m") else "o")
    edges = circuit["edges"]
    top = max((abs(e["score"]) for e in edges), default=1.0) or 1.0
    shift = {"q": -0.18, "k": 0.0, "v": 0.18}
    for e in edges:
        x0, y0 = _position(e["sender"], layers, heads)
        x1, y1 = _position(e["receiver"], layers, heads)
        x1 += shift.get(e["receiver"].split(".")[-1], 0.0) if e["receiver"].startswith("a") else 0.0
        ax.plot([x0, x1], [y0, y1], color="C0" if e["score"] >= 0 else "C3", alpha=0.6,
                lw=0.4 + 3.0 * abs(e["score"]) / top, zorder=2)
    ax.set_yticks([0] + [l + 1 for l in range(layers)] + [layers + 1],
                  ["input"] + [f"layer {l}" for l in range(layers)] + ["score"])
    ax.set_xticks(list(range(heads)) + [heads + 0.5], [str(h) for h in range(heads)] + ["MLP"])
    ax.set_xlabel("head")
    ax.set_title(f"{circuit['diagnostic']} circuit: {len(edges)} edges ({circuit['method']}), "
                 f"faithfulness {circuit['faithfulness']:.2f}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
