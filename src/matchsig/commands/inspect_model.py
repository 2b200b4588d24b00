"""``matchsig inspect``: what matchsig makes of a model (family, shape, score convention, parts, self-check)."""

from __future__ import annotations

import typer

from .common import MODEL_HELP, print_json

EXAMPLE_QUERY = "what is the life cycle of a flea"
EXAMPLE_DOCUMENT = "The life cycle of a flea can last anywhere from 20 days to an entire year."


def describe(ce, query: str = EXAMPLE_QUERY, document: str = EXAMPLE_DOCUMENT) -> dict:
    """A plain summary of a loaded :class:`~matchsig.model.CrossEncoder` (the ``inspect`` output)."""
    cfg = ce.model.config
    convention = ce.score_convention
    local = [i for i, m in enumerate(ce.attention_modules) if m._matchsig_model_mask]
    return {
        "model": ce.name,
        "architecture": type(ce.model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        "family": ce.family.name,
        "family_notes": ce.family.notes,
        "layers": ce.num_layers,
        "heads": ce.num_heads,
        "max_length": ce.max_length,
        "score": convention,
        "readout": ce.readout,
        "aggregating_part": ce.scheme.aggregator_name if ce.readout != "mean" else None,
        "layers_with_model_masks": local,
        "hook_sites": sorted(ce.family.sites),
        "parts": [[t, p] for t, p in ce.parts(query, document)],
        "self_check": ce.check.to_dict(),
    }


def inspect(
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair (documents are truncated)."),
    query: str = typer.Option(EXAMPLE_QUERY, "--query", "-q", help="Query of the example pair."),
    document: str = typer.Option(EXAMPLE_DOCUMENT, "--document", "-d", help="Document of the example pair."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Family, layers x heads, score convention, the parts of an example pair and the self-check of a model."""
    from ..engine.model import CrossEncoder

    ce = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
    info = describe(ce, query, document)
    if as_json:
        print_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    check = info["self_check"]
    table = Table(show_header=False, box=None)
    rows = [("model", info["model"]), ("family", f"{info['family']} ({info['architecture']}, {info['model_type']})"),
            ("shape", f"{info['layers']} layers x {info['heads']} heads, up to {info['max_length']} tokens"),
            ("score", info["score"] + (f"; aggregating part {info['aggregating_part']}" if info["aggregating_part"] else "")),
            ("model masks", ", ".join(map(str, info["layers_with_model_masks"])) or "none (padding only)"),
            ("self-check", f"max |diff| {check['max_abs_diff']:.1e} <= {check['tolerance']:.1e} vs the model's own "
                           f"{check['reference']} forward on {check['pairs']} pairs of {check['tokens']} tokens "
                           f"({check['seconds']:.2f} s)"),
            ("parts", " ".join(f"{t}/{p}" for t, p in info["parts"]))]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    Console().print(table)
