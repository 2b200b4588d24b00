"""matchsig benchmark suite (issue 6; floors of issue 2). Not part of the test suite.

    python benchmarks/run.py --out benchmarks/results.json --md benchmarks/RESULTS.md

Sections (``--only a,c`` to run some):

a. ablated (D<-D, all layers) vs plain scoring, fused and explicit-softmax cut kernels;
b. the Figure-1 layer-curve grid: prefix sharing (``score_layer_curve``) vs each (direction, l) alone;
c. the Table-1 grid (31 configurations) end to end vs a naive implementation written the way
   published code does it (``benchmarks/naive.py``), scores checked equal;
d. attention statistics vs plain scoring: time (in process) and peak RSS above the loaded model
   (fresh subprocesses, one per variant and round, peak RSS counter reset after loading);
e. a model with MonoBERT-large's shape (random weights): plain vs ablated.

Every ratio is measured in one process with the variants interleaved on the same pairs: each
length-sorted chunk of pairs is run by every variant back to back (rotating order), so background
load hits both sides of a ratio alike. A ratio is sum(variant) / sum(baseline) over a round; the
reported value is the median over rounds. Pairs are real TREC DL19 pairs: the paper's pool (up to
20 judged passages per grade, seed 0: 2,563 pairs), of which a seeded random subset is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import (dump, git_commit, large_shape_folder, load_pool, machine_info,  # noqa: E402
                    pool_pairs, resolve_model)

FIG1 = ["CLS<-CLS", "CLS<-Q", "CLS<-D", "Q<-CLS", "Q<-Q", "Q<-D", "D<-CLS", "D<-Q", "D<-D",
        "CLS<-Q,CLS<-D", "CLS<-*"]
PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
TABLE1 = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS] + ["none"]

FLOORS = {
    "a": "ablated / plain <= 1.10 (issue 6), <= 1.15 (issue 2)",
    "b": "shared / separate <= 0.6",
    "c": "naive / ours >= 10, max |diff| <= 1e-5",
    "d": "stats / plain time <= 1.5, extra peak RSS <= 1.3",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- helpers ------------------------------------------------------------------------------------


def subset_encoded(enc, rows):
    from matchsig.engine.model import Encoded

    return Encoded([enc.input_ids[i] for i in rows],
                   None if enc.token_type_ids is None else [enc.token_type_ids[i] for i in rows],
                   [enc.part_ids[i] for i in rows])


def length_chunks(lengths: np.ndarray, size: int) -> list[np.ndarray]:
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + size] for i in range(0, len(order), size)]


def chunked_rounds(variants: dict, chunks: list, rounds: int, baseline: str, tag: str) -> dict:
    """Per round, per chunk: every variant back to back (rotating order). Ratios of round sums."""
    names = list(variants)
    for name in names:  # warm-up on the smallest chunk
        variants[name](chunks[-1])
    per_round = {k: [] for k in names}
    per_chunk_ratio = {k: [] for k in names}
    step = 0
    for r in range(rounds):
        sums = dict.fromkeys(names, 0.0)
        for c in chunks:
            order = names[step % len(names):] + names[: step % len(names)]
            step += 1
            t = {}
            for name in order:
                t0 = time.perf_counter()
                variants[name](c)
                t[name] = time.perf_counter() - t0
            for name in names:
                sums[name] += t[name]
                per_chunk_ratio[name].append(t[name] / t[baseline])
        for name in names:
            per_round[name].append(sums[name])
        log(f"{tag} round {r + 1}/{rounds}: " + ", ".join(
            f"{k}={sums[k]:.1f}s ({sums[k] / sums[baseline]:.3f}x)" for k in names))
    return {
        "rounds": rounds,
        "chunks": len(chunks),
        "round_seconds": per_round,
        "ratio_median_of_rounds": {k: statistics.median(a / b for a, b in zip(per_round[k], per_round[baseline]))
                                   for k in names},
        "ratio_pooled": {k: sum(per_round[k]) / sum(per_round[baseline]) for k in names},
        "ratio_median_of_chunks": {k: statistics.median(v) for k, v in per_chunk_ratio.items()},
    }


# ---- sections -----------------------------------------------------------------------------------


def section_a(ce, qs, ds, args) -> dict:
    from matchsig import Ablation
    from matchsig.engine import kernels as K

    ab = Ablation.parse("D<-D")
    enc = ce.encode(qs, ds)
    chunks = length_chunks(enc.lengths(), args.batch_size)
    sub = {i: subset_encoded(enc, c) for i, c in enumerate(chunks)}
    key = {id(c): i for i, c in enumerate(chunks)}

    def run(c, ablation, cut_kernel, kernel="auto"):
        with K.KERNELS.use(cut_kernel):  # the kernel order of kernel="auto"
            e = sub[key[id(c)]]
            return ce.score_many([], [], [ablation], batch_size=args.batch_size, kernel=kernel, encoded=e)

    variants = {
        "plain": lambda c: run(c, None, "auto"),
        "ablated": lambda c: run(c, ab, "auto"),
        "ablated_two_pass": lambda c: run(c, ab, "fused"),
        "ablated_math": lambda c: run(c, ab, "math"),
    }
    # exactness of the fast kernels against the reference on all pairs of this section
    ref = np.concatenate([run(c, ab, "math", kernel="eager")[0] for c in chunks])
    fast = np.concatenate([run(c, ab, "auto")[0] for c in chunks])
    two_pass = np.concatenate([run(c, ab, "fused")[0] for c in chunks])
    res = chunked_rounds(variants, chunks, args.rounds, "plain", "a")
    res.update(pairs=len(qs), batch_size=args.batch_size, ablation="D<-D (all layers, all heads)",
               cut_kernel_auto=K.auto_cut_kernel("cpu", torch.float32),
               auto_vs_eager_max_abs_diff=float(np.abs(ref - fast).max()),
               two_pass_vs_eager_max_abs_diff=float(np.abs(ref - two_pass).max()),
               fused_kernel_available=K.fused_available(),
               mean_tokens=float(enc.lengths().mean()),
               note="tokenisation excluded from both sides (pre-encoded); score_many per length-sorted chunk")
    return res


def section_b(ce, qs, ds, args) -> dict:
    from matchsig import Ablation

    enc = ce.encode(qs, ds)
    nl = ce.num_layers
    per_dir = {}
    rounds_shared, rounds_sep = [], []
    maxdiff = 0.0
    for r in range(args.curve_rounds):
        rs = rsep = 0.0
        for k, spec in enumerate(FIG1):
            def shared():
                return ce.score_layer_curve([], [], spec, batch_size=args.batch_size, encoded=enc)

            def separate():
                return np.stack([ce.score_many([], [], [Ablation.parse(spec, up_to_layer=l)],
                                               batch_size=args.batch_size, encoded=enc)[0] for l in range(nl)])

            order = [("shared", shared), ("separate", separate)]
            if (k + r) % 2:
                order.reverse()
            t = {}
            out = {}
            for name, fn in order:
                t0 = time.perf_counter()
                out[name] = fn()
                t[name] = time.perf_counter() - t0
            maxdiff = max(maxdiff, float(np.abs(out["shared"] - out["separate"]).max()))
            per_dir.setdefault(spec, []).append(t["shared"] / t["separate"])
            rs += t["shared"]
            rsep += t["separate"]
        rounds_shared.append(rs)
        rounds_sep.append(rsep)
        log(f"b round {r + 1}/{args.curve_rounds}: shared={rs:.1f}s separate={rsep:.1f}s ratio={rs / rsep:.3f}")
    return {
        "pairs": len(qs), "layers": nl, "directions": FIG1, "rounds": args.curve_rounds,
        "round_seconds": {"shared": rounds_shared, "separate": rounds_sep},
        "ratio_median_of_rounds": statistics.median(a / b for a, b in zip(rounds_shared, rounds_sep)),
        "ratio_pooled": sum(rounds_shared) / sum(rounds_sep),
        "ratio_per_direction_median": {k: statistics.median(v) for k, v in per_dir.items()},
        "max_abs_diff_shared_vs_separate": maxdiff,
        "ideal_ratio_from_layer_counts": (nl + nl * (nl - 1) / 2) / (nl * nl),
        "note": "separate = score_many with Ablation.parse(spec, up_to_layer=l) for each l; tokenisation excluded",
    }


def section_c(ce, model_path, qs, ds, args) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from naive import NaiveAblation

    if model_path == "embedded":  # a separate copy of the same weights, untouched by matchsig
        from matchsig.engine import embedded

        hf_model, hf_tok = embedded.load_model_and_tokenizer()
    else:
        hf_model, hf_tok = AutoModelForSequenceClassification.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)
    naive = NaiveAblation(hf_model, hf_tok)
    n = len(qs)
    chunks = [np.arange(i, min(n, i + args.naive_chunk)) for i in range(0, n, args.naive_chunk)]
    ours_scores = np.zeros((len(TABLE1), n))
    naive_scores = np.zeros((len(TABLE1), n))

    def ours(c):
        # end to end through the public API: tokenisation included, the 31 configurations packed
        ours_scores[:, c] = ce.score_many([qs[i] for i in c], [ds[i] for i in c], TABLE1,
                                          batch_size=args.grid_batch_size or args.batch_size)

    def naive_run(c):
        q, d = [qs[i] for i in c], [ds[i] for i in c]
        for k, spec in enumerate(TABLE1):
            naive_scores[k, c] = naive.score(q, d, spec)

    t = {"ours": [], "naive": []}
    ours_runs = []
    ours(chunks[-1])  # warm-up
    for j, c in enumerate(chunks):
        # ours is ~10-30x shorter, so a load spike can hit it alone: run it before and after the naive
        # side (args.ours_repeats times in all) and take the mean, i.e. the same load window on average
        runs = []
        before = (args.ours_repeats + 1) // 2
        for _ in range(before):
            t0 = time.perf_counter()
            ours(c)
            runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive_run(c)
        t["naive"].append(time.perf_counter() - t0)
        for _ in range(args.ours_repeats - before):
            t0 = time.perf_counter()
            ours(c)
            runs.append(time.perf_counter() - t0)
        ours_runs.append(runs)
        t["ours"].append(statistics.fmean(runs))
        log(f"c chunk {j + 1}/{len(chunks)}: ours={t['ours'][-1]:.1f}s naive={t['naive'][-1]:.1f}s "
            f"speed-up={t['naive'][-1] / t['ours'][-1]:.2f}x")
    diff = np.abs(ours_scores - naive_scores)
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    return {
        "pairs": n, "configurations": len(TABLE1), "chunk_pairs": args.naive_chunk,
        "ours_batch_size": args.grid_batch_size or args.batch_size,
        "seconds": {k: sum(v) for k, v in t.items()},
        "chunk_seconds": t,
        "ours_runs_per_chunk": ours_runs,
        "speedup_total": sum(t["naive"]) / sum(t["ours"]),
        "speedup_median_of_chunks": statistics.median(a / b for a, b in zip(t["naive"], t["ours"])),
        "ours_pair_configs_per_s": n * len(TABLE1) / sum(t["ours"]),
        "naive_pair_configs_per_s": n * len(TABLE1) / sum(t["naive"]),
        "max_abs_diff": float(diff.max()),
        "worst": {"config": TABLE1[worst[0]], "pair": int(worst[1])},
        "naive": "pad to 512, eager attention, post-softmax hook multiplying by a keep mask, batch 8, "
                 "one configuration at a time, re-tokenised per configuration, torch.no_grad",
        "ours": "ce.score_many(q, d, 31 configurations, batch_size) per chunk: tokenisation, dynamic padding, "
                "length-sorted batches mixing configurations, SDPA where uncut, one-pass cut kernel",
    }


def _mem_child(args) -> None:
    """Subprocess: load, warm up, reset the peak-RSS counter, run one variant, print JSON."""
    torch.set_num_threads(args.threads)
    from matchsig import CrossEncoder

    ce = CrossEncoder.load(args.model_path, device="cpu")
    pool = load_pool(args.data)
    qs, ds, _ = pool_pairs(pool, args.pairs, seed=args.seed)
    ce.score(qs[:2], ds[:2])
    ce.attention_stats(qs[:2], ds[:2])
    import gc

    gc.collect()
    rss = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base_hwm = _status_kb("VmHWM")
    t0 = time.perf_counter()
    if args.mem_child == "plain":
        ce.score(qs, ds, batch_size=args.batch_size)
    else:
        ce.attention_stats(qs, ds, batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({"variant": args.mem_child, "rss_after_load_kb": rss, "hwm_after_reset_kb": base_hwm,
                      "peak_kb": peak, "extra_peak_mb": (peak - rss) / 1024, "seconds": dt}))


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def section_d(ce, qs, ds, args) -> dict:
    enc = ce.encode(qs, ds)
    chunks = length_chunks(enc.lengths(), args.batch_size)
    variants = {
        "plain": lambda c: ce.score([qs[i] for i in c], [ds[i] for i in c], batch_size=args.batch_size),
        "stats": lambda c: ce.attention_stats([qs[i] for i in c], [ds[i] for i in c], batch_size=args.batch_size),
    }
    res = {"time": chunked_rounds(variants, chunks, args.rounds, "plain", "d")}
    res["time"]["note"] = "public API per length-sorted chunk, tokenisation included on both sides"
    mem = {"plain": [], "stats": []}
    for r in range(args.mem_rounds):
        for variant in (("plain", "stats") if r % 2 == 0 else ("stats", "plain")):
            cmd = [sys.executable, __file__, "--mem-child", variant, "--model-path", args.model_path,
                   "--pairs", str(args.pairs), "--seed", str(args.seed), "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)] + (["--data", args.data] if args.data else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})
            if out.returncode != 0:
                raise RuntimeError(f"memory child failed: {out.stderr[-2000:]}")
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            mem[variant].append(rec)
            log(f"d memory {variant}: +{rec['extra_peak_mb']:.0f} MB above the loaded model")
    med = {k: statistics.median(x["extra_peak_mb"] for x in v) for k, v in mem.items()}
    res["memory"] = {
        "method": "fresh subprocess per variant and round: load model, warm up on 2 pairs, reset the peak-RSS "
                  "counter (/proc/self/clear_refs = 5), score all pairs; extra = VmHWM - VmRSS after load",
        "runs": mem, "extra_peak_mb_median": med, "ratio": med["stats"] / med["plain"],
        "rss_after_load_mb": statistics.median(x["rss_after_load_kb"] for x in mem["plain"]) / 1024,
        "ratio_total_peak_rss": statistics.median(x["peak_kb"] for x in mem["stats"])
        / statistics.median(x["peak_kb"] for x in mem["plain"]),
    }
    res["pairs"] = len(qs)
    return res


def section_e(qs, ds, args) -> dict:
    from matchsig import Ablation, CrossEncoder
    from matchsig.engine import kernels as K

    folder = large_shape_folder(args.large_folder)
    ce = CrossEncoder.load(folder, device="cpu")
    enc = ce.encode(qs, ds)
    chunks = length_chunks(enc.lengths(), args.large_chunk)
    sub = {id(c): subset_encoded(enc, c) for c in chunks}
    ab = Ablation.parse("D<-D")

    def run(c, ablation, cut):
        with K.KERNELS.use(cut):
            return ce.score_many([], [], [ablation], batch_size=args.large_chunk, encoded=sub[id(c)])

    variants = {"plain": lambda c: run(c, None, "auto"), "ablated": lambda c: run(c, ab, "auto"),
                "ablated_two_pass": lambda c: run(c, ab, "fused"), "ablated_math": lambda c: run(c, ab, "math")}
    ref = np.concatenate([ce.score_many([], [], [ab], kernel="eager", encoded=sub[id(c)])[0] for c in chunks])
    got = np.concatenate([run(c, ab, "auto")[0] for c in chunks])
    res = chunked_rounds(variants, chunks, args.large_rounds, "plain", "e")
    tokens = int(enc.lengths().sum())
    res.update(shape="BERT 24 layers, 16 heads, hidden 1024, intermediate 4096, vocab 30522 (random weights)",
               pairs=len(qs), chunk=args.large_chunk, auto_vs_eager_max_abs_diff=float(np.abs(ref - got).max()),
               plain_pairs_per_s=len(qs) * args.large_rounds / sum(res["round_seconds"]["plain"]),
               tokens=tokens)
    return res


# ---- report -------------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# matchsig benchmarks", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch threads {res['args']['threads']}, "
             f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}; "
             f"load average at start {m['loadavg_at_start']} (shared machine: other jobs may run in the "
             "background, so absolute times are noisy; ratios are same-run, interleaved chunk by chunk).", "",
             f"Model: {res['model']}. Data: {res['data']}. Commit: {res['commit']}.", ""]
    s = res["sections"]
    lines += ["| check | measured | floor |", "|---|---|---|"]
    if "a" in s:
        a = s["a"]
        r = a["ratio_median_of_rounds"]
        lines.append(f"| a. D<-D ablated / plain ({a['pairs']} pairs) | default cut kernel "
                     f"({a['cut_kernel_auto']}) **{r['ablated']:.3f}x**; two-pass {r['ablated_two_pass']:.3f}x, "
                     f"explicit softmax {r['ablated_math']:.3f}x (median of {a['rounds']} rounds) | "
                     "<= 1.10x (issue 6), <= 1.15x (issue 2) |")
    if "b" in s:
        b = s["b"]
        lines.append(f"| b. Figure-1 layer curves, shared / separate ({len(b['directions'])} directions x "
                     f"{b['layers']} layers, {b['pairs']} pairs) | **{b['ratio_median_of_rounds']:.3f}x** "
                     f"(ideal from layer counts {b['ideal_ratio_from_layer_counts']:.3f}) | <= 0.6x |")
    if "c" in s:
        c = s["c"]
        lines.append(f"| c. Table-1 grid ({c['configurations']} configs, {c['pairs']} pairs), naive / ours | "
                     f"**{c['speedup_total']:.1f}x faster**, max abs diff {c['max_abs_diff']:.1e} | >= 10x, <= 1e-5 |")
    if "d" in s:
        d = s["d"]
        lines.append(f"| d. attention statistics / plain ({d['pairs']} pairs) | time "
                     f"**{d['time']['ratio_median_of_rounds']['stats']:.3f}x**; extra peak RSS "
                     f"+{d['memory']['extra_peak_mb_median']['stats']:.0f} MB vs +"
                     f"{d['memory']['extra_peak_mb_median']['plain']:.0f} MB = **{d['memory']['ratio']:.2f}x** "
                     f"(total peak RSS {d['memory']['ratio_total_peak_rss']:.2f}x) | <= 1.5x time, <= 1.3x memory |")
    if "e" in s:
        e = s["e"]
        r = e["ratio_median_of_rounds"]
        lines.append(f"| e. MonoBERT-large shape, D<-D ablated / plain ({e['pairs']} pairs) | default "
                     f"**{r['ablated']:.3f}x**; two-pass {r['ablated_two_pass']:.3f}x, explicit softmax "
                     f"{r['ablated_math']:.3f}x; plain {e['plain_pairs_per_s']:.2f} pairs/s | – |")
    lines += ["", "Details (all timings, per-round ratios, exactness checks) are in the JSON file.", ""]
    if "c" in s:
        c = s["c"]
        lines += [f"c: ours {c['ours_pair_configs_per_s']:.1f} pair-configurations/s, naive "
                  f"{c['naive_pair_configs_per_s']:.2f}/s. Naive = {c['naive']}. Ours = {c['ours']}.", ""]
    if "a" in s:
        lines += [f"a: vs the eager reference on these pairs, max abs diff: default cut kernel "
                  f"{s['a']['auto_vs_eager_max_abs_diff']:.1e}, two-pass "
                  f"{s['a']['two_pass_vs_eager_max_abs_diff']:.1e}.", ""]
    if "d" in s:
        lines += [f"d memory method: {s['d']['memory']['method']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto", help="auto (embedded if present, else MiniLM + seeded head), "
                   "embedded, minilm, or a model folder")
    p.add_argument("--data", default=None, help="DL19 folder (default ../shared/data/trec-dl-2019, else 'demo')")
    p.add_argument("--pairs", type=int, default=512, help="pairs for sections a and d")
    p.add_argument("--curve-pairs", type=int, default=32, help="pairs for section b")
    p.add_argument("--naive-pairs", type=int, default=16, help="pairs for section c (both sides, same pairs)")
    p.add_argument("--naive-chunk", type=int, default=8)
    p.add_argument("--ours-repeats", type=int, default=3, help="section c: runs of our side per chunk (mean)")
    p.add_argument("--grid-batch-size", type=int, default=128,
                   help="section c: our batch size (rows of mixed configurations; the naive side uses 8)")
    p.add_argument("--large-pairs", type=int, default=16)
    p.add_argument("--large-chunk", type=int, default=8)
    p.add_argument("--large-rounds", type=int, default=2)
    p.add_argument("--large-folder", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--curve-rounds", type=int, default=1)
    p.add_argument("--mem-rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="a,b,c,d,e")
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--md", default=None, help="also write a markdown summary here")
    p.add_argument("--keep", action="store_true", help="keep sections of an existing --out file that are not rerun")
    p.add_argument("--mem-child", choices=["plain", "stats"], help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.mem_child:
        _mem_child(args)
        return 0
    torch.set_num_threads(args.threads)
    from matchsig import CrossEncoder

    args.model_path, model_desc = resolve_model(args.model)
    ce = CrossEncoder.load(args.model_path, device="cpu")
    pool = load_pool(args.data)
    only = set(args.only.split(","))
    res = {"command": "python " + " ".join([os.path.relpath(__file__, Path.cwd())] + (argv or sys.argv[1:])),
           "machine": machine_info(), "commit": git_commit(), "model": model_desc,
           "data": f"{pool.dataset} pool, up to {pool.per_grade} judged passages per grade, seed {pool.seed}: "
                   f"{len(pool)} pairs, fingerprint {pool.fingerprint}",
           "args": vars(args), "floors": FLOORS, "sections": {}}
    if args.keep and Path(args.out).is_file():  # keep the sections of an earlier run not rerun now
        old = json.loads(Path(args.out).read_text())
        res["sections"] = {k: v for k, v in old.get("sections", {}).items() if k not in only}
        res["earlier_commands"] = old.get("earlier_commands", []) + [old.get("command")]
    started = time.time()

    def save():
        res["elapsed_s"] = time.time() - started
        dump(args.out, res)
        if args.md:
            Path(args.md).write_text(markdown(res))

    steps = [
        ("a", lambda: section_a(ce, *pool_pairs(pool, args.pairs, seed=args.seed)[:2], args)),
        ("b", lambda: section_b(ce, *pool_pairs(pool, args.curve_pairs, seed=args.seed + 1)[:2], args)),
        ("c", lambda: section_c(ce, args.model_path, *pool_pairs(pool, args.naive_pairs, seed=args.seed + 2)[:2], args)),
        ("d", lambda: section_d(ce, *pool_pairs(pool, args.pairs, seed=args.seed)[:2], args)),
        ("e", lambda: section_e(*pool_pairs(pool, args.large_pairs, seed=args.seed + 3)[:2], args)),
    ]
    for name, fn in steps:
        if name in only:
            log(f"section {name} ...")
            t0 = time.time()
            res["sections"][name] = fn()
            res["sections"][name]["section_seconds"] = time.time() - t0
            res["sections"][name]["loadavg_after"] = os.getloadavg()
            save()
    save()
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
