"""``compare.html``: one self-contained page over several run folders (inline CSS and PNGs, no script, no link
out). Every text that comes from a run folder or the command line (model names, ``--names``, paths, claims) is
escaped; see :mod:`matchsig.analysis.crossrun` for what the numbers are."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.crossrun import DIRECTIONS, HEAD_KINDS, Comparison
from ..experiments.html import arrow, esc, figure, num, pval, table
from .build import CSS, _verdict_badge

__all__ = ["render_compare"]

EXTRA_CSS = """
table.cards th { white-space: nowrap; } table.cards td { min-width: 140px; }
table.grid td.diff { background: #fbe0dd; } table.grid td.same { background: #f2f8f3; }
table.grid td.cell .removed { font-size: 15px; font-weight: 600; }
.runname { font-weight: 600; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return num(value, digits) if isinstance(value, float) else esc(value)


_CARD_ROWS = [("model", "model"), ("family", "family"), ("architecture", "architecture"), ("layers", "layers"),
              ("heads per layer", "heads"), ("parameters", "parameters"), ("score convention", "score"),
              ("self-check", "self_check"), ("datasets", "datasets"), ("protocol", "protocol"),
              ("queries", "queries"), ("pairs", "pairs"), ("cap per grade", "per_grade"),
              ("main pool fingerprint", "fingerprint"), ("contrast pool fingerprint", "contrast_fingerprint"),
              ("unablated nDCG@10", "unablated"), ("random nDCG@10", "random"), ("alpha / correction", None),
              ("experiments", "experiments"), ("folder", "path"), ("created", "created")]


def _card_value(card: pd.Series, key: str | None) -> str:
    if key is None:
        return f"{_fmt(card['alpha'])} / {esc(card['correction'])}"
    value = card.get(key)
    if key in ("fingerprint", "contrast_fingerprint", "path") and isinstance(value, str):
        return f"<code>{esc(value)}</code>"
    if key == "parameters" and isinstance(value, (int, float)) and not math.isnan(value):
        return f"{int(value):,}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="muted">not recorded</span>'
    return _fmt(value)


def _pool_warning(c: Comparison) -> str:
    groups: dict[str, list[str]] = {}
    for _, card in c.cards.iterrows():
        groups.setdefault(str(card["fingerprint"] or "not recorded"), []).append(card["name"])
    parts = [f"<code>{esc(fp)}</code>: {', '.join(f'<b>{esc(n)}</b>' for n in names)}" for fp, names in groups.items()]
    if len(groups) == 1 and "not recorded" not in groups:
        return ('<p class="muted">All runs scored the same main pool (one fingerprint): Table 1 cells are compared '
                "by paired t-tests across runs.</p>")
    if len(groups) == 1:
        return ('<div class="note"><b>No run records a pool fingerprint</b> (summary.json), so it cannot be shown '
                "that they scored the same pairs: no paired test compares them; read their gap fractions side by "
                "side as an unpaired comparison only.</div>")
    return ('<div class="note"><b>The runs scored different pools.</b> Main pool fingerprints: '
            + "; ".join(parts) + ". Runs with different fingerprints scored different query-passage pairs, so no "
            "paired test compares them (their per-query changes do not pair): read their gap fractions side by side "
            "as an unpaired comparison only.</div>")


def _section_runs(c: Comparison) -> str:
    head = "".join(f'<th class="runname">{esc(n)}</th>' for n in c.names)
    rows = "".join(f"<tr><th>{esc(label)}</th>" + "".join(f"<td>{_card_value(card, key)}</td>"
                                                          for _, card in c.cards.iterrows()) + "</tr>"
                   for label, key in _CARD_ROWS)
    notes = "".join(f'<div class="note">{esc(n)}</div>' for n in c.notes)
    return (f'<section id="runs"><h2>Runs</h2><div class="scroll"><table class="cards"><thead><tr><th></th>{head}'
            f"</tr></thead><tbody>{rows}</tbody></table></div>{_pool_warning(c)}{notes}</section>")


def _cell(row: pd.Series | None, state: str) -> str:
    if row is None:
        return '<td class="cell">–</td>'
    return (f'<td class="cell {state}"><span class="removed">{_fmt(row["removed"], 2)}</span>{esc(row["mark"])}'
            f'<span class="delta">nDCG {_fmt(row["ndcg@10"])} ({_fmt(row["delta"], 3)})</span></td>')


def _differs(c: Comparison) -> dict[str, bool]:
    """Per ablation: True when some tested pair of runs differs significantly on it, False when tested and none."""
    out: dict[str, bool] = {}
    for label, part in c.paired.groupby("ablation", sort=False):
        out[label] = bool(part["significant"].any())
    return out


def _section_table1(c: Comparison) -> str:
    if c.table1.empty:
        return '<section id="table1"><h2>Table 1</h2><p class="missing">No run has Table 1.</p></section>'
    labels = list(dict.fromkeys(c.table1["ablation"]))
    by = {(r["run"], r["ablation"]): r for _, r in c.table1.iterrows()}
    differs = _differs(c)
    head = "".join(f"<th>{esc(n)}</th>" for n in c.names)
    rows = []
    for label in labels:
        state = {True: "diff", False: "same"}.get(differs.get(label), "")
        rows.append(f"<tr><th>{arrow(label)}</th>" + "".join(_cell(by.get((n, label)), state) for n in c.names)
                    + "</tr>")
    legend = ("Each cell: the fraction of the original &minus; random nDCG@10 gap the ablation removes (0 = no loss, "
              "1 = as bad as a random ranking), the run's own mark (* significant drop, &uarr; significant rise vs its "
              "unablated model, the run's alpha and correction), and nDCG@10 with its change. Red rows: some pair of "
              f"runs on the same pool differs significantly on that cell ({esc(c.corrected)} paired t-test over the "
              f"pair's cells, alpha {c.alpha:g}); green rows: tested and no pair differs.")
    return (f'<section id="table1"><h2>Table 1 side by side</h2><p class="muted">{legend}</p><div class="scroll">'
            f'<table class="grid"><thead><tr><th>ablation</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table></div>{_paired_html(c)}</section>")


def _agreement_html(c: Comparison) -> str:
    if c.agreement.empty:
        return ""
    formats = {"pearson_r": lambda v: num(v, 2), "spearman_rho": lambda v: num(v, 2), "mad": lambda v: num(v, 2)}
    return ("<h3>Do the patterns agree?</h3><p class=\"muted\">Per pair of runs, over the cells both define: Pearson r "
            "and Spearman &rho; of their gap fractions (does the same ablation hurt most in both models?) and the "
            "mean absolute difference of the fractions. Descriptive, no test: it needs no shared pool. "
            f"<code>agreement.csv</code>.</p>{table(c.agreement, formats)}")


def _paired_html(c: Comparison) -> str:
    parts = [_agreement_html(c), "<h3>Paired tests across runs</h3>"]
    for s in c.skipped:
        parts.append(f'<p class="note">No paired test of <b>{esc(s["run_a"])}</b> vs <b>{esc(s["run_b"])}</b>: '
                     f"{esc(s['reason'])}.</p>")
    if c.paired.empty:
        parts.append('<p class="muted">No pair of runs shares a pool: no paired test was computed.</p>')
        return "".join(parts)
    parts.append(f'<p class="muted">Per pair of runs on the same pool and per cell: the mean per-query change '
                 f"(ablated &minus; unablated nDCG@10) of each run, their difference (A &minus; B), and a two-sided "
                 f"paired t-test over the queries, {esc(c.corrected)} over the pair's cells. Zero variance of the "
                 f"differences is decided explicitly: identical changes give p = 1, a constant non-zero "
                 f"difference p = 0. <code>paired.csv</code>.</p>")
    formats = {"delta_a": num, "delta_b": num, "mean_diff": num, "t": lambda v: num(v, 2), "p_value": pval,
               "p_corrected": pval, "ablation": arrow}
    for (a, b), part in c.paired.groupby(["run_a", "run_b"], sort=False):
        shown = part.drop(columns=["run_a", "run_b"])
        n = int(part["significant"].sum())
        parts.append(f"<details{' open' if n else ''}><summary><b>{esc(a)}</b> vs <b>{esc(b)}</b>: {n} of "
                     f"{len(part)} cells differ significantly</summary>{table(shown, formats)}</details>")
    return "".join(parts)


def _section_layers(c: Comparison, figures: dict[str, Path]) -> str:
    body = figure(figures, "curves.png", "Figure 1 across runs: the gap removed when a direction is cut in the "
                  "first layers, against the fraction of layers cut (one colour per run).")
    if not body:
        body = '<p class="missing">No run has Figure 1 (layers.csv).</p>'
    return (f'<section id="layers"><h2>Figure 1 on a depth-normalised axis</h2><p class="muted">Cutting layers 0..l '
            "of an L-layer model is drawn at (l + 1) / L, the fraction of its layers cut, so models of different "
            "depths share the axis; y is the fraction of the original &minus; random gap removed. "
            "<code>curves.csv</code> holds each run's points, <code>curves_aligned.csv</code> every run "
            f"interpolated at the union of the runs' depths.</p>{body}</section>")


def _bins_table(c: Comparison) -> str:
    if c.bins.empty:
        return ""
    bins = sorted(set(c.bins["bin"]))
    head = "".join(f"<th>{c.bins[c.bins['bin'] == b]['depth_low'].iloc[0]:.2f}&ndash;"
                   f"{c.bins[c.bins['bin'] == b]['depth_high'].iloc[0]:.2f}</th>" for b in bins)
    rows = []
    for (name, direction), part in c.bins.groupby(["run", "direction"], sort=False):
        part = part.set_index("bin")
        cells = "".join(f"<td>{_fmt(part.loc[b, 'd_z'], 2)} <span class=\"small muted\">({_fmt(part.loc[b, 'matching'], 2)}"
                        f" matching of {int(part.loc[b, 'heads'])})</span></td>" if b in part.index else "<td>–</td>"
                        for b in bins)
        rows.append(f"<tr><th>{esc(name)}</th><td>{arrow(direction)}</td>{cells}</tr>")
    return (f'<h3>Contrast effect sizes per depth bin</h3><p class="muted">Mean Cohen\'s d<sub>z</sub> of relevant vs '
            "easy passages (t / &radic;n per head and direction) over the heads whose layer centre lies in the bin, "
            "with the fraction of those heads that are matching heads. <code>contrast_bins.csv</code>.</p>"
            f'<table class="data"><thead><tr><th>run</th><th>direction</th>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table>")


def _section_heads(c: Comparison, figures: dict[str, Path]) -> str:
    body = figure(figures, "heads.png", "Matching heads per layer, at the layer's centre depth (one colour per run).")
    if c.heads.empty:
        return ('<section id="heads"><h2>Matching heads</h2><p class="missing">No run has the contrast experiment '
                "(contrast/heads.csv).</p></section>")
    either = c.heads[c.heads["direction"] == "either"]
    rows = []
    for name, part in either.groupby("run", sort=False):
        share = {k: float(part[k].mean()) for k in ("matching", *HEAD_KINDS)}
        rows.append({"run": name, "layers": len(part), **share})
    summary = table(pd.DataFrame(rows), {k: lambda v: num(v, 2) for k in ("matching", *HEAD_KINDS)})
    bins = figure(figures, "contrast_bins.png", "Mean Cohen's d_z (relevant vs easy) per depth bin, one bar per run.")
    return (f'<section id="heads"><h2>Matching heads by depth</h2><p class="muted">Per layer, the fraction of its '
            f"heads that are matching heads ({', '.join(map(arrow, DIRECTIONS))} or either), and of each kind, as "
            "each run classified them (its alpha and correction). Below: the share of all heads (either direction). "
            f"<code>heads_by_layer.csv</code>.</p>{body}{summary}{_bins_table(c)}{bins}</section>")


def _finding_cell(row: pd.Series | None) -> str:
    if row is None:
        return '<td><span class="muted">not judged</span></td>'
    extra = []
    if row.get("queries") is not None and not pd.isna(row.get("queries")):
        extra.append(f"{int(row['queries'])} queries")
    for key, label in (("power", "power"), ("mde", "MDE")):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            extra.append(f"{label} {_fmt(value, 2) if isinstance(value, (int, float)) else esc(value)}")
    small = f'<div class="small muted">{", ".join(extra)}</div>' if extra else ""
    return f"<td>{_verdict_badge(row['verdict'])}{small}</td>"


def _section_findings(c: Comparison, sources: dict[str, str]) -> str:
    if c.findings.empty:
        return '<section id="findings"><h2>Findings</h2><p class="missing">No findings.</p></section>'
    by = {(r["key"], r["run"]): r for _, r in c.findings.iterrows()}
    claims = list(dict.fromkeys(zip(c.findings["key"], c.findings["claim"])))
    head = "".join(f"<th>{esc(n)}</th>" for n in c.names)
    rows = "".join(f"<tr><th>{arrow(claim)}</th>" + "".join(_finding_cell(by.get((key, n))) for n in c.names)
                   + "</tr>" for key, claim in claims)
    src = "; ".join(f"<b>{esc(n)}</b>: {esc(s)}" for n, s in sources.items())
    return (f'<section id="findings"><h2>Findings across runs</h2><p class="muted">The paper\'s claims (rows) judged '
            "on each run (columns) with each run's own rules, alpha and correction, scaled to its depth; power and "
            f"minimum detectable effect are shown where the run's findings record them. Source: {src}. "
            f'<code>findings.csv</code>.</p><div class="scroll"><table class="findings"><thead><tr><th>claim</th>'
            f"{head}</tr></thead><tbody>{rows}</tbody></table></div></section>")


def _section_patching(c: Comparison) -> str:
    if c.patching.empty:
        return ""
    formats = {"depth": lambda v: num(v, 2), "effect_mean": num, "effect_sd": num, "run": esc}
    overlap = ""
    if not c.overlap.empty:
        keep = [k for k in ("run", "k", "reference", "m", "overlap", "expected", "p_hypergeom", "p_layer_exact")
                if k in c.overlap]
        overlap = ("<h3>Top patching heads vs contrast heads</h3>"
                   + table(c.overlap[keep], {"expected": num, "p_hypergeom": pval, "p_layer_exact": pval}))
    return (f'<section id="patching"><h2>Patching</h2><p class="muted">Per run that has activation patching: the '
            "sites of largest mean normalised effect per diagnostic and site kind, at their layer's centre depth. "
            f"<code>patching_top.csv</code>.</p>{table(c.patching, formats)}{overlap}</section>")


def _section_series(c: Comparison, figures: dict[str, Path]) -> str:
    if c.steps is None:
        return ""
    body = figure(figures, "series.png", "The checkpoint series against the training step.")
    formats = {k: (lambda v: num(v, 3)) for k in ("unablated", "random", "r_final", "mad_final")}
    formats.update({k: (lambda v: num(v, 2)) for k in ("matching", *HEAD_KINDS)})
    return (f'<section id="series"><h2>Checkpoint series</h2><p class="muted">The runs as steps of one training '
            "(x = step): when do the Table 1 pattern and the matching heads emerge? <i>matching</i> and the kinds: "
            "share of all heads that are matching heads in either direction; <i>r_final</i>, <i>mad_final</i>: "
            "Pearson r and mean absolute difference between the run's gap fractions and the last step's, over the "
            f"Table 1 cells. <code>series.csv</code>.</p>{body}{table(c.series, formats)}</section>")


def render_compare(c: Comparison, figures: dict[str, Path], sources: dict[str, str],
                   errors: dict[str, str] | None = None) -> str:
    """The page's HTML text (``sources``: where each run's findings came from; ``errors``: figures not drawn)."""
    from ..experiments.html import Figures

    figs = Figures(figures)
    figs.errors = dict(errors or {})
    sections = [("runs", "Runs"), ("table1", "Table 1"), ("layers", "Figure 1"), ("heads", "Matching heads"),
                ("findings", "Findings")] + ([("patching", "Patching")] if not c.patching.empty else []) \
        + ([("series", "Series")] if c.steps is not None else [])
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in sections)
    names = ", ".join(f'<span class="runname">{esc(n)}</span>' for n in c.names)
    body = "".join([_section_runs(c), _section_table1(c), _section_layers(c, figs), _section_heads(c, figs),
                    _section_findings(c, sources), _section_patching(c), _section_series(c, figs)])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>matchsig compare — {len(c.names)} runs</title>
<style>{CSS}{EXTRA_CSS}</style></head>
<body>
<header><h1>Matching signals across {len(c.names)} runs</h1><p id="runs-list">{names}</p></header>
<nav>{nav}</nav>
<main>{body}</main></body></html>
"""
