"""The run folder's figures: every registered experiment's ``figures`` drawn by its ``make_figure``
(the plotting helpers are :mod:`matchsig.experiments.plots`)."""

from __future__ import annotations

from pathlib import Path

from ..analysis.runfolder import FILES, RunFolder
from ..experiments import registered
from ..experiments.plots import plt  # matplotlib with the Agg backend


def figure_captions() -> dict[str, str]:
    """File name -> caption of every registered experiment's figures, in the order the report shows them."""
    return {name: caption for e in registered() for name, caption in e.figures.items()}


def __getattr__(name: str):
    if name == "FIGURES":  # computed: experiments registered after import add theirs
        return figure_captions()
    raise AttributeError(name)


def make_figures(run_dir: str | Path | RunFolder, errors: dict[str, str] | None = None) -> dict[str, Path]:
    """Write every figure the run's files allow into ``RUN_DIR/figures``; returns {file name: path}.

    A figure whose files are missing is skipped. A figure that fails on malformed data is skipped
    too, and the reason is put in ``errors`` ({file name: message}) when given, so that one bad file
    does not cost the whole report.
    """
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    out = run.path / FILES.figures
    makers = {name: (lambda p, e=e, name=name: e.make_figure(name, run, p)) for e in registered() for name in e.figures}
    made = {}
    for name, maker in makers.items():
        target = out / name
        if target.exists():
            target.unlink()  # regenerate: never leave a stale figure from an earlier run
        try:
            result = maker(target)
        except Exception as exc:  # noqa: BLE001 - one malformed file must not cost the other figures
            plt.close("all")
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        if result is not None:
            made[name] = result
    return made
