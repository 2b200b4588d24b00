"""One self-contained HTML report of a run folder: ``matchsig report RUN_DIR``.

:func:`build_report` regenerates the figures (:mod:`matchsig.report.figures`) and the findings
(:mod:`matchsig.report.checklist`) from the run's files and writes ``RUN_DIR/report.html``: the run's
configuration, model, data, per-grade cap, seed and sample fingerprints; Table 1 beside the paper's
MonoBERT-large numbers; every figure (embedded as base64 PNG data URIs); the top matching heads;
the causal heads results; the findings checklist with evidence. The page has no external resource
(inline CSS, no scripts, no remote links) so it can be mailed or opened offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis import paper
from ..analysis.findings import DECISION_TEXT, VERDICTS, Finding
from ..analysis.runfolder import RunFolder
from ..experiments import registered
from ..experiments.html import Figures, arrow, easy_note, esc, json_value, kv, num, table
from .checklist import judge
from .figures import make_figures

__all__ = ["build_report", "render_report"]

def _e(value: Any) -> str:
    return esc(value)


# ---- sections -----------------------------------------------------------------------------------


def _verdict_badge(verdict: str | bool | None) -> str:
    if not isinstance(verdict, str):  # a holds value: True / False / None
        verdict = {True: "holds", False: "does not hold", None: "not measured"}[verdict]
    cls = {"holds": "ok", "does not hold": "bad", "inconclusive": "maybe", "not measured": "na"}.get(verdict, "na")
    return f'<span class="badge {cls}">{_e(verdict)}</span>'


def _ties_note(run: RunFolder) -> str:
    ev = run.summary.get("evaluation") or {}
    rule = ev.get("ties") or (
        "tie-aware (McSherry & Najork, ECIR 2008): expected value over all orders of tied passages")
    return (f'<p class="muted"><b>Ties.</b> Every nDCG@10 here is {_e(rule)} An ablation that makes every score of a '
            "query equal (e.g. CLS &larr; *) therefore scores exactly the random baseline, whatever the docids.</p>")


def _protocol_note(main: dict) -> str:
    """The re-ranking protocol's note (matchsig.data.runs): the run, its cut and the unjudged passages."""
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


def _cap_note(run: RunFolder) -> str:
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


def _self_check(check) -> str:
    """The model's load-time self-check (plain scores vs its own forward), or a dash for older runs."""
    if not isinstance(check, dict):
        return "–"
    return _e(f"max |diff| {check['max_abs_diff']:.1e} <= {check['tolerance']:.1e} vs its own "
              f"{check['reference']} forward")


def _section_run(run: RunFolder) -> str:
    info = run.model_info
    config = run.config
    model_rows = [
        ("model", _e(info.get("name") or config.get("model", "–"))),
        ("layers", _e(info.get("num_layers", "–"))),
        ("heads per layer", _e(info.get("num_heads", "–"))),
        ("labels", _e(info.get("num_labels", "–"))),
        ("family", _e(f"{info['family']} ({info.get('architecture', '?')})") if info.get("family") else "–"),
        ("score", _e(f"{info['score']}, read from the {info.get('readout', '?')} token(s)") if info.get("score") else "–"),
        ("self-check", _self_check(info.get("self_check"))),
        ("parameters", f"{int(info['parameters']):,}" if isinstance(info.get("parameters"), (int, float)) else _e(info.get("parameters", "–"))),
        ("paper's model", f"{_e(paper.MODEL)} ({paper.NUM_LAYERS} layers, {paper.NUM_HEADS} heads)"),
    ]
    data_rows = [
        ("datasets", _e(", ".join(map(str, config.get("datasets") or [])) or "–")),
        ("seed", _e(config.get("seed", "–"))),
        ("unablated nDCG@10", num(run.unablated) + f' <span class="muted">(paper {paper.UNABLATED:.2f})</span>'),
    ]
    rnd = run.summary.get("random_ndcg@10")
    if isinstance(rnd, dict):
        exact = "exact; " if rnd.get("exact") else ""
        data_rows.append(("random ranking nDCG@10",
                          f"{num(rnd.get('mean'))} ({exact}sd {num(rnd.get('sd'))} over {_e(rnd.get('rankings', '?'))} "
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
        table(pd.DataFrame(pool_rows), {"fingerprint": lambda v: f"<code>{_e(v)}</code>"})
        if pool_rows else '<p class="missing">summary.json is missing: no pool information.</p>'
    )
    config_html = (
        kv([(k, json_value(v)) for k, v in config.items()]) if config
        else '<p class="missing">config.json is missing.</p>'
    )
    return f"""
<section id="run"><h2>Run</h2>
<div class="cols"><div><h3>Model</h3>{kv(model_rows)}</div><div><h3>Data</h3>{kv(data_rows)}</div></div>
{_cap_note(run)}
{_ties_note(run)}
<h3>Sampled pools</h3>{pools_html}
{easy_note(run)}
<p class="muted">Grade −1 = easy negatives (random passages not judged for the query). The fingerprint identifies
the exact sample (query, passage, grade triples): two runs with the same fingerprint scored the same pairs.</p>
<h3>Configuration</h3>
<p class="muted">Everything in <code>config.json</code>; it re-runs this experiment.</p>
{config_html}
</section>"""


def _section_findings(run: RunFolder, findings: list[Finding]) -> str:
    rows = []
    for f in findings:
        power = ('<div class="small"><span class="badge maybe">underpowered</span></div>' if f.underpowered else "")
        power += f'<div class="small muted">MDE {f.mde:.3g}</div>' if f.mde is not None else ""
        rows.append(
            f"<tr><td>{_verdict_badge(f.verdict)}{power}</td><td>{'–' if f.queries is None else _e(f.queries)}</td>"
            f"<td><b>{arrow(f.name)}</b>"
            f'<div class="small muted">Rule: {arrow(f.rule)}</div>'
            + (f'<div class="small paperline">Paper: {arrow(f.paper)}</div>' if f.paper else "")
            + f"</td><td>{arrow(f.evidence)}</td></tr>"
        )
    return f"""
<section id="findings"><h2>Findings checklist (the paper's claims)</h2>
<p class="muted">Each claim of the paper judged on this run, with a criterion scaled to the model's depth
(L = {_e(run.num_layers or '?')} layers; the paper's model has 24). {_e(DECISION_TEXT)} "Not measured": the
experiment it needs was not run. <i>Queries</i>: how many queries the verdict rests on. <i>MDE</i>: the minimal
detectable effect of the claim's test at 80% power (in the units of its margin; d_z for shares of heads).
The same verdicts are in <code>findings.json</code>.</p>
<table class="findings"><thead><tr><th>verdict</th><th>queries</th><th>finding</th><th>evidence</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</section>"""


def _section_timings(run: RunFolder) -> str:
    timings = run.summary.get("timings") or {}
    versions = run.summary.get("versions") or {}
    if not timings and not versions:
        return ""
    t = kv([(k, f"{float(v):.1f} s" if isinstance(v, (int, float)) else _e(v)) for k, v in timings.items()]) if timings else ""
    v = kv([(k, _e(val)) for k, val in versions.items()]) if versions else ""
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


def _safe_experiment(experiment, run: RunFolder, figures: dict[str, Path]) -> str:
    """An experiment's section, or a note saying why it could not be rendered."""
    try:
        return experiment.section(run, figures)
    except Exception as exc:  # noqa: BLE001
        return (f'<section id="{_e(experiment.name)}"><h2>{_e(experiment.name)}</h2><p class="missing">This section '
                f"could not be rendered from the run's files: {_e(type(exc).__name__)}: {_e(exc)}</p></section>")


def render_report(run: RunFolder, figures: dict[str, Path], findings: list[Finding], errors: dict[str, str] | None = None) -> str:
    """The report's HTML text (``errors``: figures that could not be drawn, {file name: reason})."""
    figures = Figures(figures)
    figures.errors = dict(errors or {})
    counts = {v: sum(1 for f in findings if f.verdict == v) for v in VERDICTS}
    model = run.model_info.get("name") or run.config.get("model") or "unknown model"
    created = run.summary.get("created", "")
    summary = (
        '<p class="summary">' + " &nbsp; ".join(f"{_verdict_badge(v)}{counts[v]}" for v in VERDICTS)
        + f' of {len(findings)} findings (<a href="#findings">checklist</a>)</p>'
    )
    shown = [e for e in registered() if e.in_report(run)]
    links = [("run", "Run"), *((e.name, e.nav) for e in shown), ("findings", "Findings")]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links)
    body = "".join([
        _safe(_section_run, run),
        *(_safe_experiment(e, run, figures) for e in shown),
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
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        from ..errors import MatchsigError

        raise MatchsigError(f"run folder {run.path} does not exist")
    errors: dict[str, str] = {}
    figures = make_figures(run, errors)
    findings = judge(run)
    path = run.path / "report.html"
    path.write_text(render_report(run, figures, findings, errors), encoding="utf-8")
    return path
