"""Figures 2-4: per-head attention statistics on relevant, hard-negative and easy-negative passages.

Writes ``contrast/heads.csv`` (per layer, head and direction: the three paired tests of
:mod:`matchsig.analysis.matching` and the head's kind), ``contrast/per_query.csv`` and
``contrast/stats.parquet``; hands the classified heads to the head ablations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis.runfolder import CONTRAST, FILES, RunFolder
from ...errors import MatchsigError
from ..html import arrow, easy_note, esc, figure, missing, pval, table
from ..registry import Experiment, Option
from ..store import single
from ...engine.attention_stats import DIRECTIONS
from .stats import analyse_contrast, stats_frame

__all__ = ["Contrast"]

FIGURES = {
    "fig2_relevant_vs_easy.png": "Figure 2 — M(.|3) − M(.|−1): max attention on relevant minus easy-negative passages.",
    "fig3_hard_vs_easy.png": "Figure 3 — M(.|0) − M(.|−1): max attention on hard-negative minus easy-negative passages.",
    "fig4_entropy_exact.png": "Figure 4 — attention entropy and exact-match mass, relevant vs easy negatives, per layer.",
    "fig4_heads.png": "Figure 4 (per head) — relevant minus easy negatives, for entropy and exact-match mass.",
}


class Contrast(Experiment):
    name = "contrast"
    title = "Figures 2–4 — contrastive attention analysis"
    nav = "Figures 2–4"
    pools = ("contrast",)
    figures = FIGURES
    tables = {"heads": FILES.contrast_heads, "per_query": FILES.contrast_per_query, "stats": FILES.contrast_stats}
    options = (
        Option("analysis_datasets", None, "--analysis-dataset", "Dataset(s) of the contrastive analysis (Figures 2-4), "
               "repeatable. Default: the --dataset ones.", kind=list[str], short="-a", optional=True),
        Option("contrast_per_grade", 10, "--contrast-per-grade",
               "Contrast: relevant (3) and hard (0) passages per query (default 10).", minimum=1),
        Option("contrast_easy", 10, "--contrast-easy", "Contrast: easy negatives (-1) per query (default 10)."),
    )

    @property
    def judges(self):
        from .findings import JUDGES

        return JUDGES

    def validate(self, config) -> None:
        if config.analysis_datasets is not None and not config.analysis_datasets:
            config.analysis_datasets = None
        if config.contrast_easy < 1:
            raise MatchsigError("contrast needs easy negatives: contrast_easy must be >= 1")

    def units(self, runner) -> list:
        pool, (qs, ds) = runner.pool("contrast")
        units = []
        for k, rows in enumerate(runner.chunks(len(pool))):
            def work(rows=rows):
                return runner.encoder.attention_stats([qs[i] for i in rows], [ds[i] for i in rows],
                                                      batch_size=runner.config.batch_size).values
            units.append(single(f"contrast/{k:05d}", work, len(rows)))
        return units

    def collect(self, runner) -> None:
        if runner.dist.rank != 0 and "heads" not in runner.config.experiments:
            return
        pool, _ = runner.pool("contrast")
        values = np.concatenate([runner.store.load(f"contrast/{k:05d}") for k in range(len(runner.chunks(len(pool))))])
        scheme = runner.encoder.scheme
        possible = [d for d, x, y in DIRECTIONS if scheme.possible(x.name, y.name)]
        frame = analyse_contrast(pool, values, runner.config.alpha, runner.config.correction, possible)
        if runner.dist.rank == 0:
            runner.writer.csv(FILES.contrast_heads, frame["heads"])
            runner.writer.csv(FILES.contrast_per_query, frame["per_query"])
            runner.writer.parquet(FILES.contrast_stats, stats_frame(pool, values))
        runner.results["contrast"] = frame["heads"]

    def make_figure(self, name: str, folder: RunFolder, path: Path) -> Path | None:
        from .. import plots as f

        makers = {"fig2_relevant_vs_easy.png": lambda: f.plot_contrast(folder, path, 3),
                  "fig3_hard_vs_easy.png": lambda: f.plot_contrast(folder, path, 0),
                  "fig4_entropy_exact.png": lambda: f.plot_entropy_exact(folder, path),
                  "fig4_heads.png": lambda: f.plot_entropy_exact_heads(folder, path)}
        return makers[name]()

    def section(self, folder: RunFolder, figures: dict[str, Path]) -> str:
        return section(folder, figures)


def section(run: RunFolder, figures: dict[str, Path]) -> str:
    """Figures 2-4, the top matching heads and the heads per kind."""
    heads = run.contrast_heads
    if heads is None and run.contrast_per_query is None:
        return f'<section id="contrast"><h2>Figures 2–4 — contrastive attention analysis</h2>{missing(FILES.contrast_heads, "contrast")}</section>'
    test = (
        f"Tests: for each head and direction, three two-sided paired t-tests over queries of the per-query M: relevant vs "
        f"easy (3 vs &minus;1), hard vs easy (0 vs &minus;1) and relevant vs hard (3 vs 0), each family {esc(run.corrected)} "
        f"over all heads &times; both directions (<code>correction = {esc(run.correction)}</code>), threshold {run.alpha:g}. "
        "A head is a <b>matching head</b> (in a direction) when 3 vs &minus;1 is significant, <b>either sign</b> "
        "(sign +1: more attention on relevant passages, &minus;1: less). Kind: <b>syntactic</b> = 0 vs &minus;1 is "
        "significant with the same sign (term-sharing hard negatives move it too); <b>semantic</b> = 3 vs 0 is "
        "significant with the same sign while 0 vs &minus;1 is not (positive evidence that it separates relevant "
        "passages from term-sharing ones); <b>unclassified</b> = neither. The same definition "
        "(<code>matchsig.matching</code>) picks the top-k heads of the head ablations and rings heads in the explorer."
    )
    parts = [f"""
<section id="contrast"><h2>Figures 2–4 — contrastive attention analysis</h2>
{_analysis_scope(run)}
<p class="muted">M(Q,D | r): for each query token, the maximum attention it pays to a document token, averaged over
query tokens and over the query's passages of level r (3 relevant, 0 hard negative, &minus;1 easy negative);
M(D,Q | r) likewise from document to query tokens. Paper: head 11/13 stands out; late layers 20–23 match
semantically.</p>
{figure(figures, "fig2_relevant_vs_easy.png", FIGURES["fig2_relevant_vs_easy.png"])}
{figure(figures, "fig3_hard_vs_easy.png", FIGURES["fig3_hard_vs_easy.png"])}
{figure(figures, "fig4_entropy_exact.png", FIGURES["fig4_entropy_exact.png"])}
{figure(figures, "fig4_heads.png", FIGURES["fig4_heads.png"])}
<h3 id="top-heads">Top matching heads</h3>
<p class="muted">{test}</p>"""]
    from .findings import top_matching_heads

    top = top_matching_heads(run, n=20)
    if heads is None:
        parts.append(missing(FILES.contrast_heads, "contrast"))
    elif top.empty:
        parts.append('<p class="missing">No head passes the test: no matching head on this run.</p>')
    else:
        top = top.copy()
        top.insert(0, "layer/head", [f"{int(l)}/{int(h)}" for l, h in zip(top[CONTRAST.layer], top[CONTRAST.head])])
        top = top.drop(columns=[CONTRAST.layer, CONTRAST.head])
        signed = lambda v: f"{float(v):+.4f}"  # noqa: E731
        formats = {CONTRAST.direction: arrow, "delta_relevant": signed, "delta_hard": signed, "delta_relevant_hard": signed,
                   "sign": lambda v: "+" if int(v) > 0 else "&minus;",
                   CONTRAST.kind: lambda v: f'<span class="kind {esc(v)}">{esc(v)}</span>'}
        formats.update({c: pval for c in top.columns if c.startswith("p_")})
        parts.append(table(top, formats))
    if heads is not None and CONTRAST.kind in heads:
        counts = (
            heads.assign(direction=heads[CONTRAST.direction].astype(str))
            .groupby([CONTRAST.direction, CONTRAST.kind]).size().unstack(fill_value=0).reset_index()
        )
        counts.columns = [str(c) for c in counts.columns]
        parts.append("<p>Heads per kind and direction (all heads of the model):</p>" + table(counts, {CONTRAST.direction: arrow}))
        parts.append(_kinds_per_layer(run, heads))
    parts.append("</section>")
    return "".join(parts)


def _kinds_per_layer(run: RunFolder, heads: pd.DataFrame) -> str:
    """Per layer and direction: how many heads are syntactic / semantic matching heads (paper: Figure 3)."""
    frame = heads.assign(direction=heads[CONTRAST.direction].astype(str).str.replace(" ", ""))
    layers = sorted(int(l) for l in frame[CONTRAST.layer].unique())
    rows = []
    for direction in [d for d in ("Q<-D", "D<-Q") if run.scheme.possible(*d.split("<-"))]:
        sub = frame[frame[CONTRAST.direction] == direction]
        for kind in ("syntactic", "semantic", "unclassified"):
            counts = sub[sub[CONTRAST.kind] == kind].groupby(CONTRAST.layer).size()
            rows.append({CONTRAST.direction: direction, CONTRAST.kind: kind, **{str(l): int(counts.get(l, 0)) for l in layers}})
    counts = pd.DataFrame(rows)
    return (
        "<details><summary>Matching heads per layer, by kind (the paper: syntactic heads in early and middle layers, "
        "semantic heads in the last layers 20–23 of 24)</summary><div class=\"scroll\">"
        + table(counts, {CONTRAST.direction: arrow, CONTRAST.kind: lambda v: f'<span class="kind {esc(v)}">{esc(v)}</span>'})
        + "</div></details>"
    )


def _analysis_scope(run: RunFolder) -> str:
    contrast = (run.summary.get("pools") or {}).get("contrast") or {}
    datasets = contrast.get("datasets") or run.config.get("analysis_datasets") or run.config.get("datasets") or []
    queries = contrast.get("queries")
    text = (f'<p class="muted">Analysis pool: {esc(", ".join(map(str, datasets)) or "?")}'
            + (f", {esc(queries)} queries" if queries else "") + " (the paper: TREC DL 2019–2022, 226 queries).</p>")
    return text + easy_note(run)
