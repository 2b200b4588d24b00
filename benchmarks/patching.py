"""Activation-patching speed and peer check: a full layer x head grid on TFC1 pairs, matchsig vs MechIR 0.2.0.

    python benchmarks/patching.py --pairs 100 --mechir-python /work/venv-mechir/bin/python \\
        --out benchmarks/patching.json

Pairs: ``matchsig.analysis.diagnostics.make_pairs(embedded, DL19 pool (cap 3, seed 0), "tfc1", n=pairs/2)``,
append and prepend per passage. Model: the embedded cross-encoder, also saved as a plain Hugging
Face folder for MechIR. Timed, on the same pairs and machine:

* matchsig ``ce.patch(site="z")`` (every layer x head, all positions; includes tokenisation), run
  before and after MechIR (the machine is shared: both runs are reported with the load average);
* plain scoring of the baseline and perturbed inputs (``ce.score``), so the grid is also a ratio
  to inference in the same process;
* MechIR ``Cat.patch(patch_type="head_all")`` in its own venv (``benchmarks/patching_mechir.py``),
  excluding its model load.

Agreement: MechIR's score is ``log_softmax(logits)[:, 0]`` (label 0 of a MonoBERT-style head =
not relevant); for 2 labels it is ``log(1 - exp(s))`` of matchsig's score ``s`` (label 1), so
patched scores are compared on MechIR's scale, and effects both on MechIR's scale (same metric:
must agree) and as each tool reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _effect(patched, base, pert):
    delta = (pert - base)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (patched - base[:, None, None]) / delta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100, help="number of TFC1 pairs (half appended, half prepended)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mechir-python", default=None, help="python of a venv with mechir==0.2.0 (skipped if absent)")
    ap.add_argument("--mechir-batch-size", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64, help="matchsig rows (patches) per forward")
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", default=None, help="folder where MechIR keeps finished batches (per pairs fingerprint), "
                    "so a killed run resumes; default: a temporary folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from common import tfc1_pairs

    ce, pairs = tfc1_pairs(args.pairs)
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    lengths = ce.encode(q, b).lengths()
    report: dict = {"pairs": pairs.describe(), "tokens_mean": float(lengths.mean()), "tokens_max": int(lengths.max()),
                    "threads": args.threads, "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__}
    print(f"{len(pairs)} TFC1 pairs ({pairs.fingerprint}), {lengths.mean():.0f} tokens on average, "
          f"{ce.num_layers} x {ce.num_heads} heads, {args.threads} threads", flush=True)

    def grid():
        t = time.perf_counter()
        res = ce.patch(q, b, p, site="z", batch_size=args.batch_size)
        return res, time.perf_counter() - t

    def plain():
        t = time.perf_counter()
        ce.score(q + q, b + p)
        return time.perf_counter() - t

    plain()  # warm-up
    load0 = os.getloadavg()
    res, ours_1 = grid()
    plain_1 = plain()
    report["ours"] = {"grid_s": ours_1, "plain_s": plain_1, "loadavg": load0}
    print(f"matchsig grid: {ours_1:.1f} s; plain scoring of the {2 * len(q)} inputs {plain_1:.2f} s "
          f"(grid = {ours_1 / plain_1:.1f}x plain; load {load0[0]:.1f})", flush=True)

    if args.mechir_python and Path(args.mechir_python).exists():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work) / pairs.fingerprint if args.work else Path(tmp) / "batches"
            folder = ce.save(Path(tmp) / "embedded-hf")
            tsv = pairs.write_tsv(Path(tmp) / "pairs.tsv")
            out = Path(tmp) / "mechir.npz"
            cmd = [args.mechir_python, str(REPO / "benchmarks" / "patching_mechir.py"), "--model", str(folder),
                   "--pairs", str(tsv), "--out", str(out), "--threads", str(args.threads),
                   "--batch-size", str(args.mechir_batch_size), "--work", str(work)]
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": ""})
            m = dict(np.load(out))
        load1 = os.getloadavg()
        res2, ours_2 = grid()
        plain_2 = plain()
        report["ours"].update({"grid_s_after": ours_2, "plain_s_after": plain_2, "loadavg_after": load1})
        print(f"MechIR grid: {float(m['grid_s']):.1f} s (batch {args.mechir_batch_size}, padded to "
              f"{sorted(set(m['width'].tolist()))} tokens; load up to {float(m['loadavg'][0]):.1f}); "
              f"matchsig again: {ours_2:.1f} s", flush=True)

        s_b, s_p, s_x = res.baseline, res.perturbed, res.patched[..., 0]
        lp0 = lambda s: np.log1p(-np.exp(s))  # noqa: E731  MechIR's scale: log P(label 0)
        ours_m = _effect(lp0(s_x), lp0(s_b), lp0(s_p))
        theirs = _effect(m["patched"], m["baseline"], m["perturbed"])
        ours_own = res.effect[..., 0]
        moved = np.abs(s_p - s_b) >= 0.01  # effects of pairs the perturbation barely moves are noise ratios
        agree = {
            "baseline_max_abs_diff": float(np.abs(lp0(s_b) - m["baseline"]).max()),
            "perturbed_max_abs_diff": float(np.abs(lp0(s_p) - m["perturbed"]).max()),
            "patched_max_abs_diff": float(np.abs(lp0(s_x) - m["patched"]).max()),
            "pairs_moved": int(moved.sum()),
            "effect_same_metric_max_abs_diff_moved": float(np.abs(ours_m - theirs)[moved].max()),
            "mean_effect_same_metric_max_abs_diff": float(np.abs(np.nanmean(ours_m[moved], 0)
                                                                - np.nanmean(theirs[moved], 0)).max()),
            "mean_effect_own_metric_vs_mechir_max_abs_diff": float(np.abs(np.nanmean(ours_own[moved], 0)
                                                                         - np.nanmean(theirs[moved], 0)).max()),
            "mean_effect_own_metric_vs_mechir_corr": float(np.corrcoef(np.nanmean(ours_own[moved], 0).ravel(),
                                                                       np.nanmean(theirs[moved], 0).ravel())[0, 1]),
        }
        report["mechir"] = {"grid_s": float(m["grid_s"]), "load_s": float(m["load_s"]), "widths": m["width"].tolist(),
                            "batch_size": args.mechir_batch_size, "batch_seconds": m["batch_seconds"].tolist(),
                            "loadavg_max_min_mean": m["loadavg"].tolist()}
        report["agreement"] = agree
        best_ours = min(ours_1, ours_2)
        report["speedup"] = {"mechir_over_ours_first": float(m["grid_s"]) / ours_1,
                             "mechir_over_ours_after": float(m["grid_s"]) / ours_2,
                             "mechir_over_ours_best": float(m["grid_s"]) / best_ours}
        print(json.dumps({"agreement": agree, "speedup": report["speedup"]}, indent=1))
        top = np.dstack(np.unravel_index(np.argsort(-np.nanmean(ours_own[moved], 0).ravel())[:5], (6, 12)))[0]
        report["top_heads_own_metric"] = [[int(a), int(h), float(np.nanmean(ours_own[moved], 0)[a, h])] for a, h in top]
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
