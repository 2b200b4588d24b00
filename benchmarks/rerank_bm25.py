"""nDCG@10 of a cross-encoder re-ranking a TREC run (e.g. the DL19 BM25 top-100), full qrels, unjudged = 0.

    python benchmarks/rerank_bm25.py --model embedded --data ../shared/data/trec-dl-2019

Reads DATA/qrels.txt, DATA/queries.tsv, DATA/bm25-top100/run.bm25.top100.txt and its passages.tsv.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ir_measures

from matchsig import CrossEncoder


def tsv(path: Path) -> dict[str, str]:
    return dict(line.rstrip("\n").split("\t", 1) for line in open(path, encoding="utf-8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default="../shared/data/trec-dl-2019")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    data = Path(args.data)
    queries = tsv(data / "queries.tsv")
    passages = tsv(data / "bm25-top100" / "passages.tsv")
    qrels = [ir_measures.Qrel(q, d, int(g)) for q, _, d, g in (l.split() for l in open(data / "qrels.txt"))]
    pairs = [(l.split()[0], l.split()[2]) for l in open(data / "bm25-top100" / "run.bm25.top100.txt")]
    pairs = [(q, d) for q, d in pairs if q in queries and d in passages]
    bm25 = [ir_measures.ScoredDoc(l.split()[0], l.split()[2], float(l.split()[4]))
            for l in open(data / "bm25-top100" / "run.bm25.top100.txt")]
    ce = CrossEncoder.load(args.model)
    start = time.perf_counter()
    scores = ce.score([queries[q] for q, _ in pairs], [passages[d] for _, d in pairs], batch_size=args.batch_size,
                      progress=True)
    seconds = time.perf_counter() - start
    run = [ir_measures.ScoredDoc(q, d, float(s)) for (q, d), s in zip(pairs, scores)]
    measure = ir_measures.nDCG @ 10
    print(json.dumps({
        "model": args.model, "pairs": len(pairs), "queries": len({q for q, _ in pairs}),
        "ndcg@10": ir_measures.calc_aggregate([measure], qrels, run)[measure],
        "bm25_ndcg@10": ir_measures.calc_aggregate([measure], qrels, bm25)[measure],
        "seconds": seconds, "pairs_per_second": len(pairs) / seconds,
    }))


if __name__ == "__main__":
    main()
