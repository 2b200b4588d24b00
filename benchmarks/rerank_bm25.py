"""nDCG@10 of a cross-encoder re-ranking the DL19 BM25 top-100 (full qrels, unjudged = non-relevant).

    python benchmarks/rerank_bm25.py --model embedded --data ../shared/data/trec-dl-2019

A thin caller of `matchsig rerank` (matchsig.analysis.rerank.rerank) on DATA's layout: DATA/{queries.tsv,
qrels.txt, passages.tsv} and DATA/bm25-top100/{run.bm25.top100.txt, passages.tsv}. The same as

    matchsig rerank --dataset DATA --run DATA/bm25-top100/run.bm25.top100.txt \\
        --passages DATA/bm25-top100/passages.tsv --top-k 100 --out reranked.trec --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matchsig import CrossEncoder
from matchsig.data.datasets import load_collection
from matchsig.analysis.rerank import rerank
from matchsig.data.runs import read_trec_run, with_passages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default="../shared/data/trec-dl-2019")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=100)
    args = ap.parse_args()
    data = Path(args.data)
    collection = with_passages(load_collection(data), [data / "bm25-top100" / "passages.tsv"])
    run = read_trec_run(data / "bm25-top100" / "run.bm25.top100.txt")
    result = rerank(CrossEncoder.load(args.model), run, collection, top_k=args.top_k, batch_size=args.batch_size,
                    progress=True)
    print(json.dumps({
        "model": args.model, "pairs": len(result.pool), "queries": result.evaluated_queries,
        "unjudged": result.unjudged, "ndcg@10": result.output_mean["nDCG@10"],
        "bm25_ndcg@10": result.input_mean["nDCG@10"], "p_value": result.tests["nDCG@10"].pvalue,
        "seconds": result.seconds, "pairs_per_second": result.pairs_per_second,
    }))


if __name__ == "__main__":
    main()
