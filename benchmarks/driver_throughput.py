"""Table 1 throughput of the experiment driver against benchmark c's ``score_many`` (same process, same pairs).

Three ways to score the 31 Table-1 configurations (none + 25 X<-Y + 5 X<-*) of the demo collection's
cap-1 pool (first ``--queries`` queries), in interleaved rounds so machine load hits all alike:

* ``runner``: ``matchsig.experiments.Runner`` with ``experiments=["table1"]`` into a fresh folder
  (units = chunks of pairs scored for all configurations with one ``score_many`` call; store writes,
  evaluation and tables included): the ``unablated`` + ``table1`` phase timings;
* ``score_many``: ``ce.score_many(q, d, 31 configurations, batch_size)`` per chunk, as benchmark c;
* ``per_ablation``: the previous driver's units, ``ce.score(q, d, ablation)`` per configuration and chunk.

Reports pair-configurations per second of each, the 1-minute load average before and after each
round, and the largest score difference between the runner's stored scores and ``score_many``.
Usage: ``python benchmarks/driver_throughput.py --queries 6 --rounds 2 --threads 2 --out benchmarks/driver_throughput.json``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from matchsig import Ablation, CrossEncoder
    from matchsig.experiments import TABLE1_CELLS, RunConfig, Runner
    from matchsig.experiments.driver import gather

    config = RunConfig(model="embedded", datasets=["demo"], per_grade=1, max_queries=args.queries,
                       experiments=["table1"], batch_size=args.batch_size, chunk_size=args.chunk, rankings=10)
    labels = ["none"] + [f"{x}<-{y}" for x, y in TABLE1_CELLS]
    ce = CrossEncoder.load("embedded", device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="driver-throughput-"))
    probe = Runner(tmp / "probe", config.replace(), progress=False)
    pool, (qs, ds) = probe.pool("main")
    n = len(pool)
    chunks = [np.arange(i, min(i + args.chunk, n)) for i in range(0, n, args.chunk)]
    ce.score_many(qs[:8], ds[:8], labels[:3], batch_size=args.batch_size)  # warm-up

    def runner_side(k: int) -> float:
        runner = Runner(tmp / f"runner-{k}", config.replace(), progress=False)
        runner._encoder = ce  # the same loaded model for every side
        runner.run()
        runner_side.scores = gather(runner, labels)
        return runner.timings["unablated"] + runner.timings["table1"]

    def many_side() -> float:
        t0 = time.perf_counter()
        many_side.scores = np.concatenate([ce.score_many([qs[i] for i in c], [ds[i] for i in c], labels,
                                                         batch_size=args.batch_size) for c in chunks], axis=1)
        return time.perf_counter() - t0

    def per_ablation_side() -> float:
        t0 = time.perf_counter()
        for label in labels:
            ab = Ablation.parse(label)
            for c in chunks:
                ce.score([qs[i] for i in c], [ds[i] for i in c], ablation=ab, batch_size=args.batch_size)
        return time.perf_counter() - t0

    sides = {"runner": runner_side, "score_many": many_side, "per_ablation": per_ablation_side}
    seconds = {name: [] for name in sides}
    loads = []
    for k in range(args.rounds):
        order = list(sides) if k % 2 == 0 else list(reversed(sides))
        for name in order:
            before = os.getloadavg()[0]
            seconds[name].append(sides[name](k) if name == "runner" else sides[name]())
            loads.append({"round": k, "side": name, "load_before": before, "load_after": os.getloadavg()[0]})
            print(f"round {k} {name}: {seconds[name][-1]:.1f} s (load {before:.2f} -> {loads[-1]['load_after']:.2f})",
                  flush=True)
    work = n * len(labels)
    result = {
        "pairs": n, "configurations": len(labels), "pair_configurations": work, "rounds": args.rounds,
        "threads": args.threads, "batch_size": args.batch_size, "chunk": args.chunk,
        "seconds": seconds,
        "pair_configs_per_s": {name: work * len(v) / sum(v) for name, v in seconds.items()},
        "runner_vs_score_many": sum(seconds["score_many"]) / sum(seconds["runner"]),
        "max_abs_diff_runner_vs_score_many": float(np.abs(runner_side.scores - many_side.scores).max()),
        "load": loads,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "load"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
