"""A/B of the cut kernel's attention call: this tree's ``correct`` kernel against an earlier commit's.

Random q/k/v in Hugging Face's layout and a realistic part layout (16 pairs: [CLS], 4-11 query tokens,
[SEP], 60-144 document tokens, [SEP], padding to 151). Each timed unit scores 3 batches of 4 layers
(a new context per batch, so per-batch set-up is counted); variants interleaved per round; ratios
per round against plain SDPA of the same call, then the median. The earlier kernel module is read
from git (``--base``) and imported beside this tree's, so both run on the same torch and tensors.

    python benchmarks/cut_kernel_ab.py --base 1a35690 --rounds 11 --out benchmarks/cut-kernel-ab.json
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, dump, git_commit, machine_info

SHAPES = {"tiny": (4, 8), "minilm": (12, 32), "base": (12, 64)}  # heads, head dimension
SPECS = ["D<-D", "CLS<-*", "Q<-D,D<-Q"]


def _base_kernels(rev: str):
    """The ``matchsig.engine.kernels`` module of commit ``rev``, imported as a sibling module."""
    source = subprocess.run(["git", "show", f"{rev}:src/matchsig/engine/kernels.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "kernels_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("matchsig.engine._kernels_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _block(spec: str, heads: int) -> torch.Tensor:
    """The (1, heads, 6, 6) cut block of ``spec`` in one layer, as the engine builds it."""
    from matchsig import Ablation

    return torch.as_tensor(Ablation.parse(spec).block_masks(1, heads)[0])[None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="1a35690", help="the commit whose kernel is the A side")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from matchsig.engine import kernels as new
    from matchsig.engine.context import ForwardContext

    old = _base_kernels(args.base)
    b, t = 16, 151
    part_ids = torch.tensor([([0] + [1] * (4 + i % 8) + [2] + [3] * (60 + (i * 37) % 85) + [4] + [5] * t)[:t]
                             for i in range(b)])
    results = {"machine": machine_info(), "commit": git_commit(), "base": args.base, "rounds": args.rounds, "cases": {}}
    for shape, (h, d) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, t, h, d, generator=g).transpose(1, 2) for _ in range(3))
        for spec in SPECS:
            block = _block(spec, h)

            def unit(mod, cut=block):
                def run():
                    for _ in range(3):
                        ctx = ForwardContext(part_ids=part_ids)
                        for _ in range(4):
                            call = mod.Call(q, k, v, ctx.key_bias(q.dtype), d ** -0.5, ctx, cut)
                            (mod._correct if cut is not None else mod._sdpa)(call)
                return run

            variants = {"sdpa": unit(new, None), "base": unit(old), "this": unit(new)}
            times = {n: [] for n in variants}
            for r in range(args.rounds):
                for name in list(variants)[r % 3:] + list(variants)[:r % 3]:
                    t0 = time.perf_counter()
                    variants[name]()
                    times[name].append(time.perf_counter() - t0)
            ratio = {n: statistics.median([x / p for x, p in zip(times[n], times["sdpa"])]) for n in variants}
            this_over_base = statistics.median([x / y for x, y in zip(times["this"], times["base"])])
            results["cases"][f"{shape}/{spec}"] = {"heads": h, "head_dim": d, "over_sdpa": ratio,
                                                   "this_over_base": this_over_base,
                                                   "sdpa_ms_per_call": 1000 * statistics.median(times["sdpa"]) / 12}
            print(f"{shape:6s} h={h} d={d} {spec:10s}", {n: round(x, 3) for n, x in ratio.items()},
                  f"this/base {this_over_base:.3f}", flush=True)
    if args.out:
        dump(args.out, results)


if __name__ == "__main__":
    main()
