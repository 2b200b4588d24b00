"""The paper's figures from a run folder's files (PNG, matplotlib's Agg backend).

The plotting helpers of the experiments' figures; :func:`matchsig.report.figures.make_figures` writes into
``RUN_DIR/figures/`` whatever the run's files allow:

- ``layers.png`` — Figure 1: nDCG@10 when a direction is ablated in layers 0..l, per l
  (from ``layers.csv``), with the unablated and random-ranking levels dashed;
- ``fig2_relevant_vs_easy.png`` / ``fig3_hard_vs_easy.png`` — Figures 2 and 3: for Q<-D and D<-Q,
  (a) the layer x head grid of the mean difference M(.|3) - M(.|-1) (resp. M(.|0) - M(.|-1)) with
  significant heads marked (``contrast/heads.csv``), (b) per layer, the distribution of the
  per-query differences pooled over heads (``contrast/per_query.csv``);
- ``fig4_entropy_exact.png`` — Figure 4: per layer, relevant vs easy negatives, the attention
  entropy and the exact-match mass for Q<-D and D<-Q (per-query values pooled over heads);
- ``fig4_heads.png`` — the same two statistics per head, as layer x head grids of relevant minus easy;
- ``heads.png`` — nDCG@10 when the top-k matching heads are ablated vs k random heads (``heads.csv``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from ..analysis.runfolder import COMPARE, CONTRAST, HEADS, FILES  # noqa: E402
from ..analysis.runfolder import RunFolder  # noqa: E402
from ..engine.ablation import ARROW, direction_cells, direction_label  # noqa: E402
from .html import DISPLAY_ARROW  # noqa: E402

__all__ = [
    "plot_contrast",
    "plot_entropy_exact",
    "plot_entropy_exact_heads",
    "plot_heads",
    "plot_layers",
]

DIRECTIONS = ("Q<-D", "D<-Q")
REL_COLOR, EASY_COLOR, HARD_COLOR = "#1b7837", "#b2182b", "#e08214"
plt.rcParams.update(
    {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "figure.titlesize": 11,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "savefig.dpi": 110,
    }
)


def _arrow(text: str) -> str:
    return str(text).replace(ARROW, DISPLAY_ARROW)


def _cap_text(per_grade) -> str:
    return "no cap per grade" if per_grade in (None, "", "null") else f"up to {per_grade} passage{'' if per_grade == 1 else 's'} per grade"


def _pool_text(run: RunFolder, pool: str = "main") -> str:
    info = (run.summary.get("pools") or {}).get(pool) or {}
    key = "per_grade" if pool == "main" else "contrast_per_grade"
    parts = []
    if info.get("protocol") == "rerank":  # matchsig.data.runs: the pool is a run's top-k, not a sample
        top = "all" if info.get("top_k") is None else f"top {info.get('top_k')}"
        parts.append(f"re-ranking the {top} of {Path(str(info.get('run', 'a run'))).name} "
                     f"({info.get('unjudged', '?')} unjudged)")
    elif "per_grade" in info or key in run.config:
        parts.append(_cap_text(info.get("per_grade", run.config.get(key))))
    if info.get("queries"):
        parts.append(f"{info['queries']} queries")
    if info.get("pairs"):
        parts.append(f"{info['pairs']} pairs")
    datasets = run.config.get("datasets")
    if datasets:
        parts.insert(0, ", ".join(map(str, datasets)) if isinstance(datasets, list) else str(datasets))
    return "; ".join(parts)


def _model_name(run: RunFolder) -> str:
    return str(run.model_info.get("name") or run.config.get("model") or "model")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# ---- Figure 1 -----------------------------------------------------------------------------------


#: Figure 1's line styles: colour by attending part (target), line style and marker by attended part.
TARGET_COLORS = {"CLS": "#2166ac", "Q": "#1b7837", "D": "#b2182b", "SEP1": "#8c510a", "SEP2": "#bf812d"}
SOURCE_STYLES = {"CLS": (":", "^"), "Q": ("--", "s"), "D": ("-", "o"), "SEP1": ("-.", "v"), "SEP2": ("-.", "D")}


def _line_style(direction: str, extra) -> tuple:

    pairs = direction_cells(direction)
    if len(pairs) == 1:
        target, source = next(iter(pairs))
        if source == "*":
            return "black", "-", "P", 2.4
        if target in TARGET_COLORS and source in SOURCE_STYLES:
            style, marker = SOURCE_STYLES[source]
            return TARGET_COLORS[target], style, marker, 2.2 if (target, source) == ("D", "D") else 1.4
    if pairs and {t for t, _ in pairs} == {"CLS"}:
        return "#6a51a3", "-", "X", 2.2
    return next(extra, "grey"), "-", "o", 1.4


def plot_layers(run: RunFolder, path: Path) -> Path | None:
    frame = run.layers
    if frame is None:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    extra = iter(plt.get_cmap("Dark2").colors)
    for direction, group in frame.groupby(CONTRAST.direction, sort=False):
        group = group.sort_values(CONTRAST.layer)
        color, style, marker, width = _line_style(str(direction), extra)
        ax.plot(group[CONTRAST.layer], group[COMPARE.ndcg], color=color, linestyle=style, marker=marker, markersize=3.5,
                linewidth=width, label=_arrow(run.scheme.label(direction_label(direction))))
    levels = []
    if run.unablated is not None:
        ax.axhline(run.unablated, color="black", linestyle="--", linewidth=1)
        levels.append(("unablated", run.unablated))
    if run.random_ndcg is not None:
        ax.axhline(run.random_ndcg, color="grey", linestyle="--", linewidth=1)
        levels.append(("random ranking", run.random_ndcg))
    for text, y in levels:
        ax.annotate(f"{text} {y:.3f}", xy=(1, y), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                    textcoords="offset points", fontsize=8, color="dimgray", ha="right")
    layers = sorted(frame[CONTRAST.layer].unique())
    ax.set_xticks(layers)
    ax.set_xlabel("last ablated layer l (layers 0..l ablated, every head)")
    ax.set_ylabel("nDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(title="ablated direction", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"Figure 1: nDCG@10 vs last ablated layer — {_model_name(run)}\n{_pool_text(run)}")
    return _save(fig, path)


# ---- Figures 2 and 3 ----------------------------------------------------------------------------


def _grid(frame: pd.DataFrame, value: str, L: int, H: int) -> np.ndarray:
    grid = np.full((L, H), np.nan)
    layers = frame[CONTRAST.layer].to_numpy(int)
    heads = frame[CONTRAST.head].to_numpy(int)
    values = frame[value].to_numpy(float)
    ok = (layers >= 0) & (layers < L) & (heads >= 0) & (heads < H)
    grid[layers[ok], heads[ok]] = values[ok]
    return grid


def _heatmap(ax, grid: np.ndarray, title: str, cbar_label: str, marks: np.ndarray | None = None, annotate_top: int = 3):
    finite = grid[np.isfinite(grid)]
    bound = float(np.max(np.abs(finite))) if finite.size else 1.0
    bound = bound or 1.0
    L, H = grid.shape
    image = ax.imshow(grid, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto", origin="upper",
                      interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    step_l = 1 if L <= 24 else 2
    ax.set_yticks(range(0, L, step_l))
    ax.set_xticks(range(H))
    ax.tick_params(labelsize=7 if max(L, H) > 12 else 8)
    ax.set_title(title)
    if marks is not None and marks.any():
        ys, xs = np.nonzero(marks)
        ax.scatter(xs, ys, s=12 if L * H > 200 else 22, facecolors="white", edgecolors="black", linewidths=0.6,
                   zorder=3)
    if annotate_top and finite.size:
        flat = np.where(np.isfinite(grid), grid, -np.inf).ravel()
        for index in np.argsort(flat)[::-1][:annotate_top]:
            if not np.isfinite(flat[index]) or flat[index] <= 0:
                continue
            layer, head = divmod(int(index), H)
            ax.annotate(f"{layer}/{head}", (head, layer), xytext=(5, 3), textcoords="offset points", fontsize=7, zorder=4,
                        fontweight="bold", color="black",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    cbar = ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(cbar_label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def per_query_differences(run: RunFolder, level: int, statistic: str = "max", baseline: int = -1) -> pd.DataFrame | None:
    """Per query, layer, head and direction: ``statistic`` at ``level`` minus at ``baseline``."""
    frame = run.contrast_per_query
    if frame is None or statistic not in frame:
        return None
    sub = frame[frame[CONTRAST.level].isin([level, baseline])]
    wide = sub.pivot_table(index=[CONTRAST.qid, CONTRAST.layer, CONTRAST.head, CONTRAST.direction], columns=CONTRAST.level, values=statistic, aggfunc="mean")
    if level not in wide or baseline not in wide:
        return None
    out = (wide[level] - wide[baseline]).dropna().rename("diff").reset_index()
    out[CONTRAST.direction] = out[CONTRAST.direction].astype(str).str.replace(" ", "")
    return out


def _boxes(ax, groups: list[np.ndarray], positions, color, width=0.6, label=None):
    data = [g if len(g) else np.array([np.nan]) for g in groups]
    parts = ax.boxplot(data, positions=positions, widths=width, patch_artist=True, showfliers=True,
                       flierprops=dict(marker=".", markersize=1.5, alpha=0.25, markeredgecolor=color),
                       medianprops=dict(color="black", linewidth=1), whiskerprops=dict(color=color),
                       capprops=dict(color=color), manage_ticks=False)
    for box in parts["boxes"]:
        box.set_facecolor(color)
        box.set_alpha(0.55)
        box.set_edgecolor(color)
    if label:
        parts["boxes"][0].set_label(label)
    return parts


def _impossible(run: RunFolder, direction: str, *axes) -> bool:
    """Whether the model's masks make ``direction`` impossible (a causal decoder's Q<-D); its panels then say so."""
    target, source = direction.split("<-")
    if run.scheme.possible(target, source):
        return False
    for ax in axes:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{_arrow(direction)}: impossible under the causal mask\n(no query token reads the document)",
                ha="center", va="center")
    return True


def plot_contrast(run: RunFolder, path: Path, level: int) -> Path | None:
    """Figure 2 (``level=3``) or Figure 3 (``level=0``): grid of mean differences + per-layer distributions."""
    heads = run.contrast_heads
    diffs = per_query_differences(run, level)
    if heads is None and diffs is None:
        return None
    L = run.num_layers or int((heads if heads is not None else diffs)[CONTRAST.layer].max()) + 1
    H = run.num_heads or int((heads if heads is not None else diffs)[CONTRAST.head].max()) + 1
    value, pcol = ("delta_relevant", run.p_column("relevant")) if level == 3 else ("delta_hard", run.p_column("hard"))
    what = "relevant (3)" if level == 3 else "hard negative (0)"
    number = 2 if level == 3 else 3
    tall = max(4.0, 0.22 * L + 1.5)
    fig, axes = plt.subplots(2, 2, figsize=(12, 2 * tall), gridspec_kw={"width_ratios": [1.0, 1.25]})
    for row, direction in enumerate(DIRECTIONS):
        ax_a, ax_b = axes[row]
        if _impossible(run, direction, ax_a, ax_b):
            continue
        if heads is not None:
            sub = heads[heads[CONTRAST.direction].astype(str).str.replace(" ", "") == direction]
            grid = _grid(sub, value, L, H)
            p = sub[pcol] if pcol in sub else sub[pcol.rsplit("_", 1)[0]]  # a table written without a correction
            marks = _grid(sub.assign(_sig=(p <= run.alpha).astype(float)), "_sig", L, H) == 1
            _heatmap(ax_a, grid, f"({'a'}) {_arrow(direction)}: mean over queries, per layer/head",
                     f"M({level}) − M(−1)", marks)
        else:
            ax_a.set_axis_off()
            ax_a.text(0.5, 0.5, "contrast/heads.csv missing", ha="center", va="center")
        if diffs is not None:
            sub = diffs[diffs[CONTRAST.direction] == direction]
            groups = [sub.loc[sub[CONTRAST.layer] == l, "diff"].to_numpy(float) for l in range(L)]
            _boxes(ax_b, groups, list(range(L)), REL_COLOR if level == 3 else HARD_COLOR)
            ax_b.axhline(0, color="grey", linewidth=0.8, linestyle="--")
            ax_b.set_xticks(range(L))
            ax_b.set_xlim(-0.7, L - 0.3)
            ax_b.set_xlabel("layer")
            ax_b.set_ylabel(f"per-query M({level}) − M(−1)")
            ax_b.tick_params(labelsize=7 if L > 12 else 8)
            ax_b.grid(axis="y", alpha=0.3)
            ax_b.set_title(f"(b) {_arrow(direction)}: per-query differences, all heads of each layer pooled")
        else:
            ax_b.set_axis_off()
            ax_b.text(0.5, 0.5, "contrast/per_query.csv missing", ha="center", va="center")
    fig.suptitle(
        f"Figure {number}: M(·|{level}) − M(·|−1), mean over query tokens of the max attention to the other side, "
        f"{what} minus easy negative (−1)\n{_model_name(run)}; {_pool_text(run, 'contrast')}\n"
        f"white dots in (a): significant heads, paired t-test over queries, {run.corrected} p ≤ {run.alpha:g}; "
        f"labels: the top 3 heads as layer/head"
    )
    fig.tight_layout()
    return _save(fig, path)


# ---- Figure 4 -----------------------------------------------------------------------------------


def _level_values(run: RunFolder, statistic: str) -> pd.DataFrame | None:
    """Rows (direction, layer, level, value) for levels 3 and -1: per query and head if possible, else per head."""
    frame = run.contrast_per_query
    if frame is not None and statistic in frame:
        sub = frame[frame[CONTRAST.level].isin([3, -1])][[CONTRAST.direction, CONTRAST.layer, CONTRAST.level, statistic]].rename(columns={statistic: "value"})
        sub = sub.assign(direction=sub[CONTRAST.direction].astype(str).str.replace(" ", ""))
        return sub.dropna()
    heads = run.contrast_heads
    if heads is None or f"{statistic}_relevant" not in heads:
        return None
    rows = []
    for level, suffix in ((3, "relevant"), (-1, "easy")):
        part = heads[[CONTRAST.direction, CONTRAST.layer, f"{statistic}_{suffix}"]].rename(columns={f"{statistic}_{suffix}": "value"})
        rows.append(part.assign(level=level))
    out = pd.concat(rows, ignore_index=True)
    return out.assign(direction=out[CONTRAST.direction].astype(str).str.replace(" ", "")).dropna()


STAT_LABELS = {"entropy": "attention entropy (nats)", "exact": "exact-match mass"}


def plot_entropy_exact(run: RunFolder, path: Path) -> Path | None:
    values = {s: _level_values(run, s) for s in ("entropy", "exact")}
    if all(v is None for v in values.values()):
        return None
    per_query = run.contrast_per_query is not None
    L = run.num_layers or int(next(v for v in values.values() if v is not None)[CONTRAST.layer].max()) + 1
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), squeeze=False)
    for row, statistic in enumerate(("entropy", "exact")):
        for col, direction in enumerate(DIRECTIONS):
            ax = axes[row][col]
            frame = values[statistic]
            if _impossible(run, direction, ax):
                continue
            if frame is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"no {statistic} statistics", ha="center", va="center")
                continue
            sub = frame[frame[CONTRAST.direction] == direction]
            for level, color, offset, label in ((3, REL_COLOR, -0.2, "relevant (3)"), (-1, EASY_COLOR, 0.2, "easy negative (−1)")):
                groups = [sub.loc[(sub[CONTRAST.layer] == l) & (sub[CONTRAST.level] == level), "value"].to_numpy(float) for l in range(L)]
                _boxes(ax, groups, [l + offset for l in range(L)], color, width=0.36, label=label)
            ax.set_xticks(range(L))
            ax.set_xlim(-0.7, L - 0.3)
            ax.set_xlabel("layer")
            ax.set_ylabel(STAT_LABELS[statistic])
            ax.tick_params(labelsize=7 if L > 12 else 8)
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(f"{_arrow(direction)}: {STAT_LABELS[statistic]}")
            if row == 0 and col == 0:
                ax.legend(fontsize=8, frameon=False)
    pooled = "per-query values of every head of the layer" if per_query else "per-head means (per-query values not available)"
    fig.suptitle(
        f"Figure 4: attention of {_arrow('Q<-D')} (query tokens renormalised over the document) and {_arrow('D<-Q')}, "
        f"relevant vs easy negatives; boxes pool the {pooled}\n"
        f"weighted by each token's mass on the other side; {_model_name(run)}; {_pool_text(run, 'contrast')}"
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_entropy_exact_heads(run: RunFolder, path: Path) -> Path | None:
    heads = run.contrast_heads
    needed = {"entropy_relevant", "entropy_easy", "exact_relevant", "exact_easy"}
    if heads is None or not needed <= set(heads.columns):
        return None
    L = run.num_layers or int(heads[CONTRAST.layer].max()) + 1
    H = run.num_heads or int(heads[CONTRAST.head].max()) + 1
    tall = max(3.5, 0.2 * L + 1.2)
    fig, axes = plt.subplots(2, 2, figsize=(11, 2 * tall), squeeze=False)
    for row, statistic in enumerate(("entropy", "exact")):
        for col, direction in enumerate(DIRECTIONS):
            if _impossible(run, direction, axes[row][col]):
                continue
            sub = heads[heads[CONTRAST.direction].astype(str).str.replace(" ", "") == direction]
            sub = sub.assign(_d=sub[f"{statistic}_relevant"] - sub[f"{statistic}_easy"])
            _heatmap(axes[row][col], _grid(sub, "_d", L, H), f"{_arrow(direction)}: {STAT_LABELS[statistic]}",
                     "relevant − easy", annotate_top=0)
    fig.suptitle(
        f"Figure 4 per head (layer/head): mean over queries of relevant (3) minus easy negative (−1)\n"
        f"{_model_name(run)}; {_pool_text(run, 'contrast')}"
    )
    fig.tight_layout()
    return _save(fig, path)


# ---- causal heads -------------------------------------------------------------------------------


def plot_heads(run: RunFolder, path: Path) -> Path | None:
    frame = run.heads
    if frame is None:
        return None
    frame = frame.assign(selection=frame[HEADS.selection].astype(str).str.lower())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    top = frame[frame[HEADS.selection] == "top"].groupby("k")[COMPARE.ndcg].mean()
    if len(top):
        ax.plot(top.index, top.values, marker="o", color=REL_COLOR, linewidth=2, label="top-k matching heads")
    rnd = frame[frame[HEADS.selection] == "random"].groupby("k")[COMPARE.ndcg].agg(["mean", "std", "count"])
    if len(rnd):
        sd = rnd["std"].fillna(0.0)
        seeds = int(rnd["count"].max())
        ax.errorbar(rnd.index, rnd["mean"], yerr=sd, marker="s", color="#4d4d4d", capsize=3, linewidth=1.3,
                    label=f"k random heads (mean ± sd over {seeds} seeds)")
        ax.fill_between(rnd.index, rnd["mean"] - sd, rnd["mean"] + sd, color="#4d4d4d", alpha=0.12)
    if run.unablated is not None:
        ax.axhline(run.unablated, color="black", linestyle="--", linewidth=1, label=f"unablated {run.unablated:.3f}")
    if run.random_ndcg is not None:
        ax.axhline(run.random_ndcg, color="grey", linestyle=":", linewidth=1.2, label=f"random ranking {run.random_ndcg:.3f}")
    ks = sorted(frame["k"].unique())
    ax.set_xticks(ks)
    ax.set_xlabel("k (heads ablated: every direction between Q and D)")
    ax.set_ylabel("nDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.set_title(f"Ablating the top-k matching heads vs k random heads — {_model_name(run)}\n{_pool_text(run)}")
    return _save(fig, path)
