"""The circuit experiment's report section: the circuit, its faithfulness curve, and how far attribution
agrees with exact patching (said plainly where it does not)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["section", "POOR_SPEARMAN"]

#: Below this Spearman correlation with exact patching, the report calls the attribution's ranking poor.
POOR_SPEARMAN = 0.7


def _agreement_note(frame) -> str:
    from ..html import esc, num

    notes = []
    for _, row in frame.iterrows():
        if not row["spearman"] >= POOR_SPEARMAN:
            notes.append(f"{esc(row['level'])} ({esc(row['method'])}): Spearman {num(row['spearman'])}")
    if not notes:
        return (f'<p>Attribution ranks like exact patching here (every Spearman &ge; {POOR_SPEARMAN:g}); the ranking '
                "that grows the circuit is still only a proposal: the faithfulness above is measured exactly.</p>")
    return ('<p class="missing">Poor agreement with exact patching: ' + "; ".join(notes) + ". The edge ranking "
            "may put the wrong edges first (saturation or sign changes along the path); the faithfulness curve "
            "is exact whatever the ranking, but a smaller faithful circuit may exist.</p>")


def section(experiment, folder, figures: dict[str, Path]) -> str:
    from ..html import esc, figure, num, table

    path = folder.path / "circuit.json"
    if not path.is_file():
        return ""
    circuit = json.loads(path.read_text())
    curve = folder.table(experiment, "curve")
    agree = folder.table(experiment, "agreement")
    edges = folder.table(experiment, "edges")
    if circuit["target"] is None:
        verdict = f"The circuit of the top {circuit['size']} edges (--edges)"
    elif circuit["reached"]:
        verdict = f"The smallest circuit reaching faithfulness {circuit['target']:g}: {circuit['size']} edges"
    else:
        verdict = f"No measured circuit reaches faithfulness {circuit['target']:g}; shown: all {circuit['size']} edges"
    head = (f'<section id="{experiment.name}"><h2>{esc(experiment.title)}</h2><p class="muted">Edges ranked by '
            f"{esc(circuit['method'])} on attribution pairs; circuits of the top edges run exactly on held-out pairs, "
            + ("every other edge carrying its node's output on the pair's baseline (counterfactual ablation)"
               if circuit.get("ablation") == "counterfactual" else "every other edge mean-ablated per token part")
            + "; faithfulness = (D(circuit) - D(empty)) / (D(full) - "
            "D(empty)), D = mean score difference perturbed - baseline; 95% CI by resampling queries "
            "(docs/circuits.md).</p>")
    body = (f"<p>{esc(verdict)}: faithfulness {num(circuit['faithfulness'])} (CI {num(circuit['ci'][0])} to "
            f"{num(circuit['ci'][1])}), {len(circuit['nodes'])} nodes"
            + (f"; {circuit['connected_size']} of its edges lie on a path from the input to the score"
               if "connected_size" in circuit else "") + ".</p>"
            + "".join(figure({name: folder.path / name}, name, caption)
                      for name, caption in experiment.pictures.items()))
    if curve is not None:
        body += "<h3>Faithfulness by circuit size</h3>" + table(curve, {c: num for c in ("faithfulness", "ci_low",
                                                                                            "ci_high", "mean_diff")})
    if agree is not None:
        body += ("<h3>Attribution against exact patching</h3>" + table(agree, {"pearson": num, "spearman": num,
                                                                              "top_k_overlap": num})
                 + _agreement_note(agree))
    body += _ranking(experiment, folder)
    if edges is not None:
        body += "<h3>The twenty highest-ranked edges</h3>" + table(edges.head(20), {"score": num, "score_sd": num})
    return head + body + "</section>"


def _ranking(experiment, folder) -> str:
    from ..html import num, pval, table

    rows, tests = folder.table(experiment, "ranking"), folder.table(experiment, "ranking_tests")
    if rows is None:
        return ('<p class="muted">No ranking run: <code>--ranking-sets K</code> scores the ablation pool with the '
                "circuit kept and cut against K random edge sets of its size.</p>")
    fmt = {c: num for c in rows.columns if c not in ("configuration", "n_queries", "p_value")}
    fmt["p_value"] = pval
    out = ("<h3>From circuit to ranking</h3><p class=\"muted\">nDCG@10 on the ablation pool with only the circuit's "
           "edges kept (every other edge mean-ablated) and with only its edges cut, against random edge sets of the "
           "same size; paired t-tests over queries, uncorrected.</p>" + table(rows, fmt))
    if tests is not None and len(tests):
        tfmt = {c: num for c in ("mean_a", "mean_b", "diff", "ci_low", "ci_high")}
        tfmt["p_value"] = pval
        out += table(tests, tfmt)
    return out
