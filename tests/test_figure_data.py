"""Figure 1's plotted values read back from the Matplotlib artists, against layers.csv and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_report import make_run

from matchsig.analysis.runfolder import RunFolder
from matchsig.engine.ablation import direction_label


def test_figure1_plots_the_layers_csv(tmp_path, monkeypatch):
    from matchsig.experiments import plots

    run_dir = make_run(tmp_path / "run", with_contrast=False, with_heads=False)
    captured = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault("fig", fig) and path)
    plots.plot_layers(RunFolder(run_dir), tmp_path / "figure1.png")
    ax = captured["fig"].axes[0]
    frame = pd.read_csv(run_dir / "layers.csv")
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert len(curves) == frame["direction"].nunique()
    for direction, group in frame.groupby("direction"):
        group = group.sort_values("layer")
        line = curves[direction_label(direction).replace("<-", "\u2190")]
        np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), group["layer"].to_numpy(float))
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), group["ndcg@10"].to_numpy(float))
    summary = json.loads((run_dir / "summary.json").read_text())
    levels = sorted(float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_label().startswith("_"))
    assert levels == sorted([summary["unablated_ndcg@10"], summary["random_ndcg@10"]["mean"]])


# ---- Figures 2-4 and the head ablations: the plotted values read back from the artists ---------------------------
# The reference values come from the CSVs by plain pandas/numpy here; box plots are checked against their
# definition (quartiles by linear interpolation, whiskers at the last value within 1.5 IQR, the rest fliers).

DIRECTIONS = ("Q<-D", "D<-Q")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("figures") / "run")


def _capture(monkeypatch):
    """The figure handed to plots._save, and every box plot's artists (the dict Matplotlib's boxplot returns)."""
    from matchsig.experiments import plots

    captured = {"boxes": []}
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault("fig", fig) and path)
    real = plots._boxes

    def boxes(ax, *args, **kwargs):
        parts = real(ax, *args, **kwargs)
        captured["boxes"].append((ax, parts))
        return parts

    monkeypatch.setattr(plots, "_boxes", boxes)
    return plots, captured


def _box_artists(captured, ax) -> dict[float, dict]:
    """{x position: quartiles, median, whisker ends and fliers} of every box drawn on ``ax``, from its artists."""
    out = {}
    for owner, parts in captured["boxes"]:
        if owner is not ax:
            continue
        for i, median in enumerate(parts["medians"]):
            ys = parts["boxes"][i].get_path().vertices[:, 1]
            low, high = parts["whiskers"][2 * i].get_ydata(), parts["whiskers"][2 * i + 1].get_ydata()
            out[round(float(np.mean(median.get_xdata())), 6)] = {
                "q1": float(ys.min()), "q3": float(ys.max()), "median": float(median.get_ydata()[0]),
                "whiskers": (float(low[1]), float(high[1])), "fliers": np.sort(np.asarray(parts["fliers"][i].get_ydata(), float))}
    return out


def _assert_box(drawn: dict, values: np.ndarray, what: str) -> None:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    np.testing.assert_allclose([drawn["q1"], drawn["median"], drawn["q3"]], [q1, med, q3], rtol=0, atol=1e-12, err_msg=what)
    np.testing.assert_allclose(drawn["whiskers"], (inside.min(), inside.max()), rtol=0, atol=1e-12, err_msg=what)
    np.testing.assert_allclose(drawn["fliers"], np.sort(values[(values < inside.min()) | (values > inside.max())]),
                               rtol=0, atol=1e-12, err_msg=what)


def _per_query(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "contrast" / "per_query.csv", dtype={"qid": str})


def _head_grid(frame: pd.DataFrame, values: pd.Series, L: int, H: int) -> np.ndarray:
    grid = np.full((L, H), np.nan)
    for layer, head, v in zip(frame["layer"], frame["head"], values):
        grid[int(layer), int(head)] = v
    return grid


@pytest.mark.parametrize("level,delta,p", [(3, "delta_relevant", "p_relevant_holm"), (0, "delta_hard", "p_hard_holm")])
def test_figures_2_and_3_plot_the_contrast_csvs(run_dir, monkeypatch, tmp_path, level, delta, p):
    plots, captured = _capture(monkeypatch)
    plots.plot_contrast(RunFolder(run_dir), tmp_path / "fig.png", level)
    fig = captured["fig"]
    heads = pd.read_csv(run_dir / "contrast" / "heads.csv")
    per_query = _per_query(run_dir)
    L, H = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    wide = per_query[per_query["level"].isin([level, -1])].pivot_table(
        index=["qid", "layer", "head", "direction"], columns="level", values="max").reset_index()
    wide["diff"] = wide[level] - wide[-1]
    for row, direction in enumerate(DIRECTIONS):
        ax_a, ax_b = fig.axes[2 * row], fig.axes[2 * row + 1]
        sub = heads[heads["direction"] == direction]
        want = _head_grid(sub, sub[delta], L, H)
        np.testing.assert_array_equal(np.ma.filled(ax_a.images[0].get_array(), np.nan), want)
        assert ax_a.images[0].norm.vmax == pytest.approx(np.abs(want).max())  # symmetric scale around 0
        # white dots: the significant heads (Holm p <= alpha); labels: the 3 largest positive means
        dots = {(int(round(y)), int(round(x))) for x, y in ax_a.collections[0].get_offsets()}
        assert dots == {(int(l), int(h)) for l, h, pv in zip(sub["layer"], sub["head"], sub[p]) if pv <= 0.05}
        top = sub.sort_values(delta, ascending=False).head(3)
        assert {t.get_text() for t in ax_a.texts} == {f"{int(l)}/{int(h)}" for l, h, d in
                                                     zip(top["layer"], top["head"], top[delta]) if d > 0}
        boxes = _box_artists(captured, ax_b)
        assert sorted(boxes) == list(range(L))
        for layer in range(L):
            values = wide[(wide["direction"] == direction) & (wide["layer"] == layer)]["diff"].to_numpy(float)
            assert len(values) == H * wide["qid"].nunique()  # every head of the layer, pooled
            _assert_box(boxes[layer], values, f"{direction} layer {layer}")


def test_figure4_boxes_plot_the_per_query_csv(run_dir, monkeypatch, tmp_path):
    plots, captured = _capture(monkeypatch)
    plots.plot_entropy_exact(RunFolder(run_dir), tmp_path / "fig.png")
    fig = captured["fig"]
    per_query = _per_query(run_dir)
    L = int(per_query["layer"].max()) + 1
    for row, statistic in enumerate(("entropy", "exact")):
        for col, direction in enumerate(DIRECTIONS):
            boxes = _box_artists(captured, fig.axes[2 * row + col])
            assert len(boxes) == 2 * L
            for level, offset in ((3, -0.2), (-1, 0.2)):
                for layer in range(L):
                    sel = (per_query["direction"] == direction) & (per_query["layer"] == layer) & (per_query["level"] == level)
                    _assert_box(boxes[round(layer + offset, 6)], per_query.loc[sel, statistic].to_numpy(float),
                                f"{statistic} {direction} level {level} layer {layer}")


def test_figure4_heads_plot_the_heads_csv(run_dir, monkeypatch, tmp_path):
    plots, captured = _capture(monkeypatch)
    plots.plot_entropy_exact_heads(RunFolder(run_dir), tmp_path / "fig.png")
    fig = captured["fig"]
    heads = pd.read_csv(run_dir / "contrast" / "heads.csv")
    L, H = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    for row, statistic in enumerate(("entropy", "exact")):
        for col, direction in enumerate(DIRECTIONS):
            sub = heads[heads["direction"] == direction]
            want = _head_grid(sub, sub[f"{statistic}_relevant"] - sub[f"{statistic}_easy"], L, H)
            got = np.ma.filled(fig.axes[2 * row + col].images[0].get_array(), np.nan)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15, err_msg=f"{statistic} {direction}")


def test_head_ablation_figure_plots_the_heads_csv(run_dir, monkeypatch, tmp_path):
    plots, captured = _capture(monkeypatch)
    plots.plot_heads(RunFolder(run_dir), tmp_path / "fig.png")
    ax = captured["fig"].axes[0]
    frame = pd.read_csv(run_dir / "heads.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    top = frame[frame["selection"] == "top"].sort_values("k")
    line = next(l for l in ax.get_lines() if l.get_label() == "top-k matching heads")
    np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), top["k"].to_numpy(float))
    np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), top["ndcg@10"].to_numpy(float))
    random = frame[frame["selection"] == "random"]
    ks = sorted(random["k"].unique())
    means = np.array([random.loc[random["k"] == k, "ndcg@10"].mean() for k in ks])
    sds = np.array([np.std(random.loc[random["k"] == k, "ndcg@10"].to_numpy(float), ddof=1) for k in ks])
    (bars,) = ax.containers  # the error bars of the random selections
    data_line, _, (segments,) = bars
    np.testing.assert_allclose(np.asarray(data_line.get_ydata(), float), means, rtol=0, atol=1e-15)
    ends = np.array([[seg[0][1], seg[1][1]] for seg in segments.get_segments()])
    np.testing.assert_allclose(np.sort(ends, axis=1), np.c_[means - sds, means + sds], rtol=0, atol=1e-12)
    assert f"over {random.groupby('k').size().max()} seeds" in bars.get_label()
    levels = sorted(float(l.get_ydata()[0]) for l in ax.get_lines() if l.get_label().startswith(("unablated", "random ranking")))
    assert levels == sorted([summary["unablated_ndcg@10"], summary["random_ndcg@10"]["mean"]])


def test_patching_heatmap_plots_patching_csv(tiny_model, tmp_path, monkeypatch):
    """A head patching run (min_delta 0): the heat map's cells are patching.csv's effect_mean, cell by cell."""
    import matplotlib.figure

    from matchsig.experiments.patching import PatchConfig, run_patch

    figures = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self) or real(self, *a, **k))
    config = PatchConfig(model=tiny_model, dataset="demo", diagnostic="tfc1", site="head", pairs=3, per_grade=1,
                         chunk_size=6, min_delta=0.0, device="cpu")
    table = pd.read_csv(run_patch(tmp_path / "run", config, progress=False))
    (fig,) = figures
    got = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    want = _head_grid(table, table["effect_mean"], 3, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)  # the CSV keeps 6 significant digits
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    assert fig.axes[0].images[0].norm.vmax == pytest.approx(np.abs(got).max())


# ---- compare.html's figures against the comparison's CSVs ---------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """A paper-like and a contrary synthetic run compared as a two-step series: every compare figure is drawn;
    {figure name: Figure} captured at savefig, with the output folder."""
    import matplotlib.figure

    import matchsig

    root = tmp_path_factory.mktemp("compare")
    runs = [make_run(root / "a"), make_run(root / "b", kind="contrary")]
    for run in runs:  # make_run's kind column is a placeholder ("none"): without it, compare classifies the heads
        heads = pd.read_csv(run / "contrast" / "heads.csv")
        heads.drop(columns="kind").to_csv(run / "contrast" / "heads.csv", index=False)
    figures = {}
    real = matplotlib.figure.Figure.savefig
    mp = pytest.MonkeyPatch()
    mp.setattr(matplotlib.figure.Figure, "savefig",
               lambda self, path, *a, **k: figures.setdefault(Path(path).name, self) and real(self, path, *a, **k))
    try:
        matchsig.compare(runs, out=root / "c", names=["paper", "contrary"], steps=[0, 100])
    finally:
        mp.undo()
    return root / "c", figures


NAMES = ["paper", "contrary"]


def _run_of(artist) -> str:
    """The run a line (or a colour) belongs to, by its colour: the runs take tab10's colours in order."""
    import matplotlib.colors
    import matplotlib.pyplot as plt

    colours = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab10").colors]
    colour = artist.get_color() if hasattr(artist, "get_color") else artist
    return NAMES[colours.index(matplotlib.colors.to_hex(colour))]


def _data_lines(ax) -> list:
    """The plotted curves of a panel (reference lines drawn with axhline span the axes: x = [0, 1] in axes units)."""
    return [l for l in ax.get_lines() if l.get_transform() == ax.transData]


def test_compare_curves_figure_plots_curves_csv(comparison):
    out, figures = comparison
    frame = pd.read_csv(out / "curves.csv")
    fig = figures["curves.png"]
    directions = list(dict.fromkeys(frame["direction"]))
    for ax, direction in zip(fig.axes, directions):
        lines = _data_lines(ax)
        assert sorted(_run_of(l) for l in lines) == sorted(NAMES)
        for line in lines:
            part = frame[(frame["direction"] == direction) & (frame["run"] == _run_of(line))].sort_values("depth")
            np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), np.r_[0.0, part["depth"].to_numpy(float)])
            np.testing.assert_allclose(np.asarray(line.get_ydata(), float), np.r_[0.0, part["removed"].to_numpy(float)],
                                       rtol=0, atol=1e-12)


def test_compare_heads_figure_plots_heads_by_layer_csv(comparison):
    out, figures = comparison
    frame = pd.read_csv(out / "heads_by_layer.csv")
    fig = figures["heads.png"]
    styles = {"-": "matching", ":": "syntactic", "--": "semantic"}
    for ax, direction in zip(fig.axes, ("Q<-D", "D<-Q", "either")):
        lines = _data_lines(ax)
        assert len(lines) == 3 * len(NAMES)
        for line in lines:
            part = frame[(frame["direction"] == direction) & (frame["run"] == _run_of(line))].sort_values("depth")
            column = styles[line.get_linestyle()]
            np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), part["depth"].to_numpy(float))
            np.testing.assert_allclose(np.asarray(line.get_ydata(), float), part[column].to_numpy(float), rtol=0, atol=1e-12)
    assert frame["matching"].max() > 0 and frame["syntactic"].max() > 0  # not a figure of zeros


def test_compare_bins_figure_plots_contrast_bins_csv(comparison):
    out, figures = comparison
    frame = pd.read_csv(out / "contrast_bins.csv")
    fig = figures["contrast_bins.png"]
    bins = sorted(set(frame["bin"]))
    for ax, direction in zip(fig.axes, ("Q<-D", "D<-Q")):
        bars = list(ax.patches)
        assert len(bars) == len(NAMES) * len(bins)
        for bar in bars:
            run = _run_of(bar.get_facecolor())
            b = int(round(bar.get_x() + bar.get_width() / 2))  # a bin's bars sit side by side around its index
            row = frame[(frame["run"] == run) & (frame["direction"] == direction) & (frame["bin"] == bins[b])]
            assert len(row) == 1
            assert bar.get_height() == pytest.approx(float(row["d_z"].iloc[0]), abs=1e-12)
        assert {(_run_of(bar.get_facecolor()), int(round(bar.get_x() + bar.get_width() / 2))) for bar in bars} == {
            (n, b) for n in NAMES for b in range(len(bins))}


def test_compare_series_figure_plots_series_and_table1_csv(comparison):
    out, figures = comparison
    series = pd.read_csv(out / "series.csv").sort_values("step")
    table1 = pd.read_csv(out / "table1.csv")
    ax0, ax1, ax2 = figures["series.png"].axes
    by_label = {l.get_label(): l for l in ax0.get_lines()}
    for label, column in (("unablated", "unablated"), ("random ranking", "random")):
        np.testing.assert_array_equal(np.asarray(by_label[label].get_xdata(), float), series["step"].to_numpy(float))
        np.testing.assert_allclose(np.asarray(by_label[label].get_ydata(), float), series[column].to_numpy(float),
                                   rtol=0, atol=1e-12)
    step = dict(zip(series["run"], series["step"]))
    cells = {l.get_label().replace("\u2190", "<-"): l for l in ax1.get_lines() if l.get_transform() == ax1.transData}
    assert cells and set(cells) <= set(table1["ablation"])
    for cell, line in cells.items():
        part = table1[table1["ablation"] == cell].assign(step=lambda f: f["run"].map(step)).sort_values("step")
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), part["removed"].to_numpy(float), rtol=0, atol=1e-12)
    for line in ax2.get_lines():
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), series[line.get_label()].to_numpy(float),
                                   rtol=0, atol=1e-12)
