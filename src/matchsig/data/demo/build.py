"""Rebuild this demo bundle from the offline TREC DL copy (``shared/data`` beside the repo).

    python src/matchsig/data/demo/build.py /path/to/shared/data

Contents: all 43 judged TREC DL 2019 queries and all 9,260 qrels, unchanged; the texts of all
9,139 judged passages; plus 300 MS MARCO v1 passages judged only for TREC DL 2020 queries (never
for a DL 2019 query), drawn with seed 0, as extra easy-negative candidates. Files are gzipped
with a zero timestamp so a rebuild is byte-identical.
"""

import gzip
import random
import sys
from pathlib import Path

EXTRA = 300


def write_gz(path: Path, lines: list[str]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write("".join(lines).encode("utf-8"))


def main(shared: Path) -> None:
    out = Path(__file__).parent
    dl19, dl20 = shared / "trec-dl-2019", shared / "trec-dl-2020"
    queries = (dl19 / "queries.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    qrels = (dl19 / "qrels.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    passages = (dl19 / "passages.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    judged = {line.split("\t", 1)[0] for line in passages}
    others = [
        line
        for line in (dl20 / "passages.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        if line.split("\t", 1)[0] not in judged
    ]
    extra = random.Random(0).sample(others, EXTRA)
    write_gz(out / "queries.tsv.gz", queries)
    write_gz(out / "qrels.txt.gz", qrels)
    write_gz(out / "passages.tsv.gz", passages + extra)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
