"""Edge attribution (EAP, EAP-IG) for every edge of the embedded model over TFC1 pairs (issue 21): time.

The embedded model, ``--pairs`` TFC1 diagnostic pairs (``common.tfc1_pairs``), every edge of the graph
(input, 72 heads and 6 MLPs -> q/k/v of each head, each MLP, the score: 7,588 edges). Plain scoring of
the baseline and perturbed inputs is timed in the same run as the yardstick; with ``--exact K`` the
top-K edges by |EAP| are also patched exactly on the same pairs, and their agreement is reported.

    python benchmarks/edges.py --pairs 100 --out benchmarks/edges.json
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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ig-steps", type=int, default=0, help="also time EAP-IG with this many steps (0: no)")
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--qk", action="store_true", help="also time eap-qk (EAP with AtP*'s QK fix)")
    ap.add_argument("--exact", type=int, default=0, help="exactly patch the top-K edges too (0: no)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "edges.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ce, pairs = tfc1_pairs(args.pairs)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    times, results = {}, {}
    sides = {"plain": lambda: (ce.score(q, b), ce.score(q, p)),
             "eap": lambda: ce.attribute_edges(q, b, p, method="eap", chunk_size=args.chunk_size)}
    if args.ig_steps:
        sides["eap-ig"] = lambda: ce.attribute_edges(q, b, p, method="eap-ig", steps=args.ig_steps,
                                                     chunk_size=args.chunk_size)
    if args.qk:
        sides["eap-qk"] = lambda: ce.attribute_edges(q, b, p, method="eap-qk", chunk_size=args.chunk_size)
    for name, fn in sides.items():
        t0 = time.perf_counter()
        results[name] = fn()
        times[name] = time.perf_counter() - t0
        print(f"{name} {times[name]:.1f}s", flush=True)
    eap = results["eap"]
    out = {"machine": machine_info(), "commit": git_commit(), "pairs": len(q), "pairs_fingerprint": pairs.fingerprint,
           "edges": int(len(eap.edges)), "chunk_size": args.chunk_size, "ig_steps": args.ig_steps, "times_s": times,
           "eap_over_plain": times["eap"] / times["plain"],
           **({"eap_qk_over_plain": times["eap-qk"] / times["plain"]} if "eap-qk" in times else {})}
    if args.exact:
        from scipy import stats

        from matchsig.engine.path_patching import patch_edges

        top = eap.ranking()[: args.exact]
        t0 = time.perf_counter()
        base, _, patched = patch_edges(ce, q, b, p, [tuple(e) for e in eap.edges[top]])
        times["exact_top"] = time.perf_counter() - t0
        exact, est = (patched - base[:, None]).mean(0), eap.mean()[top]
        out["exact_top_k"] = {"k": args.exact, "seconds": times["exact_top"],
                              "pearson": float(stats.pearsonr(est, exact)[0]),
                              "spearman": float(stats.spearmanr(est, exact)[0])}
    print({k: v for k, v in out.items() if k != "machine"})
    dump(args.out, out)


if __name__ == "__main__":
    main()
