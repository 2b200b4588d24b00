"""The findings checklist of a run folder: every registered experiment's claims (its ``Judge``s) judged
with the verdict engine of :mod:`matchsig.analysis.findings`, written to ``findings.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..analysis.findings import (DECISION_TEXT, DROP, MARGIN, MIN_QUERIES, NOT_MEASURED, PAPER_LAYERS, STD_MARGIN,
                                 Finding, Judge, finding, first_layer, not_applicable)
from ..analysis.power import POWER
from ..analysis.runfolder import COMPARE, FILES, RunFolder
from ..experiments import registered
from ..experiments.contrast.findings import top_matching_heads


def judges() -> list[Judge]:
    """Every registered experiment's claims, in checklist order."""
    return sorted((j for e in registered() for j in e.judges), key=lambda j: j.position)


def write_findings(run: RunFolder, findings: list[Finding]) -> Path:
    top = top_matching_heads(run)
    payload = {
        "alpha": run.alpha,
        "correction": run.correction,
        "num_layers": run.num_layers,
        "decision_rule": DECISION_TEXT,
        "margins": {COMPARE.ndcg: MARGIN, "layer_drop": DROP, "standardised": STD_MARGIN,
                    "min_queries": MIN_QUERIES},
        "power": POWER,
        "layer_boundaries": {name: {"paper_layer_of_24": layer, "first_layer": first_layer(name, run.num_layers)
                                    if run.num_layers else None} for name, layer in PAPER_LAYERS.items()},
        "findings": [{**asdict(f), "verdict": f.verdict} for f in findings],
        "top_matching_heads": json.loads(top.to_json(orient="records")) if not top.empty else [],
    }
    path = run.path / FILES.findings
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def judge(run_dir: str | Path, write: bool = True) -> list[Finding]:
    """Judge the paper's findings on a run folder; writes ``RUN_DIR/findings.json`` unless ``write=False``."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    findings = []
    for claim in judges():
        if claim.applies is not None and not claim.applies(run):
            continue
        result = not_applicable(claim, run)
        try:
            if result is None:
                result = claim.judge(run)
                # judged on slots (CLS Q SEP1 D SEP2): said in the model's names (a decoder's PRE Q MID D LAST)
                result.evidence, result.rule = run.scheme.label(result.evidence), run.scheme.label(result.rule)
        except (KeyError, ValueError, TypeError, IndexError) as exc:  # malformed file: say so, don't crash
            result = finding(claim.key, NOT_MEASURED, f"Could not be judged from the run's files: "
                             f"{type(exc).__name__}: {exc}.", "")
        result.name = claim.name
        findings.append(result)
    if write:
        write_findings(run, findings)
    return findings

