"""Reduced precision vs fp32 on CPU (issue 6, "bf16 with a stated tolerance against fp32").

    python benchmarks/precision.py --queries 43 --per-grade 5 --out benchmarks/precision.json

Scores the DL19 pool (every judged query, up to ``--per-grade`` passages per grade, seed 0) under
the 31 Table-1 configurations with the same model three ways: fp32 weights (the reference), bf16
weights, and fp32 weights under ``torch.autocast(bfloat16)``. Reports, per variant: the largest and
99th-percentile score difference against fp32 (and the spread of the fp32 scores, for scale), the
per-configuration Spearman correlation of the scores, and the largest difference in mean nDCG@10
and in per-query nDCG@10 over the configurations; plus the time of each variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from matchsig import CrossEncoder  # noqa: E402
from matchsig.data.datasets import load_collection  # noqa: E402
from matchsig.data.evaluation import evaluate_scores  # noqa: E402
from matchsig.data.sampling import sample_pool  # noqa: E402

PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]
TABLE1 = [f"{x}<-{y}" for x in PARTS for y in PARTS] + [f"{x}<-*" for x in PARTS] + ["none"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default="demo", help="collection (default: the bundled DL19 copy)")
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--per-grade", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    collection = load_collection(args.data)
    qids = collection.judged_qids()[: args.queries]
    pool = sample_pool(collection, per_grade=args.per_grade, seed=0, qids=qids)
    qs, ds = pool.pairs()
    res: dict = {"model": args.model, "pairs": len(qs), "queries": len(qids), "configs": len(TABLE1),
                 "pool_fingerprint": pool.fingerprint, "torch": torch.__version__,
                 "threads": torch.get_num_threads()}
    scores, seconds = {}, {}
    for name, dtype, autocast in [("fp32", None, False), ("bf16_weights", "bf16", False),
                                  ("bf16_autocast", None, True)]:
        ce = CrossEncoder.load(args.model, device="cpu", dtype=dtype)
        enc = ce.encode(qs, ds)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            scores[name] = ce.score_many([], [], TABLE1, batch_size=args.batch_size, encoded=enc)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {seconds[name]:.1f}s", file=sys.stderr, flush=True)
    ref = scores["fp32"]
    ref_eval = [evaluate_scores(pool, ref[k]) for k in range(len(TABLE1))]
    for name in ("bf16_weights", "bf16_autocast"):
        got = scores[name]
        diff = np.abs(got - ref)
        rho = [spearmanr(ref[k], got[k]).statistic for k in range(len(TABLE1))]
        rho = [1.0 if np.isnan(r) else float(r) for r in rho]  # constant scores (CLS<-*): ties both sides
        d_mean, d_query = [], []
        for k in range(len(TABLE1)):
            ev = evaluate_scores(pool, got[k])
            d_mean.append(abs(ev["nDCG@10"] - ref_eval[k]["nDCG@10"]))
            pq, rq = ev.per_query["nDCG@10"], ref_eval[k].per_query["nDCG@10"]
            d_query.append(max(abs(pq[q] - rq[q]) for q in rq))
        worst = int(np.argmax(d_mean))
        res[name] = {
            "seconds": seconds[name], "time_vs_fp32": seconds[name] / seconds["fp32"],
            "max_abs_score_diff": float(diff.max()), "p99_abs_score_diff": float(np.quantile(diff, 0.99)),
            "fp32_score_std": float(ref.std()),
            "spearman_min_over_configs": min(rho), "spearman_median_over_configs": float(np.median(rho)),
            "max_abs_mean_ndcg10_diff": max(d_mean), "worst_config": TABLE1[worst],
            "max_abs_per_query_ndcg10_diff": max(d_query),
        }
    res["fp32_seconds"] = seconds["fp32"]
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
