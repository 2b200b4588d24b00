"""Figure 1: nDCG@10 when a direction is masked in every head of layers 0..l, for every l.

Writes ``layers.csv`` (one row per (direction, l), compared with the unablated model; one family:
every cell of the figure) and draws ``figures/layers.png``.
"""

from __future__ import annotations

from pathlib import Path

from ...analysis.runfolder import COMPARE, CONTRAST, FILES, LAYERS, RunFolder
from ...engine.ablation import FIGURE1_DIRECTIONS, direction_label
from .. import driver
from ..html import arrow, esc, figure, missing, num, table
from ..registry import Experiment

__all__ = ["FIGURE1_DIRECTIONS", "Layers"]

FIGURES = {"layers.png": "Figure 1 — nDCG@10 when a direction is ablated in every head of layers 0..l."}


class Layers(Experiment):
    name = "layers"
    title = "Figure 1 — up-to-layer ablations"
    nav = "Figure 1"
    pools = ("main",)
    figures = FIGURES
    tables = {"curves": FILES.layers}

    @property
    def judges(self):
        from .findings import JUDGES

        return JUDGES

    def directions(self, runner) -> tuple[str, ...]:
        """The paper's Figure 1 directions (an encoder's), or the model's: X<-Y for X, Y in {aggregator, Q, D}
        where its masks allow it (:meth:`matchsig.engine.scheme.PartScheme.figure1_directions`)."""
        return runner.encoder.scheme.figure1_directions()

    def units(self, runner) -> list:
        units = driver.curve_units(runner, self.directions(runner))
        driver.baseline_scores(runner)
        return units

    def collect(self, runner) -> None:
        if runner.dist.rank != 0:
            return
        rows, per_query = [], []
        specs = self.directions(runner)
        for spec, curve in zip(specs, driver.gather_curves(runner, specs)):
            for layer, scores in enumerate(curve):
                rows.append({LAYERS.direction: spec, LAYERS.layer: layer})
                per_query.append(driver.evaluate(runner, scores))
        # one family: every (direction, layer) cell of Figure 1
        runner.writer.csv(FILES.layers, driver.ablation_rows(runner, rows, per_query))

    def make_figure(self, name: str, folder: RunFolder, path: Path) -> Path | None:
        from ..plots import plot_layers

        return plot_layers(folder, path)

    def section(self, folder: RunFolder, figures: dict[str, Path]) -> str:
        return section(folder, figures)


def _scheme_note(run: RunFolder) -> str:
    scheme = run.scheme
    if scheme.encoder:
        return ""
    agg = scheme.aggregator_name
    if scheme.aggregator == "DEC":
        return (" This model reads its score at its decoder token (DEC), whose cross-attention runs after the whole "
                "encoder: it has no up-to-layer curve, so the figure shows the Q and D directions only.")
    return (f" This model reads its score at {esc(agg)}: its {esc(agg)} rows play the paper's CLS rows"
            + ("; directions the causal mask makes impossible are left out" if scheme.causal else "") + ".")


def section(run: RunFolder, figures: dict[str, Path]) -> str:
    """Figure 1 and its table: nDCG@10 per direction and last ablated layer."""
    frame = run.layers
    if frame is None:
        return f'<section id="layers"><h2>Figure 1 — up-to-layer ablations</h2>{missing(FILES.layers, "layers")}</section>'
    from ...analysis.significance import marks_legend

    try:
        cells = frame.assign(cell=[f"{float(r[COMPARE.ndcg]):.3f}{run.mark(r)}" for _, r in frame.iterrows()])
        wide = cells.pivot_table(index=CONTRAST.direction, columns=CONTRAST.layer, values="cell", aggfunc="first", sort=False)
        wide.index = [run.scheme.label(direction_label(d)) for d in wide.index]
        wide = wide.reset_index().rename(columns={"index": CONTRAST.direction})
        wide.columns = [str(c) for c in wide.columns]
        n = frame[COMPARE.n_queries].max() if COMPARE.n_queries in frame else None
        legend = marks_legend(run.alpha, run.correction, "every (direction, layer) of the figure",
                              int(n) if n == n and n else None)
        details = (f'<details open><summary>nDCG@10 per direction and last ablated layer</summary>'
                   f'<p class="muted">{esc(legend)} against the unablated model ({num(run.unablated)}).</p>'
                   f'<div class="scroll">{table(wide, {"direction": arrow})}</div></details>')
    except (KeyError, ValueError, TypeError) as exc:
        details = f'<p class="missing">layers.csv could not be read: {esc(type(exc).__name__)}: {esc(exc)}</p>'
    return f"""
<section id="layers"><h2>Figure 1 — up-to-layer ablations</h2>
<p class="muted">A direction is masked in every head of layers 0..l (0-indexed); the curve shows nDCG@10 against l.
The paper (24 layers): CLS &larr; {{Q,D}} and CLS &larr; * do not hurt before the last 2 layers; blocking D &larr; D
does not hurt before layers 11/12.{_scheme_note(run)}</p>
{figure(figures, "layers.png", FIGURES["layers.png"])}
{details}
</section>"""
