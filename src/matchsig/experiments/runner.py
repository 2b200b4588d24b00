"""The runner: turns a :class:`RunConfig` into a run folder by running the registered experiments.

For each configured experiment, in registration order, the runner asks it for its work units,
runs this process's share of those not already in the store (one file per unit output, written
atomically: a killed run resumes where it stopped), waits for the other processes of a ``torchrun``
job, then lets the experiment collect the stored arrays and write its files (rank 0).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis.runfolder import FILES, RunFolderWriter
from ..errors import MatchsigError
from . import registry
from .config import RunConfig
from .pools import Pools, describe
from .store import Dist, Store, Unit

__all__ = ["Runner"]


class Runner:
    """A run folder for one :class:`RunConfig` (:mod:`matchsig.analysis.runfolder` lists its files)."""

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
        #: What experiments hand to later ones (contrast -> heads: the classified heads).
        self.results: dict[str, object] = {}
        #: Progress of the unit being computed: ``tick(n)`` after n more of its pair-configurations.
        self.tick: Callable[[int], None] = lambda done: None
        self._encoder = None
        self.writer = RunFolderWriter(self.out)
        self._prepare_folder()
        self.store = Store(self.out / FILES.store)
        self.pools = Pools(config, self.log)

    # ---- folder and configuration --------------------------------------------------------------
    def _prepare_folder(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise MatchsigError(f"cannot write to output folder {self.out}: {exc.strerror or exc}") from None
        cfg_path = self.out / FILES.config
        if cfg_path.is_file() and not self.force:
            self._check_same_results(RunConfig.read(cfg_path))
        if self.force and self.dist.rank == 0 and (self.out / FILES.store).is_dir():
            import shutil

            shutil.rmtree(self.out / FILES.store)
        if self.dist.rank == 0:
            leftovers = Store(self.out / FILES.store).remove_leftovers()
            if leftovers:
                self.log(f"store: removed {len(leftovers)} temporary file(s) an interrupted run left "
                         f"(e.g. {leftovers[0].relative_to(self.out)}); their units are recomputed")
        self.dist.barrier()
        if self.dist.rank == 0:
            self.writer.json(FILES.config, self.config.to_dict())

    def _check_same_results(self, old: RunConfig) -> None:
        before, now = set(old.experiments), set(self.config.experiments)
        for experiment, option in registry.options():
            if experiment.name in before and experiment.name not in now:
                # resumed alongside the chosen ones: with the settings its stored results were made with
                setattr(self.config, option.name, copy.deepcopy(getattr(old, option.name)))
        # options of an experiment the folder has not run yet change none of its stored results
        new_only = {o.name for e, o in registry.options() if e.name not in before}
        old_key, new_key = old.results_key(), self.config.results_key()
        diff = [k for k in new_key if k not in new_only and old_key.get(k) != new_key[k]]
        if diff:
            k = diff[0]
            raise MatchsigError(
                f"{self.out} holds a run with another configuration ({k}: {old_key.get(k)!r} there, "
                f"{new_key[k]!r} now); use --force to recompute it, or another --out"
            )
        merged = set(old.experiments) | set(self.config.experiments)
        self.config.experiments = [n for n in registry.names() if n in merged]

    @property
    def encoder(self):
        if self._encoder is None:
            from ..engine.model import CrossEncoder

            device = self.config.device
            if device is None and self.dist.world > 1:
                import torch

                if torch.cuda.is_available():
                    device = f"cuda:{self.dist.local_rank}"
            encoder = CrossEncoder.load(self.config.model, device=device, dtype=self.config.dtype,
                                        max_length=self.config.max_length)
            self._encoder = encoder
        return self._encoder

    def pool(self, name: str):
        """(pool, (queries, documents)) of pool ``name`` (``main``, ``contrast``)."""
        return self.pools.get(name)

    def chunks(self, n: int) -> list[np.ndarray]:
        size = self.config.chunk_size
        return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]

    # ---- units ---------------------------------------------------------------------------------
    def execute(self, phase: str, units: list[Unit]) -> None:
        """Run this process's share of ``units`` not already in the store, then wait for the others."""
        started = time.perf_counter()
        missing = {u.name: [f for f in u.files if not self.store.has(f)] for u in units}
        todo = [u for i, u in enumerate(units) if self.dist.mine(i) and missing[u.name]]
        # counted in stored files, the store's units (one per configuration and chunk, as before grid units)
        files = sum(len(u.files) for u in units)
        done = files - sum(len(m) for m in missing.values())
        bad = [f for u in units for f in u.files if f in self.store.bad]
        if bad:
            self.log(f"{phase}: {len(bad)} stored unit(s) damaged, recomputing them (e.g. {bad[0]}: "
                     f"{self.store.bad[bad[0]]})")
        if done:
            self.log(f"{phase}: {done}/{files} units already done, resuming")
        bar = None
        if self.progress and todo:
            from tqdm.auto import tqdm

            total = sum(u.size * len(missing[u.name]) // len(u.files) for u in todo)
            bar = tqdm(total=total, desc=phase, unit="pair", dynamic_ncols=True,
                       position=self.dist.rank if self.dist.world > 1 else None)
        for unit in todo:
            names = missing[unit.name]
            share = unit.size * len(names) // len(unit.files)
            ticked = 0

            def tick(done: int) -> None:  # a unit's work may report progress in steps (of its whole size)
                nonlocal ticked
                step = min(share - ticked, done * share // unit.size)
                if bar is not None and step > 0:
                    bar.update(step)
                ticked += max(step, 0)

            self.tick = tick
            arrays = dict(zip(unit.files, unit.work(), strict=True))
            for name in names:
                self.store.save(name, np.asarray(arrays[name]))
            if bar is not None and share > ticked:
                bar.update(share - ticked)
        self.tick = lambda done: None
        if bar is not None:
            bar.close()
        self.dist.barrier()
        lost = [f for u in units for f in u.files if not self.store.has(f)]
        if lost:
            raise MatchsigError(f"{phase}: {len(lost)} work units missing from the store after all processes finished "
                                f"(first: {lost[0]})")
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - started

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> Path:
        """Run the configured experiments; returns the run folder."""
        t0 = time.perf_counter()
        selected = self.config.selected()
        if self.dist.rank == 0:
            pools = [p for p in ("main", "contrast") if any(p in e.pools for e in selected)]
            frame = self.pools.frame(pools)
            if frame is not None:
                self.writer.tsv(FILES.pools, frame)
        self.encoder  # load (and check) the model before any progress bar starts
        for experiment in selected:
            self.execute(experiment.name, experiment.units(self))
            experiment.collect(self)
        self.timings["total"] = time.perf_counter() - t0
        if self.dist.rank == 0:
            self._write_summary(selected)
        return self.out

    def _write_summary(self, selected: list) -> None:
        from .summary import run_summary

        summary = run_summary(self, selected)
        for experiment in selected:
            summary.update(experiment.summary(self))
        self.writer.json(FILES.summary, summary)

    def describe_pools(self, selected: list) -> dict:
        """``summary.json``'s ``pools``: each pool the run used, with its datasets and fingerprint."""
        c = self.config
        pools = {}
        if any("main" in e.pools for e in selected):
            pools["main"] = {"datasets": list(c.datasets), **describe(self.pool("main")[0])}
        if any("contrast" in e.pools for e in selected):
            sources = self.pools.easy_negative_sources()
            pools["contrast"] = {"datasets": c.analysis, **describe(self.pool("contrast")[0]),
                                 "easy_negatives_from": sources}
            warnings = sorted({v["warning"] for v in sources.values() if "warning" in v})
            if warnings:
                pools["contrast"]["easy_negatives_warning"] = warnings[0]
        return pools
