"""``matchsig compare RUN [RUN ...]``: several run folders side by side in one page (:func:`matchsig.compare`)."""

from __future__ import annotations

import typer

from ..errors import MatchsigError


def compare(
    runs: list[str] = typer.Argument(..., help="Two or more run folders (any models, any collections)."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for compare.html, compare.json, the CSVs and figures."),
    names: str = typer.Option(None, "--names", help="Comma-separated labels of the runs, in order (default: the "
                              "models' names)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the paired tests across runs."),
    correction: str = typer.Option("holm", "--correction", help="Correction over the Table 1 cells of each pair of "
                                   "runs: holm (default), bonferroni or none."),
    bins: int = typer.Option(3, "--bins", help="Depth bins of the contrast effect sizes (default 3: early, middle, "
                             "late)."),
    series: str = typer.Option(None, "--series", help="Comma-separated training step of each run, in order: the runs "
                               "are a checkpoint series (x = step). Default: read from the models' step-NNNNNN "
                               "folders (`matchsig train --save-steps`) when every run has one."),
) -> None:
    """Compare run folders: run cards, Table 1 as fractions of the original - random gap (paired tests where two
    runs share a pool), Figure 1 and matching heads on a depth-normalised axis, the findings of every run."""
    from ..report.compare import compare as run_compare

    labels = None
    if names is not None:
        labels = [n.strip() for n in names.split(",")]
        if not any(labels):
            raise MatchsigError("--names is empty")
    steps = None
    if series is not None:
        try:
            steps = [int(x) for x in series.split(",")]
        except ValueError:
            raise MatchsigError(f"bad --series {series!r}: expected comma-separated step numbers") from None
    result = run_compare(runs, out=out, names=labels, alpha=alpha, correction=correction, bins=bins, steps=steps)
    tested = len(result.paired[["run_a", "run_b"]].drop_duplicates()) if len(result.paired) else 0
    typer.echo(f"compared {len(result.names)} runs ({tested} pair(s) on a shared pool tested, "
               f"{len(result.skipped)} not{'; a series over steps ' + ','.join(map(str, result.steps)) if result.steps else ''}"
               f"): {out}/compare.html")
