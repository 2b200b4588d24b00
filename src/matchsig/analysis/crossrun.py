"""Do the matching signals hold across models? Pure functions of several run folders (``matchsig compare``).

Every number here comes from the run folders' own files, read through :class:`RunFolder`:

* **Table 1 as gap fractions.** Each ablation's nDCG@10 as the fraction of the original - random gap it removes,
  ``removed = (original - ablated) / (original - random)``, from the means of ``table1_per_query.csv`` (the
  ``none``, ``random`` and ablation columns; ``table1.csv`` and ``summary.json`` when the per-query file is absent):
  0 = no loss, 1 = down to a random ranking, > 1 = worse than random, < 0 = better than the unablated model. Models
  with different nDCG@10 and random baselines compare on this scale. A gap <= 0 (the model no better than random on
  its pool) leaves the fraction undefined (NaN).
* **Paired tests across runs.** Two runs whose main pools have the same fingerprint scored the same (query,
  passage) pairs; for each ablation both runs have a per-query change ``ablated - none``, and a two-sided paired
  t-test (:func:`~matchsig.analysis.significance.paired_ttest`) of run A's changes against run B's asks whether the
  ablation costs the two models differently. The cells of one pair of runs are one family, corrected with
  :func:`~matchsig.analysis.significance.correct` (Holm by default). Runs with different pools (or no recorded
  fingerprint) get no paired test: their queries and passages differ, so the per-query changes do not pair.
* **Depth-normalised axes.** A Figure 1 point that cuts layers ``0..l`` of an ``L``-layer model sits at
  ``depth = (l + 1) / L`` (the fraction of layers cut; 0 = nothing cut, 1 = all); per-layer quantities (matching
  heads, contrast effects, patching sites) sit at the layer's centre ``(l + 0.5) / L``. :func:`align_curves`
  interpolates every run's curve (with the point (0, 0): nothing cut removes nothing) on the union of the runs'
  depths, so a 6-layer and a 12-layer model are read at the same depths.
* **Contrast effects per depth bin.** Per (layer, head, direction) the standardised effect of relevant vs easy
  passages, Cohen's ``d_z = t_relevant / sqrt(n_relevant)`` (mean / sd of the per-query differences), averaged
  over the heads whose layer centre falls in each of ``bins`` equal depth bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MatchsigError
from .matching import classify
from .runfolder import COMPARE, CONTRAST, FILES, LAYERS, PATCHING, TABLE1, RunFolder, as_float
from .series import HEAD_KINDS, pattern_similarity, series, series_steps
from .significance import correct, correction_label, paired_ttest

__all__ = ["Comparison", "agreement", "align_curves", "compare_runs", "contrast_bins", "curves", "findings_matrix", "gap_table",
           "head_kinds", "open_runs", "paired_tests", "patching_summary", "pool_fingerprint", "run_card"]

#: Per-query columns of ``table1_per_query.csv`` that are not ablations.
_NOT_CELLS = ("qid", TABLE1.none, TABLE1.random)
#: The contrast directions whose matching heads are counted.
DIRECTIONS = ("Q<-D", "D<-Q")


# ---- opening the runs ----------------------------------------------------------------------------


def _default_name(run: RunFolder) -> str:
    model = str(run.model_info.get("name") or run.config.get("model") or "")
    return Path(model.rstrip("/")).name or run.path.name


def open_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[tuple[str, RunFolder]]:
    """``(name, RunFolder)`` per run folder; names default to the model's name (the folder's when it repeats)."""
    if len(paths) < 2:
        raise MatchsigError(f"compare needs at least two run folders, got {len(paths)}")
    runs = []
    for p in paths:
        run = RunFolder(p)
        if not run.path.is_dir():
            raise MatchsigError(f"run folder {run.path} does not exist")
        if not (run.path / FILES.config).is_file() and not (run.path / FILES.summary).is_file():
            raise MatchsigError(f"{run.path} is not a matchsig run folder (no config.json, no summary.json)")
        runs.append(run)
    if names is not None:
        names = [str(n).strip() for n in names]
        if len(names) != len(runs):
            raise MatchsigError(f"--names gives {len(names)} names for {len(runs)} run folders")
        if any(not n for n in names):
            raise MatchsigError("--names has an empty name")
    else:
        names = [_default_name(r) for r in runs]
        names = [n if names.count(n) == 1 else f"{n} ({r.path.name})" for n, r in zip(names, runs)]
        names = [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise MatchsigError(f"run name {dup!r} is given twice: names must be unique")
    return list(zip(names, runs))


def pool_fingerprint(run: RunFolder, pool: str = "main") -> str | None:
    """The fingerprint of a run's pool (``summary.json``), None when not recorded."""
    info = (run.summary.get("pools") or {}).get(pool) or {}
    value = info.get("fingerprint")
    return str(value) if value else None


def run_card(name: str, run: RunFolder) -> dict[str, Any]:
    """One run's identity: model, family, depth, score convention, pools and baselines (missing fields: None)."""
    info, pools = run.model_info, run.summary.get("pools") or {}
    main = pools.get("main") or {}
    check = info.get("self_check")
    score = info.get("score")
    original, random = baselines(run)
    return {
        "name": name, "path": str(run.path), "model": info.get("name") or run.config.get("model"),
        "family": info.get("family"), "architecture": info.get("architecture"),
        "layers": run.num_layers, "heads": run.num_heads, "parameters": info.get("parameters"),
        "score": f"{score}, read from the {info.get('readout', '?')} token(s)" if score else None,
        "self_check": (f"max |diff| {check['max_abs_diff']:.1e} <= {check['tolerance']:.1e} vs its own "
                       f"{check.get('reference', '?')} forward") if isinstance(check, dict) and "max_abs_diff" in check else None,
        "datasets": ", ".join(map(str, run.config.get("datasets") or main.get("datasets") or [])) or None,
        "protocol": main.get("protocol", "sample") if main else None,
        "queries": main.get("queries"), "pairs": main.get("pairs"), "per_grade": main.get("per_grade"),
        "fingerprint": pool_fingerprint(run), "contrast_fingerprint": pool_fingerprint(run, "contrast"),
        "unablated": original, "random": random, "alpha": run.alpha, "correction": run.correction,
        "experiments": ", ".join(map(str, run.config.get("experiments") or [])) or None,
        "created": run.summary.get("created"),
    }


# ---- Table 1 as fractions of the gap -------------------------------------------------------------


def baselines(run: RunFolder) -> tuple[float | None, float | None]:
    """(unablated, random) nDCG@10: the per-query file's means when it exists, else table1.csv / summary.json."""
    pq = run.table1_per_query
    if pq is not None and TABLE1.none in pq and TABLE1.random in pq:
        return float(pq[TABLE1.none].mean()), float(pq[TABLE1.random].mean())
    return run.unablated, run.random_ndcg


def _fraction(original: float | None, random: float | None, value: float | None) -> float:
    if original is None or random is None or value is None or not original > random:
        return math.nan
    return (original - value) / (original - random)


def gap_table(name: str, run: RunFolder) -> pd.DataFrame:
    """Table 1 of one run, one row per ablation: its nDCG@10, change and the fraction of the gap it removes."""
    original, random = baselines(run)
    cells = run.cells()
    pq = run.table1_per_query
    if pq is not None:
        labels = [c for c in pq.columns if c not in _NOT_CELLS]
        means = {c: float(pq[c].mean()) for c in labels}
        source = FILES.table1_per_query
    else:
        labels = [row[TABLE1.ablation] for row in cells.values()]
        means = {row[TABLE1.ablation]: as_float(row[COMPARE.ndcg]) for row in cells.values()}
        source = FILES.table1
    by_label = {str(row[TABLE1.ablation]): row for row in cells.values()}
    rows = []
    for label in labels:
        row = by_label.get(label)
        target, _, src = label.partition("<-")
        value = means[label]
        rows.append({"run": name, "ablation": label, "target": target, "source": src, "ndcg@10": value,
                     "delta": None if value is None or original is None else value - original,
                     "removed": _fraction(original, random, value), "unablated": original, "random": random,
                     "mark": "" if row is None else run.mark(row), "from": source})
    return pd.DataFrame(rows, columns=["run", "ablation", "target", "source", "ndcg@10", "delta", "removed",
                                       "unablated", "random", "mark", "from"])


def agreement(table1: pd.DataFrame) -> pd.DataFrame:
    """Per pair of runs: how alike their Table 1 patterns are (:func:`~matchsig.analysis.series.pattern_similarity`
    of their gap fractions): does the ranking of the cells hold across models, whatever the pools?"""
    columns = ["run_a", "run_b", "cells", "pearson_r", "spearman_rho", "mad"]
    if table1.empty:
        return pd.DataFrame(columns=columns)
    removed = table1.pivot(index="ablation", columns="run", values="removed")
    rows = [{"run_a": a, "run_b": b, **pattern_similarity(removed[a], removed[b])}
            for a, b in combinations(list(dict.fromkeys(table1["run"])), 2)]
    return pd.DataFrame(rows, columns=columns)


def _per_query_changes(run: RunFolder) -> pd.DataFrame | None:
    pq = run.table1_per_query
    if pq is None or TABLE1.none not in pq:
        return None
    frame = pq.set_index(pq["qid"].astype(str))
    cells = [c for c in frame.columns if c not in _NOT_CELLS]
    return frame[cells].sub(frame[TABLE1.none], axis=0)


def _pair_reason(a: RunFolder, b: RunFolder) -> str | None:
    """Why runs ``a`` and ``b`` cannot be paired (None when they can)."""
    fa, fb = pool_fingerprint(a), pool_fingerprint(b)
    if fa is None or fb is None:
        return "a run records no pool fingerprint (summary.json), so it cannot be shown they scored the same pairs"
    if fa != fb:
        return (f"different pools (fingerprints {fa} and {fb}): the runs scored different query-passage pairs, so "
                "per-query changes do not pair; only the fractions side by side (an unpaired reading) compare")
    da, db = _per_query_changes(a), _per_query_changes(b)
    if da is None or db is None:
        return "a run has no table1_per_query.csv (the per-query nDCG@10 the paired test needs)"
    if set(da.index) != set(db.index):
        return "the same pool fingerprint but different queries in table1_per_query.csv (a damaged file?)"
    return None


def paired_tests(runs: Sequence[tuple[str, RunFolder]], correction: str = "holm",
                 alpha: float = 0.05) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Per pair of runs on the same pool, a paired t-test per Table 1 cell of run A's per-query changes against
    run B's, corrected over the pair's cells; and, for every pair not tested, why."""
    rows, skipped = [], []
    for (na, a), (nb, b) in combinations(runs, 2):
        reason = _pair_reason(a, b)
        if reason is not None:
            skipped.append({"run_a": na, "run_b": nb, "reason": reason})
            continue
        da, db = _per_query_changes(a), _per_query_changes(b)
        pair = []
        for label in [c for c in da.columns if c in db.columns]:
            # a query whose nDCG@10 is undefined in either run (NaN) has no pair
            both = pd.concat([da[label], db[label]], axis=1, join="inner").dropna()
            test = paired_ttest(both.iloc[:, 0].to_numpy(float), both.iloc[:, 1].to_numpy(float))
            pair.append({"run_a": na, "run_b": nb, "ablation": label, "delta_a": float(da[label].mean()),
                         "delta_b": float(db[label].mean()), "mean_diff": test.mean_diff, "t": test.statistic,
                         "p_value": test.pvalue, "n_queries": test.n})
        adjusted = correct([r["p_value"] for r in pair], correction)
        for r, p in zip(pair, adjusted):
            r["p_corrected"] = p
            r["significant"] = bool(p <= alpha)
        rows.extend(pair)
    columns = ["run_a", "run_b", "ablation", "delta_a", "delta_b", "mean_diff", "t", "p_value", "n_queries",
               "p_corrected", "significant"]
    return pd.DataFrame(rows, columns=columns), skipped


# ---- Figure 1 on a depth-normalised axis ---------------------------------------------------------


def curves(name: str, run: RunFolder) -> pd.DataFrame:
    """One run's Figure 1 curves (``layers.csv``) at depth (l + 1) / L, with the fraction of the gap removed."""
    columns = ["run", "direction", "layer", "layers", "depth", "ndcg@10", "removed"]
    frame, depth = run.layers, run.num_layers
    if frame is None or not depth:
        return pd.DataFrame(columns=columns)
    original, random = baselines(run)
    out = pd.DataFrame({"run": name, "direction": frame[LAYERS.direction].astype(str),
                        "layer": frame[LAYERS.layer].astype(int), "layers": depth})
    out["depth"] = (out["layer"] + 1) / depth
    out["ndcg@10"] = frame[COMPARE.ndcg].astype(float)
    out["removed"] = [_fraction(original, random, v) for v in out["ndcg@10"]]
    return out[columns]


def align_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Every run's curves linearly interpolated on the union of the runs' depths (plus depth 0, removed 0):
    ``measured`` says whether the run has a point of its own at that depth."""
    if frame.empty:
        return pd.DataFrame(columns=["run", "direction", "depth", "removed", "measured"])
    grid = np.unique(np.concatenate([[0.0], frame["depth"].to_numpy(float)]))
    rows = []
    for (name, direction), part in frame.groupby(["run", "direction"], sort=False):
        part = part.sort_values("depth")
        xs = np.concatenate([[0.0], part["depth"].to_numpy(float)])
        ys = np.concatenate([[0.0], part["removed"].to_numpy(float)])
        own = set(np.round(xs, 12))
        for x, y in zip(grid, np.interp(grid, xs, ys)):
            rows.append({"run": name, "direction": direction, "depth": float(x), "removed": float(y),
                         "measured": round(float(x), 12) in own})
    return pd.DataFrame(rows)


# ---- matching heads and contrast effects by depth ------------------------------------------------


def _heads_frame(run: RunFolder) -> pd.DataFrame | None:
    frame = run.contrast_heads
    if frame is None:
        return None
    if CONTRAST.kind not in frame:  # an older run: classify with the run's own alpha and correction
        frame = classify(frame, run.alpha, run.correction)
    return frame


def head_kinds(name: str, run: RunFolder) -> pd.DataFrame:
    """Per layer and direction (and ``either``): the fraction of the layer's heads that are matching heads, and of
    each kind, at depth (l + 0.5) / L."""
    columns = ["run", "layer", "depth", "direction", "heads", "matching", *HEAD_KINDS]
    frame, depth, width = _heads_frame(run), run.num_layers, run.num_heads
    if frame is None or not depth or not width:
        return pd.DataFrame(columns=columns)
    kind = frame.assign(kind=frame[CONTRAST.kind].astype(str))
    rows = []
    for layer in range(depth):
        here = kind[kind[CONTRAST.layer] == layer]
        for direction in (*DIRECTIONS, "either"):
            part = here if direction == "either" else here[here[CONTRAST.direction] == direction]
            row = {"run": name, "layer": layer, "depth": (layer + 0.5) / depth, "direction": direction, "heads": width}
            heads_of = lambda mask: part.loc[mask, CONTRAST.head].nunique() / width  # noqa: E731
            row["matching"] = heads_of(part["kind"] != "none")
            row.update({k: heads_of(part["kind"] == k) for k in HEAD_KINDS})
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def depth_bin(layer: int, layers: int, bins: int) -> int:
    """The depth bin (0 .. bins - 1) of layer ``layer``'s centre in an ``layers``-layer model."""
    return min(int(math.floor((layer + 0.5) / layers * bins)), bins - 1)


def contrast_bins(name: str, run: RunFolder, bins: int = 3) -> pd.DataFrame:
    """Per depth bin and direction: heads, the mean relevant-vs-easy difference of M, the mean and mean absolute
    Cohen's d_z (t / sqrt(n)) over the bin's heads with a finite t, and the fraction of matching heads."""
    columns = ["run", "bin", "depth_low", "depth_high", "direction", "heads", "delta_relevant", "d_z", "abs_d_z",
               "matching"]
    frame, depth = _heads_frame(run), run.num_layers
    if frame is None or not depth:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(bin=[depth_bin(int(layer), depth, bins) for layer in frame[CONTRAST.layer]],
                         d_z=frame["t_relevant"].astype(float) / np.sqrt(frame["n_relevant"].astype(float)))
    rows = []
    for b in range(bins):
        for direction in DIRECTIONS:
            part = frame[(frame["bin"] == b) & (frame[CONTRAST.direction] == direction)]
            finite = part["d_z"][np.isfinite(part["d_z"])]
            rows.append({"run": name, "bin": b, "depth_low": b / bins, "depth_high": (b + 1) / bins,
                         "direction": direction, "heads": len(part),
                         "delta_relevant": float(part["delta_relevant"].mean()) if len(part) else math.nan,
                         "d_z": float(finite.mean()) if len(finite) else math.nan,
                         "abs_d_z": float(finite.abs().mean()) if len(finite) else math.nan,
                         "matching": float((part[CONTRAST.kind] != "none").mean()) if len(part) else math.nan})
    return pd.DataFrame(rows, columns=columns)


# ---- patching and findings -----------------------------------------------------------------------


def patching_summary(name: str, run: RunFolder, top: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``top`` sites of largest |effect_mean| per diagnostic and site kind (depth of their layer's centre),
    and the run's patching vs contrast head overlap rows; empty frames when the run has no patching."""
    frame, depth = run.patching, run.num_layers
    sites = pd.DataFrame(columns=["run", "diagnostic", "site", "layer", "depth", "head", "position", "effect_mean",
                                  "effect_sd", "n_pairs"])
    if frame is not None and len(frame):
        parts = []
        for _, part in frame.groupby([PATCHING.diagnostic, PATCHING.site], sort=False):
            parts.append(part.reindex(part[PATCHING.effect_mean].abs().sort_values(ascending=False).index).head(top))
        chosen = pd.concat(parts)
        chosen = chosen.assign(run=name, depth=(chosen[PATCHING.layer].astype(float) + 0.5) / depth if depth else math.nan)
        sites = chosen.reindex(columns=sites.columns)
    overlap = run.patching_overlap
    overlap = pd.DataFrame() if overlap is None else overlap.assign(run=name)
    return sites, overlap


def findings_matrix(findings: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Claims x runs from each run's findings (the dicts of ``findings.json``): one row per (claim, run) with the
    verdict, its queries and any power / minimum detectable effect fields the findings carry."""
    rows = []
    for name, items in findings.items():
        for item in items:
            data = item.get("data") if isinstance(item.get("data"), dict) else {}
            extra = {k: item.get(k, data.get(k)) for k in ("power", "mde")}
            rows.append({"key": item.get("key"), "claim": item.get("name") or item.get("key"), "run": name,
                         "verdict": item.get("verdict"), "queries": item.get("queries"), **extra})
    return pd.DataFrame(rows, columns=["key", "claim", "run", "verdict", "queries", "power", "mde"])


# ---- everything ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Everything ``matchsig compare`` shows, as tables (one row per run and item); ``skipped``: the pairs of runs
    with no paired test and why."""

    names: list[str]
    cards: pd.DataFrame
    table1: pd.DataFrame
    paired: pd.DataFrame
    skipped: list[dict[str, str]]
    agreement: pd.DataFrame
    curves: pd.DataFrame
    aligned: pd.DataFrame
    heads: pd.DataFrame
    bins: pd.DataFrame
    patching: pd.DataFrame
    overlap: pd.DataFrame
    findings: pd.DataFrame = field(default_factory=lambda: findings_matrix({}))
    alpha: float = 0.05
    correction: str = "holm"
    notes: list[str] = field(default_factory=list)
    #: Where each run's findings came from (its findings.json, or judged now).
    sources: dict[str, str] = field(default_factory=dict)
    #: A checkpoint series: each run's step (None: not a series) and :func:`series`' table.
    steps: list[int] | None = None
    series: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def corrected(self) -> str:
        return correction_label(self.correction)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The CSV files of the comparison, by file name."""
        return {"runs.csv": self.cards, "table1.csv": self.table1, "paired.csv": self.paired,
                "agreement.csv": self.agreement,
                "curves.csv": self.curves, "curves_aligned.csv": self.aligned, "heads_by_layer.csv": self.heads,
                "contrast_bins.csv": self.bins, "patching_top.csv": self.patching,
                "patching_overlap.csv": self.overlap, "findings.csv": self.findings,
                **({"series.csv": self.series} if self.steps is not None else {})}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _each(runs: Sequence[tuple[str, RunFolder]], fn, what: str, notes: list[str], *args) -> list:
    """``fn(name, run, *args)`` per run; a run whose files are malformed is left out of that part with a note (one
    old or damaged run must not cost the comparison of the others)."""
    out = []
    for name, run in runs:
        try:
            out.append(fn(name, run, *args))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            notes.append(f"{name}: {what} could not be read from {run.path} ({type(exc).__name__}: {exc}); left out")
    return out


def compare_runs(runs: Sequence[tuple[str, RunFolder]], alpha: float = 0.05, correction: str = "holm",
                 bins: int = 3, steps: Sequence[int] | None = None) -> Comparison:
    """The comparison of ``runs`` (from :func:`open_runs`); a checkpoint series when ``steps`` are given or the
    models are ``step-NNNNNN`` folders (:func:`series_steps`). Findings are added by the caller (report layer)."""
    steps = series_steps(runs, steps)
    if bins < 1:
        raise MatchsigError(f"bad number of depth bins {bins}: must be >= 1")
    if not 0 < alpha < 1:
        raise MatchsigError(f"bad alpha {alpha}: must lie in (0, 1)")
    correct([], correction)  # an unknown correction is a one-line error before any work
    names = [n for n, _ in runs]
    paired, skipped = paired_tests(runs, correction, alpha)
    notes = [f"{n}: no Table 1 (table1_per_query.csv / table1.csv)" for n, r in runs
             if r.table1_per_query is None and r.table1 is None]
    notes += [f"{n}: the model does not beat a random ranking on its pool (unablated {o:.3f} <= random {x:.3f}): "
              "its gap fractions are undefined" for n, r in runs for o, x in [baselines(r)]
              if o is not None and x is not None and o <= x]
    curve = _concat(_each(runs, curves, "Figure 1 (layers.csv)", notes))
    patch = _each(runs, patching_summary, "patching (patching.csv)", notes)
    table1 = _concat(_each(runs, gap_table, "Table 1", notes))
    comparison = Comparison(
        names=names, cards=pd.DataFrame([run_card(n, r) for n, r in runs]), table1=table1, paired=paired,
        skipped=skipped, agreement=agreement(table1), curves=curve,
        aligned=align_curves(curve) if len(curve) else align_curves(pd.DataFrame()),
        heads=_concat(_each(runs, head_kinds, "the matching heads (contrast/heads.csv)", notes)),
        bins=_concat(_each(runs, contrast_bins, "the contrast effects (contrast/heads.csv)", notes, bins)),
        patching=_concat([p[0] for p in patch]), overlap=_concat([p[1] for p in patch]),
        alpha=alpha, correction=correction, notes=notes, steps=steps)
    if steps is not None:
        comparison.series = series(names, comparison.cards, comparison.table1, comparison.heads, steps)
    return comparison
