"""The figures of ``compare.html`` (PNG, matplotlib's Agg backend): one colour per run, depth-normalised x axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..analysis.crossrun import DIRECTIONS, Comparison  # noqa: E402
from ..experiments.html import DISPLAY_ARROW  # noqa: E402

__all__ = ["compare_figures", "plain_label"]

#: One colour per run, in the order the runs are given (cycled past ten).
COLOURS = plt.get_cmap("tab10").colors


def plain_label(text: str) -> str:
    """``text`` shown literally by matplotlib: ``$`` would start mathtext (a name like ``a$b`` would fail to draw)
    and a leading ``_`` hides a legend entry."""
    text = str(text).replace("$", r"\$").replace("<-", DISPLAY_ARROW)
    return f" {text}" if text.startswith("_") else text


def _colour(names: list[str], name: str):
    return COLOURS[names.index(name) % len(COLOURS)]


def _legend(fig, names: list[str], frame=None) -> None:
    """One entry per run (those with rows in ``frame`` when given), in the runs' colours."""
    shown = [n for n in names if frame is None or n in set(frame["run"])]
    handles = [plt.Line2D([], [], color=_colour(names, n), marker="o", label=plain_label(n)) for n in shown]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, min(len(shown), 4)), frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def plot_curves(comparison: Comparison, path: Path) -> Path | None:
    """Figure 1 overlaid: the fraction of the original - random gap removed when cutting a direction in the first
    ``depth`` of the layers, one panel per direction."""
    frame = comparison.curves
    if frame.empty:
        return None
    directions = list(dict.fromkeys(frame["direction"]))
    cols = min(4, len(directions))
    rows = int(np.ceil(len(directions) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.6), squeeze=False, sharex=True)
    for ax, direction in zip(axes.flat, directions):
        for name, part in frame[frame["direction"] == direction].groupby("run", sort=False):
            part = part.sort_values("depth")
            xs = np.concatenate([[0.0], part["depth"].to_numpy(float)])
            ys = np.concatenate([[0.0], part["removed"].to_numpy(float)])
            ax.plot(xs, ys, "-o", ms=3, lw=1.4, color=_colour(comparison.names, name))
        ax.axhline(0, color="#999", lw=0.8, ls="--")
        ax.axhline(1, color="#999", lw=0.8, ls=":")
        ax.set_title(plain_label(direction))
        ax.set_xlim(0, 1.02)
    for ax in axes.flat[len(directions):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("gap removed")
    for ax in axes[-1]:
        ax.set_xlabel("layers cut / L")
    fig.suptitle("Figure 1 across runs: fraction of the original - random gap removed (0 = none, 1 = random)")
    _legend(fig, comparison.names, frame)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heads(comparison: Comparison, path: Path) -> Path | None:
    """Matching heads per layer (fraction of the layer's heads) at the layer's centre depth: solid = matching,
    dotted = syntactic, dashed = semantic."""
    frame = comparison.heads
    if frame.empty:
        return None
    panels = [*DIRECTIONS, "either"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, direction in zip(axes[0], panels):
        part = frame[frame["direction"] == direction]
        for name, rows in part.groupby("run", sort=False):
            rows = rows.sort_values("depth")
            colour = _colour(comparison.names, name)
            ax.plot(rows["depth"], rows["matching"], "-o", ms=3, color=colour)
            ax.plot(rows["depth"], rows["syntactic"], ":", color=colour)
            ax.plot(rows["depth"], rows["semantic"], "--", color=colour)
        ax.set_title("either direction" if direction == "either" else plain_label(direction))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer centre / L")
    axes[0][0].set_ylabel("fraction of the layer's heads")
    fig.suptitle("Matching heads per layer: solid = matching, dotted = syntactic, dashed = semantic")
    _legend(fig, comparison.names, frame)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_bins(comparison: Comparison, path: Path) -> Path | None:
    """Mean Cohen's d_z (relevant vs easy) of the heads in each depth bin, one bar per run."""
    frame = comparison.bins
    if frame.empty:
        return None
    names = [n for n in comparison.names if n in set(frame["run"])]
    fig, axes = plt.subplots(1, len(DIRECTIONS), figsize=(4.6 * len(DIRECTIONS), 3.2), squeeze=False, sharey=True)
    bins = sorted(set(frame["bin"]))
    width = 0.8 / max(len(names), 1)
    for ax, direction in zip(axes[0], DIRECTIONS):
        for i, name in enumerate(names):
            part = frame[(frame["run"] == name) & (frame["direction"] == direction)].set_index("bin")
            values = [part["d_z"].get(b, np.nan) for b in bins]
            ax.bar(np.arange(len(bins)) + (i - (len(names) - 1) / 2) * width, values, width,
                   color=_colour(comparison.names, name))
        labels = [f"{b / len(bins):.2f}-{(b + 1) / len(bins):.2f}" for b in bins]
        ax.set_xticks(np.arange(len(bins)), labels)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_title(plain_label(direction))
        ax.set_xlabel("depth bin (layer centre / L)")
    axes[0][0].set_ylabel("mean d_z, relevant vs easy")
    _legend(fig, comparison.names, frame)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


#: The Table 1 cells a series plot follows (those present).
SERIES_CELLS = ("D<-D", "Q<-D", "D<-Q", "CLS<-D", "D<-*", "CLS<-*")


def plot_series(comparison: Comparison, path: Path) -> Path | None:
    """A checkpoint series against the training step: nDCG@10, the gap removed by a few Table 1 cells, the share
    of matching heads."""
    if comparison.steps is None or comparison.series.empty:
        return None
    s = comparison.series
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(s["step"], s["unablated"], "-o", ms=3, label="unablated")
    axes[0].plot(s["step"], s["random"], ":", label="random ranking")
    axes[0].set_ylabel("nDCG@10")
    t1 = comparison.table1.merge(s[["run", "step"]], on="run")
    for cell in [c for c in SERIES_CELLS if c in set(t1["ablation"])]:
        part = t1[t1["ablation"] == cell].sort_values("step")
        axes[1].plot(part["step"], part["removed"], "-o", ms=3, label=plain_label(cell))
    axes[1].axhline(0, color="#999", lw=0.8, ls="--")
    axes[1].set_ylabel("gap removed")
    for k, style in (("matching", "-o"), ("syntactic", ":"), ("semantic", "--")):
        axes[2].plot(s["step"], s[k], style, ms=3, label=k)
    axes[2].set_ylabel("share of all heads")
    for ax, title in zip(axes, ("Effectiveness", "Table 1 cells", "Matching heads (either direction)")):
        ax.set_xlabel("training step")
        ax.set_title(title)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def compare_figures(comparison: Comparison, folder: Path, errors: dict[str, str]) -> dict[str, Path]:
    """Draw every figure the comparison has data for into ``folder``: {file name: path}; a figure that fails is
    recorded in ``errors`` (the page says why) instead of costing the page."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, draw in (("curves.png", plot_curves), ("heads.png", plot_heads), ("contrast_bins.png", plot_bins),
                       ("series.png", plot_series)):
        try:
            path = draw(comparison, folder / name)
        except Exception as exc:  # noqa: BLE001
            plt.close("all")
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        if path is not None:
            out[name] = path
    return out
