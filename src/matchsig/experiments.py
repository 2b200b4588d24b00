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

Work is split into units (one ablation x one chunk of pairs, one layer curve x one chunk, one
chunk of attention statistics). A unit's result is written atomically when it finishes, so a
killed run resumes where it stopped and ends with identical tables; under ``torchrun`` each process
takes every WORLD_SIZE-th unit and rank 0 merges the store once all are present.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
        """The fields that change results (not device, batch size, chunking)."""
        d = self.to_dict()
        for k in ("device", "batch_size", "chunk_size", "experiments"):
            d.pop(k)
        return d


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
    """One file per finished unit under ``RUN_DIR/store``; writes are atomic (tmp + rename)."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, unit: str) -> Path:
        return self.root / f"{unit}.npy"

    def has(self, unit: str) -> bool:
        return self.path(unit).is_file()

    def save(self, unit: str, array: np.ndarray) -> None:
        path = self.path(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)

    def load(self, unit: str) -> np.ndarray:
        return np.load(self.path(unit))


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
    def _collections(self):
        from .datasets import load_collection

        if not hasattr(self, "_cols"):
            self._cols = [load_collection(d) for d in self.config.datasets]
        return self._cols

    def _sample(self, per_grade: int | None, easy: int, grades: Sequence[int] | None) -> tuple[Pool, tuple[list[str], list[str]]]:
        """One pool over all datasets (qids must not collide), with its texts in row order."""
        from .sampling import sample_pool

        rows: list[PoolRow] = []
        texts_q: dict[str, str] = {}
        texts_d: dict[str, str] = {}
        seen: dict[str, str] = {}
        for col in self._collections():
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
        merged = Pool(tuple(rows), None, "+".join(c.name for c in self._collections()), per_grade, easy, self.config.seed)
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
            self._contrast = self._sample(c.contrast_per_grade, c.contrast_easy, CONTRAST_LEVELS)
        return self._contrast

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
        from .evaluation import evaluate_scores

        pool, _ = self.main_pool
        return evaluate_scores(pool, scores).per_query["nDCG@10"]

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
        from .statistics import correct, paired_ttest

        cells = [("none", Ablation.none())] + [(_cell_label(x, y), Ablation.parse(_cell_label(x, y))) for x, y in TABLE1_CELLS]
        base = self._baseline_scores()
        self._execute("table1", self._score_units("scores", cells[1:]))
        if self.dist.rank != 0:
            return pd.DataFrame()
        scores = np.concatenate([base[None], self._gather_scores("scores", [l for l, _ in cells[1:]])])
        ref, ref_mean = self._reference()
        per_query = {"none": ref, **{label: self._evaluate(s) for (label, _), s in zip(cells[1:], scores[1:])}}
        rows = []
        for (label, _), (x, y) in zip(cells[1:], TABLE1_CELLS):
            t = paired_ttest(per_query[label], ref)
            mean = float(np.mean(list(per_query[label].values())))
            rows.append({"target": x, "source": y, "ablation": label, "ndcg@10": mean, "delta": mean - ref_mean,
                         "p_value": t.pvalue})
        frame = pd.DataFrame(rows)
        frame["p_holm"] = correct(list(frame["p_value"]), self.config.correction)
        rnd = self.random()
        rnd_t = paired_ttest(rnd.per_query, ref)
        extra = pd.DataFrame([
            {"target": "none", "source": "", "ablation": "none", "ndcg@10": ref_mean, "delta": 0.0, "p_value": 1.0, "p_holm": 1.0},
            {"target": "random", "source": "", "ablation": "random", "ndcg@10": rnd.mean, "delta": rnd.mean - ref_mean,
             "p_value": rnd_t.pvalue, "p_holm": rnd_t.pvalue},
        ])
        frame = pd.concat([extra, frame], ignore_index=True)
        frame["significant"] = frame["p_value"] <= self.config.alpha
        frame["lower"] = frame["ndcg@10"] < ref_mean
        frame.to_csv(self.out / "table1.csv", index=False)
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
        from .statistics import paired_ttest

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
                pq = self._evaluate(s)
                mean = float(np.mean(list(pq.values())))
                rows.append({"direction": spec, "layer": layer, "ndcg@10": mean, "delta": mean - ref_mean,
                             "p_value": paired_ttest(pq, ref).pvalue})
        frame = pd.DataFrame(rows)
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
            folder = self.out / "contrast"
            folder.mkdir(exist_ok=True)
            frame["heads"].to_csv(folder / "heads.csv", index=False)
            frame["per_query"].to_csv(folder / "per_query.csv", index=False)
            _stats_frame(pool, values).to_parquet(folder / "stats.parquet", index=False)
        self._heads_frame = frame["heads"]
        return frame["heads"]

    def heads(self) -> pd.DataFrame:
        """Beyond the paper: cut Q<-D and D<-Q in the top-k matching heads vs in k random heads."""
        from .statistics import paired_ttest

        ranking = rank_matching_heads(self._heads_frame)
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
            pq = self._evaluate(sc)
            mean = float(np.mean(list(pq.values())))
            rows.append({"selection": selection, "k": k, "seed": s, "heads": ";".join(f"{l}/{h}" for l, h in hs),
                         "ndcg@10": mean, "delta": mean - ref_mean, "p_value": paired_ttest(pq, ref).pvalue})
        frame = pd.DataFrame(rows)
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
        pools = {}
        if self._needs_main():
            pools["main"] = _describe(self.main_pool[0])
        if "contrast" in self.config.experiments:
            pools["contrast"] = _describe(self.contrast_pool[0])
        summary = {
            "model_info": info,
            "pools": pools,
            "timings": self.timings,
            "versions": {"matchsig": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": str(enc.device),
        }
        if self._needs_main():
            rnd = self.random()
            summary["random_ndcg@10"] = {"mean": rnd.mean, "sd": rnd.sd, "rankings": rnd.rankings}
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
    """Per-query means per level, and per head the paired tests of SPEC §4 (3 vs -1, 0 vs -1).

    ``values``: (pairs, layers, heads, 2 directions, 4 stats) in pool row order. A head differs
    when the Holm-corrected (over heads x directions) paired t-test over queries gives p <= alpha
    and the mean difference is positive; *syntactic* = differs in both comparisons, *semantic* =
    only for relevant vs easy.
    """
    from scipy import stats as st

    from .attention_stats import DIRECTIONS, STATS
    from .statistics import correct

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
    easy = means[EASY_NEGATIVE]
    rows = []
    tests = {}
    for name, level in (("relevant", 3), ("hard", 0)):
        diff = means[level][..., imax] - easy[..., imax]  # (nq, nl, nh, nd)
        ok = ~np.isnan(diff).any(axis=(1, 2, 3))
        d = diff[ok]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = st.ttest_1samp(d, 0.0, axis=0) if len(d) >= 2 else None
        p = np.nan_to_num(t.pvalue, nan=1.0) if t is not None else np.ones(diff.shape[1:])
        tests[name] = (np.nanmean(d, axis=0) if len(d) else np.zeros(diff.shape[1:]), p, int(ok.sum()))
    p_rel = np.array(correct(list(tests["relevant"][1].ravel()), correction)).reshape(tests["relevant"][1].shape)
    p_hard = np.array(correct(list(tests["hard"][1].ravel()), correction)).reshape(tests["hard"][1].shape)
    rel_ok = ~np.isnan(means[3][..., 0, 0, 0, 0]) & ~np.isnan(easy[..., 0, 0, 0, 0])
    for l in range(nl):
        for h in range(nh):
            for k, (dname, _, _) in enumerate(DIRECTIONS):
                dr, dh = tests["relevant"][0][l, h, k], tests["hard"][0][l, h, k]
                sig_r = p_rel[l, h, k] <= alpha and dr > 0
                sig_h = p_hard[l, h, k] <= alpha and dh > 0
                kind = "syntactic" if (sig_r and sig_h) else "semantic" if sig_r else "none"
                rows.append({
                    "layer": l, "head": h, "direction": dname, "delta_relevant": dr, "delta_hard": dh,
                    "p_relevant": p_rel[l, h, k], "p_hard": p_hard[l, h, k], "kind": kind,
                    "entropy_relevant": float(np.nanmean(means[3][rel_ok, l, h, k, ient])),
                    "entropy_easy": float(np.nanmean(easy[rel_ok, l, h, k, ient])),
                    "exact_relevant": float(np.nanmean(means[3][rel_ok, l, h, k, iex])),
                    "exact_easy": float(np.nanmean(easy[rel_ok, l, h, k, iex])),
                    "n_queries": tests["relevant"][2],
                })
    return {"heads": pd.DataFrame(rows), "per_query": per_query}


def rank_matching_heads(heads: pd.DataFrame) -> list[tuple[int, int]]:
    """(layer, head) pairs by matching strength: mean of delta_relevant over Q<-D and D<-Q, best first."""
    strength = heads.groupby(["layer", "head"])["delta_relevant"].mean().sort_values(ascending=False, kind="stable")
    return [(int(l), int(h)) for l, h in strength.index]


# ---- Table 1 layouts -------------------------------------------------------------------------------

_COLUMNS = list(PART_NAMES) + [ALL]


def _grid(frame: pd.DataFrame, fmt: Callable[[float, bool, bool], str]) -> list[list[str]]:
    cells = frame.set_index("ablation")
    out = []
    for x in PART_NAMES:
        row = []
        for y in _COLUMNS:
            r = cells.loc[_cell_label(x, y)]
            row.append(fmt(float(r["ndcg@10"]), bool(r["significant"]), bool(r["lower"])))
        out.append(row)
    return out


def _caption(frame: pd.DataFrame, config: RunConfig, note: str = "") -> tuple[float, float, str]:
    base = float(frame.loc[frame.ablation == "none", "ndcg@10"].iloc[0])
    rnd = float(frame.loc[frame.ablation == "random", "ndcg@10"].iloc[0])
    cap = "all judged passages" if config.per_grade is None else f"up to {config.per_grade} passages per grade"
    if config.run:
        cap = f"re-ranking the top {config.top_k or 'all'} of run {Path(config.run).name}"
    text = (f"nDCG@10 with attention direction X<-Y masked in all layers and heads; model {config.model}, "
            f"{', '.join(config.datasets)}, {cap}, seed {config.seed}. Original: {base:.3f}; random ranking: {rnd:.3f}. "
            f"Bold: lower than the original; *: paired t-test p <= {config.alpha}.")
    return base, rnd, (f"{text} {note}" if note else text)


def table1_markdown(frame: pd.DataFrame, config: RunConfig, note: str = "") -> str:
    """Table 1 as the paper lays it out: rows X, columns Y and All (``note``: the pool's protocol)."""
    _, _, caption = _caption(frame, config, note)

    def fmt(v, sig, low):
        s = f"{v:.3f}" + ("\\*" if sig else "")
        return f"**{s}**" if low else s

    lines = ["| X \\ Y | " + " | ".join("All" if y == ALL else y for y in _COLUMNS) + " |",
             "|---|" + "---|" * len(_COLUMNS)]
    for x, row in zip(PART_NAMES, _grid(frame, fmt)):
        lines.append(f"| **{x}** | " + " | ".join(row) + " |")
    return caption + "\n\n" + "\n".join(lines) + "\n"


def table1_latex(frame: pd.DataFrame, config: RunConfig, note: str = "") -> str:
    _, _, caption = _caption(frame, config, note)

    def fmt(v, sig, low):
        s = f"{v:.3f}" + ("$^*$" if sig else "")
        return f"\\textbf{{{s}}}" if low else s

    head = " & ".join(["$X \\backslash Y$"] + ["All" if y == ALL else y for y in _COLUMNS]) + " \\\\"
    body = "\n".join(f"{x} & " + " & ".join(row) + " \\\\" for x, row in zip(PART_NAMES, _grid(frame, fmt)))
    caption_tex = caption.replace("<-", "$\\leftarrow$").replace("_", "\\_")
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
    """`matchsig demo`: sized to finish in <= 10 minutes on 2 CPU cores with the embedded model."""
    return RunConfig(model="embedded", datasets=["demo"], per_grade=4, max_queries=10, seed=0, contrast_per_grade=5,
                     contrast_easy=5, heads_k=[2, 8, 24], heads_random_seeds=2, batch_size=32)
