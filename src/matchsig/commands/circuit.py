"""``matchsig circuit``: the edges that carry a diagnostic's effect, grown into a circuit measured exactly
(:mod:`matchsig.experiments.circuit`, docs/circuits.md)."""

from __future__ import annotations

import sys

import typer

from .common import CAP_HELP, MODEL_HELP, parse_cap, print_json


def circuit(
    out: str = typer.Option(..., "--out", "-o", help="Run folder (resumed if it holds the same settings)."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    dataset: str = typer.Option("demo", "--dataset", help="'demo', a folder, or an ir_datasets id."),
    per_grade: str = typer.Option("3", "--per-grade", help=CAP_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool, the pairs, the split and the bootstrap."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
    as_json: bool = typer.Option(False, "--json", help="Print circuit.json, the faithfulness curve and the "
                                 "agreement with exact patching as one JSON object."),
    **options,
) -> None:
    """Relevance circuits: rank every edge by EAP / EAP-IG, grow the circuit, measure its faithfulness exactly."""
    from ..experiments import Runner, RunConfig
    from ..report.build import build_report

    given = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in options.items() if v is not None}
    config = RunConfig(experiments=["circuit"], model=model, datasets=[dataset], per_grade=parse_cap(per_grade),
                       seed=seed, device=device, **given)
    say = lambda msg: typer.echo(f"matchsig circuit: {msg}", err=True)  # noqa: E731
    folder = Runner(out, config, force=force, progress=sys.stderr.isatty(), log=say).run()
    report = build_report(folder)
    if as_json:
        print_json(circuit_payload(folder, report))
        return
    typer.echo(f"wrote {folder / 'circuit.json'} and {folder / 'circuit_curve.csv'}")
    typer.echo(f"report: {report}")


def circuit_payload(folder, report) -> dict:
    """``--json``: the chosen circuit, every measured size of the curve, the agreement rows, the files."""
    import json

    import pandas as pd

    def records(name: str) -> list:
        path = folder / name
        return json.loads(pd.read_csv(path).to_json(orient="records")) if path.is_file() else []

    return {"circuit": json.loads((folder / "circuit.json").read_text()), "curve": records("circuit_curve.csv"),
            "agreement": records("circuit_agreement.csv"), "run": str(folder), "report": str(report)}


def circuit_options() -> list:
    """The circuit experiment's options and the diagnostic-pair options it shares with ``patch``."""
    from ..experiments import registry

    shared = [o for o in registry.get("patch").options if o.name in ("diagnostic", "pairs", "where")]
    return shared + list(registry.get("circuit").options)
