"""What the command modules (and the experiment commands of :mod:`matchsig.cli`) share: option help,
option parsers, and the two ways a command prints its result (one JSON object, or a table)."""

from __future__ import annotations

import typer

from ..errors import MatchsigError

DATASET_HELP = "Collection: 'demo', a folder (queries.tsv, qrels.txt, passages.tsv), or an ir_datasets id."
CAP_HELP = "Up to N judged passages per relevance grade per query, or 'all' (the paper states 20)."
MODEL_HELP = "'embedded', a Hugging Face folder, or a hub id (e.g. castorini/monobert-large-msmarco)."
RUN_HELP = "A TREC run (6 columns: qid Q0 docid rank score tag) whose candidates are re-ranked."
PASSAGES_HELP = ("Extra passage texts (docid<TAB>text, .gz allowed), repeatable: for run candidates the "
                 "dataset does not hold (e.g. trec-dl-2019/bm25-top100/passages.tsv).")
TOP_K_HELP = "Re-rank the best K candidates of each query (by the run's score; 'all' for every one)."


def _positive_or_all(text: str, flag: str) -> int | None:
    """A positive integer, or ``None`` for ``all`` (or ``none``); else a one-line error naming ``flag``."""
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise MatchsigError(f"bad {flag} {text!r}: expected a positive integer or 'all'") from None
    if value < 1:
        raise MatchsigError(f"bad {flag} {value}: must be >= 1 (or 'all')")
    return value


def parse_cap(text: str) -> int | None:
    """``--per-grade``: a positive integer, or ``all`` for no cap."""
    return _positive_or_all(text, "--per-grade")


def parse_top_k(text: str) -> int | None:
    """``--top-k``: a positive integer, or ``all`` for every candidate."""
    return _positive_or_all(text, "--top-k")


def measure_options(extra: list[str] | None, batch_size: int) -> list:
    """``--batch-size`` checked and the measures parsed (nDCG@10 first, then ``--measure``'s), so a typo
    fails before a model loads."""
    from ..data.evaluation import parse_measures

    if batch_size < 1:
        raise MatchsigError(f"bad --batch-size {batch_size}: must be >= 1")
    return parse_measures(["nDCG@10", *[m for m in (extra or []) if m != "nDCG@10"]])


def print_json(payload: dict) -> None:
    import json

    # stdout carries exactly this one object; everything else goes to stderr.
    typer.echo(json.dumps(payload, ensure_ascii=False))


def settings_table(title: str, rows: list[tuple[str, object]], caption: str | None = None) -> None:
    """A two-column (setting, value) table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", caption=caption, caption_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)

