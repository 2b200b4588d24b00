"""Every experiment command end to end on a tiny model, its output files re-derived value by value.

``ablate``, ``layers``, ``contrast``, ``heads``, ``experiments``, ``report`` and ``run`` are invoked as
a user types them (the Typer app); what they write is checked by ``tests/_recompute.py`` against
ir_measures, scipy, statsmodels and the public scoring API, never against the runner's own helpers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from _recompute import TABLE1_LABELS, check_contrast, check_heads, check_layers, check_report, check_table1
from typer.testing import CliRunner

from matchsig import CrossEncoder
from matchsig.cli import app

SMALL = ["-n", "1", "--max-queries", "2", "--contrast-per-grade", "2", "--contrast-easy", "2", "--k", "1", "--k", "3",
         "--random-seeds", "2", "-b", "8"]
FULL = ["-n", "2", "--max-queries", "3", "--contrast-per-grade", "2", "--contrast-easy", "2", "--k", "1", "--k", "3",
        "--random-seeds", "2", "-b", "8"]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def ce(tiny_model):
    return CrossEncoder.load(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def experiments_run(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmd") / "all"
    result = invoke("experiments", "--model", tiny_model, *FULL, "--out", str(out))
    assert f"results in {out}" in result.output
    return out


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "store" not in p.parts}


def test_experiments_writes_everything(experiments_run):
    files = _files(experiments_run)
    for name in ("config.json", "summary.json", "pools.tsv", "table1.csv", "table1.md", "table1.tex",
                 "table1_per_query.csv", "table1_scores.csv", "layers.csv", "contrast/heads.csv",
                 "contrast/per_query.csv", "contrast/stats.parquet", "heads.csv", "report.html", "findings.json"):
        assert name in files, name
    cfg = json.loads((experiments_run / "config.json").read_text())
    assert cfg["experiments"] == ["table1", "layers", "contrast", "heads"] and cfg["per_grade"] == 2


def test_experiments_table1_by_value(experiments_run, ce):
    numbers = check_table1(experiments_run, ce)
    # the Markdown and LaTeX layouts carry the same numbers
    md = (experiments_run / "table1.md").read_text()
    tex = (experiments_run / "table1.tex").read_text()
    for label, value in numbers["table"]["ndcg@10"].items():
        if label not in ("none", "random"):
            assert f"{value:.3f}" in md and f"{value:.3f}" in tex, label


def test_experiments_layers_by_value(experiments_run, ce):
    check_layers(experiments_run, ce)


def test_experiments_contrast_by_value(experiments_run, ce):
    check_contrast(experiments_run, ce)


def test_experiments_heads_by_value(experiments_run, ce):
    check_heads(experiments_run, ce)


def test_experiments_report_shows_this_runs_numbers(experiments_run):
    check_report(experiments_run)


def test_ablate(tiny_model, tmp_path, ce):
    """Uncorrected, at a loose alpha: marks for drops and rises appear, and are re-derived."""
    out = tmp_path / "ablate"
    invoke("ablate", "--model", tiny_model, *SMALL, "--correction", "none", "--alpha", "0.5", "--out", str(out))
    assert "layers.csv" not in _files(out) and "heads.csv" not in _files(out)
    numbers = check_table1(out, ce)
    marks = set(numbers["table"].loc[TABLE1_LABELS, "mark"])
    assert {"*", "\u2191"} <= marks, marks  # both marks exercised (the test run's data has both)
    check_report(out)


def test_layers(tiny_model, tmp_path, ce):
    out = tmp_path / "layers"
    invoke("layers", "--model", tiny_model, *SMALL, "--correction", "bonferroni", "--alpha", "0.5", "--out", str(out))
    assert "table1.csv" not in _files(out)
    check_layers(out, ce)


def test_contrast(tiny_model, tmp_path, ce):
    out = tmp_path / "contrast"
    invoke("contrast", "--model", tiny_model, *SMALL, "--correction", "bonferroni", "--alpha", "0.5", "--out", str(out))
    assert "table1.csv" not in _files(out) and "heads.csv" not in _files(out)
    check_contrast(out, ce)
    check_report(out)


def test_heads(tiny_model, tmp_path, ce):
    """Uncorrected, at a loose alpha, so that matching heads exist and lead the top-k ranking."""
    out = tmp_path / "heads"
    invoke("heads", "--model", tiny_model, *SMALL, "--correction", "none", "--alpha", "0.5", "--out", str(out))
    contrast = check_contrast(out, ce)
    assert (contrast["kind"] != "none").any()
    check_heads(out, ce)
    check_report(out)


def test_run_resume_and_force(tiny_model, tmp_path, ce, monkeypatch):
    """`matchsig run` on a config.json in a fresh folder gives the same tables; again, it computes
    nothing; with --force, every unit again."""
    from matchsig.experiments import Store

    first = tmp_path / "first"
    invoke("ablate", "--model", tiny_model, *SMALL, "--out", str(first))
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(first / "config.json", again / "config.json")
    saved: list[str] = []
    original = Store.save

    def counting(self, unit, array):
        saved.append(unit)
        return original(self, unit, array)

    monkeypatch.setattr(Store, "save", counting)
    invoke("run", str(again / "config.json"))
    units = len(saved)
    assert units == len(list((again / "store").rglob("*.npy"))) == 31  # 31 configurations x 1 chunk
    for name in ("table1.csv", "table1_per_query.csv", "table1_scores.csv", "pools.tsv"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    check_table1(again, ce)
    saved.clear()
    result = invoke("run", str(again))  # a run folder works as well as its config.json
    assert saved == [] and "table1: 30/30 units already done" in result.output, result.output
    invoke("run", str(again / "config.json"), "--force", "--no-report")
    assert len(saved) == units
    assert (again / "table1.csv").read_bytes() == (first / "table1.csv").read_bytes()


def test_report_command(experiments_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(experiments_run, folder, ignore=shutil.ignore_patterns("store", "report.html", "figures"))
    result = invoke("report", str(folder))
    assert (folder / "report.html").is_file() and str(folder / "report.html") in result.output
    check_report(folder)
    # another run's numbers give another report: nothing in it is fixed text standing in for results
    table = folder / "table1.csv"
    frame = pd.read_csv(table, keep_default_na=False)
    frame.loc[frame["ablation"] == "D<-D", "ndcg@10"] = 0.123456
    frame.to_csv(table, index=False)
    invoke("report", str(folder))
    text = (folder / "report.html").read_text()
    assert "0.1235" in text and "0.123" in text
    shutil.copy(experiments_run / "table1.csv", table)  # the report now disagrees with the table ...
    with pytest.raises(AssertionError):
        check_report(folder)  # ... and the check notices
