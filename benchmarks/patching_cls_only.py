"""A/B of the patched forwards' last layer computed for the [CLS] row only vs in full, on the 100-pair TFC1 grid.

    python benchmarks/patching_cls_only.py --pairs 100 --rounds 2 --out benchmarks/patching-cls-only.json

Same process, same pairs (those of benchmarks/patching.py), the two sides alternated and the order
reversed in the second round; ``full`` is what a model that fails the [CLS]-only check gets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from common import tfc1_pairs

    ce, pairs = tfc1_pairs(args.pairs)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    times: dict[str, list] = {"cls_only": [], "full": []}
    grids = {}
    for rnd in range(args.rounds):
        for side in ("cls_only", "full") if rnd % 2 == 0 else ("full", "cls_only"):
            ce._patch_cls_only = None if side == "cls_only" else False  # None: checked on the first chunk
            t = time.perf_counter()
            grids[side] = ce.patch(q, b, p, site="z", batch_size=64).patched
            times[side].append({"seconds": time.perf_counter() - t, "loadavg": os.getloadavg()[0]})
            print(f"round {rnd}: {side} {times[side][-1]['seconds']:.1f} s (load {times[side][-1]['loadavg']:.1f})",
                  flush=True)
    best = {k: min(x["seconds"] for x in v) for k, v in times.items()}
    report = {"pairs": pairs.describe(), "threads": args.threads, "times": times, "best_s": best,
              "speedup_best": best["full"] / best["cls_only"],
              "max_abs_diff_patched": float(np.nanmax(np.abs(grids["cls_only"] - grids["full"])))}
    print(json.dumps({k: report[k] for k in ("best_s", "speedup_best", "max_abs_diff_patched")}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
