"""Figure 1's plotted values read back from the Matplotlib artists, against layers.csv and summary.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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
