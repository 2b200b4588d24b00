"""One self-contained HTML report of a run folder: ``matchsig report RUN_DIR``.

:func:`build_report` regenerates the figures (:mod:`matchsig.figures`) and the findings
(:mod:`matchsig.findings`) from the run's files and writes ``RUN_DIR/report.html``: the run's
configuration, model, data, per-grade cap, seed and sample fingerprints; Table 1 beside the paper's
MonoBERT-large numbers; every figure (embedded as base64 PNG data URIs); the top matching heads;
the causal heads results; the findings checklist with evidence. The page has no external resource
(inline CSS, no scripts, no remote links) so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import paper
from .figures import FIGURES, make_figures
from .findings import DECISION_TEXT, VERDICTS, Finding, Run, direction_label, judge, top_matching_heads

__all__ = ["build_report", "render_report"]

ALL = "*"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(x):
        return "–"
    return f"{x:.{digits}f}"


def _p(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _arrow(text: str) -> str:
    return _e(text).replace("&lt;-", "&larr;")


def _missing(what: str, experiment: str) -> str:
    return f'<p class="missing">Not run: {_e(what)} is missing from this run folder (experiment <code>{_e(experiment)}</code> was not run, or not finished).</p>'


def _table(frame: pd.DataFrame, formats: dict[str, Any] | None = None, classes: str = "data") -> str:
    formats = formats or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            fmt = formats.get(c)
            value = row[c]
            text = fmt(value) if fmt else _e(value)
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _json_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<code>{_e(json.dumps(value))}</code>"
    if value is None:
        return "<code>null</code>"
    return _e(value)


# ---- sections -----------------------------------------------------------------------------------


def _verdict_badge(verdict: str | bool | None) -> str:
    if not isinstance(verdict, str):  # a holds value: True / False / None
        verdict = {True: "holds", False: "does not hold", None: "not measured"}[verdict]
    cls = {"holds": "ok", "does not hold": "bad", "inconclusive": "maybe", "not measured": "na"}.get(verdict, "na")
    return f'<span class="badge {cls}">{_e(verdict)}</span>'


def _ties_note(run: Run) -> str:
    ev = run.summary.get("evaluation") or {}
    rule = ev.get("ties") or (
        "tie-aware (McSherry & Najork, ECIR 2008): expected value over all orders of tied passages")
    return (f'<p class="muted"><b>Ties.</b> Every nDCG@10 here is {_e(rule)} An ablation that makes every score of a '
            "query equal (e.g. CLS &larr; *) therefore scores exactly the random baseline, whatever the docids.</p>")


def _easy_note(run: Run) -> str:
    contrast = (run.summary.get("pools") or {}).get("contrast") or {}
    sources = contrast.get("easy_negatives_from") or {}
    if not sources:
        return ""
    items = "".join(f"<li><code>{_e(k)}</code>: {_e(v.get('description', v.get('source', '?')))}</li>" for k, v in sources.items())
    warning = contrast.get("easy_negatives_warning")
    cls = "note" if warning else "muted"
    text = f"<b>Warning.</b> {_e(warning)}." if warning else ""
    return f'<div class="{cls}"><b>Easy negatives (grade &minus;1) were drawn from:</b><ul>{items}</ul>{text}</div>'


def _protocol_note(main: dict) -> str:
    """The re-ranking protocol's note (matchsig.runs): the run, its cut and the unjudged passages."""
    top = "all" if main.get("top_k") is None else f"the top <b>{_e(main.get('top_k'))}</b>"
    left = main.get("unevaluated_queries") or 0
    return (
        f'<div class="note"><b>Re-ranking protocol.</b> The ablation pool is {top} candidates per query of the run '
        f"<code>{_e(main.get('run', '?'))}</code> (not a sample): {_e(main.get('pairs', '?'))} pairs, "
        f"<b>{_e(main.get('judged', '?'))}</b> judged and <b>{_e(main.get('unjudged', '?'))}</b> unjudged "
        "(grade −1, counted as non-relevant, as trec_eval does). nDCG@10's ideal ranking comes from all judgments of "
        "the query, so a relevant passage the run missed counts against every configuration."
        + (f" {_e(left)} queries of the run have no judgments and are left out." if left else "")
        + " The paper samples pools instead; compare drops (deltas) across protocols, not levels.</div>"
    )


def _cap_note(run: Run) -> str:
    pools = run.summary.get("pools") or {}
    main = pools.get("main") or {}
    contrast = pools.get("contrast") or {}
    if main.get("protocol") == "rerank":
        return _protocol_note(main)
    known = "per_grade" in main or "per_grade" in run.config
    cap = main.get("per_grade", run.config.get("per_grade"))
    if not known:
        cap_text = "an unrecorded cap (neither config.json nor summary.json gives <code>per_grade</code>)"
    elif cap is None:
        cap_text = "<b>no cap</b> (every judged passage of each grade)"
    else:
        cap_text = f"up to <b>{_e(cap)}</b> passage{'' if cap == 1 else 's'} per relevance grade and query"
    extra = ""
    ccap = contrast.get("per_grade", run.config.get("contrast_per_grade"))
    if contrast or run.config.get("contrast_per_grade") is not None:
        extra = f" The contrastive analysis used its own pool: up to <b>{_e(ccap)}</b> passages per level (3, 0, −1)"
        easy = contrast.get("easy_negatives", run.config.get("contrast_easy"))
        extra += f", {_e(easy)} easy negatives per query." if easy is not None else "."
    rnd = run.random_ndcg
    ours = f" On this run's pool a random ranking scores <b>{rnd:.3f}</b>." if rnd is not None else ""
    return (
        '<div class="note"><b>Per-grade cap.</b> This run sampled the ablation pool with ' + cap_text + "." + extra + ours
        + f" The paper states a cap of {paper.STATED_PER_GRADE} per grade, but its random-ranking baseline "
        f"({paper.RANDOM:.2f}) matches a cap of 10 on the real DL19 qrels: a random ranking scores nDCG@10 "
        f"{paper.RANDOM_AT_CAP[20]:.2f} at cap 20 and {paper.RANDOM_AT_CAP[10]:.2f} at cap 10. Absolute nDCG@10 values "
        "therefore depend on the cap; compare drops (deltas), not levels, with the paper's.</div>"
    )


def _section_run(run: Run) -> str:
    info = run.model_info
    config = run.config
    model_rows = [
        ("model", _e(info.get("name") or config.get("model", "–"))),
        ("layers", _e(info.get("num_layers", "–"))),
        ("heads per layer", _e(info.get("num_heads", "–"))),
        ("labels", _e(info.get("num_labels", "–"))),
        ("parameters", f"{int(info['parameters']):,}" if isinstance(info.get("parameters"), (int, float)) else _e(info.get("parameters", "–"))),
        ("paper's model", f"{_e(paper.MODEL)} ({paper.NUM_LAYERS} layers, {paper.NUM_HEADS} heads)"),
    ]
    data_rows = [
        ("datasets", _e(", ".join(map(str, config.get("datasets") or [])) or "–")),
        ("seed", _e(config.get("seed", "–"))),
        ("unablated nDCG@10", _num(run.unablated) + f' <span class="muted">(paper {paper.UNABLATED:.2f})</span>'),
    ]
    rnd = run.summary.get("random_ndcg@10")
    if isinstance(rnd, dict):
        exact = "exact; " if rnd.get("exact") else ""
        data_rows.append(("random ranking nDCG@10",
                          f"{_num(rnd.get('mean'))} ({exact}sd {_num(rnd.get('sd'))} over {_e(rnd.get('rankings', '?'))} "
                          f'sampled rankings) <span class="muted">(paper {paper.RANDOM:.2f})</span>'))
    sig = run.summary.get("significance") or {}
    data_rows.append(("significance", f"paired t-test, alpha {run.alpha:g}, {_e(run.corrected)} "
                                      f"(<code>correction = {_e(run.correction)}</code>)"
                      + (f"; {_e(sig.get('marks'))}" if sig.get("marks") else "")))
    analysis = run.config.get("analysis_datasets")
    if analysis:
        data_rows.insert(1, ("analysis datasets", _e(", ".join(map(str, analysis)))))
    pools = run.summary.get("pools") or {}
    pool_rows = []
    for name, pool in pools.items():
        if not isinstance(pool, dict):
            continue
        counts = pool.get("grade_counts") or {}
        try:
            ordered = sorted(counts.items(), key=lambda kv: int(kv[0]))
        except ValueError:
            ordered = list(counts.items())
        pool_rows.append({
            "pool": name,
            "datasets": ", ".join(map(str, pool.get("datasets") or [])) or "–",
            "queries": pool.get("queries", "–"),
            "pairs": pool.get("pairs", "–"),
            "cap per grade": "none" if pool.get("per_grade", "–") is None else pool.get("per_grade", "–"),
            "easy negatives": pool.get("easy_negatives", "–"),
            "passages per grade": ", ".join(f"{g}: {n}" for g, n in ordered) or "–",
            "fingerprint": pool.get("fingerprint", "–"),
        })
    pools_html = (
        _table(pd.DataFrame(pool_rows), {"fingerprint": lambda v: f"<code>{_e(v)}</code>"})
        if pool_rows else '<p class="missing">summary.json is missing: no pool information.</p>'
    )
    config_html = (
        _kv([(k, _json_value(v)) for k, v in config.items()]) if config
        else '<p class="missing">config.json is missing.</p>'
    )
    return f"""
<section id="run"><h2>Run</h2>
<div class="cols"><div><h3>Model</h3>{_kv(model_rows)}</div><div><h3>Data</h3>{_kv(data_rows)}</div></div>
{_cap_note(run)}
{_ties_note(run)}
<h3>Sampled pools</h3>{pools_html}
{_easy_note(run)}
<p class="muted">Grade −1 = easy negatives (random passages not judged for the query). The fingerprint identifies
the exact sample (query, passage, grade triples): two runs with the same fingerprint scored the same pairs.</p>
<h3>Configuration</h3>
<p class="muted">Everything in <code>config.json</code>; it re-runs this experiment.</p>
{config_html}
</section>"""


def _section_table1(run: Run) -> str:
    cells = run.cells()
    if not cells:
        return f'<section id="table1"><h2>Table 1 — whole-model ablations</h2>{_missing("table1.csv", "table1")}</section>'
    unablated = run.unablated
    head = "".join(f"<th>{_e(paper.PART_LABELS[c])}</th>" for c in paper.TABLE1_COLUMNS)
    rows = []
    for target in paper.PARTS:
        tds = []
        for source in paper.TABLE1_COLUMNS:
            row = cells.get((target, source))
            ref = paper.cell(target, source)
            ref_text = (
                f'<span class="paper">paper {_e(ref.text())} ({ref.ndcg - paper.UNABLATED:+.2f})</span>'
                if ref else '<span class="paper">paper –</span>'
            )
            if row is None:
                tds.append(f'<td class="cell">–{ref_text}</td>')
                continue
            value = float(row["ndcg@10"])
            lower = value < unablated if unablated is not None else bool(row.get("lower", False))
            text = f"{value:.3f}{_e(run.mark(row))}"
            text = f"<b>{text}</b>" if lower else text
            delta = value - unablated if unablated is not None else 0.0
            shade = min(1.0, max(0.0, -delta) / 0.35)
            style = f' style="background: rgba(214, 96, 77, {0.08 + 0.55 * shade:.2f})"' if delta < -0.005 else ""
            title = f'{target}<-{source}: nDCG@10 {value:.4f}, delta {delta:+.4f}, {run.p_name} {_p(run.decision_p(row))}'
            ours = f'<span class="delta">{delta:+.3f}</span>' if unablated is not None else ""
            tds.append(f'<td class="cell"{style} title="{_e(title)}">{text}{ours}{ref_text}</td>')
        rows.append(f"<tr><th>{_e(paper.PART_LABELS[target])}</th>{''.join(tds)}</tr>")
    grid = (
        f'<table class="grid"><thead><tr><th>X &larr; Y</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    footer = (
        f"<p>Unablated model: <b>{_num(unablated)}</b> (paper {paper.UNABLATED:.2f}); random ranking: "
        f"<b>{_num(run.random_ndcg)}</b> (exact; paper {paper.RANDOM:.2f}).</p>"
    )
    from .statistics import marks_legend

    n = run.table1["n_queries"].max() if "n_queries" in run.table1 else None
    legend = (
        f'<p class="muted">Rows: the attending part X; columns: the attended part Y; "All" = X &larr; * (every source). '
        f"Each cell: our tie-aware nDCG@10 with the direction masked in every head of every layer, its change from the "
        f"unablated model, and the paper's MonoBERT-large value (its change from 0.81). <b>Bold</b> = lower than the "
        f"unablated model; {_e(marks_legend(run.alpha, run.correction, 'the 30 ablations', int(n) if n == n and n else None))}"
        f" against the unablated model (the paper stars significant drops only, uncorrected: "
        f"<code>--correction none</code>). Shading grows with the drop.</p>"
    )
    frame = run.table1.copy()
    frame["direction"] = [
        f"{t}<-{s}" if t.lower() not in ("none", "random") else t for t, s in zip(frame["target"], frame["source"])
    ]
    frame["paper"] = [
        (paper.cell(t, s).text() if paper.cell(t, s) else "")
        if t.lower() not in ("none", "random") else (f"{paper.UNABLATED:.2f}" if t.lower() == "none" else f"{paper.RANDOM:.2f}")
        for t, s in zip(frame["target"], frame["source"])
    ]
    cols = [c for c in ("direction", "ndcg@10", "paper", "delta", "ci_low", "ci_high", "p_value", run.p_name, "mark",
                        "lower", "n_queries") if c in frame]
    cols = list(dict.fromkeys(cols))
    signed = lambda v: f"{float(v):+.4f}"  # noqa: E731
    full = _table(frame[cols], {"direction": _arrow, "ndcg@10": lambda v: _num(v, 4), "delta": signed, "ci_low": signed,
                                "ci_high": signed, "p_value": _p, run.p_name: _p})
    return f"""
<section id="table1"><h2>Table 1 — whole-model ablations (nDCG@10)</h2>
{legend}{grid}{footer}
<details><summary>Every ablation with its delta and p values</summary>{full}</details>
</section>"""


class _Figures(dict):
    """{file name: path} of the drawn figures, with ``errors`` {file name: why it could not be drawn}."""

    errors: dict[str, str] = {}


def _figure(figures: dict[str, Path], name: str) -> str:
    path = figures.get(name)
    errors = getattr(figures, "errors", {})
    if name in errors:
        return f'<p class="missing">{_e(name)} could not be drawn: {_e(errors[name])}</p>'
    if path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(FIGURES[name])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(FIGURES[name])}</figcaption></figure>"
    )


def _section_layers(run: Run, figures: dict[str, Path]) -> str:
    frame = run.layers
    if frame is None:
        return f'<section id="layers"><h2>Figure 1 — up-to-layer ablations</h2>{_missing("layers.csv", "layers")}</section>'
    from .statistics import marks_legend

    try:
        cells = frame.assign(cell=[f"{float(r['ndcg@10']):.3f}{run.mark(r)}" for _, r in frame.iterrows()])
        wide = cells.pivot_table(index="direction", columns="layer", values="cell", aggfunc="first", sort=False)
        wide.index = [direction_label(d) for d in wide.index]
        wide = wide.reset_index().rename(columns={"index": "direction"})
        wide.columns = [str(c) for c in wide.columns]
        n = frame["n_queries"].max() if "n_queries" in frame else None
        legend = marks_legend(run.alpha, run.correction, "every (direction, layer) of the figure",
                              int(n) if n == n and n else None)
        details = (f'<details open><summary>nDCG@10 per direction and last ablated layer</summary>'
                   f'<p class="muted">{_e(legend)} against the unablated model ({_num(run.unablated)}).</p>'
                   f'<div class="scroll">{_table(wide, {"direction": _arrow})}</div></details>')
    except (KeyError, ValueError, TypeError) as exc:
        details = f'<p class="missing">layers.csv could not be read: {_e(type(exc).__name__)}: {_e(exc)}</p>'
    return f"""
<section id="layers"><h2>Figure 1 — up-to-layer ablations</h2>
<p class="muted">A direction is masked in every head of layers 0..l (0-indexed); the curve shows nDCG@10 against l.
The paper (24 layers): CLS &larr; {{Q,D}} and CLS &larr; * do not hurt before the last 2 layers; blocking D &larr; D
does not hurt before layers 11/12.</p>
{_figure(figures, "layers.png")}
{details}
</section>"""


def _section_contrast(run: Run, figures: dict[str, Path]) -> str:
    heads = run.contrast_heads
    if heads is None and run.contrast_per_query is None:
        return f'<section id="contrast"><h2>Figures 2–4 — contrastive attention analysis</h2>{_missing("contrast/heads.csv", "contrast")}</section>'
    test = (
        f"Tests: for each head and direction, three two-sided paired t-tests over queries of the per-query M: relevant vs "
        f"easy (3 vs &minus;1), hard vs easy (0 vs &minus;1) and relevant vs hard (3 vs 0), each family {_e(run.corrected)} "
        f"over all heads &times; both directions (<code>correction = {_e(run.correction)}</code>), threshold {run.alpha:g}. "
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
{_figure(figures, "fig2_relevant_vs_easy.png")}
{_figure(figures, "fig3_hard_vs_easy.png")}
{_figure(figures, "fig4_entropy_exact.png")}
{_figure(figures, "fig4_heads.png")}
<h3 id="top-heads">Top matching heads</h3>
<p class="muted">{test}</p>"""]
    top = top_matching_heads(run, n=20)
    if heads is None:
        parts.append(_missing("contrast/heads.csv", "contrast"))
    elif top.empty:
        parts.append('<p class="missing">No head passes the test: no matching head on this run.</p>')
    else:
        top = top.copy()
        top.insert(0, "layer/head", [f"{int(l)}/{int(h)}" for l, h in zip(top["layer"], top["head"])])
        top = top.drop(columns=["layer", "head"])
        signed = lambda v: f"{float(v):+.4f}"  # noqa: E731
        formats = {"direction": _arrow, "delta_relevant": signed, "delta_hard": signed, "delta_relevant_hard": signed,
                   "sign": lambda v: "+" if int(v) > 0 else "&minus;",
                   "kind": lambda v: f'<span class="kind {_e(v)}">{_e(v)}</span>'}
        formats.update({c: _p for c in top.columns if c.startswith("p_")})
        parts.append(_table(top, formats))
    if heads is not None and "kind" in heads:
        counts = (
            heads.assign(direction=heads["direction"].astype(str))
            .groupby(["direction", "kind"]).size().unstack(fill_value=0).reset_index()
        )
        counts.columns = [str(c) for c in counts.columns]
        parts.append("<p>Heads per kind and direction (all heads of the model):</p>" + _table(counts, {"direction": _arrow}))
        parts.append(_kinds_per_layer(run, heads))
    parts.append("</section>")
    return "".join(parts)


def _kinds_per_layer(run: Run, heads: pd.DataFrame) -> str:
    """Per layer and direction: how many heads are syntactic / semantic matching heads (paper: Figure 3)."""
    frame = heads.assign(direction=heads["direction"].astype(str).str.replace(" ", ""))
    layers = sorted(int(l) for l in frame["layer"].unique())
    rows = []
    for direction in ("Q<-D", "D<-Q"):
        sub = frame[frame["direction"] == direction]
        for kind in ("syntactic", "semantic", "unclassified"):
            counts = sub[sub["kind"] == kind].groupby("layer").size()
            rows.append({"direction": direction, "kind": kind, **{str(l): int(counts.get(l, 0)) for l in layers}})
    table = pd.DataFrame(rows)
    return (
        "<details><summary>Matching heads per layer, by kind (the paper: syntactic heads in early and middle layers, "
        "semantic heads in the last layers 20–23 of 24)</summary><div class=\"scroll\">"
        + _table(table, {"direction": _arrow, "kind": lambda v: f'<span class="kind {_e(v)}">{_e(v)}</span>'})
        + "</div></details>"
    )


def _analysis_scope(run: Run) -> str:
    contrast = (run.summary.get("pools") or {}).get("contrast") or {}
    datasets = contrast.get("datasets") or run.config.get("analysis_datasets") or run.config.get("datasets") or []
    queries = contrast.get("queries")
    text = (f'<p class="muted">Analysis pool: {_e(", ".join(map(str, datasets)) or "?")}'
            + (f", {_e(queries)} queries" if queries else "") + " (the paper: TREC DL 2019–2022, 226 queries).</p>")
    return text + _easy_note(run)


def _section_heads(run: Run, figures: dict[str, Path]) -> str:
    from .statistics import marks_legend

    frame = run.heads
    title = "Causal test of the matching heads (beyond the paper)"
    if frame is None:
        return f'<section id="heads"><h2>{title}</h2>{_missing("heads.csv", "heads")}</section>'
    frame = frame.assign(selection=frame["selection"].astype(str).str.lower())
    frame = frame.assign(p_decision=[run.decision_p(r) for _, r in frame.iterrows()],
                         top=[f"{float(r['ndcg@10']):.3f}{run.mark(r)}" for _, r in frame.iterrows()])
    aggs = dict(top=("top", "first"), top_delta=("delta", "mean"), top_p=("p_decision", "first"), heads=("heads", "first"))
    if "matching_in_selection" in frame:
        aggs["matching"] = ("matching_in_selection", "first")
    top = frame[frame["selection"] == "top"].groupby("k").agg(**aggs)
    rnd = frame[frame["selection"] == "random"].groupby("k").agg(
        random_mean=("ndcg@10", "mean"), random_sd=("ndcg@10", "std"), seeds=("seed", "nunique"))
    table = top.join(rnd, how="outer").reset_index()
    table["heads"] = table["heads"].fillna("").astype(str).str.replace(";", " ")
    table = table.rename(columns={"top_p": f"top {run.p_name}"})
    formats = {"top_delta": lambda v: f"{float(v):+.3f}", f"top {run.p_name}": _p, "random_mean": _num,
               "random_sd": _num, "heads": lambda v: f'<span class="small">{_e(v)}</span>'}
    return f"""
<section id="heads"><h2>{title}</h2>
<p class="muted">The paper's future work made causal: every direction between Q and D (Q &larr; D and D &larr; Q) is
masked in the top-k heads of the matching-head ranking (matching heads first, by |M(&middot;|3) &minus;
M(&middot;|&minus;1)|; column <i>matching</i> = how many of the k are matching heads), versus k heads drawn at random
(several seeds). If the contrast finds the heads the model needs, the top-k curve drops faster.
{_e(marks_legend(run.alpha, run.correction, "every head selection of the run"))} against the unablated model
({_num(run.unablated)}).</p>
{_figure(figures, "heads.png")}
<div class="scroll">{_table(table, formats)}</div>
</section>"""


def _section_findings(run: Run, findings: list[Finding]) -> str:
    rows = []
    for f in findings:
        rows.append(
            f"<tr><td>{_verdict_badge(f.verdict)}</td><td>{'–' if f.queries is None else _e(f.queries)}</td>"
            f"<td><b>{_arrow(f.name)}</b>"
            f'<div class="small muted">Rule: {_arrow(f.rule)}</div>'
            + (f'<div class="small paperline">Paper: {_arrow(f.paper)}</div>' if f.paper else "")
            + f"</td><td>{_arrow(f.evidence)}</td></tr>"
        )
    return f"""
<section id="findings"><h2>Findings checklist (the paper's claims)</h2>
<p class="muted">Each claim of the paper judged on this run, with a criterion scaled to the model's depth
(L = {_e(run.num_layers or '?')} layers; the paper's model has 24). {_e(DECISION_TEXT)} "Not measured": the
experiment it needs was not run. <i>Queries</i>: how many queries the verdict rests on. The same verdicts are in
<code>findings.json</code>.</p>
<table class="findings"><thead><tr><th>verdict</th><th>queries</th><th>finding</th><th>evidence</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</section>"""


def _section_timings(run: Run) -> str:
    timings = run.summary.get("timings") or {}
    versions = run.summary.get("versions") or {}
    if not timings and not versions:
        return ""
    t = _kv([(k, f"{float(v):.1f} s" if isinstance(v, (int, float)) else _e(v)) for k, v in timings.items()]) if timings else ""
    v = _kv([(k, _e(val)) for k, val in versions.items()]) if versions else ""
    return f"""
<section id="timings"><h2>Timings and versions</h2>
<div class="cols"><div><h3>Timings</h3>{t}</div><div><h3>Versions</h3>{v}</div></div></section>"""


CSS = """
:root { --ink:#1f2328; --muted:#5a6270; --line:#d8dde3; --bg:#f6f8fa; --accent:#2f5d8a; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
header { background: linear-gradient(135deg, #24496e, #2f5d8a); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 2px 0; opacity: .9; }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 40px; z-index: 2; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 10px 40px 60px; }
section { margin-top: 34px; }
h2 { font-size: 21px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg);
       padding: 1px 4px; border-radius: 4px; word-break: break-all; }
.muted { color: var(--muted); } .small { font-size: 12.5px; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 28px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--bg); font-weight: 600; }
table.kv th { width: 190px; color: var(--muted); font-weight: 500; }
table.data td { font-variant-numeric: tabular-nums; }
table.grid th, table.grid td { text-align: center; vertical-align: middle; border: 1px solid var(--line); min-width: 92px; }
table.grid td.cell { font-size: 15px; font-variant-numeric: tabular-nums; padding: 6px 8px; }
table.grid .delta { display: block; font-size: 11.5px; color: #333; }
table.grid .paper { display: block; font-size: 11.5px; color: var(--muted); font-weight: normal; }
.note { background: #fff8e6; border-left: 4px solid #e0a800; padding: 10px 14px; margin: 14px 0; border-radius: 4px; }
.missing { background: var(--bg); border-left: 4px solid #9aa4ae; padding: 8px 12px; color: var(--muted); }
figure { margin: 18px 0; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
details { margin: 8px 0 14px; } summary { cursor: pointer; color: var(--accent); }
.scroll { overflow-x: auto; }
.badge { display: inline-block; padding: 2px 9px; border-radius: 12px; font-size: 12.5px; font-weight: 600; white-space: nowrap; }
.badge.ok { background: #dcf3e2; color: #1a6b34; } .badge.bad { background: #fbe0dd; color: #a3261b; }
.badge.na { background: #eceff2; color: #5a6270; } .badge.maybe { background: #fff1cc; color: #7a5600; }
.summary .badge { margin-right: 8px; font-size: 14px; }
table.findings { width: 100%; } table.findings td:first-child { width: 120px; }
table.findings td:last-child { width: 42%; font-size: 13px; }
.paperline { color: #6b4f00; }
.kind { padding: 1px 7px; border-radius: 10px; font-size: 12px; }
.kind.syntactic { background: #e3ecfa; color: #234d8a; } .kind.semantic { background: #f3e4f7; color: #6d2a86; }
.kind.unclassified { background: #eef0e6; color: #4d5a1e; }
@media (max-width: 800px) { .cols { grid-template-columns: 1fr; } main, header, nav { padding-left: 16px; padding-right: 16px; } }
"""


def _safe(section, *args) -> str:
    """A section's HTML, or a note saying why it could not be rendered (a malformed file must not cost the page)."""
    try:
        return section(*args)
    except Exception as exc:  # noqa: BLE001
        name = section.__name__.replace("_section_", "")
        return (f'<section id="{_e(name)}"><h2>{_e(name)}</h2><p class="missing">This section could not be rendered '
                f"from the run's files: {_e(type(exc).__name__)}: {_e(exc)}</p></section>")


def render_report(run: Run, figures: dict[str, Path], findings: list[Finding], errors: dict[str, str] | None = None) -> str:
    """The report's HTML text (``errors``: figures that could not be drawn, {file name: reason})."""
    figures = _Figures(figures)
    figures.errors = dict(errors or {})
    counts = {v: sum(1 for f in findings if f.verdict == v) for v in VERDICTS}
    model = run.model_info.get("name") or run.config.get("model") or "unknown model"
    created = run.summary.get("created", "")
    summary = (
        '<p class="summary">' + " &nbsp; ".join(f"{_verdict_badge(v)}{counts[v]}" for v in VERDICTS)
        + f' of {len(findings)} findings (<a href="#findings">checklist</a>)</p>'
    )
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (("run", "Run"), ("table1", "Table 1"), ("layers", "Figure 1"), ("contrast", "Figures 2–4"),
                     ("heads", "Heads"), ("findings", "Findings"))
    )
    body = "".join([
        _safe(_section_run, run),
        _safe(_section_table1, run),
        _safe(_section_layers, run, figures),
        _safe(_section_contrast, run, figures),
        _safe(_section_heads, run, figures),
        _safe(_section_findings, run, findings),
        _safe(_section_timings, run),
    ])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>matchsig report — {_e(model)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>Matching signals in {_e(model)}</h1>
<p>Reproduction of "On the Nature of Matching Signals in Neural IR Models" (the paper analyses {_e(paper.MODEL)}).</p>
<p>Run folder <code style="background:rgba(255,255,255,.15);color:#fff">{_e(run.path.name)}</code>
{f"&middot; created {_e(created)}" if created else ""}</p></header>
<nav>{nav}</nav>
<main>
{summary}
{body}
</main></body></html>
"""


def build_report(run_dir: str | Path) -> Path:
    """Regenerate figures and findings from RUN_DIR's files and write ``RUN_DIR/report.html``; returns its path."""
    run = Run(run_dir)
    if not run.path.is_dir():
        from .errors import MatchsigError

        raise MatchsigError(f"run folder {run.path} does not exist")
    errors: dict[str, str] = {}
    figures = make_figures(run, errors)
    findings = judge(run)
    path = run.path / "report.html"
    path.write_text(render_report(run, figures, findings, errors), encoding="utf-8")
    return path
