"""``matchsig view`` (the attention explorer page of a pair) and ``matchsig parts`` (how a pair is split)."""

from __future__ import annotations

import sys

import typer

from ..errors import MatchsigError
from .common import MODEL_HELP, print_json


def view(
    run_dir: str = typer.Argument(None, help="A run folder (config.json, pools.tsv, contrast/heads.csv); with --qid and --docid."),
    model: str = typer.Option(None, "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id (default: the run's model, else embedded)."),
    query: str = typer.Option(None, "--query", "-q", help="Query text (without RUN_DIR)."),
    document: str = typer.Option(None, "--document", help="Document text (without RUN_DIR)."),
    qid: str = typer.Option(None, "--qid", help="Query id of a pair of RUN_DIR/pools.tsv."),
    docid: str = typer.Option(None, "--docid", help="Document id of a pair of RUN_DIR/pools.tsv."),
    out: str = typer.Option(None, "--out", "-o", help="HTML file to write (default: view.html, or RUN_DIR/view-QID-DOCID.html)."),
    heads: str = typer.Option(None, "--heads", help="A contrast heads.csv whose matching heads are highlighted (default: RUN_DIR/contrast/heads.csv)."),
    patching: str = typer.Option(None, "--patching", help="A patching.csv of `matchsig patch --site head` whose per-head effects are overlaid (default: RUN_DIR/patching.csv)."),
    circuit: str = typer.Option(None, "--circuit", help="A circuit.json of `matchsig circuit` drawn in the page "
                                "(layers as rows, edges by weight; default: RUN_DIR/circuit.json)."),
    top_k: int = typer.Option(8, "--top-k", "-k", help="Links kept per token and head in each direction (Q<-D, D<-Q)."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair (documents are truncated)."),
) -> None:
    """One self-contained HTML page to explore a pair: tokens, heads, Q<-D / D<-Q attention, ablated scores."""
    import re
    import time
    from pathlib import Path

    from ..report.explorer import build_view_data, load_run_pair, read_contrast_heads, render_html, write_view
    from ..report.view_circuit import read_circuit

    if top_k < 1:
        raise MatchsigError(f"bad --top-k {top_k}: must be >= 1")
    notes: list[str] = []
    meta: dict = {}
    heads_path, patching_path, circuit_path = (_given_file(f, v) for f, v in
                                               (("--heads", heads), ("--patching", patching), ("--circuit", circuit)))
    patching_given = patching is not None
    if run_dir is not None:
        if query is not None or document is not None:
            raise MatchsigError("give either RUN_DIR with --qid/--docid, or --query and --document, not both")
        if qid is None or docid is None:
            raise MatchsigError("with RUN_DIR, give the pair with --qid and --docid")
        pair = load_run_pair(run_dir, qid, docid)
        query, document = pair.query, pair.document
        model = model or pair.model
        if not model:
            raise MatchsigError(f"{run_dir}/config.json names no model: give one with --model")
        if heads_path is None:
            heads_path = pair.heads_csv
            if pair.note:
                notes.append(pair.note)
                typer.secho(f"matchsig view: {pair.note}", err=True, fg="yellow")
        patching_path = patching_path or pair.patching_csv
        circuit_path = circuit_path or pair.circuit_json
        meta = {"qid": pair.qid, "docid": pair.docid, "grade": pair.grade, "run": str(run_dir)}
        if out is None:
            safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:80]  # noqa: E731
            out = str(Path(run_dir) / f"view-{safe(pair.qid)}-{safe(pair.docid)}.html")
    else:
        if qid is not None or docid is not None:
            raise MatchsigError("--qid/--docid need a RUN_DIR (matchsig view RUN_DIR --qid Q --docid D)")
        if query is None or document is None:
            raise MatchsigError("give --query and --document (or RUN_DIR with --qid and --docid)")
        model = model or "embedded"
        if heads_path is None:
            notes.append("no contrast run given (--heads or RUN_DIR): no heads are highlighted")
    out = out or "view.html"

    from ..engine.model import CrossEncoder

    started = time.perf_counter()
    encoder = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
    contrast = read_contrast_heads(heads_path, encoder.num_layers, encoder.num_heads) if heads_path else []
    overlay = _patching_overlay(patching_path, patching_given, encoder, notes, meta)
    drawn = read_circuit(circuit_path, encoder.num_layers, encoder.num_heads) if circuit_path else None
    meta.update({k: str(v) for k, v in (("heads", heads_path), ("circuit", circuit_path)) if v})
    data = build_view_data(encoder, query, document, top_k=top_k, contrast=contrast, patching=overlay, circuit=drawn, meta=meta,
                           notes=notes, progress=sys.stderr.isatty())
    path = write_view(out, render_html(data))
    typer.echo(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {data['q_span'][1] - data['q_span'][0]} query + "
        f"{data['d_span'][1] - data['d_span'][0]} document tokens, {encoder.num_layers} x {encoder.num_heads} heads, "
        f"{len(data['scores'])} scores, {sum(1 for r in contrast if r['kind'] != 'none')} flagged head rows, "
        f"{time.perf_counter() - started:.1f} s"
    )


def _given_file(flag: str, value: str | None):
    """The path of an optional file flag; a one-line error when it is given but is no file."""
    from pathlib import Path

    if value is None:
        return None
    if not Path(value).is_file():
        raise MatchsigError(f"{flag} {value}: no such file")
    return Path(value)


def _patching_overlay(path, given: bool, encoder, notes: list[str], meta: dict) -> list[dict]:
    """The page's per-head patching rows from ``path`` (none without it); a table that is not a head table
    is an error when given with --patching, a note when it is merely the run folder's."""
    from ..report.explorer import read_patching_heads

    if path is None:
        return []
    try:
        overlay = read_patching_heads(path, encoder.num_layers, encoder.num_heads)
    except MatchsigError as err:
        if given:
            raise
        # the run's patching.csv of another site (residual, mlp): the page is still useful without it
        notes.append(f"{path}: {err}; no patching overlay")
        return []
    meta["patching"] = str(path)
    return overlay


def parts(
    query: str = typer.Option(..., "--query", "-q", help="Query text."),
    document: str = typer.Option(..., "--document", "-d", help="Document text."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair (documents are truncated)."),
    as_json: bool = typer.Option(False, "--json", help="Print the tokens and their parts as JSON."),
) -> None:
    """Show how a (query, document) pair is tokenised and split into its parts (CLS, Q, SEP1, D, SEP2; a
    prompt-based reranker's PRE, Q, MID, D, LAST or POST)."""
    from ..engine.model import CrossEncoder

    labelled = CrossEncoder.load(model, device="cpu", max_length=max_length).parts(query, document)
    if as_json:
        print_json({"tokens": [[t, p] for t, p in labelled]})
        return
    from rich.console import Console
    from rich.text import Text

    colours = {"CLS": "bold magenta", "PRE": "bold magenta", "Q": "bold cyan", "SEP1": "bold yellow", "MID": "bold yellow",
               "D": "green", "SEP2": "bold yellow", "LAST": "bold red", "POST": "bold yellow"}
    text = Text()
    for token, part in labelled:
        text.append(f"{token}", style=colours.get(part, "white"))
        text.append(f"/{part} ", style="dim")
    Console().print(text)
