"""``matchsig circuit``: the edges that carry a diagnostic's effect, grown into a circuit measured exactly
(:mod:`matchsig.experiments.circuit`, docs/circuits.md)."""

from __future__ import annotations

import sys

import typer

from .common import CAP_HELP, MODEL_HELP, parse_cap


def circuit(
    out: str = typer.Option(..., "--out", "-o", help="Run folder (resumed if it holds the same settings)."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    dataset: str = typer.Option("demo", "--dataset", help="'demo', a folder, or an ir_datasets id."),
    per_grade: str = typer.Option("3", "--per-grade", help=CAP_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool, the pairs, the split and the bootstrap."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
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
    typer.echo(f"wrote {folder / 'circuit.json'} and {folder / 'circuit_curve.csv'}")
    typer.echo(f"report: {build_report(folder)}")


def circuit_options() -> list:
    """The circuit experiment's options and the diagnostic-pair options it shares with ``patch``."""
    from ..experiments import registry

    shared = [o for o in registry.get("patch").options if o.name in ("diagnostic", "pairs", "where")]
    return shared + list(registry.get("circuit").options)
