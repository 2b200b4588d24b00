"""Table 1: nDCG@10 with each direction X<-Y (and X<-*) masked in every layer and head.

Writes ``table1.csv`` (one row per configuration: the unablated model, the exact random ranking and
the 30 ablations, compared with the unablated model; the correction's family is the 30 ablations),
``table1_per_query.csv``, ``table1_scores.csv``, ``table1.md`` and ``table1.tex``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...analysis import paper
from ...analysis.comparison import bold
from ...analysis.runfolder import COMPARE, CONTRAST, FILES, POOLS, TABLE1, RunFolder, as_float
from ...engine.ablation import Ablation
from ...engine.scheme import ENCODER, PartScheme
from .. import driver
from ..html import arrow, esc, missing, num, pval, table
from ..pools import protocol_note
from ..registry import Experiment
from .tables import table1_latex, table1_markdown

__all__ = ["Table1"]


def cell_label(x: str, y: str) -> str:
    return f"{x}<-{y}"


class Table1(Experiment):
    name = "table1"
    title = "Table 1 — whole-model ablations (nDCG@10)"
    nav = "Table 1"
    tables = {"table": FILES.table1, "per_query": FILES.table1_per_query, "scores": FILES.table1_scores}
    pools = ("main",)

    @property
    def judges(self):
        from .findings import JUDGES

        return JUDGES

    def cells(self, scheme: PartScheme = ENCODER) -> list[tuple[str, Ablation]]:
        """The labelled ablations of the model's Table 1: the 30 of an encoder; a causal decoder's possible ones
        (its impossible cells are written "impossible", never computed as no-ops); an encoder-decoder's 30 and
        its decoder token's row ``DEC<-Y``."""
        return [(cell_label(x, y), Ablation.parse(cell_label(x, y))) for x, y in scheme.computed_cells()]

    def units(self, runner) -> list:
        driver.baseline_scores(runner)
        return driver.grid_units(runner, self.cells(runner.encoder.scheme))

    def collect(self, runner) -> None:
        if runner.dist.rank != 0:
            return
        scheme = runner.encoder.scheme
        cells = self.cells(scheme)
        labels = [label for label, _ in cells]
        scores = driver.gather(runner, labels)
        ref, ref_mean = driver.reference(runner)
        rnd = driver.random(runner)
        per_query = {TABLE1.none: ref, **{label: driver.evaluate(runner, s) for label, s in zip(labels, scores)}}
        rows = [{TABLE1.target: TABLE1.none, TABLE1.source: "", TABLE1.ablation: TABLE1.none},
                {TABLE1.target: TABLE1.random, TABLE1.source: "", TABLE1.ablation: TABLE1.random}]
        rows += [{TABLE1.target: x, TABLE1.source: y, TABLE1.ablation: label}
                 for label, (x, y) in zip(labels, scheme.computed_cells())]
        # the correction's family is the ablations; the random row is a reference, tested alone
        family = [False, False] + [True] * len(labels)
        frame = driver.ablation_rows(runner, rows, [ref, rnd.per_query, *(per_query[l] for l in labels)],
                                     family=pd.Series(family).to_numpy())
        frame[COMPARE.lower] = frame[COMPARE.ndcg] < ref_mean
        self.write(runner, frame, {**per_query, TABLE1.random: rnd.per_query}, [driver.baseline_scores(runner), *scores],
                   labels)

    def write(self, runner, frame: pd.DataFrame, per_query: dict, scores: list, labels: list[str]) -> None:
        out = runner.writer
        out.csv(FILES.table1, frame)
        pq = pd.DataFrame(per_query)
        pq.index.name = POOLS.qid
        out.csv(FILES.table1_per_query, pq, index=True)
        pool, _ = runner.pool("main")
        raw = pd.DataFrame(dict(zip([TABLE1.none, *labels], scores)))
        raw.insert(0, POOLS.grade, [r.grade for r in pool.rows])
        raw.insert(0, POOLS.docid, [r.docid for r in pool.rows])
        raw.insert(0, POOLS.qid, [r.qid for r in pool.rows])
        out.csv(FILES.table1_scores, raw)
        note = protocol_note(pool)
        scheme = runner.encoder.scheme
        out.text(FILES.table1_md, table1_markdown(frame, runner.config, note, scheme))
        out.text(FILES.table1_tex, table1_latex(frame, runner.config, note, scheme))

    def section(self, folder: RunFolder, figures: dict[str, Path]) -> str:
        return section(folder)


def _scheme_note(run: RunFolder) -> str:
    """What a prompt-based model's table means: its parts, where it reads the score, impossible and DEC rows."""
    scheme = run.scheme
    if scheme.encoder:
        return ""
    info = run.model_info
    return (f'<p class="muted">Model family {esc(info.get("family", "?"))}: parts {esc(", ".join(scheme.names))}; '
               f'the score is read at {esc(scheme.aggregator_name)} ({esc(info.get("score", ""))}), so '
               f'{esc(scheme.aggregator_name)} &larr; * plays the paper\'s CLS &larr; *. No paper values: the paper '
               'studies a [CLS]-reading encoder.'
               + (' "impossible": the causal mask lets no token of X read Y (Y comes after X); such cells are not '
                  'computed.' if scheme.causal else '')
               + (' DEC: the decoder token, reading the encoder through cross-attention (DEC &larr; Y cuts it in '
                  'every decoder layer).' if scheme.decoder else '') + '</p>')


def _cell_html(run: RunFolder, scheme, target: str, source: str, row, unablated: float | None) -> str:
    """One cell of the Table 1 grid: our nDCG@10 (bold when lower), its change, the paper's value (encoders)."""
    ref = paper.cell(target, source) if scheme.encoder else None
    ref_text = (
        f'<span class="paper">paper {esc(ref.text())} ({ref.ndcg - paper.UNABLATED:+.2f})</span>'
        if ref else '<span class="paper">paper –</span>' if scheme.encoder else ""
    )
    if row is None:
        return f'<td class="cell">–{ref_text}</td>'
    value = float(row[COMPARE.ndcg])
    delta = value - unablated if unablated is not None else (as_float(row.get(COMPARE.delta)) or 0.0)
    lower = bold(delta, run.mark(row))
    text = f"{value:.3f}{esc(run.mark(row))}"
    text = f"<b>{text}</b>" if lower else text
    delta = value - unablated if unablated is not None else 0.0
    shade = min(1.0, max(0.0, -delta) / 0.35)
    style = f' style="background: rgba(214, 96, 77, {0.08 + 0.55 * shade:.2f})"' if delta < -0.005 else ""
    mde = as_float(row.get(COMPARE.mde))
    title = (f'{scheme.label(f"{target}<-{source}")}: nDCG@10 {value:.4f}, delta {delta:+.4f}, {run.p_name} '
             f'{pval(run.decision_p(row))}' + (f', MDE (80% power) {mde:.3f}' if mde is not None else ''))
    ours = f'<span class="delta">{delta:+.3f}</span>' if unablated is not None else ""
    return f'<td class="cell"{style} title="{esc(title)}">{text}{ours}{ref_text}</td>'


def section(run: RunFolder) -> str:
    """Table 1 beside the paper's MonoBERT-large numbers, then every row with its delta and p values."""
    cells = run.cells()
    if not cells:
        return f'<section id="table1"><h2>Table 1 — whole-model ablations</h2>{missing("table1.csv", "table1")}</section>'
    unablated = run.unablated
    scheme = run.scheme
    label = paper.PART_LABELS.get if scheme.encoder else (lambda part: scheme.name(part) if part != "*" else "All")
    head = "".join(f"<th>{esc(label(c))}</th>" for c in paper.TABLE1_COLUMNS)
    rows = []
    targets = [t for t in scheme.targets() if t in paper.PARTS or any(k[0] == t for k in cells)]
    for target in targets:
        tds = []
        for source in paper.TABLE1_COLUMNS:
            if not scheme.possible(target, source):
                tds.append('<td class="cell impossible" title="the causal mask lets no token of this part read that '
                           'part: nothing to cut">impossible</td>')
                continue
            tds.append(_cell_html(run, scheme, target, source, cells.get((target, source)), unablated))
        rows.append(f"<tr><th>{esc(label(target))}</th>{''.join(tds)}</tr>")
    grid = (
        f'<table class="grid"><thead><tr><th>X &larr; Y</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    footer = (
        f"<p>Unablated model: <b>{num(unablated)}</b> (paper {paper.UNABLATED:.2f}); random ranking: "
        f"<b>{num(run.random_ndcg)}</b> (exact; paper {paper.RANDOM:.2f}).</p>"
    )
    from ...analysis.significance import marks_legend

    n = run.table1[COMPARE.n_queries].max() if COMPARE.n_queries in run.table1 else None
    family = f"the {len(cells)} ablations"
    legend = (
        f'<p class="muted">Rows: the attending part X; columns: the attended part Y; "All" = X &larr; * (every source). '
        f"Each cell: our tie-aware nDCG@10 with the direction masked in every head of every layer, its change from the "
        f"unablated model, and the paper's MonoBERT-large value (its change from 0.81). <b>Bold</b> = lower than the "
        f"unablated model by at least 0.001 or significantly; {esc(marks_legend(run.alpha, run.correction, family, int(n) if n == n and n else None))}"
        f" against the unablated model (the paper stars significant drops only, uncorrected: "
        f"<code>--correction none</code>). Shading grows with the drop.</p>"
    )
    legend += _scheme_note(run)
    frame = run.table1.copy()
    frame[CONTRAST.direction] = [
        scheme.label(f"{t}<-{s}") if t.lower() not in ("none", "random") else t for t, s in zip(frame[TABLE1.target], frame[TABLE1.source])
    ]
    frame["paper"] = [
        (paper.cell(t, s).text() if paper.cell(t, s) else "")
        if t.lower() not in ("none", "random") else (f"{paper.UNABLATED:.2f}" if t.lower() == "none" else f"{paper.RANDOM:.2f}")
        for t, s in zip(frame[TABLE1.target], frame[TABLE1.source])
    ]
    if not scheme.encoder:
        frame = frame.drop(columns=["paper"])
    cols = [c for c in (CONTRAST.direction, COMPARE.ndcg, "paper", COMPARE.delta, COMPARE.ci_low, COMPARE.ci_high, COMPARE.p_value, run.p_name, COMPARE.mark,
                        COMPARE.mde, COMPARE.lower, COMPARE.n_queries) if c in frame]
    cols = list(dict.fromkeys(cols))
    signed = lambda v: f"{float(v):+.4f}"  # noqa: E731
    if COMPARE.mark in frame:  # an empty mark reads as NaN
        frame[COMPARE.mark] = frame[COMPARE.mark].astype(object).fillna("")
    full = table(frame[cols], {CONTRAST.direction: arrow, COMPARE.ndcg: lambda v: num(v, 4), COMPARE.delta: signed, COMPARE.ci_low: signed,
                                COMPARE.ci_high: signed, COMPARE.p_value: pval, run.p_name: pval,
                                COMPARE.mde: lambda v: num(v, 3)})
    return f"""
<section id="table1"><h2>Table 1 — whole-model ablations (nDCG@10)</h2>
{legend}{grid}{footer}
<details><summary>Every ablation with its delta and p values</summary>{full}</details>
</section>"""
