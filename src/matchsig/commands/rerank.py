"""``matchsig rerank``: re-rank a TREC run, evaluate input vs output, write the new run."""

from __future__ import annotations

import sys

import typer

from ..errors import MatchsigError
from .common import DATASET_HELP, PASSAGES_HELP, RUN_HELP, TOP_K_HELP, measure_options, parse_top_k, print_json, settings_table


def rerank(
    run: str = typer.Option(..., "--run", "-r", help=RUN_HELP),
    out: str = typer.Option(..., "--out", "-o", help="The re-ranked TREC run to write."),
    model: str = typer.Option("embedded", "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id."),
    dataset: str = typer.Option("demo", "--dataset", "-d", help=DATASET_HELP + " Gives queries, judgments and texts."),
    passages: list[str] = typer.Option(None, "--passages", help=PASSAGES_HELP),
    top_k: str = typer.Option("100", "--top-k", "-k", help=TOP_K_HELP),
    ablation: str = typer.Option(None, "--ablation", "-a", help="Re-rank with these directions cut, e.g. 'D<-D' or 'CLS<-*'."),
    measure: list[str] = typer.Option(None, "--measure", help="Extra ir_measures measure (repeatable), e.g. RR(rel=2)@10."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Pairs per forward pass."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Re-rank a TREC run with a cross-encoder (optionally ablated); evaluate input vs output, write a run."""
    from pathlib import Path

    from ..engine.ablation import Ablation
    from ..data.datasets import load_collection
    from ..analysis.rerank import rerank as rerank_run
    from ..data.runs import pool_from_run, read_trec_run, with_passages

    k = parse_top_k(top_k)
    measures = measure_options(measure, batch_size)
    try:
        cut = Ablation.parse(ablation) if ablation else None
    except ValueError as exc:
        raise MatchsigError(f"bad --ablation {ablation!r}: {exc}") from None
    if Path(out).is_dir():
        raise MatchsigError(f"--out {out} is a folder; give a file name for the re-ranked run")
    trec = read_trec_run(run)
    collection = with_passages(load_collection(dataset), passages or [])
    pool_from_run(trec, collection, k, judged_only=False)  # unknown qids / missing texts fail before the model loads

    from ..engine.model import CrossEncoder

    encoder = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
    result = rerank_run(encoder, trec, collection, top_k=k, ablation=cut, measures=measures, batch_size=batch_size,
                        progress=sys.stderr.isatty())
    name = Path(str(getattr(encoder, "name", model))).name or "matchsig"
    result.write(out, run_name=name + (f"-{cut.name}" if cut else ""))
    payload = {"model": str(getattr(encoder, "name", model)), **result.to_dict(), "out": out}
    if as_json:
        print_json(payload)
        return
    rows: list[tuple[str, object]] = [
        ("model", payload["model"] + (f", ablation {cut.name}" if cut else "")),
        ("dataset", collection.name),
        ("run", f"{run} (top {k if k is not None else 'all'} per query)"),
        ("queries", f"{len(result.pool.qids)} re-ranked, {result.evaluated_queries} with judgments evaluated"),
        ("pairs", len(result.pool)),
        ("unjudged candidates", f"{result.unjudged} (count as non-relevant)"),
    ]
    for m, test in result.tests.items():
        rows.append((m, f"{result.input_mean[m]:.4f} -> {result.output_mean[m]:.4f} "
                        f"(paired t-test p = {test.pvalue:.3g})"))
    if result.ties:
        t_in, t_out = result.ties["input"], result.ties["output"]
        rows.append(("ties (tie-aware evaluation)", f"input {t_in['tied_candidates']} tied candidates in "
                     f"{t_in['queries_with_ties']} queries; output {t_out['tied_candidates']} (ranked by "
                     f"{result.ties['ranked_by']})"))
    rows += [
        ("pairs / second", f"{result.pairs_per_second:.1f}" if result.pairs_per_second else "-"),
        ("written", out),
    ]
    settings_table("Re-ranking (input run -> re-ranked)", rows)
    if result.unevaluated:
        typer.secho(f"note: {len(result.unevaluated)} quer{'y' if len(result.unevaluated) == 1 else 'ies'} of the run "
                    f"{'has' if len(result.unevaluated) == 1 else 'have'} no judgments: re-ranked, not evaluated "
                    f"(e.g. {result.unevaluated[0]})", err=True, fg="yellow")
