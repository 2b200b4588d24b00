"""Do the heads that activation patching finds coincide with the paper's contrast (matching) heads?

Two head tables of the same model meet here:

* a **patching table** (``patching.csv`` of ``matchsig patch --site head``, :mod:`matchsig.experiments.patching`):
  one row per (layer, head) with the mean normalised effect ``effect_mean`` of patching that head's
  output from the perturbed into the baseline run of a diagnostic (``tfc1``, ``stmc1``, ...);
* a **contrast table** (``contrast/heads.csv`` of a run): one row per (layer, head, direction) with
  the paired tests of :mod:`matchsig.analysis.matching`, classified by :func:`matchsig.analysis.matching.classify`.

Selections (all lists of ``(layer, head)``):

* **top-k patching heads** (:func:`top_patching_heads`): the k heads of largest ``|effect_mean|``;
  ties broken by lower layer, then lower head; heads without a finite mean (no pair moved enough)
  come last. The absolute value is taken because a head that *reverses* the perturbation's effect
  is as much a part of the mechanism as one that carries it.
* **contrast heads** (:func:`contrast_heads`): the matching heads (matching in at least one
  direction, or in the given direction), or the heads of one kind (``syntactic``, ``semantic``,
  ``unclassified``) in at least one direction. A head syntactic in one direction and semantic in
  the other belongs to both kind sets.
* **top-k contrast heads** (:func:`top_contrast_heads`): the first k of
  :func:`matchsig.analysis.matching.rank_heads`, the selection ``matchsig experiments``' head ablations cut.
* **random heads** (:func:`random_heads`): k distinct heads drawn uniformly, seeded as the run's
  head ablations draw theirs.

**Overlap test** (:func:`overlap_test`): with N = layers x heads, a selection S of k heads and a
reference set R of m heads, the statistic is ``|S & R|`` (also reported: Jaccard
``|S & R| / |S | R|``). Under the null hypothesis that S is a uniformly random k-subset of all N
heads, unrelated to R, the overlap is hypergeometric (N, m, k). Two p-values of ``P(overlap >=
observed)`` are reported: a seeded permutation test, ``p = (1 + #{random k-subsets with overlap >=
observed}) / (1 + n_permutations)``, and the exact hypergeometric tail (``scipy.stats.hypergeom``) as
an independent check. The test is one-sided (more overlap than chance); it says nothing about heads
outside the top k, and with small N and small sets its power is low (the smallest p it can give
is the probability that a random k-subset shares min(k, m) heads with R).

Heads are not exchangeable: if patching effects and contrast effects both concentrate in some
layers for unrelated reasons, a uniform null overstates the evidence. The **layer-stratified**
null keeps the number of selected heads in each layer and draws them uniformly within the layer;
its p-values (``p_layer_permutation``, and ``p_layer_exact``: the tail of the sum of independent
per-layer hypergeometric counts, by convolution) ask whether the *heads* coincide beyond the
layers they are in.

**Rank correlation** (:func:`rank_correlation`): Spearman's rho (``scipy.stats.spearmanr``) over
all heads between ``|effect_mean|`` and the head's contrast effect size, the largest
``|delta_relevant|`` over its two directions (the size :func:`~matchsig.analysis.matching.rank_heads` uses).

**nDCG@10 cost** (:func:`ndcg_cost`): the pool is scored with Q<-D and D<-Q cut in each selection's
heads (:meth:`matchsig.engine.ablation.AblationSet.heads`, as the run's head ablations do), evaluated
tie-aware (:func:`matchsig.data.evaluation.expected_ndcg`) and compared by paired t-tests
(:func:`matchsig.analysis.significance.paired_ttest`) with the unablated model and between selections. In
the last layer only the [CLS] row reaches the classifier, so cutting Q<-D and D<-Q in last-layer
heads changes no score: such heads in a selection cost nothing by construction.

Both tables must describe the same model: mismatched grids are a one-line :class:`MatchsigError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MatchsigError

__all__ = [
    "CostResult",
    "OverlapTest",
    "REFERENCE_SETS",
    "compare_heads",
    "contrast_heads",
    "contrast_sizes",
    "ndcg_cost",
    "overlap_test",
    "patching_effects",
    "patching_grid",
    "patching_overlay",
    "random_heads",
    "rank_correlation",
    "top_contrast_heads",
    "top_patching_heads",
]

Head = tuple[int, int]
#: Reference sets :func:`compare_heads` tests by default: every matching head, then each kind.
REFERENCE_SETS = ("matching", "syntactic", "semantic")


def _grid_shape(frame: pd.DataFrame, what: str, per_head: int = 1) -> tuple[int, int]:
    """(layers, heads) of a table that must hold every (layer, head) exactly ``per_head`` times."""
    for column in ("layer", "head"):
        if column not in frame:
            raise MatchsigError(f"{what} has no {column!r} column")
    if not len(frame):
        raise MatchsigError(f"{what} has no rows")
    try:
        layer = frame["layer"].to_numpy(int)
        head = frame["head"].to_numpy(int)
    except (TypeError, ValueError):
        raise MatchsigError(f"{what}: layer and head must be integers (is it a per-head table?)") from None
    nl, nh = int(layer.max()) + 1, int(head.max()) + 1
    counts = np.zeros((nl, nh), int)
    if layer.min() < 0 or head.min() < 0:
        raise MatchsigError(f"{what}: negative layer or head")
    np.add.at(counts, (layer, head), 1)
    bad = np.argwhere(counts != per_head)
    if len(bad):
        l, h = bad[0]
        raise MatchsigError(f"{what} covers {nl} layers x {nh} heads but has {counts[l, h]} rows for layer {l} "
                            f"head {h} (expected {per_head}): not a complete head grid")
    return nl, nh


def _check_shape(shape: tuple[int, int], other: tuple[int, int], what: str, other_what: str) -> None:
    if tuple(shape) != tuple(other):
        raise MatchsigError(f"{what} is {shape[0]} layers x {shape[1]} heads but {other_what} is {other[0]} x "
                            f"{other[1]}: they are not of the same model")


def _read(table: pd.DataFrame | str | Path, what: str) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise MatchsigError(f"{what} {path} does not exist")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def patching_effects(table: pd.DataFrame | str | Path, diagnostic: str | None = None) -> pd.DataFrame:
    """The per-head rows of a patching table: ``layer, head, effect_mean, effect_sd, n_pairs``, sorted.

    ``table``: a ``patching.csv`` (path or frame) of ``--site head``. ``diagnostic`` picks one when
    the table holds several; it is required then.
    """
    frame = _read(table, "patching table")
    missing = {"diagnostic", "site", "layer", "head", "effect_mean"} - set(frame)
    if missing:
        raise MatchsigError(f"patching table lacks column(s) {', '.join(sorted(missing))}: is it a patching.csv?")
    frame = frame[frame["site"].astype(str) == "head"]
    if not len(frame):
        raise MatchsigError("patching table has no head rows: run `matchsig patch --site head`")
    found = sorted(frame["diagnostic"].astype(str).unique())
    if diagnostic is None and len(found) > 1:
        raise MatchsigError(f"patching table holds diagnostics {', '.join(found)}: name one")
    if diagnostic is not None:
        if diagnostic not in found:
            raise MatchsigError(f"patching table has no {diagnostic!r} rows (it has {', '.join(found)})")
        frame = frame[frame["diagnostic"].astype(str) == diagnostic]
    _grid_shape(frame, "patching table")
    frame = frame.assign(layer=frame["layer"].astype(int), head=frame["head"].astype(int),
                         effect_mean=pd.to_numeric(frame["effect_mean"], errors="coerce"))
    keep = [c for c in ("diagnostic", "layer", "head", "effect_mean", "effect_sd", "n_pairs") if c in frame]
    return frame[keep].sort_values(["layer", "head"]).reset_index(drop=True)


def patching_grid(table: pd.DataFrame | str | Path, diagnostic: str | None = None) -> np.ndarray:
    """(layers, heads) array of mean head-patching effects (NaN where no pair entered the mean).

    The per-head grid an explorer overlay needs: ``grid[layer, head]``."""
    frame = patching_effects(table, diagnostic)
    nl, nh = _grid_shape(frame, "patching table")
    grid = np.full((nl, nh), np.nan)
    grid[frame["layer"].to_numpy(), frame["head"].to_numpy()] = frame["effect_mean"].to_numpy(float)
    return grid


def patching_overlay(table: pd.DataFrame | str | Path, num_layers: int, num_heads: int,
                     diagnostic: str | None = None) -> list[dict]:
    """Per-head rows for an explorer overlay: ``layer, head, diagnostic, effect_mean, effect_sd,
    n_pairs`` (JSON-ready: a missing value is None), after checking the table is of a model with
    ``num_layers`` x ``num_heads`` heads."""
    frame = patching_effects(table, diagnostic)
    _check_shape(_grid_shape(frame, "patching table"), (num_layers, num_heads), "the patching table", "this model")

    def value(v):
        return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v

    return [{"layer": int(r.layer), "head": int(r.head), "diagnostic": str(r.diagnostic),
             "effect_mean": value(float(r.effect_mean)),
             "effect_sd": value(float(r.effect_sd)) if "effect_sd" in frame else None,
             "n_pairs": int(r.n_pairs) if "n_pairs" in frame and pd.notna(r.n_pairs) else None}
            for r in frame.itertuples(index=False)]


def top_patching_heads(effects: pd.DataFrame, k: int) -> list[Head]:
    """The k heads of largest ``|effect_mean|`` (ties: lower layer, then lower head; NaN last)."""
    n = len(effects)
    if not 1 <= k <= n:
        raise MatchsigError(f"k = {k}: must be between 1 and the {n} heads of the model")
    size = effects["effect_mean"].abs().to_numpy(float)
    key = np.where(np.isfinite(size), size, -np.inf)
    order = np.lexsort((effects["head"].to_numpy(), effects["layer"].to_numpy(), -key))
    return [(int(effects["layer"].iloc[i]), int(effects["head"].iloc[i])) for i in order[:k]]


def _classified(contrast: pd.DataFrame | str | Path, alpha: float, correction: str | None) -> pd.DataFrame:
    from .matching import classify

    frame = _read(contrast, "contrast table")
    missing = {"layer", "head", "direction", "delta_relevant", "delta_hard"} - set(frame)
    if missing:
        raise MatchsigError(f"contrast table lacks column(s) {', '.join(sorted(missing))}: is it contrast/heads.csv?")
    _grid_shape(frame, "contrast table", per_head=frame["direction"].nunique())
    try:
        return classify(frame, alpha, correction)
    except KeyError as err:  # a table written with another correction
        raise MatchsigError(f"contrast table: {err.args[0]}") from None


def contrast_sizes(contrast: pd.DataFrame | str | Path, alpha: float = 0.05,
                   correction: str | None = "holm") -> pd.DataFrame:
    """Per head: ``layer, head, matching`` (either direction), ``kinds`` (sorted kinds other than
    none, ';'-joined) and ``size`` (largest ``|delta_relevant|`` over its directions)."""
    rows = _classified(contrast, alpha, correction)
    rows = rows.assign(layer=rows["layer"].astype(int), head=rows["head"].astype(int),
                       _size=rows["delta_relevant"].abs())
    per_head = rows.groupby(["layer", "head"]).agg(
        matching=("matching", "any"), size=("_size", "max"),
        kinds=("kind", lambda k: ";".join(sorted(set(k) - {"none"}))))
    return per_head.reset_index()


def contrast_heads(contrast: pd.DataFrame | str | Path, which: str = "matching", direction: str | None = None,
                   alpha: float = 0.05, correction: str | None = "holm") -> list[Head]:
    """Matching heads (``which="matching"``) or heads of one kind, in at least one direction (or in
    ``direction``, ``"Q<-D"`` / ``"D<-Q"``), sorted by (layer, head)."""
    from .matching import KINDS

    if which != "matching" and which not in KINDS[:-1]:
        raise MatchsigError(f"unknown head set {which!r}: use matching, {', '.join(KINDS[:-1])}")
    rows = _classified(contrast, alpha, correction)
    mask = rows["matching"].to_numpy(bool) if which == "matching" else (rows["kind"] == which).to_numpy()
    if direction is not None:
        dirs = rows["direction"].astype(str).str.replace(" ", "")
        if direction not in set(dirs):
            raise MatchsigError(f"contrast table has no direction {direction!r} (it has {', '.join(sorted(set(dirs)))})")
        mask = mask & (dirs == direction).to_numpy()
    return sorted({(int(l), int(h)) for l, h in zip(rows.loc[mask, "layer"], rows.loc[mask, "head"])})


def top_contrast_heads(contrast: pd.DataFrame | str | Path, k: int, alpha: float = 0.05,
                       correction: str | None = "holm") -> list[Head]:
    """The first k heads of :func:`matchsig.analysis.matching.rank_heads` (matching first, by effect size)."""
    from .matching import rank_heads

    frame = _classified(contrast, alpha, correction)
    ranking = rank_heads(frame, alpha, correction)
    if not 1 <= k <= len(ranking):
        raise MatchsigError(f"k = {k}: must be between 1 and the {len(ranking)} heads of the model")
    return ranking[:k]


def random_heads(num_layers: int, num_heads: int, k: int, seed: int, run_seed: int = 0) -> list[Head]:
    """k distinct heads drawn uniformly, seeded like ``matchsig experiments``' random head ablations
    (``numpy.random.default_rng([run_seed, 7919, k, seed])``), sorted by (layer, head)."""
    if not 1 <= k <= num_layers * num_heads:
        raise MatchsigError(f"k = {k}: must be between 1 and the {num_layers * num_heads} heads of the model")
    rng = np.random.default_rng([run_seed, 7919, k, seed])
    flat = rng.choice(num_layers * num_heads, size=k, replace=False)
    return [(int(i) // num_heads, int(i) % num_heads) for i in sorted(flat)]


@dataclass(frozen=True)
class OverlapTest:
    """Overlap of a k-head selection with an m-head reference set among ``n_heads`` heads."""

    k: int
    m: int
    n_heads: int
    overlap: int
    jaccard: float
    expected: float  # k * m / n_heads, the mean overlap under the null
    p_permutation: float
    p_hypergeom: float
    p_layer_permutation: float  # null: random heads, each layer keeping its number of selected heads
    p_layer_exact: float
    n_permutations: int
    seed: int
    shared: tuple[Head, ...]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shared"] = ";".join(f"{l}/{h}" for l, h in self.shared)
        return out


def _check_heads(heads: Sequence[Head], shape: tuple[int, int], what: str) -> set[Head]:
    out = set()
    for item in heads:
        l, h = (int(x) for x in item)
        if not (0 <= l < shape[0] and 0 <= h < shape[1]):
            raise MatchsigError(f"{what} head {l}/{h} is outside the model's {shape[0]} layers x {shape[1]} heads")
        out.add((l, h))
    if len(out) != len(heads):
        raise MatchsigError(f"{what} repeats a head")
    return out


def _subset_hits(rng, in_ref: np.ndarray, k: int, rows: int) -> np.ndarray:
    """Overlap with ``in_ref`` of ``rows`` uniform k-subsets of its positions (k-smallest random keys)."""
    if k == 0:
        return np.zeros(rows, int)
    draws = np.argpartition(rng.random((rows, len(in_ref))), k - 1, axis=1)[:, :k]
    return in_ref[draws].sum(axis=1)


def overlap_test(selected: Sequence[Head], reference: Sequence[Head], shape: tuple[int, int],
                 n_permutations: int = 10_000, seed: int = 0) -> OverlapTest:
    """Overlap of ``selected`` with ``reference`` and its one-sided permutation and hypergeometric p
    (module docstring), under the uniform null and the layer-stratified null. ``shape``: (layers,
    heads) of the model both sets come from."""
    from scipy.stats import hypergeom

    if n_permutations < 1:
        raise MatchsigError(f"n_permutations = {n_permutations}: must be >= 1")
    sel, ref = _check_heads(selected, shape, "selected"), _check_heads(reference, shape, "reference")
    nl, nh = shape
    n, k, m = nl * nh, len(sel), len(ref)
    if k == 0:
        raise MatchsigError("the selection is empty")
    shared = sel & ref
    observed = len(shared)
    in_ref = np.zeros((nl, nh), bool)
    for l, h in ref:
        in_ref[l, h] = True
    k_layer = np.bincount([l for l, _ in sel], minlength=nl)
    rng = np.random.default_rng([seed, 4099, n, k])
    hits = hits_layer = 0
    for start in range(0, n_permutations, 4096):  # bounded memory: 4096 x N random keys at a time
        rows = min(4096, n_permutations - start)
        hits += int((_subset_hits(rng, in_ref.ravel(), k, rows) >= observed).sum())
        within = sum(_subset_hits(rng, in_ref[l], int(k_layer[l]), rows) for l in range(nl))
        hits_layer += int((within >= observed).sum())
    # exact stratified tail: the overlap is a sum of independent per-layer hypergeometric counts
    pmf = np.ones(1)
    for l in range(nl):
        m_l, k_l = int(in_ref[l].sum()), int(k_layer[l])
        pmf = np.convolve(pmf, hypergeom.pmf(np.arange(min(m_l, k_l) + 1), nh, m_l, k_l))
    return OverlapTest(k=k, m=m, n_heads=n, overlap=observed, jaccard=observed / len(sel | ref), expected=k * m / n,
                       p_permutation=(1 + hits) / (1 + n_permutations),
                       p_hypergeom=float(hypergeom.sf(observed - 1, n, m, k)),
                       p_layer_permutation=(1 + hits_layer) / (1 + n_permutations),
                       p_layer_exact=float(min(1.0, pmf[observed:].sum())),
                       n_permutations=n_permutations, seed=seed, shared=tuple(sorted(shared)))


def rank_correlation(effects: pd.DataFrame, sizes: pd.DataFrame) -> tuple[float, float, int]:
    """Spearman's rho and its two-sided p between ``|effect_mean|`` (:func:`patching_effects`) and the
    contrast ``size`` (:func:`contrast_sizes`) over the heads where both are finite; and that count."""
    from scipy.stats import spearmanr

    _check_shape(_grid_shape(effects, "patching table"), _grid_shape(sizes, "contrast table"),
                 "the patching table", "the contrast table")
    both = effects.merge(sizes, on=["layer", "head"])
    x, y = both["effect_mean"].abs().to_numpy(float), both["size"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan"), float("nan"), int(ok.sum())
    res = spearmanr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue), int(ok.sum())


def compare_heads(patching: pd.DataFrame | str | Path, contrast: pd.DataFrame | str | Path, ks: Sequence[int],
                  diagnostic: str | None = None, references: Sequence[str] = REFERENCE_SETS, alpha: float = 0.05,
                  correction: str | None = "holm", n_permutations: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per (k, reference set): the top-k patching heads against the contrast heads of that set
    (:func:`contrast_heads`) and against the top-k contrast heads (reference ``top-contrast``), with
    :class:`OverlapTest`'s fields, the diagnostic, and Spearman's rho over all heads."""
    effects = patching_effects(patching, diagnostic)
    shape = _grid_shape(effects, "patching table")
    contrast = _read(contrast, "contrast table")  # read once, classified per set below
    sizes = contrast_sizes(contrast, alpha, correction)
    _check_shape(shape, _grid_shape(sizes, "contrast table"), "the patching table", "the contrast table")
    rho, p_rho, n_rho = rank_correlation(effects, sizes)
    name = str(effects["diagnostic"].iloc[0]) if "diagnostic" in effects else diagnostic
    rows = []
    for k in ks:
        top = top_patching_heads(effects, k)
        sets = {which: contrast_heads(contrast, which, alpha=alpha, correction=correction) for which in references}
        sets["top-contrast"] = top_contrast_heads(contrast, k, alpha, correction)
        for which, ref in sets.items():
            test = overlap_test(top, ref, shape, n_permutations, seed)
            rows.append({"diagnostic": name, "k": k, "reference": which,
                         "patching_heads": ";".join(f"{l}/{h}" for l, h in top), **test.to_dict(),
                         "spearman_rho": rho, "spearman_p": p_rho, "spearman_n": n_rho})
    return pd.DataFrame(rows)


@dataclass
class CostResult:
    """nDCG@10 of a pool under head selections.

    ``table``: one row per selection (``selection, k, heads, ndcg@10, delta, ci_low, ci_high,
    p_value, n_queries``; the first row is the unablated model, ``none``). ``comparisons``: one row
    per compared pair (``a, b, mean_a, mean_b, diff, p_value, n_queries``). ``per_query``: nDCG@10
    per query (index) and selection (column). ``scores``: (selections + 1, pairs), row 0 unablated.
    """

    table: pd.DataFrame
    comparisons: pd.DataFrame
    per_query: pd.DataFrame
    scores: np.ndarray


def ndcg_cost(ce, pool, selections: Mapping[str, Sequence[Head]], comparisons: Sequence[tuple[str, str]] = (),
              texts: tuple[Sequence[str], Sequence[str]] | None = None, spec: str | None = None,
              alpha: float = 0.05, batch_size: int = 32, progress: bool = False) -> CostResult:
    """Score ``pool`` with ``spec`` (default Q<-D,D<-Q, the run's head ablations) cut in each selection's
    heads; per selection: mean nDCG@10, its change against the unablated model with the paired t-test
    p and the (1 - alpha) CI; per pair of ``comparisons`` (selection labels): a paired t-test of their
    per-query nDCG@10. ``texts``: the pool's (queries, documents) when already loaded."""
    from ..engine.ablation import AblationSet
    from ..data.evaluation import expected_ndcg
    from .matching import MATCH_SPEC
    from .comparison import compare
    from .significance import paired_ttest

    shape = (ce.num_layers, ce.num_heads)
    labels = list(selections)
    if "none" in labels:
        raise MatchsigError("'none' names the unablated model: rename that selection")
    for a, b in comparisons:
        for label in (a, b):
            if label not in selections:
                raise MatchsigError(f"comparison names {label!r}, which is not a selection ({', '.join(labels)})")
    sets = {label: sorted(_check_heads(list(heads), shape, label)) for label, heads in selections.items()}
    qs, ds = texts if texts is not None else pool.pairs()
    ablations = [AblationSet.heads(spec or MATCH_SPEC, sets[label], label=label) for label in labels]
    scores = ce.score_many(qs, ds, [None, *ablations], batch_size=batch_size, progress=progress)
    per_query = {"none": expected_ndcg(pool, scores[0], 10)}
    for label, s in zip(labels, scores[1:]):
        per_query[label] = expected_ndcg(pool, s, 10)
    ref = per_query["none"]
    ref_mean = float(np.mean(list(ref.values())))
    rows = []
    for label in ["none", *labels]:
        heads = sets.get(label, [])
        rows.append({"selection": label, "k": len(heads), "heads": ";".join(f"{l}/{h}" for l, h in heads),
                     **compare(per_query[label], ref, ref_mean, alpha)})
    comp = []
    for a, b in comparisons:
        t = paired_ttest(per_query[a], per_query[b])
        comp.append({"a": a, "b": b, "mean_a": float(np.mean(list(per_query[a].values()))),
                     "mean_b": float(np.mean(list(per_query[b].values()))), "diff": t.mean_diff,
                     "p_value": t.pvalue, "n_queries": t.n})
    frame = pd.DataFrame(per_query)
    frame.index.name = "qid"
    return CostResult(pd.DataFrame(rows), pd.DataFrame(comp, columns=["a", "b", "mean_a", "mean_b", "diff",
                                                                       "p_value", "n_queries"]), frame, scores)
