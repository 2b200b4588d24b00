"""GPU check (issue 6): the Table-1 grid for a MonoBERT-large-shaped model in bf16 on DL19 (cap 20).

Run through ``benchmarks/gpu_check.sh`` (see there). Needs only torch, transformers, numpy and this
repository: the DL19 pool comes from the bundled ``demo`` collection (every judged DL19 passage, so
the cap-20 seed-0 pool is the paper's 2,563 pairs, fingerprint ff9c50817fb206d1), the tokenizer
from ``benchmarks/assets`` (bert-base-uncased vocabulary), the weights are random (MonoBERT-large
cannot be downloaded there), built from a BertConfig with its shape.

Steps: (1) exactness of the GPU paths against ``kernel="eager"`` in fp32 (the one-pass cut kernel
on CUDA runs PyTorch's memory-efficient kernel for the log-sum-exp; if it disagrees, the rest of the
run uses the explicit softmax and says so), and the bf16 cut kernel against the explicit softmax; (2) the timed grid in
bf16 (2,563 pairs x 31 configurations, one ``score_many`` call): pairs/s and achieved TFLOP/s,
FLOPs counted from the shapes; (3) plain and D<-D scoring of the pool in bf16 (same-run ratio);
(4) fp32 (TF32 off) vs bf16 agreement on a subset, and fp32 weights under bf16 autocast.
``--smoke`` runs every step on CPU with a tiny model and a few pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
TABLE1 = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS] + ["none"]
TOKENIZER = HERE / "assets" / "bert-base-uncased-tokenizer"


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape: dict, device, dtype, seed: int = 0):
    """A BertForSequenceClassification of the given shape, random weights (seeded), as a CrossEncoder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from matchsig import CrossEncoder

    cfg = BertConfig(vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                     num_attention_heads=shape["heads"], intermediate_size=4 * shape["hidden"],
                     max_position_embeddings=512, num_labels=2, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):
        model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # a head with a real spread of scores (HF's init gives near-constant logits)
        model.classifier.weight.normal_(0, 0.1)
    model = model.to(dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    return CrossEncoder(model, tok, device=device, name=f"random BERT {shape}")


def grid_flops(ce, lengths: np.ndarray, n_configs: int, batch_size: int) -> dict:
    """FLOPs of the grid from the shapes: per layer 24*T*d^2 (QKV, output, FFN with d_ff = 4d) + 4*T^2*d
    (QK^T and PV), per sequence; 'useful' counts real tokens, 'executed' the padded batches
    (the batches score_many forms: items sorted by length, ``batch_size`` per batch)."""
    cfg = ce.model.config
    d, nl, dff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size

    def per_seq(t):
        t = np.asarray(t, dtype=np.float64)
        return nl * (2 * t * (4 * d * d + 2 * d * dff) + 4 * t * t * d) + 2 * (d * d + 2 * d)  # + pooler, head

    items = np.tile(lengths, n_configs)
    useful = float(per_seq(items).sum())
    executed = 0.0
    for rows in ce.batches(items, batch_size):
        width = int(items[rows].max())
        executed += float(per_seq(np.full(len(rows), width)).sum())
    return {"useful": useful, "executed": executed, "padding_overhead": executed / useful - 1}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    diff = np.abs(ref - got)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "p99_abs_diff": float(np.quantile(diff, 0.99)),
        "score_std_fp32": float(ref.std()),
        "spearman_median_over_configs": float(np.median([spearman(ref[k], got[k]) for k in range(ref.shape[0])])),
        "spearman_min_over_configs": float(min(spearman(ref[k], got[k]) for k in range(ref.shape[0]))),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, a few pairs: tests the script itself")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--agree-pairs", type=int, default=256, help="pairs for fp32-vs-bf16 agreement (x 31 configs)")
    p.add_argument("--exact-pairs", type=int, default=64, help="pairs for the fp32 eager-vs-auto check")
    p.add_argument("--pairs", type=int, default=None, help="limit the grid to this many pairs (default: all 2,563)")
    p.add_argument("--out", default=None, help="JSON output (default $OUT/gpu_check.json when OUT is set)")
    args = p.parse_args(argv)

    from matchsig import Ablation
    from matchsig.engine import kernels as K
    from matchsig.data.datasets import load_collection
    from matchsig.data.sampling import sample_pool

    if args.smoke:
        device = torch.device("cpu")
        shape = {"layers": 2, "heads": 4, "hidden": 64}
        args.pairs, args.agree_pairs, args.exact_pairs = args.pairs or 6, min(args.agree_pairs, 4), min(args.exact_pairs, 4)
        args.batch_size = min(args.batch_size, 16)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        shape = {"layers": 24, "heads": 16, "hidden": 1024}
    res: dict = {"argv": sys.argv[1:], "torch": torch.__version__, "device": str(device), "shape": shape}
    import transformers

    res["transformers"] = transformers.__version__
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
        res["capability"] = list(torch.cuda.get_device_capability(0))
    out_path = args.out or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)

    def save():
        if out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            Path(out_path).write_text(json.dumps(res, indent=2) + "\n")

    t_start = time.perf_counter()
    pool = sample_pool(load_collection("demo"), per_grade=20, seed=0)
    qs, ds = pool.pairs()
    if args.pairs:
        qs, ds = qs[: args.pairs], ds[: args.pairs]
    res["pool"] = {"pairs": len(pool), "used": len(qs), "fingerprint": pool.fingerprint,
                   "expected_fingerprint": "ff9c50817fb206d1"}
    log(f"pool: {len(pool)} pairs (fingerprint {pool.fingerprint}), using {len(qs)}; device {device}")

    # fp32 reference model (TF32 off), and the same weights in bf16
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ce32 = build(shape, device, torch.float32)
    ce16 = build(shape, device, torch.bfloat16)
    enc = ce16.encode(qs, ds)
    lengths = enc.lengths()
    res["tokens"] = {"mean": float(lengths.mean()), "max": int(lengths.max()), "total": int(lengths.sum())}

    # (1) exactness in fp32: auto (SDPA in uncut layers) vs eager math, a few configurations
    n_ex = min(args.exact_pairs, len(qs))
    specs = ["none", "D<-D", "CLS<-*", "*<-*", Ablation.parse("Q<-D", heads=[0, 3]), "SEP1<-*"]
    e_auto = ce32.score_many(qs[:n_ex], ds[:n_ex], specs, batch_size=args.batch_size)
    e_eager = ce32.score_many(qs[:n_ex], ds[:n_ex], specs, batch_size=args.batch_size, kernel="eager")
    res["exact_fp32_auto_vs_eager_max_abs_diff"] = float(np.abs(e_auto - e_eager).max())
    res["cut_kernel_fp32"] = K.auto_cut_kernel(device, torch.float32)
    log(f"fp32 auto (cut kernel {res['cut_kernel_fp32']}) vs eager on {n_ex} pairs x {len(specs)} configs: "
        f"max |diff| {res['exact_fp32_auto_vs_eager_max_abs_diff']:.2e}")
    # the same in bf16: the one-pass cut kernel vs the explicit softmax (both bf16 weights)
    b_auto = ce16.score_many(qs[:n_ex], ds[:n_ex], specs, batch_size=args.batch_size)
    K.KERNELS.default = "math"
    b_math = ce16.score_many(qs[:n_ex], ds[:n_ex], specs, batch_size=args.batch_size)
    K.KERNELS.default = "auto"
    res["cut_kernel_bf16"] = K.auto_cut_kernel(device, torch.bfloat16)
    res["bf16_auto_vs_math_cut"] = agreement(b_math, b_auto)
    res["fused_kernel_broken"] = K.KERNELS.broken.get(K.PRIVATE_OP)
    if res["exact_fp32_auto_vs_eager_max_abs_diff"] > 1e-4:  # never time a wrong kernel
        K.KERNELS.default = "math"
        res["cut_kernel_forced_math"] = True
        log("fast cut kernel disagrees with eager in fp32: using the explicit softmax from here on")
    log(f"bf16 cut kernel {res['cut_kernel_bf16']} vs explicit softmax: max |diff| "
        f"{res['bf16_auto_vs_math_cut']['max_abs_diff']:.2e} (score std {res['bf16_auto_vs_math_cut']['score_std_fp32']:.3f})"
        f"; fused kernel broken: {K.KERNELS.broken.get(K.PRIVATE_OP)}")
    save()

    # (2) the timed Table-1 grid in bf16 (warm-up first on a few pairs: CUDA context, kernels)
    ce16.score_many(qs[:64], ds[:64], TABLE1, batch_size=args.batch_size, encoded=None)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    grid = ce16.score_many(qs, ds, TABLE1, batch_size=args.batch_size, encoded=enc)
    sync(device)
    dt = time.perf_counter() - t0
    flops = grid_flops(ce16, lengths, len(TABLE1), args.batch_size)
    res["grid_bf16"] = {
        "configs": len(TABLE1), "pairs": len(qs), "pair_configs": len(qs) * len(TABLE1), "seconds": dt,
        "pair_configs_per_s": len(qs) * len(TABLE1) / dt, "pairs_per_s_full_grid": len(qs) / dt,
        "tflops_useful": flops["useful"] / dt / 1e12, "tflops_executed": flops["executed"] / dt / 1e12,
        "flops": flops, "batch_size": args.batch_size, "tokenisation": "excluded (pre-encoded once)",
        "finite": bool(np.isfinite(grid).all()),
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    log(f"grid bf16: {len(qs)} pairs x {len(TABLE1)} configs in {dt:.1f}s = "
        f"{res['grid_bf16']['pair_configs_per_s']:.0f} pair-configs/s, "
        f"{res['grid_bf16']['tflops_useful']:.1f} TFLOP/s useful ({res['grid_bf16']['tflops_executed']:.1f} executed)")
    save()

    # (2b) the same grid end to end including tokenisation (what a user's call costs)
    t0 = time.perf_counter()
    grid2 = ce16.score_many(qs, ds, TABLE1, batch_size=args.batch_size)
    sync(device)
    res["grid_bf16"]["seconds_with_tokenisation"] = time.perf_counter() - t0
    res["grid_bf16"]["rerun_max_abs_diff"] = float(np.abs(grid2 - grid).max())
    log(f"grid bf16 again with tokenisation: {res['grid_bf16']['seconds_with_tokenisation']:.1f}s")
    save()

    # (3) plain vs ablated scoring of the pool, bf16, interleaved (D<-D with the default cut kernel
    # and with the explicit softmax)
    variants = {"plain": (None, K.KERNELS.default), "D<-D": ("D<-D", K.KERNELS.default), "D<-D math": ("D<-D", "math")}
    times = {name: [] for name in variants}
    for r in range(3):
        names = list(variants)
        for name in names[r % 3:] + names[: r % 3]:
            spec, cut = variants[name]
            keep, K.KERNELS.default = K.KERNELS.default, cut
            sync(device)
            t0 = time.perf_counter()
            ce16.score_many(qs, ds, [spec], batch_size=args.batch_size, encoded=enc)
            sync(device)
            times[name].append(time.perf_counter() - t0)
            K.KERNELS.default = keep
    res["plain_vs_ablated_bf16"] = {
        "seconds": times, "pairs_per_s_plain": len(qs) / float(np.median(times["plain"])),
        "ratio_median": float(np.median([a / b for a, b in zip(times["D<-D"], times["plain"])])),
        "ratio_median_math": float(np.median([a / b for a, b in zip(times["D<-D math"], times["plain"])]))}
    log(f"plain {np.median(times['plain']):.2f}s, D<-D {np.median(times['D<-D']):.2f}s "
        f"(ratio {res['plain_vs_ablated_bf16']['ratio_median']:.3f}; explicit softmax "
        f"{res['plain_vs_ablated_bf16']['ratio_median_math']:.3f})")
    save()

    # (4) agreement fp32 vs bf16 (weights in bf16) and fp32 weights + bf16 autocast, on a subset
    n_ag = min(args.agree_pairs, len(qs))
    sub = np.linspace(0, len(qs) - 1, n_ag).round().astype(int)
    qa, da = [qs[i] for i in sub], [ds[i] for i in sub]
    ref = ce32.score_many(qa, da, TABLE1, batch_size=args.batch_size)
    res["agreement_bf16_weights_vs_fp32"] = agreement(ref, grid[:, sub])
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        t0 = time.perf_counter()
        auto = ce32.score_many(qa, da, TABLE1, batch_size=args.batch_size)
        sync(device)
    res["agreement_bf16_autocast_vs_fp32"] = agreement(ref, auto)
    res["agreement_bf16_autocast_vs_fp32"]["seconds"] = time.perf_counter() - t0
    res["agreement_pairs"] = n_ag
    for key in ("agreement_bf16_weights_vs_fp32", "agreement_bf16_autocast_vs_fp32"):
        a = res[key]
        log(f"{key}: max |diff| {a['max_abs_diff']:.3e}, mean {a['mean_abs_diff']:.3e} (score std "
            f"{a['score_std_fp32']:.3f}), Spearman median {a['spearman_median_over_configs']:.4f} "
            f"min {a['spearman_min_over_configs']:.4f}")
    res["fused_cpu_kernel_available"] = K.fused_available()
    res["total_seconds"] = time.perf_counter() - t_start
    res["floor_table1_grid_under_180s"] = res["grid_bf16"]["seconds"] <= 180
    save()
    log(f"done in {res['total_seconds']:.0f}s" + (f"; wrote {out_path}" if out_path else ""))
    print(json.dumps({k: res[k] for k in ("grid_bf16", "plain_vs_ablated_bf16", "agreement_bf16_weights_vs_fp32",
                                          "agreement_bf16_autocast_vs_fp32", "exact_fp32_auto_vs_eager_max_abs_diff",
                                          "cut_kernel_fp32", "cut_kernel_bf16", "bf16_auto_vs_math_cut",
                                          "fused_kernel_broken")},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
