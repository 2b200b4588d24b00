"""What a wider head costs the fused CPU attention pass: the measurement behind ``correction.WIDEN_MAX_WIDTH``.

The cut kernel may widen a layer's fused pass (q and k zero-padded, a second value block) so that
document rows read their kept columns directly. That pays only while the flash op costs about the
same at the wider head. This times the op (plus, for the wider widths, building the padded inputs)
on random tensors of the tiny benchmark shape (16 pairs x 4 heads x 151 tokens, head dim 8) and of a
realistic one (12 heads, head dim 64), interleaved per round, as ratios to F.scaled_dot_product_attention
at the model's own width (what plain scoring runs).

    python benchmarks/widened_pass.py --rounds 15 --out benchmarks/widened-pass.json
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import dump, git_commit, interleave, machine_info

SHAPES = {"tiny": (16, 4, 151, 8), "realistic": (16, 12, 151, 64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=10, help="calls per timed variant and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    results = {"machine": machine_info(), "commit": git_commit(), "rounds": args.rounds, "shapes": {}}
    for name, (b, h, t, d) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, t, h, d, generator=g).transpose(1, 2) for _ in range(3))  # Hugging Face's layout
        bias = torch.zeros(b, 1, 1, t)

        def widened(c: int):
            def run():
                for _ in range(args.reps):
                    op(F.pad(q, (0, (c - 1) * d)), F.pad(k, (0, (c - 1) * d)), v.repeat(1, 1, 1, c),
                       attn_mask=bias, scale=d ** -0.5)
            return run

        def plain():
            for _ in range(args.reps):
                F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=d ** -0.5)

        variants = {"sdpa": plain, "flash x1": widened(1), "flash x2 + padding": widened(2),
                    "flash x3 + padding": widened(3)}
        timing = interleave(variants, args.rounds, baseline="sdpa")
        results["shapes"][name] = {"shape": [b, h, t, d], "median_ms": {k: 1000 * s / args.reps
                                                                         for k, s in timing["median_s"].items()},
                                   "ratio_median": timing["ratio_median"]}
        print(name, {k: round(r, 3) for k, r in timing["ratio_median"].items()}, flush=True)
    if args.out:
        dump(args.out, results)


if __name__ == "__main__":
    main()
