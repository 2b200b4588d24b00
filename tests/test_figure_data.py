"""Figure 1's plotted values read back from the Matplotlib artists, against layers.csv and summary.json."""

from __future__ import annotations

import json

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
