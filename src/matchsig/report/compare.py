"""``matchsig.compare(runs)``: several run folders side by side (``compare.html``, ``compare.json``, CSVs).

>>> from matchsig import compare
>>> result = compare(["runs/minilm", "runs/monobert"], out="runs/compare", names=["MiniLM", "monoBERT"])
>>> result.paired[result.paired["significant"]]          # cells where the two models' drops differ
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ..analysis.crossrun import Comparison, compare_runs, findings_matrix, open_runs
from ..analysis.runfolder import RunFolder, RunFolderWriter
from ..errors import MatchsigError
from .checklist import judge
from .compare_figures import compare_figures
from .compare_page import render_compare

__all__ = ["compare", "write_comparison"]


def _findings(run: RunFolder) -> tuple[list[dict], str]:
    """The run's findings: its findings.json, else judged now from its files (nothing is written into the run)."""
    stored = run.findings.get("findings")
    if isinstance(stored, list) and stored:
        return [f for f in stored if isinstance(f, dict)], "findings.json"
    return [{**asdict(f), "verdict": f.verdict} for f in judge(run, write=False)], "judged now (no findings.json)"


def compare(runs: Sequence[str | Path], out: str | Path | None = None, names: Sequence[str] | None = None,
            alpha: float = 0.05, correction: str = "holm", bins: int = 3,
            steps: Sequence[int] | None = None) -> Comparison:
    """Compare run folders of any models and collections (see :mod:`matchsig.analysis.crossrun` for every number).

    ``names`` label the runs (default: the models' names); ``alpha`` and ``correction`` decide the paired tests
    across runs that share a pool; ``bins`` is the number of depth bins of the contrast effects; ``steps`` makes the
    runs a checkpoint series (x = step; read from ``step-NNNNNN`` model folders when not given). With ``out``, writes
    ``out/compare.html`` (self-contained), ``out/compare.json``, one CSV per table and ``out/figures/*.png``.
    """
    opened = open_runs([str(r) for r in runs], names)
    comparison = compare_runs(opened, alpha=alpha, correction=correction, bins=bins, steps=steps)
    found, sources = {}, {}
    for name, run in opened:
        found[name], sources[name] = _findings(run)
    comparison.findings = findings_matrix(found)
    comparison.sources = sources
    if out is not None:
        write_comparison(comparison, out)
    return comparison


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def write_comparison(comparison: Comparison, out: str | Path) -> Path:
    """Write the comparison's page, JSON, CSVs and figures into ``out``; returns the page's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MatchsigError(f"--out {out} exists and is not a folder")
    writer = RunFolderWriter(out)
    for file, frame in comparison.tables().items():
        writer.csv(file, frame)
    errors: dict[str, str] = {}
    figures = compare_figures(comparison, out / "figures", errors)
    sources = comparison.sources
    payload = {"runs": _records(comparison.cards), "alpha": comparison.alpha, "correction": comparison.correction,
               "notes": comparison.notes, "unpaired": comparison.skipped, "findings_sources": sources,
               "figure_errors": errors, "steps": comparison.steps, **{file.removesuffix(".csv"): _records(frame)
                                           for file, frame in comparison.tables().items() if file != "runs.csv"}}
    writer.json("compare.json", payload)
    return writer.text("compare.html", render_compare(comparison, figures, sources, errors))
