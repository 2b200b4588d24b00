"""The `matchsig` command line.

Every command turns a :class:`~matchsig.errors.MatchsigError` into one line on stderr and exit code 2,
so bad input never ends in a traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from .errors import MatchsigError


def _plain_flags(params: list) -> list:
    # Typer's rich help prints a value type ("<bool>") after a flag that takes no value (--force,
    # --help); an empty metavar shows the flag alone. Error messages name options by their flags.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Group(TyperGroup):
    """The command group: flags are shown as plain flags in every command's ``--help``."""

    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_flags(command.get_params(ctx))
        return command


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Open up neural IR cross-encoders: attention-direction ablations and matching-head analysis.",
)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except MatchsigError as exc:
        typer.secho(f"matchsig: error: {exc}", err=True, fg="red")
        sys.exit(2)


# ---- commands are added below, one section per module they front -------------------------------


# ---- baseline / evaluate: collections, sampling, evaluation (datasets.py, sampling.py, evaluation.py)


def _parse_cap(text: str) -> int | None:
    """``--per-grade``: a positive integer, or ``all`` for no cap."""
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise MatchsigError(f"bad --per-grade {text!r}: expected a positive integer or 'all'") from None
    if value < 1:
        raise MatchsigError(f"bad --per-grade {value}: must be >= 1 (or 'all')")
    return value


_DATASET_HELP = "Collection: 'demo', a folder (queries.tsv, qrels.txt, passages.tsv), or an ir_datasets id."
_CAP_HELP = "Up to N judged passages per relevance grade per query, or 'all' (the paper states 20)."


def _load_for_pools(dataset: str):
    """load_collection, with a stderr note about judged queries that have no text (not pooled)."""
    from .datasets import load_collection

    collection = load_collection(dataset)
    missing = collection.untexted_qids()
    if missing:
        typer.secho(
            f"note: {len(missing)} judged quer{'y' if len(missing) == 1 else 'ies'} of {collection.name} "
            f"{'has' if len(missing) == 1 else 'have'} no text and {'is' if len(missing) == 1 else 'are'} left out (e.g. {missing[0]})",
            err=True, fg="yellow",
        )
    return collection


def _print_json(payload: dict) -> None:
    import json

    # stdout carries exactly this one object; everything else goes to stderr.
    typer.echo(json.dumps(payload, ensure_ascii=False))


def _sample_rows(pool, cap: int | None, easy_negatives: int, seed: int) -> list[tuple[str, object]]:
    """The rows describing a sampled pool, shared by the baseline and evaluate tables."""
    return [
        ("dataset", pool.dataset),
        ("per grade (cap)", "all" if cap is None else cap),
        ("easy negatives", easy_negatives),
        ("seed", seed),
        ("queries", len(pool.qids)),
        ("pairs", len(pool)),
    ]


def _settings_table(title: str, rows: list[tuple[str, object]], caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", caption=caption, caption_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def baseline(
    dataset: str = typer.Option("demo", "--dataset", "-d", help=_DATASET_HELP),
    per_grade: str = typer.Option("20", "--per-grade", "-n", help=_CAP_HELP),
    easy_negatives: int = typer.Option(0, "--easy-negatives", "-k", help="Random unjudged passages (grade -1, gain 0) per query."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the random rankings."),
    rankings: int = typer.Option(1000, "--rankings", "-r", help="Sampled random rankings for the spread (sd); the mean is exact."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """nDCG@10 of a random ranking of the sampled pools (the paper's 'random' reference)."""
    from .evaluation import random_baseline
    from .sampling import sample_pool

    cap = _parse_cap(per_grade)
    pool = sample_pool(_load_for_pools(dataset), per_grade=cap, easy_negatives=easy_negatives, seed=seed)
    result = random_baseline(pool, rankings=rankings, seed=seed)
    payload = {
        **pool.describe(),
        "rankings": result.rankings,
        "random_ndcg@10": result.mean,
        "random_ndcg@10_sd": result.sd,
        "random_ndcg@10_sampled_mean": result.sampled_mean,
        "random_ndcg@10_rule": "exact expected nDCG@10 of a uniformly random order (= tie-aware nDCG@10 of an "
        "all-tied ranking); sd and sampled mean over the sampled rankings",
        "grades": {str(g): n for g, n in pool.grade_counts().items()},
    }
    if as_json:
        _print_json(payload)
        return
    _settings_table(
        "Random-ranking baseline",
        [
            *_sample_rows(pool, cap, easy_negatives, seed),
            ("pairs per grade", ", ".join(f"{g}: {n}" for g, n in pool.grade_counts().items())),
            ("random nDCG@10", f"{result.mean:.4f} exact (sampled: {result.sampled_mean:.4f}, "
                               f"sd {result.sd:.4f} over {result.rankings} rankings)"),
            ("sample fingerprint", pool.fingerprint),
        ],
        caption="The paper states a cap of 20 and reports 0.48; on the real DL19 judgments a random ranking "
        "scores 0.43 at cap 20 and 0.48 at cap 10 (docs/datasets.md).",
    )


@app.command()
def evaluate(
    model: str = typer.Option("embedded", "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id."),
    dataset: str = typer.Option("demo", "--dataset", "-d", help=_DATASET_HELP),
    per_grade: str = typer.Option("20", "--per-grade", "-n", help=_CAP_HELP),
    easy_negatives: int = typer.Option(0, "--easy-negatives", "-k", help="Random unjudged passages (grade -1, gain 0) per query."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Pairs per forward pass."),
    measure: list[str] = typer.Option(None, "--measure", help="Extra ir_measures measure (repeatable), e.g. RR@10. "
                                      "nDCG, P@k, RR and AP are tie-aware; other measures break ties by docid (said in the output)."),
    run_file: str = typer.Option(None, "--run-file", help="Also write the ranking as a TREC run file."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Score the sampled pools with a cross-encoder and report nDCG@10 (and other measures)."""
    import time

    from .evaluation import evaluate_scores, parse_measures, random_baseline, write_trec_run
    from .sampling import sample_pool

    cap = _parse_cap(per_grade)
    if batch_size < 1:
        raise MatchsigError(f"bad --batch-size {batch_size}: must be >= 1")
    names = ["nDCG@10", *[m for m in (measure or []) if m != "nDCG@10"]]
    measures = parse_measures(names)  # fail on a typo before loading a model
    pool = sample_pool(_load_for_pools(dataset), per_grade=cap, easy_negatives=easy_negatives, seed=seed)
    queries, documents = pool.pairs()

    from .model import CrossEncoder

    encoder = CrossEncoder.load(model, device=device, max_length=max_length)
    started = time.perf_counter()
    scores = encoder.score(queries, documents, batch_size=batch_size, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    result = evaluate_scores(pool, scores, measures)
    if run_file:
        from pathlib import Path

        write_trec_run(run_file, pool, scores, run_name=Path(str(getattr(encoder, "name", model))).name or "matchsig")
    payload = {
        "model": str(getattr(encoder, "name", model)),
        **pool.describe(),
        "ndcg@10": result.mean["nDCG@10"],
        "measures": result.mean,
        "ties": result.ties(),
        "random_ndcg@10": random_baseline(pool, rankings=1000, seed=seed).mean,
        "seconds": seconds,
        "pairs_per_second": len(pool) / seconds if seconds > 0 else None,
        "run_file": run_file,
        "per_query": result.per_query,
    }
    if as_json:
        _print_json(payload)
        return
    rows: list[tuple[str, object]] = [
        ("model", payload["model"]),
        *_sample_rows(pool, cap, easy_negatives, seed),
    ]
    rows += [(name + (" (ties broken by docid)" if name in result.tie_broken else ""), f"{value:.4f}")
             for name, value in result.mean.items()]
    rows += [
        ("random nDCG@10", f"{payload['random_ndcg@10']:.4f} (exact)"),
        ("pairs / second", f"{payload['pairs_per_second']:.1f}" if payload["pairs_per_second"] else "-"),
        ("sample fingerprint", pool.fingerprint),
    ]
    if run_file:
        rows.append(("run file", run_file))
    _settings_table("Evaluation", rows, caption="Tie-aware: tied passages (scores within 1e-6 relative) count "
                    "at their expected value over all their orders (McSherry & Najork 2008)"
                    + (f"; {', '.join(result.tie_broken)} have no tie-aware form here and break ties by docid."
                       if result.tie_broken else "."))


# ---- rerank: TREC runs (runs.py) ---------------------------------------------------------------------

_RUN_HELP = "A TREC run (6 columns: qid Q0 docid rank score tag) whose candidates are re-ranked."
_PASSAGES_HELP = ("Extra passage texts (docid<TAB>text, .gz allowed), repeatable: for run candidates the "
                  "dataset does not hold (e.g. trec-dl-2019/bm25-top100/passages.tsv).")
_TOP_K_HELP = "Re-rank the best K candidates of each query (by the run's score; 'all' for every one)."


def _parse_top_k(text: str) -> int | None:
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise MatchsigError(f"bad --top-k {text!r}: expected a positive integer or 'all'") from None
    if value < 1:
        raise MatchsigError(f"bad --top-k {value}: must be >= 1 (or 'all')")
    return value


@app.command()
def rerank(
    run: str = typer.Option(..., "--run", "-r", help=_RUN_HELP),
    out: str = typer.Option(..., "--out", "-o", help="The re-ranked TREC run to write."),
    model: str = typer.Option("embedded", "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id."),
    dataset: str = typer.Option("demo", "--dataset", "-d", help=_DATASET_HELP + " Gives queries, judgments and texts."),
    passages: list[str] = typer.Option(None, "--passages", help=_PASSAGES_HELP),
    top_k: str = typer.Option("100", "--top-k", "-k", help=_TOP_K_HELP),
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

    from .ablation import Ablation
    from .datasets import load_collection
    from .evaluation import parse_measures
    from .runs import pool_from_run, read_trec_run, rerank as rerank_run, with_passages

    k = _parse_top_k(top_k)
    if batch_size < 1:
        raise MatchsigError(f"bad --batch-size {batch_size}: must be >= 1")
    names = ["nDCG@10", *[m for m in (measure or []) if m != "nDCG@10"]]
    measures = parse_measures(names)
    try:
        cut = Ablation.parse(ablation) if ablation else None
    except ValueError as exc:
        raise MatchsigError(f"bad --ablation {ablation!r}: {exc}") from None
    if Path(out).is_dir():
        raise MatchsigError(f"--out {out} is a folder; give a file name for the re-ranked run")
    trec = read_trec_run(run)
    collection = with_passages(load_collection(dataset), passages or [])
    pool_from_run(trec, collection, k, judged_only=False)  # unknown qids / missing texts fail before the model loads

    from .model import CrossEncoder

    encoder = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
    result = rerank_run(encoder, trec, collection, top_k=k, ablation=cut, measures=measures, batch_size=batch_size,
                        progress=sys.stderr.isatty())
    name = Path(str(getattr(encoder, "name", model))).name or "matchsig"
    result.write(out, run_name=name + (f"-{cut.name}" if cut else ""))
    payload = {"model": str(getattr(encoder, "name", model)), **result.to_dict(), "out": out}
    if as_json:
        _print_json(payload)
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
    rows += [
        ("pairs / second", f"{result.pairs_per_second:.1f}" if result.pairs_per_second else "-"),
        ("written", out),
    ]
    _settings_table("Re-ranking (input run -> re-ranked)", rows)
    if result.unevaluated:
        typer.secho(f"note: {len(result.unevaluated)} quer{'y' if len(result.unevaluated) == 1 else 'ies'} of the run "
                    f"{'has' if len(result.unevaluated) == 1 else 'have'} no judgments: re-ranked, not evaluated "
                    f"(e.g. {result.unevaluated[0]})", err=True, fg="yellow")


# ---- the paper's experiments (experiments.py, report.py) ------------------------------------------

_MODEL_HELP = "'embedded', a Hugging Face folder, or a hub id (e.g. castorini/monobert-large-msmarco)."


def _run_experiments(experiments: list[str], out: str, force: bool, preset: str | None = None, **settings) -> "object":
    """Build a RunConfig (a preset, else the defaults, overridden by the options given), run it, report."""
    from .experiments import PRESETS, Runner, RunConfig

    if preset is not None and preset not in PRESETS:
        raise MatchsigError(f"unknown preset {preset!r}: choose from {', '.join(sorted(PRESETS))}")
    base = PRESETS[preset]() if preset else RunConfig()
    given = {k: v for k, v in settings.items() if v is not None and v != []}
    if "per_grade" in given:
        given["per_grade"] = _parse_cap(given["per_grade"])
    if "dataset" in given:
        given["datasets"] = list(given.pop("dataset"))
    given = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in given.items()}
    config = base.replace(experiments=experiments, **given)
    run = Runner(out, config, force=force, log=lambda m: typer.secho(m, err=True, fg="yellow"))
    folder = run.run()
    if run.dist.rank == 0:
        _report(folder)
        typer.echo(f"results in {folder}")
    return run


_CORRECTION_HELP = "Multiple-comparison correction of each family of tests: holm (default), bonferroni or none (the paper's)."
_ALPHA_HELP = "Significance level of every test and mark (default 0.05)."


def _with_options(command, options: list, before: str | None = None, show_defaults: bool = False):
    """Give ``command`` (whose last parameter is ``**options``) one command-line option per declared
    :class:`~matchsig.experiments.registry.Option`, inserted before parameter ``before`` (default: at the end)."""
    import inspect
    import typing

    hints = typing.get_type_hints(command)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(command).parameters.values()
              if p.kind is not inspect.Parameter.VAR_KEYWORD]
    # experiment commands: None = "not given" (a preset or the configuration decides); patch: the declared default
    extra = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.kind,
                               default=typer.Option(o.default_value() if show_defaults else None, o.flag,
                                                    *([o.short] if o.short else []), help=o.help))
             for o in options]
    at = [p.name for p in params].index(before) if before else len(params)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    command.__signature__ = inspect.Signature(params[:at] + extra + params[at:])
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
    return command


def _paper_options() -> list:
    """The options every experiment command takes: those the default experiments declare."""
    from .experiments import registered

    return [o for e in registered() if e.default for o in e.options]


def _experiment_command(name: str, experiments: list[str], doc: str):
    def command(
        model: str = typer.Option(None, "--model", "-m", help=_MODEL_HELP + " Default: embedded."),
        dataset: list[str] = typer.Option(None, "--dataset", "-d", help=_DATASET_HELP + " Repeatable (pools are "
                                          "merged). Feeds Table 1, Figure 1 and the head ablations. Default: demo."),
        preset: str = typer.Option(None, "--preset", help="Start from a named configuration: 'paper' (ablations on DL19 "
                                   "judged, analysis on DL19-22 judged, caps 20) or 'demo'; options given override it."),
        per_grade: str = typer.Option(None, "--per-grade", "-n", help=_CAP_HELP + " Default: 20."),
        seed: int = typer.Option(None, "--seed", help="Seed of the samples and random choices (default 0)."),
        out: str = typer.Option(f"runs/{name}", "--out", "-o", help="Run folder (created; resumed if it exists)."),
        force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
        max_queries: int = typer.Option(None, "--max-queries", help="Use only the first N judged queries of each dataset."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", help="Pairs per forward pass (default 32)."),
        device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
        dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
        max_length: int = typer.Option(None, "--max-length", help="Maximum tokens per pair (default 512; documents are truncated)."),
        alpha: float = typer.Option(None, "--alpha", help=_ALPHA_HELP),
        correction: str = typer.Option(None, "--correction", help=_CORRECTION_HELP),
        rankings: int = typer.Option(None, "--rankings", "-r", help="Sampled random rankings for the spread (sd) of the random baseline (default 1000)."),
        run: str = typer.Option(None, "--run", help="Re-ranking protocol: the main pool is the top-k of this TREC run "
                                "(judged and unjudged candidates) instead of a sample; --per-grade is then unused."),
        top_k: str = typer.Option(None, "--top-k", help=_TOP_K_HELP + " Default with --run: 100."),
        passages: list[str] = typer.Option(None, "--passages", help=_PASSAGES_HELP),
        **options,
    ) -> None:
        settings = dict(model=model, dataset=dataset, per_grade=per_grade, seed=seed, max_queries=max_queries,
                        batch_size=batch_size, device=device, dtype=dtype, max_length=max_length, alpha=alpha,
                        correction=correction, rankings=rankings, **options)
        if run is None and (top_k is not None or passages):
            raise MatchsigError("--top-k and --passages go with --run FILE (the re-ranking protocol)")
        if run is not None:
            from pathlib import Path

            from .runs import read_trec_run

            read_trec_run(run)  # a bad run file fails here, before a run folder is written
            # Absolute paths, so `matchsig run RUN_DIR/config.json` works from any folder.
            settings["run"] = str(Path(run).resolve())
            settings["top_k"] = _parse_top_k(top_k if top_k is not None else "100")
            settings["passages"] = [str(Path(p).resolve()) for p in passages or []] or None
        _run_experiments(experiments, out, force, preset=preset, **settings)

    command.__doc__ = doc
    app.command(name)(_with_options(command, _paper_options(), before="run"))


_experiment_command("ablate", ["table1"], "Table 1: nDCG@10 with each direction X<-Y (and X<-*) masked in all layers.")
_experiment_command("layers", ["layers"], "Figure 1: nDCG@10 when masking a direction in layers 0..l, for every l.")
_experiment_command("contrast", ["contrast"], "Figures 2-4: per-head attention on relevant vs hard vs easy negatives.")
_experiment_command("heads", ["contrast", "heads"], "Ablate the top-k matching heads found by contrast vs k random heads.")
_experiment_command("experiments", ["table1", "layers", "contrast", "heads"], "All of the paper's experiments.")


@app.command("run")
def run_config(
    config: str = typer.Argument(..., help="A config.json written by an earlier run (or a run folder)."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default: the folder holding the config)."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
    report_too: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
    alpha: float = typer.Option(None, "--alpha", help=_ALPHA_HELP + " Overrides the configuration's; only the tables change."),
    correction: str = typer.Option(None, "--correction", help=_CORRECTION_HELP + " Overrides the configuration's."),
) -> None:
    """Re-run (or resume) a run from its configuration file."""
    from pathlib import Path

    from .experiments import Runner, RunConfig

    cfg = RunConfig.read(config)
    if alpha is not None:
        cfg.alpha = alpha
    if correction is not None:
        cfg.correction = correction
    target = Path(out) if out else (Path(config) if Path(config).is_dir() else Path(config).parent)
    run = Runner(target, cfg, force=force, log=lambda m: typer.secho(m, err=True, fg="yellow"))
    folder = run.run()
    if run.dist.rank == 0:
        if report_too:
            _report(folder)
        typer.echo(f"results in {folder}")


def _report(folder) -> None:
    from .report import build_report

    path = build_report(folder)
    typer.echo(f"report: {path}")


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run folder.")) -> None:
    """Write RUN_DIR/report.html: one self-contained page with tables, figures and findings."""
    from pathlib import Path

    from .runfolder import FILES

    folder = Path(run_dir)
    if not (folder / FILES.config).is_file():
        raise MatchsigError(f"{folder} is not a matchsig run folder (no config.json)")
    _report(folder)


@app.command()
def demo(
    out: str = typer.Option("matchsig-demo", "--out", "-o", help="Output folder."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
    alpha: float = typer.Option(None, "--alpha", help=_ALPHA_HELP),
    correction: str = typer.Option(None, "--correction", help=_CORRECTION_HELP),
) -> None:
    """Everything on the embedded model and the bundled DL19 sample, offline: tables, figures, report."""
    from .experiments import DEMO_CONFIG, Runner

    given = {k: v for k, v in (("alpha", alpha), ("correction", correction)) if v is not None}
    run = Runner(out, DEMO_CONFIG().replace(**given), force=force,
              log=lambda m: typer.secho(m, err=True, fg="yellow"))
    typer.secho(
        f"matchsig demo: embedded model, bundled DL19 sample, up to {run.config.per_grade} passage(s) per grade "
        f"(the paper states 20), {run.config.max_queries or 'all 43'} queries", err=True)
    folder = run.run()
    _report(folder)
    typer.echo(f"results in {folder}")


# ---- view: the attention explorer (explorer.py) ------------------------------------------------


@app.command()
def view(
    run_dir: str = typer.Argument(None, help="A run folder (config.json, pools.tsv, contrast/heads.csv); with --qid and --docid."),
    model: str = typer.Option(None, "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id (default: the run's model, else embedded)."),
    query: str = typer.Option(None, "--query", "-q", help="Query text (without RUN_DIR)."),
    document: str = typer.Option(None, "--document", help="Document text (without RUN_DIR)."),
    qid: str = typer.Option(None, "--qid", help="Query id of a pair of RUN_DIR/pools.tsv."),
    docid: str = typer.Option(None, "--docid", help="Document id of a pair of RUN_DIR/pools.tsv."),
    out: str = typer.Option(None, "--out", "-o", help="HTML file to write (default: view.html, or RUN_DIR/view-QID-DOCID.html)."),
    heads: str = typer.Option(None, "--heads", help="A contrast heads.csv whose matching heads are highlighted (default: RUN_DIR/contrast/heads.csv)."),
    top_k: int = typer.Option(8, "--top-k", "-k", help="Links kept per token and head in each direction (Q<-D, D<-Q)."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair (documents are truncated)."),
) -> None:
    """One self-contained HTML page to explore a pair: tokens, heads, Q<-D / D<-Q attention, ablated scores."""
    import re
    import time
    from pathlib import Path

    from .explorer import build_view_data, load_run_pair, read_contrast_heads, render_html, write_view

    if top_k < 1:
        raise MatchsigError(f"bad --top-k {top_k}: must be >= 1")
    notes: list[str] = []
    meta: dict = {}
    heads_path = Path(heads) if heads else None
    if heads_path is not None and not heads_path.is_file():
        raise MatchsigError(f"--heads {heads}: no such file")
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

    from .model import CrossEncoder

    started = time.perf_counter()
    encoder = CrossEncoder.load(model, device=device, dtype=dtype, max_length=max_length)
    contrast = read_contrast_heads(heads_path, encoder.num_layers, encoder.num_heads) if heads_path else []
    if heads_path:
        meta["heads"] = str(heads_path)
    data = build_view_data(encoder, query, document, top_k=top_k, contrast=contrast, meta=meta, notes=notes,
                           progress=sys.stderr.isatty())
    path = write_view(out, render_html(data))
    size = path.stat().st_size
    typer.echo(
        f"wrote {path} ({size / 1024:.0f} KiB): {data['q_span'][1] - data['q_span'][0]} query + "
        f"{data['d_span'][1] - data['d_span'][0]} document tokens, {encoder.num_layers} x {encoder.num_heads} heads, "
        f"{len(data['scores'])} scores, {sum(1 for r in contrast if r['kind'] != 'none')} flagged head rows, "
        f"{time.perf_counter() - started:.1f} s"
    )


# ---- train: the embedded default cross-encoder (training.py, embedded.py) -----------------------


@app.command()
def train(
    out: str = typer.Option(..., "--out", help="Run folder: cache, checkpoint, final delta in OUT/embedded."),
    data: str = typer.Option(
        None, "--data", help="TREC DL data folder (default: $MATCHSIG_DATA, else ../shared/data)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the whole run (init, batches, dropout)."),
    minutes: float = typer.Option(
        60.0, "--minutes", help="Wall-clock stop for this invocation; the same command again resumes."
    ),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps of the schedule (default: the recipe's)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate of the encoder (default: the recipe's)."),
    threads: int = typer.Option(2, "--threads", help="CPU threads."),
) -> None:
    """Fine-tune all-MiniLM-L6-v2 into the MonoBERT-style cross-encoder shipped as 'embedded'.

    Never reads TREC DL 2019 except to exclude its queries and passages. Copy OUT/embedded/* into
    src/matchsig/embedded/ to ship the result.
    """
    from pathlib import Path

    from .training import TrainConfig, default_data_dir
    from .training import train as run_training

    data_dir = Path(data) if data else default_data_dir()
    if not data_dir.is_dir():
        raise MatchsigError(f"training data folder not found: {data_dir} (give --data or set MATCHSIG_DATA)")
    if minutes <= 0:
        raise MatchsigError("--minutes must be positive")
    cfg = TrainConfig(seed=seed, minutes=minutes, threads=threads)
    if steps is not None:
        if steps <= 0:
            raise MatchsigError("--steps must be positive")
        cfg.steps = steps
    if lr is not None:
        cfg.lr = lr
    summary = run_training(data_dir, Path(out), cfg, log=lambda msg: typer.echo(msg, err=True))
    _print_json(summary)


# ---- parts: how a pair is split (parts.py) --------------------------------------------------------


@app.command()
def parts(
    query: str = typer.Option(..., "--query", "-q", help="Query text."),
    document: str = typer.Option(..., "--document", "-d", help="Document text."),
    model: str = typer.Option("embedded", "--model", "-m", help=_MODEL_HELP),
    max_length: int = typer.Option(512, "--max-length", help="Maximum tokens per pair (documents are truncated)."),
    as_json: bool = typer.Option(False, "--json", help="Print the tokens and their parts as JSON."),
) -> None:
    """Show how a (query, document) pair is tokenised and split into CLS, Q, SEP1, D, SEP2."""
    from .model import CrossEncoder

    labelled = CrossEncoder.load(model, device="cpu", max_length=max_length).parts(query, document)
    if as_json:
        _print_json({"tokens": [[t, p] for t, p in labelled]})
        return
    from rich.console import Console
    from rich.text import Text

    colours = {"CLS": "bold magenta", "Q": "bold cyan", "SEP1": "bold yellow", "D": "green", "SEP2": "bold yellow"}
    text = Text()
    for token, part in labelled:
        text.append(f"{token}", style=colours[part])
        text.append(f"/{part} ", style="dim")
    Console().print(text)


# ---- patch: activation patching on diagnostic pairs (experiments/patching.py) ---------------------


def _patch(
    out: str = typer.Option(..., "--out", "-o", help="Run folder (resumed if it holds the same settings)."),
    model: str = typer.Option("embedded", "--model", "-m", help=_MODEL_HELP),
    dataset: str = typer.Option("demo", "--dataset", help="'demo', a folder, or an ir_datasets id."),
    per_grade: str = typer.Option("3", "--per-grade", help="Pool cap per relevance grade ('all' for no cap)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool and of the pairs."),
    device: str = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), bf16 or fp16."),
    batch_size: int = typer.Option(64, "--batch-size", help="Patched rows per forward."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring stored results."),
    **options,
) -> None:
    """Activation patching: which layers, heads and positions carry a diagnostic's effect (patching.csv + heatmaps)."""
    from .experiments.patching import PatchConfig, run_patch

    given = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in options.items() if v is not None and v != []}
    config = PatchConfig(model=model, dataset=dataset, per_grade=_parse_cap(per_grade), seed=seed, device=device,
                         dtype=dtype, batch_size=batch_size, **given)
    path = run_patch(out, config, force=force, progress=sys.stderr.isatty(),
                     log=lambda msg: typer.echo(f"matchsig patch: {msg}", err=True))
    typer.echo(f"wrote {path} and {path.with_name('patching.png')}")


def _patch_options() -> list:
    from .experiments import registry

    return list(registry.get("patch").options)


app.command("patch")(_with_options(_patch, _patch_options(), show_defaults=True))
