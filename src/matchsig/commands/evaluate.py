"""``matchsig baseline`` and ``matchsig evaluate``: random and model nDCG@10 of sampled pools."""

from __future__ import annotations

import sys

import typer

from .common import CAP_HELP, DATASET_HELP, measure_options, parse_cap, print_json, settings_table


def _load_for_pools(dataset: str):
    """load_collection, with a stderr note about judged queries that have no text (not pooled)."""
    from ..data.datasets import load_collection

    collection = load_collection(dataset)
    missing = collection.untexted_qids()
    if missing:
        typer.secho(
            f"note: {len(missing)} judged quer{'y' if len(missing) == 1 else 'ies'} of {collection.name} "
            f"{'has' if len(missing) == 1 else 'have'} no text and {'is' if len(missing) == 1 else 'are'} left out (e.g. {missing[0]})",
            err=True, fg="yellow",
        )
    return collection


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


def baseline(
    dataset: str = typer.Option("demo", "--dataset", "-d", help=DATASET_HELP),
    per_grade: str = typer.Option("20", "--per-grade", "-n", help=CAP_HELP),
    easy_negatives: int = typer.Option(0, "--easy-negatives", "-k", help="Random unjudged passages (grade -1, gain 0) per query."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the random rankings."),
    rankings: int = typer.Option(1000, "--rankings", "-r", help="Sampled random rankings for the spread (sd); the mean is exact."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """nDCG@10 of a random ranking of the sampled pools (the paper's 'random' reference)."""
    from ..data.evaluation import random_baseline
    from ..data.sampling import sample_pool

    cap = parse_cap(per_grade)
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
        print_json(payload)
        return
    settings_table(
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


def evaluate(
    model: str = typer.Option("embedded", "--model", "-m", help="'embedded', a Hugging Face folder, or a hub id."),
    dataset: str = typer.Option("demo", "--dataset", "-d", help=DATASET_HELP),
    per_grade: str = typer.Option("20", "--per-grade", "-n", help=CAP_HELP),
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

    from ..data.evaluation import evaluate_scores, random_baseline, write_trec_run
    from ..data.sampling import sample_pool

    cap = parse_cap(per_grade)
    measures = measure_options(measure, batch_size)  # fail on a typo before loading a model
    pool = sample_pool(_load_for_pools(dataset), per_grade=cap, easy_negatives=easy_negatives, seed=seed)
    queries, documents = pool.pairs()

    from ..engine.model import CrossEncoder

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
        print_json(payload)
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
    settings_table("Evaluation", rows, caption="Tie-aware: tied passages (scores within 1e-6 relative) count "
                    "at their expected value over all their orders (McSherry & Najork 2008)"
                    + (f"; {', '.join(result.tie_broken)} have no tie-aware form here and break ties by docid."
                       if result.tie_broken else "."))
