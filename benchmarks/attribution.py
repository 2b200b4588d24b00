"""Attribution patching vs exact patching on the TFC1 head grid (issue 21): time and agreement.

The embedded model, ``--pairs`` TFC1 diagnostic pairs (``common.tfc1_pairs``), the full layer x head
grid of ``attn.hook_z`` (all positions). Plain scoring of the baseline and perturbed inputs is timed
in the same run as the yardstick; every side runs once per round, rounds alternate the order.

    python benchmarks/attribution.py --pairs 100 --rounds 1 --out benchmarks/attribution.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import REPO, dump, git_commit, machine_info, tfc1_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "attribution.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from matchsig.engine.attribution import agreement

    ce, pairs = tfc1_pairs(args.pairs)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    sides = {
        "plain": lambda: (ce.score(q, b), ce.score(q, p)),
        "exact": lambda: ce.patch(q, b, p, site="z"),
        "atp": lambda: ce.attribute(q, b, p, site="z", chunk_size=args.chunk_size),
        "atp*": lambda: ce.attribute(q, b, p, site="z", method="atp*", chunk_size=args.chunk_size),
        "ig": lambda: ce.attribute(q, b, p, site="z", method="ig", steps=args.ig_steps, chunk_size=args.chunk_size),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    results = {}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            t0 = time.perf_counter()
            results[name] = sides[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name} {times[name][-1]:.1f}s", flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    exact = results["exact"]
    out = {"machine": machine_info(), "commit": git_commit(), "pairs": len(q), "pairs_fingerprint": pairs.fingerprint,
           "grid": f"{ce.num_layers} x {ce.num_heads} heads, all positions", "ig_steps": args.ig_steps,
           "chunk_size": args.chunk_size, "times_s": times, "median_s": med,
           "exact_over_atp": med["exact"] / med["atp"], "exact_over_atp*": med["exact"] / med["atp*"],
           "exact_over_ig": med["exact"] / med["ig"],
           "atp_over_plain": med["atp"] / med["plain"], "exact_over_plain": med["exact"] / med["plain"],
           "agreement": {m: agreement(results[m], exact) for m in ("atp", "atp*", "ig")}}
    print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items() if k not in ("machine", "times_s")})
    dump(args.out, out)


if __name__ == "__main__":
    main()
