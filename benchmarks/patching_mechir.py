"""MechIR 0.2.0's head patching on given diagnostic pairs; run by benchmarks/patching.py in MechIR's own venv.

    /work/venv-mechir/bin/python benchmarks/patching_mechir.py --model HF_FOLDER --pairs pairs.tsv --out mechir.npz

MechIR needs transformers 4.x and TransformerLens 2.x, so it cannot share matchsig's environment: this
script imports nothing from matchsig. It reads the (query, baseline, perturbed) triples that
matchsig.analysis.diagnostics wrote (already position-aligned, so MechIR's collator is told not to pad them:
``perturb_type="inject"``), runs ``Cat.patch(..., patch_type="head_all")`` (every layer x head,
all positions) batch by batch, and records each pair's patched score through the patching-metric
hook that MechIR calls once per (layer, head) in layer-major order. Scores are MechIR's own:
``Cat(softmax_output=True)`` returns ``log_softmax(logits)[:, 0]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--work", default=None, help="folder keeping each finished batch, so a killed run resumes")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mechir import Cat
    from mechir.data import CatDataCollator

    csv.field_size_limit(sys.maxsize)
    with open(args.pairs, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[: args.limit] if args.limit else rows
    triples = [(r["query"], r["baseline"], r["perturbed"]) for r in rows]

    t0 = time.perf_counter()
    model = Cat(args.model, softmax_output=True)
    load_s = time.perf_counter() - t0
    n_layers, n_heads = model._model.cfg.n_layers, model._model.cfg.n_heads
    collate = CatDataCollator(model.tokenizer, pre_perturbed=True, perturb_type="inject")

    n = len(triples)
    baseline, perturbed = np.zeros(n), np.zeros(n)
    patched = np.zeros((n, n_layers, n_heads))
    widths, seconds, loads = [], [], []
    work = Path(args.work) if args.work else None
    if work:
        work.mkdir(parents=True, exist_ok=True)
    for lo in range(0, n, args.batch_size):
        hi = min(n, lo + args.batch_size)
        done = work / f"batch-{lo:05d}-{hi:05d}-b{args.batch_size}-t{args.threads}.npz" if work else None
        if done is not None and done.exists():
            part = dict(np.load(done))
            print(f"mechir: {hi}/{n} pairs, resumed from {done.name}", file=sys.stderr, flush=True)
        else:
            t = time.perf_counter()
            part = _batch(model, collate, triples[lo:hi], n_layers, n_heads)
            part["seconds"] = np.array(time.perf_counter() - t)
            part["loadavg"] = np.array(os.getloadavg())
            if done is not None:
                np.savez(done, **part)
            print(f"mechir: {hi}/{n} pairs, {float(part['seconds']):.1f} s for this batch (load "
                  f"{float(part['loadavg'][0]):.1f})", file=sys.stderr, flush=True)
        patched[lo:hi], baseline[lo:hi], perturbed[lo:hi] = part["patched"], part["baseline"], part["perturbed"]
        widths.append(int(part["width"]))
        seconds.append(float(part["seconds"]))
        loads.append(float(part["loadavg"][0]))
    grid_s = float(sum(seconds))  # the grid's own time, summed over batches (resumed ones keep their timing)
    np.savez(args.out, baseline=baseline, perturbed=perturbed, patched=patched, grid_s=grid_s, load_s=load_s,
             width=np.array(widths), batch_size=args.batch_size, threads=args.threads,
             loadavg=np.array([max(loads), min(loads), float(np.mean(loads))]), batch_seconds=np.array(seconds))


def _batch(model, collate, triples, n_layers, n_heads) -> dict:
    """One batch of MechIR's head_all patching: each pair's patched score per (layer, head), and its two scores."""
    import torch
    from mechir.util import linear_rank_function

    batch = collate(triples)
    seen: list[np.ndarray] = []

    def record(score, scores, scores_p):
        seen.append(score.detach().cpu().double().numpy().copy())
        return linear_rank_function(score, scores, scores_p)

    model.patch(batch["sequences"], batch["perturbed_sequences"], patch_type="head_all", patching_metric=record)
    with torch.no_grad():
        base = model.score(batch["sequences"])[0].double().numpy()
        pert = model.score(batch["perturbed_sequences"])[0].double().numpy()
    return {"patched": np.stack(seen, 1).reshape(len(triples), n_layers, n_heads), "baseline": base,
            "perturbed": pert, "width": np.array(int(batch["sequences"]["input_ids"].shape[1]))}


if __name__ == "__main__":
    main()
