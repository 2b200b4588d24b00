"""The paper's experiments as one resumable, shardable run.

A :class:`RunConfig` names the model, the collections, the sample and the experiments; a
:class:`Run` turns it into a run folder::

    RUN_DIR/config.json          the configuration (``matchsig run RUN_DIR/config.json`` re-runs it)
    RUN_DIR/summary.json         model, pools and their fingerprints, random baseline, timings
    RUN_DIR/pools.tsv            every sampled pair with its texts
    RUN_DIR/store/...            raw results, one file per finished work unit (resume + shards)
    RUN_DIR/table1.{csv,md,tex}  Table 1, with table1_per_query.csv and table1_scores.csv
    RUN_DIR/layers.csv           Figure 1
    RUN_DIR/contrast/...         Figures 2-4: heads.csv, per_query.csv, stats.parquet
    RUN_DIR/heads.csv            top-k matching heads ablated vs k random heads

Two dataset scopes, as in the paper: ``datasets`` feed the ablation pool (Table 1, Figure 1, head
ablations; the paper: DL19), ``analysis_datasets`` the contrastive analysis (Figures 2-4; the paper:
DL19-22); by default the analysis uses the ablation datasets. Every ranking is evaluated tie-aware
(:mod:`matchsig.evaluation`); every family of tests is corrected with ``correction`` and decided at
``alpha`` (:mod:`matchsig.statistics`); matching heads follow :mod:`matchsig.matching`.

Work is split into units (one ablation x one chunk of pairs, one layer curve x one chunk, one
chunk of attention statistics). A unit's result is written atomically when it finishes, so a
killed run resumes where it stopped and ends with identical tables; under ``torchrun`` each process
takes every WORLD_SIZE-th unit and rank 0 merges the store once all are present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .ablation import Ablation, AblationSet
from .errors import MatchsigError
from .parts import PART_NAMES
from .sampling import EASY_NEGATIVE, Pool, PoolRow

EXPERIMENTS = ("table1", "layers", "contrast", "heads")
ALL = "*"

#: Table 1: the 25 directions X<-Y, then the 5 X<-* ("All"), as (target, source).
TABLE1_CELLS: tuple[tuple[str, str], ...] = tuple((x, y) for x in PART_NAMES for y in PART_NAMES) + tuple(
    (x, ALL) for x in PART_NAMES
)
#: Figure 1: X<-Y for X, Y in {CLS, Q, D}, CLS<-{Q, D} and CLS<-*.
FIGURE1_DIRECTIONS: tuple[str, ...] = tuple(f"{x}<-{y}" for x in ("CLS", "Q", "D") for y in ("CLS", "Q", "D")) + (
    "CLS<-Q,CLS<-D",
    "CLS<-*",
)
CONTRAST_LEVELS = (3, 0, EASY_NEGATIVE)
MATCH_SPEC = "Q<-D,D<-Q"


@dataclass
class RunConfig:
    """Everything that determines a run's results (saved as ``config.json``)."""

    model: str = "embedded"
    datasets: list[str] = field(default_factory=lambda: ["demo"])
    per_grade: int | None = 20
    seed: int = 0
    experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))
    max_queries: int | None = None
    max_length: int = 512
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    rankings: int = 1000
    alpha: float = 0.05
    correction: str = "holm"
    analysis_datasets: list[str] | None = None
    contrast_per_grade: int = 10
    contrast_easy: int = 10
    heads_k: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    heads_random_seeds: int = 5
    chunk_size: int = 256
    #: Re-ranking protocol (matchsig.runs): the main pool is the top ``top_k`` of this TREC run
    #: instead of a sample; ``passages`` are extra text files for its unjudged candidates.
    run: str | None = None
    top_k: int | None = None
    passages: list[str] | None = None

    def validate(self) -> None:
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown:
            raise MatchsigError(f"unknown experiment {unknown[0]!r}: choose from {', '.join(EXPERIMENTS)}")
        if not self.datasets:
            raise MatchsigError("no dataset given")
        if self.analysis_datasets is not None and not self.analysis_datasets:
            self.analysis_datasets = None
        from .statistics import CORRECTIONS

        if str(self.correction).lower() not in CORRECTIONS:
            raise MatchsigError(f"unknown correction {self.correction!r}: choose from {', '.join(sorted(CORRECTIONS))}")
        self.correction = str(self.correction).lower()
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise MatchsigError(f"alpha must lie strictly between 0 and 1, got {self.alpha!r}")
        for name, value in (("per_grade", self.per_grade), ("max_queries", self.max_queries)):
            if value is not None and value < 1:
                raise MatchsigError(f"{name} must be >= 1, got {value}")
        for name in ("batch_size", "rankings", "chunk_size", "contrast_per_grade", "heads_random_seeds"):
            if getattr(self, name) < 1:
                raise MatchsigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.contrast_easy < 1 and "contrast" in self.experiments:
            raise MatchsigError("contrast needs easy negatives: contrast_easy must be >= 1")
        if any(k < 1 for k in self.heads_k):
            raise MatchsigError(f"heads_k values must be >= 1, got {self.heads_k}")
        if self.run is None and (self.top_k is not None or self.passages):
            raise MatchsigError("top_k and passages apply to a run: give run (--run FILE) too")
        if self.run is not None:
            if len(self.datasets) != 1:
                raise MatchsigError(f"a run is re-ranked over one dataset, got {len(self.datasets)}: {', '.join(self.datasets)}")
            if self.top_k is not None and self.top_k < 1:
                raise MatchsigError(f"top_k must be >= 1, got {self.top_k}")
            if not {"table1", "layers", "heads"} & set(self.experiments):
                raise MatchsigError("a run replaces the main pool of table1, layers and heads; contrast uses sampled pools")
        if "heads" in self.experiments and "contrast" not in self.experiments:
            self.experiments = [e for e in EXPERIMENTS if e in self.experiments or e == "contrast"]
        if self.device is not None:
            from .model import _resolve_device

            _resolve_device(self.device)  # before a run folder is written

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MatchsigError(f"unknown configuration key {unknown[0]!r}: valid keys are {', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MatchsigError(f"configuration file {path} not found") from None
        except json.JSONDecodeError as exc:
            raise MatchsigError(f"configuration file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def results_key(self) -> dict:
        """The fields that change stored results (not device, batch size, chunking, nor the statistics:
        alpha, correction and the random rankings only change tables, which every run rewrites)."""
        d = self.to_dict()
        for k in ("device", "batch_size", "chunk_size", "experiments", "alpha", "correction", "rankings"):
            d.pop(k)
        return d

    @property
    def analysis(self) -> list[str]:
        """The datasets of the contrastive analysis (``analysis_datasets``, else ``datasets``)."""
        return list(self.analysis_datasets) if self.analysis_datasets else list(self.datasets)


# ---- distributed ---------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        d = cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1:
            import torch.distributed as td

            if not td.is_initialized():
                import torch

                backend = "nccl" if torch.cuda.is_available() else "gloo"
                td.init_process_group(backend=backend)
        return d

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def mine(self, index: int) -> bool:
        return index % self.world == self.rank


# ---- the store -----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A file-name-safe, readable and unique name for an ablation label."""
    readable = text.replace("<-", "_from_").replace("*", "ALL").replace(",", "+").replace("/", "h")
    readable = "".join(c if c.isalnum() or c in "_+-@." else "-" for c in readable)[:60]
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


class Store:
    """One file per finished unit under ``RUN_DIR/store``; writes are atomic (tmp + rename).

    Each file is a ``.npy`` array followed by the SHA-256 of those bytes (numpy ignores the trailer),
    so a truncated or corrupt file is found, counted in :attr:`bad` and recomputed instead of read.
    """

    DIGEST = 32

    def __init__(self, root: Path):
        self.root = root
        self.bad: dict[str, str] = {}  # unit -> why its file could not be used (reported by the caller)
        self._verified: set[str] = set()

    def path(self, unit: str) -> Path:
        return self.root / f"{unit}.npy"

    def has(self, unit: str) -> bool:
        """Whether the unit's file exists and is intact (a damaged file is left to be replaced)."""
        if unit in self._verified:
            return True
        if not self.path(unit).is_file():
            return False
        try:
            self._read(unit)
        except _Damaged as exc:
            self.bad.setdefault(unit, str(exc))
            return False
        self._verified.add(unit)
        return True

    def save(self, unit: str, array: np.ndarray) -> None:
        path = self.path(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        body = buffer.getvalue()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(body + hashlib.sha256(body).digest())
        os.replace(tmp, path)
        self._verified.add(unit)
        self.bad.pop(unit, None)

    def load(self, unit: str) -> np.ndarray:
        try:
            return self._read(unit)
        except _Damaged as exc:
            raise MatchsigError(f"store file {self.path(unit)} is {exc}; run again to recompute it") from None

    def _read(self, unit: str) -> np.ndarray:
        data = self.path(unit).read_bytes()
        body, digest = data[: -self.DIGEST], data[-self.DIGEST:]
        if len(data) <= self.DIGEST or hashlib.sha256(body).digest() != digest:
            if not _complete_npy(data):
                raise _Damaged("truncated or corrupt (checksum mismatch)")
            body = data  # a file of matchsig <= 0.1 (no checksum): whole, by its own header
        try:
            return np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _Damaged(f"unreadable ({exc})") from None

    def remove_leftovers(self) -> list[Path]:
        """Delete temporary files of writes a killed process never finished; returns them."""
        leftovers = sorted(self.root.rglob(".*.npy.*.tmp")) if self.root.is_dir() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers


class _Damaged(Exception):
    pass


def _complete_npy(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole ``.npy`` array (header + the bytes its shape and dtype call for).

    Store files written before checksums were added carry no trailer; they stay usable when their
    length is exactly what their header announces, so an upgrade does not recompute finished runs.
    A truncated legacy file fails this check (a bit flip inside one cannot be seen: no checksum).
    """
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        major, _ = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except (ValueError, OSError, EOFError, SyntaxError):
        return False
    if dtype.hasobject:
        return False
    return stream.tell() + dtype.itemsize * int(np.prod(shape, dtype=np.int64)) == len(data)


@dataclass
class Unit:
    name: str
    work: Callable[[], np.ndarray]
    size: int


# ---- the run -------------------------------------------------------------------------------------


class Run:
    """A run folder for one :class:`RunConfig` (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, config: RunConfig, force: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None):
        config.validate()
        self.out = Path(out)
        self.config = config
        self.force = force
        self.progress = progress
        self.dist = Dist.from_env()
        self.log = log or (lambda msg: None)
        self.timings: dict[str, float] = {}
        self._encoder = None
        self._prepare_folder()
        self.store = Store(self.out / "store")

    # ---- folder and configuration --------------------------------------------------------------
    def _prepare_folder(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise MatchsigError(f"cannot write to output folder {self.out}: {exc.strerror or exc}") from None
        cfg_path = self.out / "config.json"
        if cfg_path.is_file() and not self.force:
            old = RunConfig.read(cfg_path)
            old_key, new_key = old.results_key(), self.config.results_key()
            diff = [k for k in new_key if old_key.get(k) != new_key[k]]
            if diff:
                k = diff[0]
                raise MatchsigError(
                    f"{self.out} holds a run with another configuration ({k}: {old_key.get(k)!r} there, "
                    f"{new_key[k]!r} now); use --force to recompute it, or another --out"
                )
            self.config.experiments = sorted(set(old.experiments) | set(self.config.experiments), key=EXPERIMENTS.index)
        if self.force and self.dist.rank == 0 and (self.out / "store").is_dir():
            import shutil

            shutil.rmtree(self.out / "store")
        if self.dist.rank == 0:
            leftovers = Store(self.out / "store").remove_leftovers()
            if leftovers:
                self.log(f"store: removed {len(leftovers)} temporary file(s) an interrupted run left "
                         f"(e.g. {leftovers[0].relative_to(self.out)}); their units are recomputed")
        self.dist.barrier()
        if self.dist.rank == 0:
            _write_json(cfg_path, self.config.to_dict())

    @property
    def encoder(self):
        if self._encoder is None:
            from .model import CrossEncoder

            device = self.config.device
            if device is None and self.dist.world > 1:
                import torch

                if torch.cuda.is_available():
                    device = f"cuda:{self.dist.local_rank}"
            self._encoder = CrossEncoder.load(self.config.model, device=device, dtype=self.config.dtype,
                                              max_length=self.config.max_length)
        return self._encoder

    # ---- pools ---------------------------------------------------------------------------------
    def _collections(self, specs: Sequence[str] | None = None):
        """The collections of ``specs`` (default: the ablation datasets), each loaded once per run."""
        from .datasets import load_collection

        if not hasattr(self, "_cols"):
            self._cols = {}
        specs = self.config.datasets if specs is None else specs
        for spec in specs:
            if spec not in self._cols:
                self._cols[spec] = load_collection(spec)
        return [self._cols[spec] for spec in specs]

    def _sample(self, per_grade: int | None, easy: int, grades: Sequence[int] | None,
                specs: Sequence[str] | None = None) -> tuple[Pool, tuple[list[str], list[str]]]:
        """One pool over the datasets ``specs`` (qids must not collide), with its texts in row order."""
        from .sampling import sample_pool

        rows: list[PoolRow] = []
        texts_q: dict[str, str] = {}
        texts_d: dict[str, str] = {}
        seen: dict[str, str] = {}
        collections = self._collections(specs)
        for col in collections:
            qids = col.judged_qids()
            if self.config.max_queries:
                qids = qids[: self.config.max_queries]
            pool = sample_pool(col, per_grade=per_grade, easy_negatives=easy, seed=self.config.seed, qids=qids)
            if grades is not None:
                pool = pool.filter(grades)
            for q in pool.qids:
                if q in seen:
                    raise MatchsigError(f"query id {q!r} occurs in both {seen[q]!r} and {col.name!r}")
                seen[q] = col.name
            qs, ds = pool.pairs()
            for row, qt, dt in zip(pool.rows, qs, ds):
                rows.append(row)
                texts_q[row.qid] = qt
                texts_d[(row.qid, row.docid)] = dt
        merged = Pool(tuple(rows), None, "+".join(c.name for c in collections), per_grade, easy, self.config.seed)
        merged_texts = ([texts_q[r.qid] for r in rows], [texts_d[(r.qid, r.docid)] for r in rows])
        return merged, merged_texts

    @property
    def main_pool(self):
        if not hasattr(self, "_main"):
            self._main = self._run_pool() if self.config.run else self._sample(self.config.per_grade, 0, None)
        return self._main

    def _run_pool(self) -> tuple[Pool, tuple[list[str], list[str]]]:
        """The re-ranking protocol's main pool: the top-k candidates of the configured run."""
        from .runs import pool_from_run, read_trec_run, with_passages

        collection = with_passages(self._collections()[0], self.config.passages or [])
        pool = pool_from_run(read_trec_run(self.config.run), collection, self.config.top_k, self.config.max_queries)
        if pool.unevaluated:
            self.log(f"note: {len(pool.unevaluated)} queries of the run have no judgments and are left out "
                     f"(e.g. {pool.unevaluated[0]})")
        return pool, pool.pairs()

    @property
    def contrast_pool(self):
        if not hasattr(self, "_contrast"):
            c = self.config
            self._contrast = self._sample(c.contrast_per_grade, c.contrast_easy, CONTRAST_LEVELS, c.analysis)
        return self._contrast

    def easy_negative_sources(self) -> dict[str, dict]:
        """Per analysis dataset: where its easy negatives were drawn from, with a warning when not the corpus."""
        out = {}
        for spec, col in zip(self.config.analysis, self._collections(self.config.analysis)):
            candidates = col.negative_candidates()
            source = col.negative_source
            info: dict = {"source": source, "candidates": len(candidates)}
            if source == "corpus":
                info["description"] = "random passages of the whole corpus (ir_datasets), as in the paper"
            else:
                judged = {d for docs in col.qrels.values() for d in docs}
                n_judged = sum(1 for d in candidates if d in judged)
                info["judged_for_some_query"] = n_judged
                where = "the passages file of the folder" if source == "folder" else "the passages judged for any query"
                info["description"] = (f"random passages among {len(candidates):,} of {where}, {n_judged:,} of them "
                                       "judged for some query of the collection")
                info["warning"] = (
                    "easy negatives come from a folder's passages, i.e. mostly passages judged (retrieved by TREC "
                    "systems) for other queries, not random passages of the corpus as in the paper: they are "
                    "harder than the paper's easy negatives, which shrinks the relevant-vs-easy contrasts"
                )
            out[spec] = info
        return out

    def _write_pools(self) -> None:
        frames = []
        if self._needs_main():
            pool, (qs, ds) = self.main_pool
            frames.append(_pool_frame(pool, qs, ds, "main"))
        if "contrast" in self.config.experiments:
            pool, (qs, ds) = self.contrast_pool
            frames.append(_pool_frame(pool, qs, ds, "contrast"))
        frame = pd.concat(frames, ignore_index=True)
        merged = frame.groupby(["qid", "docid", "grade", "query", "document"], sort=False, as_index=False)["pool"].agg(
            lambda s: "+".join(s)
        )
        merged.to_csv(self.out / "pools.tsv", sep="\t", index=False)

    def _needs_main(self) -> bool:
        return bool({"table1", "layers", "heads"} & set(self.config.experiments))

    # ---- units ---------------------------------------------------------------------------------
    def _chunks(self, n: int) -> list[np.ndarray]:
        size = self.config.chunk_size
        return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]

    def _score_units(self, prefix: str, ablations: Sequence[tuple[str, object]]) -> list[Unit]:
        pool, (qs, ds) = self.main_pool
        units = []
        for label, ab in ablations:
            for k, rows in enumerate(self._chunks(len(pool))):
                def work(ab=ab, rows=rows):
                    return self.encoder.score([qs[i] for i in rows], [ds[i] for i in rows], ablation=ab,
                                              batch_size=self.config.batch_size)
                units.append(Unit(f"{prefix}/{slug(label)}/{k:05d}", work, len(rows)))
        return units

    def _gather_scores(self, prefix: str, labels: Sequence[str]) -> np.ndarray:
        pool, _ = self.main_pool
        chunks = self._chunks(len(pool))
        return np.stack([np.concatenate([self.store.load(f"{prefix}/{slug(l)}/{k:05d}") for k in range(len(chunks))])
                         for l in labels])

    def _execute(self, phase: str, units: list[Unit]) -> None:
        """Run this process's share of ``units`` not already in the store, then wait for the others."""
        started = time.perf_counter()
        todo = [u for i, u in enumerate(units) if self.dist.mine(i) and not self.store.has(u.name)]
        done = len(units) - len([u for u in units if not self.store.has(u.name)])
        bad = [u.name for u in units if u.name in self.store.bad]
        if bad:
            self.log(f"{phase}: {len(bad)} stored unit(s) damaged, recomputing them (e.g. {bad[0]}: "
                     f"{self.store.bad[bad[0]]})")
        if done:
            self.log(f"{phase}: {done}/{len(units)} units already done, resuming")
        bar = None
        if self.progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(u.size for u in todo), desc=phase, unit="pair", dynamic_ncols=True,
                       position=self.dist.rank if self.dist.world > 1 else None)
        for unit in todo:
            self.store.save(unit.name, np.asarray(unit.work()))
            if bar is not None:
                bar.update(unit.size)
        if bar is not None:
            bar.close()
        self.dist.barrier()
        missing = [u.name for u in units if not self.store.has(u.name)]
        if missing:
            raise MatchsigError(f"{phase}: {len(missing)} work units missing from the store after all processes finished "
                                f"(first: {missing[0]})")
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - started

    # ---- experiments ---------------------------------------------------------------------------
    def run(self) -> Path:
        """Run the configured experiments; returns the run folder."""
        t0 = time.perf_counter()
        cfg = self.config
        if self.dist.rank == 0:
            self._write_pools()
        self.encoder  # load (and check) the model before any progress bar starts
        if "table1" in cfg.experiments:
            self.table1()
        if "layers" in cfg.experiments:
            self.layers()
        if "contrast" in cfg.experiments:
            self.contrast()
        if "heads" in cfg.experiments:
            self.heads()
        self.timings["total"] = time.perf_counter() - t0
        if self.dist.rank == 0:
            self._write_summary()
        return self.out

    def _evaluate(self, scores: np.ndarray) -> dict[str, float]:
        """Tie-aware per-query nDCG@10 of ``scores`` on the main pool."""
        from .evaluation import expected_ndcg

        pool, _ = self.main_pool
        return expected_ndcg(pool, scores, 10)

    def _compare(self, per_query: dict[str, float], ref: dict[str, float], ref_mean: float) -> dict:
        """Mean nDCG@10, change against the unablated model, paired t-test p and (1 - alpha) CI of the change."""
        from .statistics import paired_ttest

        t = paired_ttest(per_query, ref)
        low, high = t.ci(self.config.alpha)
        mean = float(np.mean(list(per_query.values())))
        return {"ndcg@10": mean, "delta": mean - ref_mean, "ci_low": low, "ci_high": high, "p_value": t.pvalue,
                "n_queries": t.n}

    def _decide(self, frame: pd.DataFrame, family: np.ndarray | None = None) -> pd.DataFrame:
        """Add the corrected p column (named for the correction), ``significant`` and ``mark`` (* drop, ↑ rise)."""
        from .statistics import change_mark, correct, corrected_column, decision_column

        c = self.config
        column = corrected_column(c.correction)
        if column:
            mask = np.ones(len(frame), bool) if family is None else family
            adjusted = frame["p_value"].to_numpy(float).copy()  # rows outside the family: tested alone
            adjusted[mask] = correct(list(frame.loc[mask, "p_value"]), c.correction)
            frame[column] = adjusted
        decide = frame[decision_column(c.correction)]
        frame["significant"] = decide <= c.alpha
        frame["mark"] = [change_mark(p, d, c.alpha) for p, d in zip(decide, frame["delta"])]
        return frame

    def _baseline_scores(self) -> np.ndarray:
        """Unablated scores of the main pool; every phase needs them, they are computed once."""
        if not hasattr(self, "_base"):
            self._execute("unablated", self._score_units("scores", [("none", Ablation.none())]))
            self._base = self._gather_scores("scores", ["none"])[0]
        return self._base

    def _reference(self) -> tuple[dict[str, float], float]:
        """Per-query nDCG@10 of the unablated model and its mean (evaluated once per run)."""
        if not hasattr(self, "_ref"):
            ref = self._evaluate(self._baseline_scores())
            self._ref = (ref, float(np.mean(list(ref.values()))))
        return self._ref

    def random(self):
        from .evaluation import random_baseline

        if not hasattr(self, "_random"):
            pool, _ = self.main_pool
            self._random = random_baseline(pool, rankings=self.config.rankings, seed=self.config.seed)
        return self._random

    def table1(self) -> pd.DataFrame:
        """Table 1: every direction and X<-* ablated in all layers and heads."""
        cells = [("none", Ablation.none())] + [(_cell_label(x, y), Ablation.parse(_cell_label(x, y))) for x, y in TABLE1_CELLS]
        base = self._baseline_scores()
        self._execute("table1", self._score_units("scores", cells[1:]))
        if self.dist.rank != 0:
            return pd.DataFrame()
        scores = np.concatenate([base[None], self._gather_scores("scores", [l for l, _ in cells[1:]])])
        ref, ref_mean = self._reference()
        per_query = {"none": ref, **{label: self._evaluate(s) for (label, _), s in zip(cells[1:], scores[1:])}}
        rnd = self.random()
        rows = [{"target": "none", "source": "", "ablation": "none", **self._compare(ref, ref, ref_mean)},
                {"target": "random", "source": "", "ablation": "random", **self._compare(rnd.per_query, ref, ref_mean)}]
        for (label, _), (x, y) in zip(cells[1:], TABLE1_CELLS):
            rows.append({"target": x, "source": y, "ablation": label, **self._compare(per_query[label], ref, ref_mean)})
        frame = pd.DataFrame(rows)
        # The correction's family is the 30 ablations; the random row is a reference, tested alone.
        frame = self._decide(frame, family=~frame["ablation"].isin(["none", "random"]).to_numpy())
        frame["lower"] = frame["ndcg@10"] < ref_mean
        frame.to_csv(self.out / "table1.csv", index=False)
        per_query["random"] = rnd.per_query
        pq = pd.DataFrame(per_query)
        pq.index.name = "qid"
        pq.to_csv(self.out / "table1_per_query.csv")
        pool, _ = self.main_pool
        raw = pd.DataFrame(scores.T, columns=[l for l, _ in cells])
        raw.insert(0, "grade", [r.grade for r in pool.rows])
        raw.insert(0, "docid", [r.docid for r in pool.rows])
        raw.insert(0, "qid", [r.qid for r in pool.rows])
        raw.to_csv(self.out / "table1_scores.csv", index=False)
        note = protocol_note(pool)
        (self.out / "table1.md").write_text(table1_markdown(frame, self.config, note), encoding="utf-8")
        (self.out / "table1.tex").write_text(table1_latex(frame, self.config, note), encoding="utf-8")
        return frame

    def layers(self) -> pd.DataFrame:
        """Figure 1: cut each direction in layers 0..l for every l (prefix shared across l)."""
        pool, (qs, ds) = self.main_pool
        units = []
        for spec in FIGURE1_DIRECTIONS:
            for k, rows in enumerate(self._chunks(len(pool))):
                def work(spec=spec, rows=rows):
                    return self.encoder.score_layer_curve([qs[i] for i in rows], [ds[i] for i in rows], spec,
                                                          batch_size=self.config.batch_size)
                units.append(Unit(f"layers/{slug(spec)}/{k:05d}", work, len(rows)))
        self._baseline_scores()
        self._execute("layers", units)
        if self.dist.rank != 0:
            return pd.DataFrame()
        ref, ref_mean = self._reference()
        chunks = self._chunks(len(pool))
        rows = []
        for spec in FIGURE1_DIRECTIONS:
            curve = np.concatenate([self.store.load(f"layers/{slug(spec)}/{k:05d}") for k in range(len(chunks))], axis=1)
            for layer, s in enumerate(curve):
                rows.append({"direction": spec, "layer": layer, **self._compare(self._evaluate(s), ref, ref_mean)})
        # one family: every (direction, layer) cell of Figure 1
        frame = self._decide(pd.DataFrame(rows))
        frame.to_csv(self.out / "layers.csv", index=False)
        return frame

    def contrast(self) -> pd.DataFrame:
        """Figures 2-4: per-head attention statistics on relevant, hard-negative and easy-negative passages."""
        pool, (qs, ds) = self.contrast_pool
        units = []
        for k, rows in enumerate(self._chunks(len(pool))):
            def work(rows=rows):
                return self.encoder.attention_stats([qs[i] for i in rows], [ds[i] for i in rows],
                                                    batch_size=self.config.batch_size).values
            units.append(Unit(f"contrast/{k:05d}", work, len(rows)))
        self._execute("contrast", units)
        if self.dist.rank != 0 and "heads" not in self.config.experiments:
            return pd.DataFrame()
        values = np.concatenate([self.store.load(f"contrast/{k:05d}") for k in range(len(units))])
        frame = analyse_contrast(pool, values, self.config.alpha, self.config.correction)
        if self.dist.rank == 0:
            self._easy_sources = self.easy_negative_sources()
        if self.dist.rank == 0:
            folder = self.out / "contrast"
            folder.mkdir(exist_ok=True)
            frame["heads"].to_csv(folder / "heads.csv", index=False)
            frame["per_query"].to_csv(folder / "per_query.csv", index=False)
            _stats_frame(pool, values).to_parquet(folder / "stats.parquet", index=False)
        self._heads_frame = frame["heads"]
        return frame["heads"]

    def heads(self) -> pd.DataFrame:
        """Beyond the paper: cut Q<-D and D<-Q in the top-k matching heads vs in k random heads.

        The top-k heads are the first k of :func:`matchsig.matching.rank_heads` (matching heads first,
        by effect size); ``matching_in_selection`` counts how many of them are matching heads.
        """
        from .matching import classify, rank_heads

        c = self.config
        ranking = rank_heads(self._heads_frame, c.alpha, c.correction)
        classified = classify(self._heads_frame, c.alpha, c.correction)
        matching = {(int(l), int(h)) for l, h in zip(classified.loc[classified["matching"], "layer"],
                                                      classified.loc[classified["matching"], "head"])}
        nl, nh = self.encoder.num_layers, self.encoder.num_heads
        ks = sorted({k for k in self.config.heads_k if k <= nl * nh})
        configs: list[tuple[str, str, int, int, list[tuple[int, int]]]] = []
        for k in ks:
            top = ranking[:k]
            configs.append((f"top{k}", "top", k, -1, top))
            for s in range(self.config.heads_random_seeds):
                rng = np.random.default_rng([self.config.seed, 7919, k, s])
                flat = rng.choice(nl * nh, size=k, replace=False)
                configs.append((f"random{k}-s{s}", "random", k, s, [(int(i) // nh, int(i) % nh) for i in sorted(flat)]))
        ablations = [(label, AblationSet.heads(MATCH_SPEC, hs, label=label)) for label, _, _, _, hs in configs]
        self._baseline_scores()
        self._execute("heads", self._score_units("scores", ablations))
        if self.dist.rank != 0:
            return pd.DataFrame()
        ref, ref_mean = self._reference()
        scores = self._gather_scores("scores", [l for l, _ in ablations])
        rows = []
        for (label, selection, k, s, hs), sc in zip(configs, scores):
            rows.append({"selection": selection, "k": k, "seed": s, "heads": ";".join(f"{l}/{h}" for l, h in hs),
                         "matching_in_selection": sum(1 for h in hs if tuple(h) in matching),
                         **self._compare(self._evaluate(sc), ref, ref_mean)})
        # one family: every head selection of the run
        frame = self._decide(pd.DataFrame(rows))
        frame.to_csv(self.out / "heads.csv", index=False)
        return frame

    # ---- summary -------------------------------------------------------------------------------
    def _write_summary(self) -> None:
        import torch
        import transformers

        from . import __version__

        enc = self.encoder
        info = {"name": enc.name, "num_layers": enc.num_layers, "num_heads": enc.num_heads,
                "num_labels": enc.num_labels, "parameters": int(sum(p.numel() for p in enc.model.parameters()))}
        from .evaluation import TIE_RTOL, TIE_RULE
        from .statistics import corrected_column

        c = self.config
        pools = {}
        if self._needs_main():
            pools["main"] = {"datasets": list(c.datasets), **_describe(self.main_pool[0])}
        if "contrast" in c.experiments:
            sources = getattr(self, "_easy_sources", None) or self.easy_negative_sources()
            pools["contrast"] = {"datasets": c.analysis, **_describe(self.contrast_pool[0]),
                                 "easy_negatives_from": sources}
            warnings = sorted({v["warning"] for v in sources.values() if "warning" in v})
            if warnings:
                pools["contrast"]["easy_negatives_warning"] = warnings[0]
        summary = {
            "model_info": info,
            "pools": pools,
            "evaluation": {"measure": "nDCG@10", "ties": TIE_RULE, "tie_rtol": TIE_RTOL},
            "significance": {
                "test": "two-sided paired Student t-test over queries (scipy.stats.ttest_rel)",
                "alpha": c.alpha, "correction": c.correction, "corrected_column": corrected_column(c.correction),
                "families": "Table 1: the 30 ablations; Figure 1: every (direction, layer); head ablations: every "
                            "selection; contrast: heads x directions, per comparison",
                "marks": "* = significant drop, \u2191 = significant increase (decided on the corrected p when a "
                         "correction is set)",
            },
            "timings": self.timings,
            "versions": {"matchsig": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": str(enc.device),
        }
        if self._needs_main():
            rnd = self.random()
            summary["random_ndcg@10"] = {"mean": rnd.mean, "exact": True, "sd": rnd.sd,
                                         "sampled_mean": rnd.sampled_mean, "rankings": rnd.rankings,
                                         "rule": "exact expected nDCG@10 of a random order (tie-aware nDCG@10 of an "
                                                 "all-tied ranking); sd over the sampled rankings"}
            summary["unablated_ndcg@10"] = self._reference()[1]
        _write_json(self.out / "summary.json", summary)


# ---- analysis helpers ------------------------------------------------------------------------------


def _cell_label(x: str, y: str) -> str:
    return f"{x}<-{y}"


def _describe(pool: Pool) -> dict:
    info = {"fingerprint": pool.fingerprint, "queries": len(pool.qids), "pairs": len(pool),
            "per_grade": pool.per_grade, "easy_negatives": pool.easy_negatives,
            "grade_counts": {str(g): n for g, n in pool.grade_counts().items()}}
    described = pool.describe()
    if described.get("protocol") == "rerank":  # matchsig.runs.RunPool
        info.update({k: described[k] for k in ("protocol", "run", "top_k", "run_fingerprint", "judged", "unjudged",
                                                "unevaluated_queries")})
    return info


def protocol_note(pool: Pool) -> str:
    """One sentence naming the re-ranking protocol and its unjudged passages ("" for sampled pools)."""
    d = pool.describe()
    if d.get("protocol") != "rerank":
        return ""
    top = "all" if d["top_k"] is None else f"the top {d['top_k']}"
    return (f"Re-ranking protocol: {top} candidates of run {Path(str(d['run'])).name} per query, {d['pairs']} pairs, "
            f"{d['unjudged']} of them unjudged (counted as non-relevant); nDCG@10 against all judgments.")


def _pool_frame(pool: Pool, qs: list[str], ds: list[str], name: str) -> pd.DataFrame:
    return pd.DataFrame({"qid": [r.qid for r in pool.rows], "docid": [r.docid for r in pool.rows],
                         "grade": [r.grade for r in pool.rows], "query": qs, "document": ds, "pool": name})


def _stats_frame(pool: Pool, values: np.ndarray) -> pd.DataFrame:
    from .attention_stats import AttentionStats

    frame = AttentionStats(values).to_frame()
    rows = np.asarray(frame["pair"], dtype=int)
    frame.insert(1, "qid", np.asarray([r.qid for r in pool.rows], dtype=object)[rows])
    frame.insert(2, "docid", np.asarray([r.docid for r in pool.rows], dtype=object)[rows])
    frame.insert(3, "grade", np.asarray([r.grade for r in pool.rows])[rows])
    return frame


def analyse_contrast(pool: Pool, values: np.ndarray, alpha: float = 0.05, correction: str = "holm") -> dict[str, pd.DataFrame]:
    """Per-query means per level, and per head the paired tests and classification of :mod:`matchsig.matching`.

    ``values``: (pairs, layers, heads, 2 directions, 4 stats) in pool row order. Returns
    ``{"heads": one row per (layer, head, direction), "per_query": per-query means per level}``.
    """
    from .attention_stats import DIRECTIONS, STATS
    from .matching import classify, head_tests

    grades = np.array([r.grade for r in pool.rows])
    qids = [r.qid for r in pool.rows]
    order = list(dict.fromkeys(qids))
    position = {q: i for i, q in enumerate(order)}
    qidx = np.array([position[q] for q in qids])
    nq, (_, nl, nh, nd, ns) = len(order), values.shape
    means = {}
    for level in CONTRAST_LEVELS:
        acc = np.zeros((nq, nl, nh, nd, ns))
        cnt = np.zeros(nq)
        sel = grades == level
        np.add.at(acc, qidx[sel], values[sel])
        np.add.at(cnt, qidx[sel], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[level] = acc / cnt[:, None, None, None, None]
    per_query = []
    for level, arr in means.items():
        idx = np.indices((nq, nl, nh, nd)).reshape(4, -1)
        flat = arr.reshape(-1, ns)
        df = pd.DataFrame({"qid": np.asarray(order, dtype=object)[idx[0]], "level": level, "layer": idx[1],
                           "head": idx[2], "direction": np.asarray([d for d, _, _ in DIRECTIONS])[idx[3]]})
        for k, s in enumerate(STATS):
            df[s] = flat[:, k]
        per_query.append(df.dropna(subset=["max"]))
    per_query = pd.concat(per_query, ignore_index=True)

    imax, ient, iex = STATS.index("max"), STATS.index("entropy"), STATS.index("exact")
    tests = head_tests({level: m[..., imax] for level, m in means.items()}, correction)
    easy = means[EASY_NEGATIVE]
    rel_ok = ~np.isnan(means[3][..., 0, 0, 0, 0]) & ~np.isnan(easy[..., 0, 0, 0, 0])
    grid = np.indices((nl, nh, nd)).reshape(3, -1)
    frame = pd.DataFrame({"layer": grid[0], "head": grid[1],
                          "direction": np.asarray([d for d, _, _ in DIRECTIONS])[grid[2]]})
    for name, array in tests.items():
        frame[name] = array.reshape(-1)
    with np.errstate(invalid="ignore"):
        for stat, i in (("entropy", ient), ("exact", iex)):
            frame[f"{stat}_relevant"] = np.nanmean(means[3][rel_ok][..., i], axis=0).reshape(-1) if rel_ok.any() else np.nan
            frame[f"{stat}_easy"] = np.nanmean(easy[rel_ok][..., i], axis=0).reshape(-1) if rel_ok.any() else np.nan
    frame["n_queries"] = frame["n_relevant"]
    return {"heads": classify(frame, alpha, correction), "per_query": per_query}


# ---- Table 1 layouts -------------------------------------------------------------------------------

_COLUMNS = list(PART_NAMES) + [ALL]


def _grid(frame: pd.DataFrame, fmt: Callable[[float, str, bool], str]) -> list[list[str]]:
    cells = frame.set_index("ablation")
    out = []
    for x in PART_NAMES:
        row = []
        for y in _COLUMNS:
            r = cells.loc[_cell_label(x, y)]
            mark = r["mark"] if "mark" in r and isinstance(r["mark"], str) else ""
            row.append(fmt(float(r["ndcg@10"]), mark, bool(r["lower"])))
        out.append(row)
    return out


def _caption(frame: pd.DataFrame, config: RunConfig, note: str = "") -> tuple[float, float, str]:
    from .statistics import marks_legend

    base = float(frame.loc[frame.ablation == "none", "ndcg@10"].iloc[0])
    rnd = float(frame.loc[frame.ablation == "random", "ndcg@10"].iloc[0])
    n = int(frame["n_queries"].max()) if "n_queries" in frame else None
    cap = "all judged passages" if config.per_grade is None else f"up to {config.per_grade} passage{'' if config.per_grade == 1 else 's'} per grade"
    if config.run:
        cap = f"re-ranking the top {config.top_k or 'all'} of run {Path(config.run).name}"
    text = (f"Tie-aware nDCG@10 (expected value over the orders of tied passages) with attention direction X<-Y "
            f"masked in all layers and heads; model {config.model}, {', '.join(config.datasets)}, {cap}, seed "
            f"{config.seed}. Original: {base:.3f}; random ranking (exact): {rnd:.3f}. Bold: lower than the original; "
            f"{marks_legend(config.alpha, config.correction, 'the 30 ablations', n)}.")
    return base, rnd, (f"{text} {note}" if note else text)


def table1_markdown(frame: pd.DataFrame, config: RunConfig, note: str = "") -> str:
    """Table 1 as the paper lays it out: rows X, columns Y and All (``note``: the pool's protocol)."""
    _, _, caption = _caption(frame, config, note)

    def fmt(v, mark, low):
        s = f"{v:.3f}" + mark.replace("*", "\\*")
        return f"**{s}**" if low else s

    lines = ["| X \\ Y | " + " | ".join("All" if y == ALL else y for y in _COLUMNS) + " |",
             "|---|" + "---|" * len(_COLUMNS)]
    for x, row in zip(PART_NAMES, _grid(frame, fmt)):
        lines.append(f"| **{x}** | " + " | ".join(row) + " |")
    return caption.replace("*", "\\*") + "\n\n" + "\n".join(lines) + "\n"


def table1_latex(frame: pd.DataFrame, config: RunConfig, note: str = "") -> str:
    from .statistics import RISE_MARK

    _, _, caption = _caption(frame, config, note)

    def fmt(v, mark, low):
        s = f"{v:.3f}" + {"*": "$^*$", RISE_MARK: "$^{\\uparrow}$"}.get(mark, "")
        return f"\\textbf{{{s}}}" if low else s

    head = " & ".join(["$X \\backslash Y$"] + ["All" if y == ALL else y for y in _COLUMNS]) + " \\\\"
    body = "\n".join(f"{x} & " + " & ".join(row) + " \\\\" for x, row in zip(PART_NAMES, _grid(frame, fmt)))
    caption_tex = (caption.replace("<-", "$\\leftarrow$").replace("_", "\\_").replace(RISE_MARK, "$\\uparrow$")
                   .replace("<=", "$\\leq$"))
    return ("\\begin{table}[t]\n\\centering\n\\begin{tabular}{l" + "c" * len(_COLUMNS) + "}\n\\toprule\n" + head +
            "\n\\midrule\n" + body + "\n\\bottomrule\n\\end{tabular}\n\\caption{" + caption_tex +
            "}\n\\end{table}\n")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(type(obj).__name__)


def DEMO_CONFIG() -> RunConfig:
    """`matchsig demo`: all 43 DL19 queries, sized to finish in <= 10 minutes on 2 CPU cores (fp32)."""
    return RunConfig(model="embedded", datasets=["demo"], per_grade=1, max_queries=None, seed=0, contrast_per_grade=4,
                     contrast_easy=4, heads_k=[2, 8, 24], heads_random_seeds=2, batch_size=32)


def PAPER_CONFIG() -> RunConfig:
    """The paper's protocol: ablations on DL19 judged, attention analysis on DL19-22 judged (226 queries).

    Up to 20 passages per grade for the ablations (the paper's stated cap) and, as the paper does not
    state the analysis sample, up to 20 relevant and 20 hard negatives and 20 easy negatives (from
    the whole corpus) per query for the analysis. The model is not part of the protocol.
    """
    from .datasets import PAPER_COLLECTIONS

    return RunConfig(datasets=[PAPER_COLLECTIONS[0]], analysis_datasets=list(PAPER_COLLECTIONS), per_grade=20,
                     contrast_per_grade=20, contrast_easy=20)


#: Named configurations (``--preset``); explicit command-line options override them.
PRESETS: dict[str, Callable[[], RunConfig]] = {"paper": PAPER_CONFIG, "demo": DEMO_CONFIG}
