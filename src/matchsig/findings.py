"""The findings of SPEC §5, judged on a run folder, with explicit criteria scaled to the model's depth.

:func:`judge` reads the files an experiment run writes into RUN_DIR (``table1.csv``,
``layers.csv``, ``contrast/heads.csv``, ``summary.json``, ``config.json``) and returns one
:class:`Finding` per claim of the paper, each with ``holds`` = True / False / None (None: not
measurable, e.g. the experiment was not run) and the numbers behind the verdict. It also writes
them to ``RUN_DIR/findings.json``.

Criteria (L = number of layers, layers indexed from 0; "drop" = unablated nDCG@10 minus ablated;
alpha = the run's ``alpha``, 0.05 by default):

1. ``dd_hurts_most``: among the 25 single directions X<-Y, D<-D has the lowest nDCG@10 (a tie within
   0.005 of the lowest counts).
2. ``sep_noop``: each of the 18 ablations into or out of SEP1/SEP2 (the 16 single directions with
   SEP as target or source, plus SEP1<-* and SEP2<-*) "changes nothing": |delta| <= 0.01, or the
   change is not significant (uncorrected paired t-test p > alpha, the paper's test). Holds when
   every such cell changes nothing.
3. ``cls_all_random``: CLS<-* scores within 0.03 of the random-ranking baseline, or lower.
4. ``clsq_vs_clsd``: nDCG@10 of CLS<-Q is strictly lower than that of CLS<-D.
5. ``cls_last_layers``: for each CLS ablation in ``layers.csv`` (CLS<-* and CLS<-{Q,D}): drop <= 0.02
   for every l < L-2 and drop > 0.02 for every l >= L-2 (hurts only once the last 2 layers are
   ablated).
6. ``dd_from_middle``: for D<-D, no drop > 0.02 for l < floor(0.45 L) (layer 10 of 24, the paper
   sees the onset at 11/12) and a drop > 0.02 at some l >= floor(0.45 L).
7. ``matching_heads_layers``: a head is a matching head when, in Q<-D or in D<-Q, delta_relevant > 0
   and p_relevant <= alpha (the paired t-test over queries of M(.|3) vs M(.|-1), corrected over
   all heads and both directions with the run's ``correction``, Holm by default, as
   ``contrast/heads.csv`` stores it). Per layer, the fraction of
   heads that are matching heads; holds when the mean fraction over the first half (l < L/2) is
   < 0.5 and the mean fraction over the last quarter (l >= L - ceil(L/4)) is >= 0.8.
8. ``matching_heads_bidirectional``: of the heads matching for Q<-D, the share also matching for
   D<-Q, and vice versa; holds when both shares are >= 0.5.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import paper

__all__ = [
    "CLS_DIRECTIONS",
    "Finding",
    "Run",
    "judge",
    "matching_heads",
    "normalize_direction",
    "top_matching_heads",
    "write_findings",
]

DROP = 0.02  # a layer ablation "hurts" when it loses more than this much nDCG@10
SEP_NOOP = 0.01  # a SEP ablation changes nothing when |delta| <= this (or it is not significant)
RANDOM_TOLERANCE = 0.03
TIE = 0.005
SEP_PARTS = ("SEP1", "SEP2")


# ---- reading a run folder -----------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame) else None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _expand(token: str) -> list[tuple[str, str]]:
    token = token.strip().replace(" ", "")
    if "<-" not in token:
        return []
    target, source = token.split("<-", 1)
    sources = source.split("|")
    return [(target.upper(), s.upper() if s != "*" else "*") for s in sources if s]


def normalize_direction(text: str) -> frozenset[tuple[str, str]]:
    """``"CLS<-Q,CLS<-D"``, ``"CLS<-{Q,D}"`` -> {("CLS","Q"), ("CLS","D")}; ``X<-*`` is kept as ``*``."""
    text = str(text).strip()
    # "CLS<-{Q,D}": the comma inside braces separates sources, not directions.
    text = re.sub(r"\{([^}]*)\}", lambda m: m.group(1).replace(",", "|"), text)
    out: list[tuple[str, str]] = []
    last_target = None
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        if "<-" not in token and last_target:  # "CLS<-Q,D": a bare source continues the last target
            token = f"{last_target}<-{token}"
        pairs = _expand(token)
        if pairs:
            last_target = pairs[0][0]
        out.extend(pairs)
    return frozenset(out)


def direction_label(text: str) -> str:
    """A compact label: ``CLS<-{Q,D}`` for a union of sources into one target."""
    pairs = normalize_direction(text)
    targets = {t for t, _ in pairs}
    if len(pairs) > 1 and len(targets) == 1:
        order = {p: i for i, p in enumerate(paper.TABLE1_COLUMNS)}
        sources = sorted((s for _, s in pairs), key=lambda s: order.get(s, 99))
        return f"{next(iter(targets))}<-{{{','.join(sources)}}}"
    return str(text)


#: The CLS ablations of Figure 1 that finding 5 concerns.
CLS_DIRECTIONS = (frozenset({("CLS", "*")}), frozenset({("CLS", "Q"), ("CLS", "D")}))


class Run:
    """The files of one run folder, read lazily; a missing or empty file reads as None / {}."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, loader):
        if key not in self._cache:
            self._cache[key] = loader()
        return self._cache[key]

    @property
    def config(self) -> dict:
        return self._get("config", lambda: _read_json(self.path / "config.json"))

    @property
    def summary(self) -> dict:
        return self._get("summary", lambda: _read_json(self.path / "summary.json"))

    @property
    def table1(self) -> pd.DataFrame | None:
        def load():
            frame = _read_csv(self.path / "table1.csv")
            if frame is not None:
                frame["target"] = frame["target"].astype(str).str.strip()
                frame["source"] = frame["source"].astype(str).str.strip()
                upper = ~frame["target"].str.lower().isin(["none", "random"])
                frame.loc[upper, "target"] = frame.loc[upper, "target"].str.upper()
                frame.loc[upper, "source"] = frame.loc[upper, "source"].str.upper()
            return frame

        return self._get("table1", load)

    @property
    def table1_per_query(self) -> pd.DataFrame | None:
        return self._get("t1pq", lambda: _read_csv(self.path / "table1_per_query.csv"))

    @property
    def layers(self) -> pd.DataFrame | None:
        return self._get("layers", lambda: _read_csv(self.path / "layers.csv"))

    @property
    def contrast_heads(self) -> pd.DataFrame | None:
        return self._get("cheads", lambda: _read_csv(self.path / "contrast" / "heads.csv"))

    @property
    def contrast_per_query(self) -> pd.DataFrame | None:
        def load():
            frame = _read_csv(self.path / "contrast" / "per_query.csv")
            if frame is not None:
                frame["level"] = frame["level"].astype(int)
                frame["qid"] = frame["qid"].astype(str)
            return frame

        return self._get("cpq", load)

    @property
    def heads(self) -> pd.DataFrame | None:
        return self._get("heads", lambda: _read_csv(self.path / "heads.csv"))

    # ---- derived values --------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return _float(self.config.get("alpha")) or 0.05

    @property
    def correction(self) -> str:
        """The multiple-comparison correction of the run's head tests (``holm`` unless config says otherwise)."""
        return str(self.config.get("correction") or "holm").lower()

    @property
    def corrected(self) -> str:
        """"Holm-corrected", "Bonferroni-corrected" or "uncorrected", for texts."""
        names = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}
        return names.get(self.correction, f"{self.correction}-corrected")

    @property
    def model_info(self) -> dict:
        return self.summary.get("model_info") or {}

    @property
    def num_layers(self) -> int | None:
        value = self.model_info.get("num_layers")
        if value:
            return int(value)
        for frame in (self.contrast_heads, self.layers):
            if frame is not None and "layer" in frame:
                return int(frame["layer"].max()) + 1
        return None

    @property
    def num_heads(self) -> int | None:
        value = self.model_info.get("num_heads")
        if value:
            return int(value)
        frame = self.contrast_heads
        if frame is not None and "head" in frame:
            return int(frame["head"].max()) + 1
        return None

    def _table1_row(self, target: str) -> pd.Series | None:
        frame = self.table1
        if frame is None:
            return None
        rows = frame[frame["target"].str.lower() == target]
        return rows.iloc[0] if len(rows) else None

    @property
    def unablated(self) -> float | None:
        value = _float(self.summary.get("unablated_ndcg@10"))
        if value is None:
            row = self._table1_row("none")
            value = None if row is None else _float(row["ndcg@10"])
        return value

    @property
    def random_ndcg(self) -> float | None:
        info = self.summary.get("random_ndcg@10")
        value = _float(info.get("mean")) if isinstance(info, dict) else _float(info)
        if value is None:
            row = self._table1_row("random")
            value = None if row is None else _float(row["ndcg@10"])
        return value

    @property
    def per_grade(self) -> Any:
        pool = (self.summary.get("pools") or {}).get("main") or {}
        if "per_grade" in pool:
            return pool["per_grade"]
        return self.config.get("per_grade")

    def cells(self) -> dict[tuple[str, str], pd.Series]:
        """Table 1's ablation rows keyed by (target, source)."""
        frame = self.table1
        if frame is None:
            return {}
        out = {}
        for _, row in frame.iterrows():
            if row["target"].lower() in ("none", "random"):
                continue
            out[(row["target"], row["source"])] = row
        return out

    def significant(self, row: pd.Series) -> bool:
        p = _float(row.get("p_value"))
        if p is not None:
            return p <= self.alpha
        return bool(row.get("significant", False))


# ---- findings -----------------------------------------------------------------------------------


@dataclass
class Finding:
    """One claim of the paper judged on this run: ``holds`` is True, False or None (not measured)."""

    name: str
    holds: bool | None
    evidence: str
    key: str = ""
    rule: str = ""
    paper: str = ""
    data: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not measured"}[self.holds]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _finding(key: str, name: str, holds, evidence: str, rule: str, **data) -> Finding:
    return Finding(name, holds, evidence, key, rule, paper.STATEMENTS.get(key, ""), data)


#: Finding key -> its name in the checklist.
NAMES = {
    "dd_hurts_most": "D<-D hurts most among single directions",
    "sep_noop": "Directions into or out of SEP change nothing (no-op sinks)",
    "cls_all_random": "CLS<-* gives a random ranking",
    "clsq_vs_clsd": "CLS<-Q hurts more than CLS<-D",
    "cls_last_layers": "Up-to-layer CLS ablations hurt only in the last 2 layers",
    "dd_from_middle": "Blocking D<-D hurts only from about the middle of the network",
    "matching_heads_layers": "Matching heads: few per layer in early/middle layers, (almost) every head in late layers",
    "matching_heads_bidirectional": "Matching heads are bidirectional (the same heads match Q<-D and D<-Q)",
}


def _dd_hurts_most(run: Run) -> Finding:
    rule = "Among the 25 single directions X<-Y, D<-D has the lowest nDCG@10 (ties within 0.005 count)."
    name = NAMES["dd_hurts_most"]
    cells = {k: float(v["ndcg@10"]) for k, v in run.cells().items() if k[1] != "*"}
    if ("D", "D") not in cells or len(cells) < 2:
        return _finding("dd_hurts_most", name, None, "table1.csv is missing (Table 1 was not run).", rule)
    ranked = sorted(cells.items(), key=lambda kv: kv[1])
    lowest = ranked[0][1]
    holds = cells[("D", "D")] <= lowest + TIE
    worst = ", ".join(f"{t}<-{s} {v:.3f}" for (t, s), v in ranked[:4])
    evidence = (
        f"D<-D = {cells[('D', 'D')]:.3f}; the lowest single directions: {worst} "
        f"(unablated {_fmt(run.unablated)}; {len(cells)} directions)."
    )
    return _finding("dd_hurts_most", name, holds, evidence, rule, ranking=[[f"{t}<-{s}", v] for (t, s), v in ranked])


def _sep_noop(run: Run) -> Finding:
    rule = (
        f"Each of the 18 ablations into or out of SEP1/SEP2 (16 single directions + SEP1<-*, SEP2<-*) "
        f"has |delta| <= {SEP_NOOP} or is not significant (paired t-test p > {run.alpha:g}, uncorrected)."
    )
    name = NAMES["sep_noop"]
    cells = run.cells()
    chosen = {
        k: v
        for k, v in cells.items()
        if (k[1] != "*" and (k[0] in SEP_PARTS or k[1] in SEP_PARTS)) or (k[1] == "*" and k[0] in SEP_PARTS)
    }
    if not chosen:
        return _finding("sep_noop", name, None, "table1.csv is missing (Table 1 was not run).", rule)
    violations, insignificant_large = [], []
    for (t, s), row in chosen.items():
        delta = float(row["delta"]) if _float(row.get("delta")) is not None else float(row["ndcg@10"]) - (run.unablated or 0)
        sig = run.significant(row)
        if abs(delta) > SEP_NOOP and sig:
            violations.append(f"{t}<-{s} {delta:+.3f} (p={float(row['p_value']):.3g})")
        elif abs(delta) > SEP_NOOP:
            insignificant_large.append(f"{t}<-{s} {delta:+.3f} (p={float(row['p_value']):.3g})")
    deltas = [abs(float(r["delta"])) for r in chosen.values() if _float(r.get("delta")) is not None]
    evidence = f"{len(chosen)} SEP cells, largest |delta| {max(deltas) if deltas else float('nan'):.3f}. "
    if violations:
        evidence += "Significant changes above 0.01: " + "; ".join(violations) + ". "
    else:
        evidence += "No significant change above 0.01. "
    if insignificant_large:
        evidence += "Changes above 0.01 that are not significant: " + "; ".join(insignificant_large) + "."
    return _finding("sep_noop", name, not violations, evidence.strip(), rule, violations=violations)


def _cls_all_random(run: Run) -> Finding:
    rule = f"nDCG@10 of CLS<-* <= random-ranking nDCG@10 + {RANDOM_TOLERANCE}."
    name = NAMES["cls_all_random"]
    row = run.cells().get(("CLS", "*"))
    rnd = run.random_ndcg
    if row is None or rnd is None:
        return _finding("cls_all_random", name, None, "CLS<-* or the random baseline is missing (Table 1 was not run).", rule)
    value = float(row["ndcg@10"])
    holds = value <= rnd + RANDOM_TOLERANCE
    evidence = f"CLS<-* = {value:.3f} vs random ranking {rnd:.3f} (difference {value - rnd:+.3f}); unablated {_fmt(run.unablated)}."
    return _finding("cls_all_random", name, holds, evidence, rule, value=value, random=rnd)


def _clsq_vs_clsd(run: Run) -> Finding:
    rule = "nDCG@10 of CLS<-Q < nDCG@10 of CLS<-D (strictly)."
    name = NAMES["clsq_vs_clsd"]
    cells = run.cells()
    q, d = cells.get(("CLS", "Q")), cells.get(("CLS", "D"))
    if q is None or d is None:
        return _finding("clsq_vs_clsd", name, None, "CLS<-Q or CLS<-D is missing (Table 1 was not run).", rule)
    vq, vd = float(q["ndcg@10"]), float(d["ndcg@10"])
    evidence = (
        f"CLS<-Q = {vq:.3f} (p={float(q['p_value']):.3g} vs unablated), CLS<-D = {vd:.3f} "
        f"(p={float(d['p_value']):.3g}); difference {vq - vd:+.3f}"
    )
    per_query = run.table1_per_query
    if per_query is not None:
        names = {normalize_direction(c): c for c in per_query.columns if c != "qid"}
        cq, cd = names.get(frozenset({("CLS", "Q")})), names.get(frozenset({("CLS", "D")}))
        if cq and cd:
            from scipy import stats

            x, y = per_query[cq].to_numpy(float), per_query[cd].to_numpy(float)
            if np.allclose(x, y):
                evidence += "; identical per query"
            else:
                evidence += f"; paired t-test CLS<-Q vs CLS<-D over {len(x)} queries p={stats.ttest_rel(x, y).pvalue:.3g}"
    return _finding("clsq_vs_clsd", name, vq < vd, evidence + ".", rule, cls_q=vq, cls_d=vd)


def _layer_curves(run: Run) -> dict[frozenset, pd.DataFrame]:
    frame = run.layers
    if frame is None:
        return {}
    out = {}
    for direction, group in frame.groupby("direction", sort=False):
        group = group.sort_values("layer").copy()
        if "delta" in group and group["delta"].notna().all():
            group["drop"] = -group["delta"].astype(float)
        elif run.unablated is not None:
            group["drop"] = run.unablated - group["ndcg@10"].astype(float)
        else:
            continue
        group["label"] = str(direction)
        out[normalize_direction(direction)] = group
    return out


def _cls_last_layers(run: Run) -> Finding:
    L = run.num_layers
    name = NAMES["cls_last_layers"]
    rule = f"For CLS<-* and CLS<-{{Q,D}}: drop <= {DROP} for every l < L-2 and drop > {DROP} for every l >= L-2" + (
        f" (L = {L}: layers {L - 2} and {L - 1})." if L else "."
    )
    curves = _layer_curves(run)
    found = [(key, curves[key]) for key in CLS_DIRECTIONS if key in curves]
    if not found or not L:
        return _finding("cls_last_layers", name, None, "layers.csv has no CLS<-* or CLS<-{Q,D} curve (layers was not run).", rule)
    parts, holds = [], True
    for key, group in found:
        early = group[group["layer"] < L - 2]
        late = group[group["layer"] >= L - 2]
        ok_early = bool((early["drop"] <= DROP).all())
        ok_late = len(late) > 0 and bool((late["drop"] > DROP).all())
        holds = holds and ok_early and ok_late
        hurting = group[group["drop"] > DROP]["layer"]
        onset = int(hurting.iloc[0]) if len(hurting) else None
        parts.append(
            f"{direction_label(group['label'].iloc[0])}: largest drop before layer {L - 2} "
            f"{_fmt(float(early['drop'].max()) if len(early) else None)}, drop at layers {L - 2}..{L - 1} "
            + ", ".join(f"{d:.3f}" for d in late["drop"])
            + f"; first layer with drop > {DROP}: {onset if onset is not None else 'none'}"
        )
    return _finding("cls_last_layers", name, holds, f"L = {L}. " + ". ".join(parts) + ".", rule)


def _dd_from_middle(run: Run) -> Finding:
    L = run.num_layers
    name = NAMES["dd_from_middle"]
    start = int(math.floor(0.45 * L)) if L else None
    rule = f"D<-D: no drop > {DROP} for l < floor(0.45 L)" + (f" = {start}" if start is not None else "") + f", and a drop > {DROP} at some later l."
    curves = _layer_curves(run)
    group = curves.get(frozenset({("D", "D")}))
    if group is None or not L:
        return _finding("dd_from_middle", name, None, "layers.csv has no D<-D curve (layers was not run).", rule)
    early = group[group["layer"] < start]
    late = group[group["layer"] >= start]
    hurting = group[group["drop"] > DROP]["layer"]
    onset = int(hurting.iloc[0]) if len(hurting) else None
    holds = bool((early["drop"] <= DROP).all()) and bool((late["drop"] > DROP).any())
    evidence = (
        f"L = {L}; first layer where D<-D loses more than {DROP}: "
        f"{onset if onset is not None else 'none'}"
        + (f" (layers 0..{onset} ablated, {(onset + 1) / L:.0%} of the depth; the paper: layer 11/12 of 24, about 50%)"
           if onset is not None else "")
        + f"; largest drop before layer {start}: {_fmt(float(early['drop'].max()) if len(early) else None)}; "
        f"drop with all layers ablated: {_fmt(float(group['drop'].iloc[-1]))}."
    )
    return _finding("dd_from_middle", name, holds, evidence, rule, onset=onset)


def matching_heads(run: Run, direction: str | None = None) -> pd.DataFrame:
    """Rows of ``contrast/heads.csv`` that are matching heads: delta_relevant > 0 and p_relevant <= alpha."""
    frame = run.contrast_heads
    if frame is None:
        return pd.DataFrame()
    mask = (frame["delta_relevant"] > 0) & (frame["p_relevant"] <= run.alpha)
    if direction is not None:
        mask &= frame["direction"].astype(str).str.replace(" ", "") == direction
    return frame[mask]


def top_matching_heads(run_dir: str | Path | Run, n: int = 15) -> pd.DataFrame:
    """The matching heads with the largest delta_relevant, with their kind (syntactic / semantic)."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    frame = matching_heads(run)
    if frame.empty:
        return frame
    cols = [c for c in ("layer", "head", "direction", "delta_relevant", "p_relevant", "delta_hard", "p_hard", "kind") if c in frame]
    return frame.sort_values("delta_relevant", ascending=False)[cols].head(n).reset_index(drop=True)


def _layer_fractions(run: Run) -> tuple[dict[int, float], dict[str, dict[int, float]]] | None:
    frame = run.contrast_heads
    L, H = run.num_layers, run.num_heads
    if frame is None or not L or not H:
        return None
    match = matching_heads(run)
    union = {l: 0.0 for l in range(L)}
    for layer, group in match.groupby("layer"):
        union[int(layer)] = group["head"].nunique() / H
    per_direction = {}
    for direction in ("Q<-D", "D<-Q"):
        sub = matching_heads(run, direction)
        counts = sub.groupby("layer")["head"].nunique()
        per_direction[direction] = {l: float(counts.get(l, 0)) / H for l in range(L)}
    return union, per_direction


def _matching_heads_layers(run: Run) -> Finding:
    L = run.num_layers
    name = NAMES["matching_heads_layers"]
    late_start = L - math.ceil(L / 4) if L else None
    rule = (
        f"Matching head = delta_relevant > 0 with p_relevant <= {run.alpha:g} (paired t-test over queries, "
        f"{run.corrected} over heads x directions) in Q<-D or D<-Q. Holds when the mean per-layer fraction of matching heads is "
        f"< 0.5 over the first half (l < L/2) and >= 0.8 over the last quarter (l >= L - ceil(L/4)"
        + (f" = {late_start}" if late_start is not None else "")
        + ")."
    )
    fractions = _layer_fractions(run)
    if fractions is None:
        return _finding("matching_heads_layers", name, None, "contrast/heads.csv is missing (contrast was not run).", rule)
    union, per_direction = fractions
    first = [union[l] for l in range(L) if l < L / 2]
    last = [union[l] for l in range(late_start, L)]
    mean_first, mean_last = float(np.mean(first)), float(np.mean(last))
    holds = mean_first < 0.5 and mean_last >= 0.8
    listing = ", ".join(f"{l}: {union[l]:.2f}" for l in range(L))
    by_dir = "; ".join(
        f"{d}: " + ", ".join(f"{per_direction[d][l]:.2f}" for l in range(L)) for d in per_direction
    )
    evidence = (
        f"Fraction of the {run.num_heads} heads per layer that are matching heads (either direction) — {listing}. "
        f"Mean over layers 0..{math.ceil(L / 2) - 1}: {mean_first:.2f}; over layers {late_start}..{L - 1}: {mean_last:.2f}. "
        f"Per direction, layers 0..{L - 1}: {by_dir}."
    )
    return _finding(
        "matching_heads_layers", name, holds, evidence, rule,
        fractions={str(k): v for k, v in union.items()}, mean_first_half=mean_first, mean_last_quarter=mean_last,
    )


def _bidirectional(run: Run) -> Finding:
    name = NAMES["matching_heads_bidirectional"]
    rule = (
        "Share of the Q<-D matching heads that also match D<-Q, and vice versa (matching: delta_relevant > 0, "
        f"{run.corrected} p_relevant <= {run.alpha:g}); holds when both shares are >= 0.5."
    )
    if run.contrast_heads is None:
        return _finding("matching_heads_bidirectional", name, None, "contrast/heads.csv is missing (contrast was not run).", rule)
    qd = {(int(r.layer), int(r.head)) for r in matching_heads(run, "Q<-D").itertuples()}
    dq = {(int(r.layer), int(r.head)) for r in matching_heads(run, "D<-Q").itertuples()}
    if not qd and not dq:
        return _finding("matching_heads_bidirectional", name, None, "No matching head in either direction: nothing to compare.", rule)
    both = qd & dq
    share_qd = len(both) / len(qd) if qd else 0.0
    share_dq = len(both) / len(dq) if dq else 0.0
    holds = share_qd >= 0.5 and share_dq >= 0.5
    evidence = (
        f"{len(qd)} matching heads for Q<-D, {len(dq)} for D<-Q, {len(both)} in both: "
        f"{share_qd:.0%} of the Q<-D ones also match D<-Q, {share_dq:.0%} of the D<-Q ones also match Q<-D."
    )
    return _finding("matching_heads_bidirectional", name, holds, evidence, rule, share_qd=share_qd, share_dq=share_dq, both=len(both))


KEYS = tuple(NAMES)
JUDGES = (
    _dd_hurts_most,
    _sep_noop,
    _cls_all_random,
    _clsq_vs_clsd,
    _cls_last_layers,
    _dd_from_middle,
    _matching_heads_layers,
    _bidirectional,
)


def write_findings(run: Run, findings: list[Finding]) -> Path:
    top = top_matching_heads(run)
    payload = {
        "alpha": run.alpha,
        "num_layers": run.num_layers,
        "findings": [{**asdict(f), "verdict": f.verdict} for f in findings],
        "top_matching_heads": json.loads(top.to_json(orient="records")) if not top.empty else [],
    }
    path = run.path / "findings.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def judge(run_dir: str | Path, write: bool = True) -> list[Finding]:
    """Judge the SPEC §5 findings on a run folder; writes ``RUN_DIR/findings.json`` unless ``write=False``."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    findings = []
    for judge_one in JUDGES:
        try:
            findings.append(judge_one(run))
        except (KeyError, ValueError, TypeError, IndexError) as exc:  # malformed file: say so, don't crash
            key = KEYS[JUDGES.index(judge_one)]
            findings.append(_finding(key, NAMES[key], None, f"Could not be judged from the run's files: "
                                     f"{type(exc).__name__}: {exc}.", ""))
    if write:
        write_findings(run, findings)
    return findings
