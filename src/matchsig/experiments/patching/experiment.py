"""The ``patch`` experiment (``matchsig patch``): activation patching on diagnostic pairs, resumable, with tables and heatmaps.

A run folder (``--out``) holds

* ``config.json``: the settings; reusing the folder with other settings is an error naming the field;
* ``pairs.tsv``: the diagnostic triples (:mod:`matchsig.analysis.diagnostics`) and ``summary.json`` (pool and
  pairs fingerprints, timings);
* ``store/patch/NNNNN.npy``: one file per finished chunk of pairs, through the runner's store (a
  killed run resumes where it stopped; under ``torchrun`` the chunks are shared out);
* ``patching.csv``: one row per (layer, head, position) site: ``diagnostic, site, layer, head,
  position, effect_mean, effect_sd, n_pairs, ci_low, ci_high, n_queries`` over the pairs whose
  perturbation moves the score by at least ``min_delta`` x the score scale (the standard deviation of
  the baseline scores of the diagnostic pairs: a fraction of the model's own score spread, so the same
  setting means the same for log-probabilities and raw logits; effects of pairs it barely moves are
  ratios of rounding noise); ``ci_low, ci_high``: the (1 - alpha) cluster-bootstrap CI of the mean
  effect, resampling *queries* (the append and prepend pairs of a passage, and every passage of a
  query, are one cluster: :mod:`matchsig.analysis.bootstrap`);
* ``patching.png``: layer x head heatmaps of the mean effect (per token role for per-position sites);
* ``patching_overlap.csv`` (``--site head`` in a folder that also holds ``contrast/heads.csv``, e.g.
  ``matchsig experiments --experiments contrast,patch``): the top-k patching heads (``overlap_k``)
  against the contrast heads, by :func:`matchsig.analysis.head_overlap.compare_heads` at the run's alpha and
  correction; its claim is judged in :mod:`.patching_findings`.

Sites (``--site``): ``head`` (each head's output ``attn.hook_z`` at all positions), ``head-position``
(each head at each position), ``residual`` (``hook_resid_post`` at each position: patching a whole
layer's residual stream is the whole perturbed input, effect 1, so only per position says
anything) and ``mlp`` (``hook_mlp_out`` at all positions). Per-position results are averaged
within token *roles*, since positions are not comparable across pairs of different lengths:
``CLS``, ``Q`` (query tokens), ``SEP1``, ``D*`` (the inserted positions, where baseline and
perturbed tokens differ), ``D`` (the other document tokens), ``SEP2``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...analysis.runfolder import FILES, RunFolder
from ...analysis.runfolder import PATCHING as P
from ...errors import MatchsigError
from ...engine.scheme import ENCODER, PartScheme
from ..registry import Experiment, Option
from ..store import single
from .findings import JUDGES

__all__ = ["PatchConfig", "Patching", "run_patch"]

SITES = {"head": ("attn.hook_z", False), "head-position": ("attn.hook_z", True),
         "residual": ("hook_resid_post", True), "mlp": ("hook_mlp_out", False)}
ROLES = ("CLS", "Q", "SEP1", "D*", "D", "SEP2")


@dataclass
class PatchConfig:
    """Settings of one ``matchsig patch`` run (turned into a :class:`RunConfig` of the ``patch`` experiment)."""

    model: str = "embedded"
    dataset: str = "demo"
    diagnostic: str = "tfc1"
    site: str = "head"
    pairs: int = 50
    per_grade: int | None = 3
    seed: int = 0
    where: list[str] = field(default_factory=lambda: ["append", "prepend"])
    min_delta: float = 0.01
    chunk_size: int = 10
    batch_size: int = 64
    device: str | None = None
    dtype: str | None = None
    max_length: int = 512
    overlap_k: list[int] = field(default_factory=lambda: [4, 8])
    overlap_permutations: int = 10_000

    #: Fields named otherwise in :class:`RunConfig` (``dataset`` becomes a one-item ``datasets``).
    RUN_CONFIG_NAMES = {"dataset": "datasets"}

    def run_config(self):
        from ..config import RunConfig

        c = {self.RUN_CONFIG_NAMES.get(k, k): v for k, v in asdict(self).items()}
        return RunConfig(experiments=["patch"], **{**c, "datasets": [c["datasets"]]})


class Patching(Experiment):
    name = "patch"
    title = "Activation patching on diagnostic pairs (beyond the paper)"
    nav = "Patching"
    tables = {"effects": FILES.patching, "overlap": FILES.patching_overlap, "pairs": FILES.pairs}
    default = False
    options = (
        Option("diagnostic", "tfc1", "--diagnostic", "tfc1, tdc, lnc1 or stmc1 (see docs/patching.md).", kind=str),
        Option("site", "head", "--site", "head, head-position, residual or mlp.", kind=str),
        Option("pairs", 50, "--pairs", "Passages drawn from the pool; each gives an appended and a prepended pair.",
               minimum=1),
        Option("where", lambda: ["append", "prepend"], "--where", "Where the term is inserted (repeatable).",
               kind=list[str]),
        Option("min_delta", 0.01, "--min-delta", "Pairs whose score the perturbation moves by less than this "
               "fraction of the score scale (the sd of the pairs' baseline scores) are left out of the means.",
               kind=float, results=False),
        Option("overlap_k", lambda: [4, 8], "--overlap-k", "Top-k patching heads compared with the contrast heads, "
               "when the folder has a contrast run (repeatable).", kind=list[int], minimum=1, results=False),
        Option("overlap_permutations", 10_000, "--overlap-permutations", "Random head sets of the overlap's "
               "permutation tests.", minimum=1, results=False),
    )
    judges = JUDGES

    def validate(self, config) -> None:
        from ...analysis.diagnostics import DIAGNOSTICS

        if config.site not in SITES:
            raise MatchsigError(f"unknown --site {config.site!r}: use one of {', '.join(SITES)}")
        if config.diagnostic not in DIAGNOSTICS:
            raise MatchsigError(f"unknown --diagnostic {config.diagnostic!r}: use one of {', '.join(DIAGNOSTICS)}")
        if config.min_delta < 0:
            raise MatchsigError(f"bad min_delta {config.min_delta}: must be >= 0")

    def diagnostic_pairs(self, runner):
        """(pool, pairs): the sampled pool of the run's dataset and its seeded diagnostic pairs."""
        if "_patch_pairs" not in runner.results:
            from ...analysis.diagnostics import make_pairs
            from ...data.sampling import sample_pool

            c = runner.config
            pool = sample_pool(runner.pools.collections(c.datasets[:1])[0], per_grade=c.per_grade, seed=c.seed)
            pairs = make_pairs(runner.encoder, pool, c.diagnostic, n=c.pairs, seed=c.seed, where=c.where)
            runner.results["_patch_pairs"] = (pool, pairs)
        return runner.results["_patch_pairs"]

    def units(self, runner) -> list:
        _, pairs = self.diagnostic_pairs(runner)
        if runner.dist.rank == 0:
            pairs.write_tsv(runner.writer.path(FILES.pairs))
        kind, per_position = SITES[runner.config.site]
        runner.log(f"{len(pairs)} {runner.config.diagnostic} pairs ({pairs.fingerprint}), site {runner.config.site}")
        return [single(f"patch/{k:05d}", lambda rows=rows: _chunk_work(runner.encoder, pairs, range(rows[0], rows[-1] + 1),
                                                                       kind, per_position, runner.config.batch_size),
                       len(rows))
                for k, rows in enumerate(runner.chunks(len(pairs)))]

    def _effects(self, runner):
        _, pairs = self.diagnostic_pairs(runner)
        values = np.concatenate([runner.store.load(f"patch/{k:05d}") for k in range(len(runner.chunks(len(pairs))))])
        kind, per_position = SITES[runner.config.site]
        nr = len(ROLES) if per_position else 1
        effects = values[:, 2:].reshape(len(values), runner.encoder.num_layers, -1, nr)
        moved = np.abs(values[:, 1] - values[:, 0]) >= runner.config.min_delta * score_scale(values[:, 0])
        return values, effects, moved

    def collect(self, runner) -> None:
        if runner.dist.rank != 0:
            return
        values, effects, moved = self._effects(runner)
        kind, per_position = SITES[runner.config.site]
        qids = np.array([t.qid for t in self.diagnostic_pairs(runner)[1].triples])
        scheme = runner.encoder.scheme
        _write_table(runner.writer, runner.config, kind, effects[moved], per_position, qids[moved], scheme)
        _heatmaps(runner.writer.path(FILES.patching_png), runner.config, effects[moved], per_position, scheme)
        _write_overlap(runner)

    def summary(self, runner) -> dict:
        values, _, moved = self._effects(runner)
        pool, pairs = self.diagnostic_pairs(runner)
        return {"experiment": "patch", "pairs": pairs.describe(), "pool": pool.describe(),
                "pairs_moved": int(moved.sum()), "mean_delta": float(np.mean(values[:, 1] - values[:, 0])),
                "score_scale": score_scale(values[:, 0]),
                "min_delta_absolute": runner.config.min_delta * score_scale(values[:, 0])}

    def in_report(self, folder: RunFolder) -> bool:
        return folder.patching is not None

    def section(self, folder: RunFolder, figures: dict[str, Path]) -> str:
        from ..html import esc, figure, table

        frame = folder.patching
        if frame is None:
            return ""
        top = frame.reindex(frame[P.effect_mean].abs().sort_values(ascending=False).index).head(10)
        png = folder.path / FILES.patching_png
        image = figure({FILES.patching_png: png}, FILES.patching_png, "Mean normalised patching effect per site.")
        return (f'<section id="{self.name}"><h2>{esc(self.title)}</h2><p class="muted">Normalised effect (patched '
                "- baseline) / (perturbed - baseline) of each site, averaged over the diagnostic pairs "
                f"(<code>{FILES.patching}</code>; docs/patching.md).</p>{image}"
                f"<p>The ten sites with the largest mean effect:</p>{table(top)}{overlap_section(folder)}</section>")


def _write_overlap(runner) -> Path | None:
    """``patching_overlap.csv`` when the folder holds head patching and a contrast run (else none, and no stale one)."""
    c = runner.config
    folder = RunFolder(runner.out)
    path = runner.out / FILES.patching_overlap
    if c.site != "head" or folder.contrast_heads is None:
        path.unlink(missing_ok=True)
        return None
    from ...analysis.head_overlap import compare_heads

    n = runner.encoder.num_layers * runner.encoder.num_heads
    ks = sorted({k for k in c.overlap_k if k <= n})
    if not ks:
        raise MatchsigError(f"overlap_k {c.overlap_k}: every k exceeds the model's {n} heads")
    frame = compare_heads(folder.path / FILES.patching, folder.path / FILES.contrast_heads, ks,
                          diagnostic=c.diagnostic, alpha=c.alpha, correction=c.correction,
                          n_permutations=c.overlap_permutations, seed=c.seed)
    runner.log(f"overlap of the top-k patching heads with the contrast heads: k = {ks}")
    return runner.writer.csv(FILES.patching_overlap, frame)


#: Columns of ``patching_overlap.csv`` the report shows.
OVERLAP_SHOWN = ("k", "reference", "m", "overlap", "expected", "jaccard", "p_hypergeom", "p_layer_exact",
                 "p_permutation", "p_layer_permutation", "shared")


def overlap_section(folder: RunFolder) -> str:
    """The overlap table of ``patching_overlap.csv`` ("" when the folder has none)."""
    from ..html import esc, num, pval, table

    frame = folder.patching_overlap
    if frame is None:
        if folder.contrast_heads is None:
            return ('<p class="muted">No contrast run in this folder: run <code>matchsig experiments --experiments '
                    "contrast,patch</code> to compare the top patching heads with the contrast heads.</p>")
        return ""
    first = frame.iloc[0]
    shown = frame[[c for c in OVERLAP_SHOWN if c in frame]].copy()
    shown["shared"] = shown["shared"].fillna("").astype(str).str.replace(";", " ")
    formats = {c: pval for c in ("p_hypergeom", "p_layer_exact", "p_permutation", "p_layer_permutation")}
    formats.update(expected=num, jaccard=num, shared=lambda v: f'<span class="small">{esc(v)}</span>')
    return (f"<h3>Do the top patching heads coincide with the contrast heads?</h3><p class=\"muted\">The k heads of "
            f"largest |effect_mean| ({esc(first['diagnostic'])}) against each contrast head set (matching heads, "
            "syntactic, semantic, and the top-k of the contrast ranking), classified at the run's alpha "
            f"({folder.alpha:g}, {esc(folder.corrected)}). m = heads in the set, overlap = shared heads, expected = "
            "k m / N. One-sided p of an overlap at least as large: hypergeometric (uniform random k heads) and "
            "layer-stratified exact (random heads keeping each layer's count), with their permutation estimates "
            f"({int(first['n_permutations'])} draws). Spearman rho between |effect_mean| and the contrast effect "
            f"size over all heads: {num(first['spearman_rho'])} (p {pval(first['spearman_p'])}, "
            f"{int(first['spearman_n'])} heads). <code>{FILES.patching_overlap}</code>; docs/patching.md.</p>"
            f"<div class=\"scroll\">{table(shown, formats)}</div>")


def run_patch(out: str | Path, config: PatchConfig, force: bool = False, progress: bool = True,
              log=lambda msg: None) -> Path:
    """Run (or resume) the experiment into ``out`` through the runner; returns the path of ``patching.csv``."""
    from ..runner import Runner

    started = time.perf_counter()
    runner = Runner(out, config.run_config(), force=force, progress=progress, log=log)
    folder = runner.run()
    log(f"done in {time.perf_counter() - started:.1f} s")
    return folder / FILES.patching


def _roles(enc_b, enc_p, i: int) -> np.ndarray:
    """Role index (into ROLES) of each position of pair i."""
    from ...engine.parts import Part

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


def score_scale(baseline: np.ndarray) -> float:
    """The scale ``min_delta`` is a fraction of: the sd of the pairs' baseline scores (1 when it is 0 or undefined)."""
    sd = float(np.std(baseline, ddof=1)) if len(baseline) > 1 else float("nan")
    return sd if np.isfinite(sd) and sd > 0 else 1.0


def role_names(scheme: PartScheme = ENCODER) -> list[str]:
    """The roles in the model's part names (a decoder's ``PRE Q MID D* D LAST``)."""
    return [scheme.name(r) for r in ROLES]


def _write_table(writer, config, kind: str, effects: np.ndarray, per_position: bool, qids: np.ndarray,
                 scheme: PartScheme = ENCODER) -> Path:
    import pandas as pd

    from ...analysis.bootstrap import clustered_mean_ci

    n, nl, nh, nr = effects.shape
    low, high, present = clustered_mean_ci(effects.reshape(n, -1), qids, config.alpha, seed=config.seed)
    rows = []
    for layer in range(nl):
        for h in range(nh):
            for r in range(nr):
                col = effects[:, layer, h, r]
                col = col[np.isfinite(col)]
                i = np.ravel_multi_index((layer, h, r), (nl, nh, nr))
                rows.append({P.diagnostic: config.diagnostic, P.site: config.site, P.layer: layer,
                             P.head: h if kind == "attn.hook_z" else "", P.position: role_names(scheme)[r] if per_position else "all",
                             P.effect_mean: float(col.mean()) if len(col) else float("nan"),
                             P.effect_sd: float(col.std(ddof=1)) if len(col) > 1 else float("nan"),
                             P.n_pairs: int(len(col)), "ci_low": low[i], "ci_high": high[i],
                             "n_queries": int(present[i])})
    return writer.csv(FILES.patching, pd.DataFrame(rows), float_format="%.6g")


def _heatmaps(path: Path, config, effects: np.ndarray, per_position: bool, scheme: PartScheme = ENCODER) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = np.nanmean(effects, 0) if len(effects) else np.full(effects.shape[1:], np.nan)  # (L, H, R)
    if config.site == "residual" or config.site == "mlp":
        grid, xlabels, xname = mean[:, 0, :], role_names(scheme) if per_position else ["all positions"], "token role"
        panels = [(grid, f"{config.diagnostic}: {config.site}")]
    elif per_position:
        # the aggregating part's positions (an encoder-decoder's DEC is no encoder position: its last part instead)
        agg = scheme.aggregator if scheme.aggregator in ROLES else "SEP2"
        panels = [(mean[:, :, ROLES.index(r)], f"{config.diagnostic}: head at {scheme.name(r)} positions")
                  for r in ("D*", agg)]
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
