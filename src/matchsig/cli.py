"""The `matchsig` command line.

Every command turns a :class:`~matchsig.errors.MatchsigError` into one line on stderr and exit code 2,
so bad input never ends in a traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from .commands.common import (  # shared with the commands of commands/
    CAP_HELP as _CAP_HELP,
    DATASET_HELP as _DATASET_HELP,
    MODEL_HELP as _MODEL_HELP,
    PASSAGES_HELP as _PASSAGES_HELP,
    TOP_K_HELP as _TOP_K_HELP,
    parse_cap as _parse_cap,
    parse_top_k as _parse_top_k,
)
from .commands.compare import compare
from .commands.evaluate import baseline, evaluate
from .commands.inspect_model import inspect as inspect_command
from .commands.rerank import rerank
from .commands.train import train
from .commands.view import parts, view
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


# ---- baseline / evaluate / rerank: pools and TREC runs (commands/evaluate.py, commands/rerank.py) --

for _command in (baseline, evaluate, rerank):
    app.command()(_command)


# ---- the paper's experiments (experiments.py, report.py) ------------------------------------------

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


def _all_options() -> list:
    """Every registered experiment's options (``matchsig experiments --experiments`` may select any of them)."""
    from .experiments import registry

    return [o for _, o in registry.options()]


def _chosen(experiments: list[str], chosen: list[str] | None) -> list[str]:
    """``--experiments`` (repeatable and/or comma-separated) replacing the command's own list."""
    if not chosen:
        return experiments
    from .experiments import registry

    names = [n.strip() for item in chosen for n in item.split(",") if n.strip()]
    if not names:
        raise MatchsigError("--experiments is empty: name one or more of " + ", ".join(registry.names()))
    for n in names:
        registry.get(n)  # an unknown name is a one-line error naming the valid ones
    return names


def _experiment_command(name: str, experiments: list[str], doc: str, choosable: bool = False):
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
        chosen: list[str] = typer.Option(None, "--experiments", "-e", help="Run these registered experiments "
                                         "instead (comma-separated or repeated), e.g. contrast,patch; those they "
                                         "need are added. Default: " + ",".join(experiments) + "."),
        **options,
    ) -> None:
        settings = dict(model=model, dataset=dataset, per_grade=per_grade, seed=seed, max_queries=max_queries,
                        batch_size=batch_size, device=device, dtype=dtype, max_length=max_length, alpha=alpha,
                        correction=correction, rankings=rankings, **options)
        if run is None and (top_k is not None or passages):
            raise MatchsigError("--top-k and --passages go with --run FILE (the re-ranking protocol)")
        if run is not None:
            from pathlib import Path

            from .data.runs import read_trec_run

            read_trec_run(run)  # a bad run file fails here, before a run folder is written
            # Absolute paths, so `matchsig run RUN_DIR/config.json` works from any folder.
            settings["run"] = str(Path(run).resolve())
            settings["top_k"] = _parse_top_k(top_k if top_k is not None else "100")
            settings["passages"] = [str(Path(p).resolve()) for p in passages or []] or None
        _run_experiments(_chosen(experiments, chosen if choosable else None), out, force, preset=preset, **settings)

    command.__doc__ = doc
    if not choosable:  # only `matchsig experiments` chooses its experiments (and takes all their options)
        import inspect

        sig = inspect.signature(command)
        command.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "chosen"])
    options = _all_options() if choosable else _paper_options()
    app.command(name)(_with_options(command, options, before="run"))


_experiment_command("ablate", ["table1"], "Table 1: nDCG@10 with each direction X<-Y (and X<-*) masked in all layers.")
_experiment_command("layers", ["layers"], "Figure 1: nDCG@10 when masking a direction in layers 0..l, for every l.")
_experiment_command("contrast", ["contrast"], "Figures 2-4: per-head attention on relevant vs hard vs easy negatives.")
_experiment_command("heads", ["contrast", "heads"], "Ablate the top-k matching heads found by contrast vs k random heads.")
_experiment_command("experiments", ["table1", "layers", "contrast", "heads"],
                    "All of the paper's experiments, or those named by --experiments (e.g. contrast,patch).",
                    choosable=True)


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
    from .report.build import build_report

    path = build_report(folder)
    typer.echo(f"report: {path}")


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run folder.")) -> None:
    """Write RUN_DIR/report.html: one self-contained page with tables, figures and findings."""
    from pathlib import Path

    from .analysis.runfolder import FILES

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


# ---- view / train / parts: one pair, the embedded model (commands/view.py, commands/train.py) ------

for _command in (view, train, parts):
    app.command()(_command)
app.command("inspect")(inspect_command)


# ---- compare: several run folders side by side (commands/compare.py, report/compare.py) ------------

app.command()(compare)


# ---- patch: activation patching on diagnostic pairs (experiments/patching.py) ---------------------


def _patch(
    ctx: typer.Context,
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
    """Activation patching: which layers, heads and positions carry a diagnostic's effect (patching.csv + heatmaps).

    Into a folder that already holds a run (e.g. ``matchsig contrast``), the patch experiment is added to
    that run: its model, dataset, pool and chunking are kept, and only the options given here change.
    """
    from pathlib import Path

    from .experiments.patching.experiment import PatchConfig, run_patch
    from .analysis.runfolder import FILES

    given = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in options.items() if v is not None and v != []}
    config = PatchConfig(model=model, dataset=dataset, per_grade=_parse_cap(per_grade), seed=seed, device=device,
                         dtype=dtype, batch_size=batch_size, **given)
    say = lambda msg: typer.echo(f"matchsig patch: {msg}", err=True)  # noqa: E731
    if (Path(out) / FILES.config).is_file() and not force:
        path = _patch_into(ctx, Path(out), config, say)
    else:
        path = run_patch(out, config, force=force, progress=sys.stderr.isatty(), log=say)
    typer.echo(f"wrote {path} and {path.with_name('patching.png')}")


def _patch_into(ctx, out, config, say):
    """Add (or resume) the patch experiment in the run of ``out``: the options given on the command line
    override the folder's configuration; those left at their defaults keep the folder's values."""
    from .experiments import Runner, RunConfig
    from .analysis.runfolder import FILES

    fresh = config.run_config().to_dict()
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    explicit = {config.RUN_CONFIG_NAMES.get(name, name) for name, source in sources.items()
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")}
    base = RunConfig.read(out / FILES.config)
    changes = {k: fresh[k] for k in explicit if k in fresh}
    if "patch" not in base.experiments:
        say(f"adding the patch experiment to the run in {out} (its model {base.model!r}, datasets "
            f"{', '.join(base.datasets)}, pool cap {base.per_grade}, seed {base.seed})")
    # the runner adds the folder's experiments back, resumed with their stored settings
    Runner(out, base.replace(experiments=["patch"], **changes), progress=sys.stderr.isatty(), log=say).run()
    _report(out)  # the folder's page gains the patching section (and the overlap, with a contrast run)
    return out / FILES.patching


def _patch_options() -> list:
    from .experiments import registry

    return list(registry.get("patch").options)


app.command("patch")(_with_options(_patch, _patch_options(), show_defaults=True))

from .commands.circuit import circuit, circuit_options  # noqa: E402  (after the registry is filled)

app.command("circuit")(_with_options(circuit, circuit_options(), show_defaults=True))
