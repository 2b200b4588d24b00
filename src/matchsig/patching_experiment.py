"""The ``matchsig patch`` experiment: activation patching on diagnostic pairs, resumable, with tables and heatmaps.

A run folder (``--out``) holds

* ``config.json``: the settings; reusing the folder with other settings is an error naming the field;
* ``pairs.tsv``: the diagnostic triples (:mod:`matchsig.diagnostics`) and ``summary.json`` (pool and
  pairs fingerprints, timings);
* ``store/patch/NNNNN.npy``: one file per finished chunk of pairs, written atomically, so a killed
  run resumes where it stopped;
* ``patching.csv``: one row per (layer, head, position) site: ``diagnostic, site, layer, head,
  position, effect_mean, effect_sd, n_pairs`` over the pairs whose perturbation moves the score by
  at least ``min_delta`` (effects of pairs it barely moves are ratios of rounding noise);
* ``patching.png``: layer x head heatmaps of the mean effect (per token role for per-position sites).

Sites (``--site``): ``head`` (each head's output ``attn.hook_z`` at all positions), ``head-position``
(each head at each position), ``residual`` (``hook_resid_post`` at each position: patching a whole
layer's residual stream is the whole perturbed input, effect 1, so only per position says
anything) and ``mlp`` (``hook_mlp_out`` at all positions). Per-position results are averaged
within token *roles*, since positions are not comparable across pairs of different lengths:
``CLS``, ``Q`` (query tokens), ``SEP1``, ``D*`` (the inserted positions, where baseline and
perturbed tokens differ), ``D`` (the other document tokens), ``SEP2``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import MatchsigError

SITES = {"head": ("attn.hook_z", False), "head-position": ("attn.hook_z", True),
         "residual": ("hook_resid_post", True), "mlp": ("hook_mlp_out", False)}
ROLES = ("CLS", "Q", "SEP1", "D*", "D", "SEP2")


@dataclass
class PatchConfig:
    """Settings of one ``matchsig patch`` run."""

    model: str = "embedded"
    dataset: str = "demo"
    diagnostic: str = "tfc1"
    site: str = "head"
    pairs: int = 50
    per_grade: int | None = 3
    seed: int = 0
    where: list[str] = field(default_factory=lambda: ["append", "prepend"])
    min_delta: float = 0.01
    chunk: int = 10
    batch_size: int = 64
    device: str | None = None
    dtype: str | None = None
    max_length: int = 512

    def validate(self) -> None:
        from .diagnostics import DIAGNOSTICS

        if self.site not in SITES:
            raise MatchsigError(f"unknown --site {self.site!r}: use one of {', '.join(SITES)}")
        if self.diagnostic not in DIAGNOSTICS:
            raise MatchsigError(f"unknown --diagnostic {self.diagnostic!r}: use one of {', '.join(DIAGNOSTICS)}")
        for name in ("pairs", "chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise MatchsigError(f"bad {name} {getattr(self, name)}: must be >= 1")
        if self.min_delta < 0:
            raise MatchsigError(f"bad min_delta {self.min_delta}: must be >= 0")


def _check_config(out: Path, config: PatchConfig, force: bool) -> None:
    path = out / "config.json"
    mine = {"experiment": "patch", **asdict(config)}
    if path.is_file() and not force:
        old = json.loads(path.read_text())
        for f in fields(config):
            if f.name in ("device", "batch_size") or old.get(f.name) == mine[f.name]:
                continue  # where a run executes does not change its results
            raise MatchsigError(f"{out} holds a patch run with {f.name}={old.get(f.name)!r}, not {mine[f.name]!r}: "
                                "use another --out or --force")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1) + "\n")


def _roles(enc_b, enc_p, i: int) -> np.ndarray:
    """Role index (into ROLES) of each position of pair i."""
    from .parts import Part

    parts = np.asarray(enc_b.part_ids[i])
    role = np.select([parts == Part.CLS, parts == Part.Q, parts == Part.SEP1, parts == Part.D, parts == Part.SEP2],
                     [0, 1, 2, 4, 5])
    role[np.asarray(enc_b.input_ids[i]) != np.asarray(enc_p.input_ids[i])] = 3
    return role


def _chunk_work(ce, pairs, rows: range, kind: str, per_position: bool, batch_size: int) -> np.ndarray:
    """(n, 2 + L * H * R): baseline, perturbed, then the effect per layer, head and role (R = 1 without positions)."""
    q = [pairs.triples[i].query for i in rows]
    b = [pairs.triples[i].baseline for i in rows]
    p = [pairs.triples[i].perturbed for i in rows]
    res = ce.patch(q, b, p, site=kind, positions="each" if per_position else None, batch_size=batch_size)
    eff = res.effect  # (n, L, H, P)
    n, nl, nh, _ = eff.shape
    if per_position:
        enc_b, enc_p = ce.encode(q, b), ce.encode(q, p)
        by_role = np.full((n, nl, nh, len(ROLES)), np.nan)
        for i in range(n):
            role = _roles(enc_b, enc_p, i)
            for r in range(len(ROLES)):
                cols = np.flatnonzero(role == r)
                if len(cols):
                    by_role[i, ..., r] = eff[i][..., cols].mean(-1)
        eff = by_role
    return np.concatenate([res.baseline[:, None], res.perturbed[:, None], eff.reshape(n, -1)], 1)


def run_patch(out: str | Path, config: PatchConfig, force: bool = False, progress: bool = True,
              log=lambda msg: None) -> Path:
    """Run (or resume) the experiment into ``out``; returns the path of ``patching.csv``."""
    import shutil

    from .datasets import load_collection
    from .diagnostics import make_pairs
    from .experiments import Store
    from .model import CrossEncoder
    from .sampling import sample_pool

    config.validate()
    out = Path(out)
    if force and (out / "store").is_dir():
        shutil.rmtree(out / "store")
    _check_config(out, config, force)
    started = time.perf_counter()
    ce = CrossEncoder.load(config.model, device=config.device, dtype=config.dtype, max_length=config.max_length)
    pool = sample_pool(load_collection(config.dataset), per_grade=config.per_grade, seed=config.seed)
    pairs = make_pairs(ce, pool, config.diagnostic, n=config.pairs, seed=config.seed, where=config.where)
    pairs.write_tsv(out / "pairs.tsv")
    kind, per_position = SITES[config.site]
    store = Store(out / "store")
    chunks = [range(s, min(s + config.chunk, len(pairs))) for s in range(0, len(pairs), config.chunk)]
    todo = [k for k in range(len(chunks)) if not store.has(f"patch/{k:05d}")]
    log(f"{len(pairs)} {config.diagnostic} pairs ({pairs.fingerprint}), site {config.site}: "
        f"{len(chunks) - len(todo)} of {len(chunks)} chunks already stored")
    from .model import _progress

    bar = _progress(sum(len(chunks[k]) for k in todo), progress, f"patch {config.site}")
    for k in todo:
        store.save(f"patch/{k:05d}", _chunk_work(ce, pairs, chunks[k], kind, per_position, config.batch_size))
        bar.update(len(chunks[k]))
    bar.close()
    values = np.concatenate([store.load(f"patch/{k:05d}") for k in range(len(chunks))])
    nr = len(ROLES) if per_position else 1
    effects = values[:, 2:].reshape(len(values), ce.num_layers, -1, nr)
    moved = np.abs(values[:, 1] - values[:, 0]) >= config.min_delta
    csv_path = _write_table(out, config, kind, effects[moved], per_position)
    _heatmaps(out / "patching.png", config, effects[moved], per_position)
    summary = {"experiment": "patch", "config": asdict(config), "pairs": pairs.describe(),
               "pool": pool.describe(), "pairs_moved": int(moved.sum()),
               "mean_delta": float(np.mean(values[:, 1] - values[:, 0])), "seconds": time.perf_counter() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return csv_path


def _write_table(out: Path, config: PatchConfig, kind: str, effects: np.ndarray, per_position: bool) -> Path:
    import pandas as pd

    _, nl, nh, nr = effects.shape
    rows = []
    for layer in range(nl):
        for h in range(nh):
            for r in range(nr):
                col = effects[:, layer, h, r]
                col = col[np.isfinite(col)]
                rows.append({"diagnostic": config.diagnostic, "site": config.site, "layer": layer,
                             "head": h if kind == "attn.hook_z" else "", "position": ROLES[r] if per_position else "all",
                             "effect_mean": float(col.mean()) if len(col) else float("nan"),
                             "effect_sd": float(col.std(ddof=1)) if len(col) > 1 else float("nan"),
                             "n_pairs": int(len(col))})
    path = out / "patching.csv"
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.6g")
    return path


def _heatmaps(path: Path, config: PatchConfig, effects: np.ndarray, per_position: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = np.nanmean(effects, 0) if len(effects) else np.full(effects.shape[1:], np.nan)  # (L, H, R)
    if config.site == "residual" or config.site == "mlp":
        grid, xlabels, xname = mean[:, 0, :], list(ROLES) if per_position else ["all positions"], "token role"
        panels = [(grid, f"{config.diagnostic}: {config.site}")]
    elif per_position:
        panels = [(mean[:, :, ROLES.index(r)], f"{config.diagnostic}: head at {r} positions") for r in ("D*", "CLS")]
        xlabels, xname = list(range(mean.shape[1])), "head"
    else:
        panels = [(mean[:, :, 0], f"{config.diagnostic}: head output, all positions")]
        xlabels, xname = list(range(mean.shape[1])), "head"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    lim = max(1e-9, float(np.nanmax(np.abs([g for g, _ in panels]))) if np.isfinite([g for g, _ in panels]).any() else 1)
    for ax, (grid, title) in zip(axes[0], panels):
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xname)
        ax.set_ylabel("layer")
        ax.set_xticks(range(len(xlabels)), [str(x) for x in xlabels], fontsize=7)
        ax.set_yticks(range(grid.shape[0]))
        fig.colorbar(im, ax=ax, label="mean normalised effect")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
