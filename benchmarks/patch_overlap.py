"""Do patching heads coincide with the paper's contrast heads? The whole question on the embedded model.

    nice -n 5 python benchmarks/patch_overlap.py --pairs 40 \\
        --contrast demo=/work/runs/golden-demo/contrast/heads.csv --out runs/patch-overlap \\
        --json benchmarks/patch-overlap.json

1. Head patching (``matchsig.experiments.patching.run_patch``, ``--site head``) of TFC1 and STMC1
   pairs on the bundled demo collection (pool cap 3, seed 0; ``--pairs`` passages, each appended and
   prepended), into ``OUT/<diagnostic>-head/`` (resumable).
2. Contrast heads: each ``--contrast NAME=PATH`` (a run's ``contrast/heads.csv``, classified with
   the alpha and correction of that run's ``config.json``). Without one, the demo configuration's
   contrast phase is run into ``OUT/contrast-run``.
3. Per diagnostic, contrast table and k: the top-k patching heads against the matching,
   syntactic and semantic heads and the top-k contrast heads (:func:`matchsig.analysis.head_overlap.compare_heads`:
   overlap, Jaccard, permutation and hypergeometric p, Spearman rho).
4. nDCG@10 cost on the demo's cap-1 main pool (the demo run's 165 pairs): Q<-D,D<-Q cut in the
   top-k patching heads of each diagnostic, the top-k contrast heads of each table and k random
   heads (``--seeds`` seeds), against the unablated model and patching vs contrast
   (:func:`matchsig.analysis.head_overlap.ndcg_cost`).

Writes ``OUT/overlap.csv``, ``OUT/cost.csv``, ``OUT/cost_comparisons.csv``, ``OUT/summary.md`` and
(``--json``) a JSON record with timings and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _contrast_tables(specs: list[str], out: Path, log) -> dict[str, tuple[Path, float, str | None]]:
    """NAME -> (heads.csv, alpha, correction), running the demo contrast phase when none is given."""
    tables = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"--contrast {spec}: {path} does not exist")
        config = path.parent.parent / "config.json"
        cfg = json.loads(config.read_text()) if config.is_file() else {}
        tables[name] = (path, float(cfg.get("alpha", 0.05)), cfg.get("correction", "holm"))
    if not tables:
        from matchsig.experiments import DEMO_CONFIG, Runner

        cfg = DEMO_CONFIG()
        cfg.experiments = ["contrast"]
        log("no --contrast given: running the demo configuration's contrast phase")
        Runner(out / "contrast-run", cfg, progress=True, log=log).run()
        tables["demo"] = (out / "contrast-run" / "contrast" / "heads.csv", cfg.alpha, cfg.correction)
    return tables


def _markdown(frame, columns: list[str], floats: str = "{:.3g}") -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [floats.format(row[c]) if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40, help="passages per diagnostic (each appended and prepended)")
    ap.add_argument("--diagnostics", nargs="+", default=["tfc1", "stmc1"])
    ap.add_argument("--contrast", action="append", default=[], help="NAME=PATH of a contrast/heads.csv (repeatable)")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seeds", type=int, default=3, help="random head selections per k")
    ap.add_argument("--permutations", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "runs" / "patch-overlap"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from matchsig import CrossEncoder
    from matchsig.data.datasets import load_collection
    from matchsig.analysis.head_overlap import (compare_heads, ndcg_cost, patching_effects, random_heads, top_contrast_heads,
                                       top_patching_heads)
    from matchsig.experiments.patching import PatchConfig, run_patch
    from matchsig.data.sampling import sample_pool

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    record: dict = {"command": " ".join(sys.argv), "loadavg_start": os.getloadavg(), "seconds": {}}
    t0 = time.perf_counter()

    patching = {}
    for diag in args.diagnostics:
        t = time.perf_counter()
        config = PatchConfig(model="embedded", dataset="demo", diagnostic=diag, site="head", pairs=args.pairs)
        patching[diag] = run_patch(out / f"{diag}-head", config, log=log)
        summary = json.loads((out / f"{diag}-head" / "summary.json").read_text())
        record[f"patch_{diag}"] = {"pairs": summary["pairs"]["pairs"], "moved": summary["pairs_moved"],
                                   "mean_delta": summary["mean_delta"], "fingerprint": summary["pairs"]["pairs_fingerprint"]}
        record["seconds"][f"patch_{diag}"] = time.perf_counter() - t
        log(f"{diag}: {time.perf_counter() - t:.0f} s, load {os.getloadavg()}")

    tables = _contrast_tables(args.contrast, out, log)
    t = time.perf_counter()
    overlap = pd.concat([
        compare_heads(patching[d], path, args.k, diagnostic=d, alpha=alpha, correction=corr,
                      n_permutations=args.permutations).assign(contrast=name)
        for d in args.diagnostics for name, (path, alpha, corr) in tables.items()], ignore_index=True)
    overlap.to_csv(out / "overlap.csv", index=False)
    record["seconds"]["overlap"] = time.perf_counter() - t

    t = time.perf_counter()
    ce = CrossEncoder.load("embedded")
    pool = sample_pool(load_collection("demo"), per_grade=1, seed=0)
    selections, comparisons = {}, []
    effects = {d: patching_effects(patching[d], d) for d in args.diagnostics}
    for k in args.k:
        for d in args.diagnostics:
            selections[f"patch-{d}-top{k}"] = top_patching_heads(effects[d], k)
        for name, (path, alpha, corr) in tables.items():
            selections[f"contrast-{name}-top{k}"] = top_contrast_heads(path, k, alpha, corr)
            comparisons += [(f"patch-{d}-top{k}", f"contrast-{name}-top{k}") for d in args.diagnostics]
        for s in range(args.seeds):
            selections[f"random{k}-s{s}"] = random_heads(ce.num_layers, ce.num_heads, k, s)
    cost = ndcg_cost(ce, pool, selections, comparisons, progress=True)
    cost.table.to_csv(out / "cost.csv", index=False)
    cost.comparisons.to_csv(out / "cost_comparisons.csv", index=False)
    cost.per_query.to_csv(out / "cost_per_query.csv")
    record["seconds"]["ndcg_cost"] = time.perf_counter() - t
    record["cost_pool"] = {"pairs": len(pool), "queries": len(pool.qids), "fingerprint": pool.describe()["sample_fingerprint"]}
    record["seconds"]["total"] = time.perf_counter() - t0
    record["loadavg_end"] = os.getloadavg()

    ov = overlap.copy()
    ov["shared"] = ov["shared"].replace("", "-")
    md = ["## Overlap of the top-k patching heads with contrast head sets", "",
          _markdown(ov, ["contrast", "diagnostic", "k", "reference", "m", "overlap", "expected", "jaccard",
                         "p_permutation", "p_hypergeom", "p_layer_permutation", "p_layer_exact", "shared"]), "",
          "## Spearman rho, |patching effect| vs contrast effect size, all heads", "",
          _markdown(ov.drop_duplicates(["contrast", "diagnostic"]),
                    ["contrast", "diagnostic", "spearman_rho", "spearman_p", "spearman_n"]), "",
          "## nDCG@10 cost (Q<-D,D<-Q cut in the selected heads)", "",
          _markdown(cost.table, ["selection", "heads", "ndcg@10", "delta", "p_value", "n_queries"]), "",
          _markdown(cost.comparisons, ["a", "b", "mean_a", "mean_b", "diff", "p_value", "n_queries"]), "",
          f"random heads, mean delta per k: " + ", ".join(
              f"k={k}: {np.mean([cost.table.set_index('selection').loc[f'random{k}-s{s}', 'delta'] for s in range(args.seeds)]):.4f}"
              for k in args.k)]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    record.update(overlap=overlap.to_dict("records"), cost=cost.table.to_dict("records"),
                  cost_comparisons=cost.comparisons.to_dict("records"),
                  contrast={n: {"path": str(p), "alpha": a, "correction": c} for n, (p, a, c) in tables.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=float) + "\n")
    log(f"total {record['seconds']['total']:.0f} s, load {record['loadavg_start']} -> {record['loadavg_end']}")


if __name__ == "__main__":
    main()
