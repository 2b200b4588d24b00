"""The paper's findings, judged on a run folder, with stated rules scaled to the model's depth.

:func:`judge` reads the files an experiment run writes into RUN_DIR (``table1.csv``,
``table1_per_query.csv``, ``layers.csv``, ``contrast/heads.csv``, ``contrast/per_query.csv``,
``summary.json``, ``config.json``) and returns one :class:`Finding` per claim: SPEC §5's eight
findings, the significance claims of Table 1, the early/middle vs last layers claim of Figure 3 and
the three claims of Figure 4. Each has a verdict (``holds``, ``does not hold``, ``inconclusive``,
``not measured``), the rule that decided it, the evidence, the paper's sentence and the number of
queries it rests on. The same goes to ``RUN_DIR/findings.json``.

Verdicts follow one principle (:func:`directional`): a claim that an effect exists *holds* when its
test is significant in the claimed direction at the run's alpha; it *does not hold* when the test is
significant the other way or when the (1 - alpha) confidence interval rules out an effect as large
as a margin (:data:`MARGIN` = 0.02 nDCG@10 for rankings; a standardised medium effect, Cohen's
d_z = :data:`STD_MARGIN`, for attention statistics); otherwise it is *inconclusive* (too few queries
for the effect size, or p between alpha and a clear no). Claims of *no* effect are the mirror image.
Table 1 and layer-curve cells use the run's corrected p-values (column named for the correction)
and the stored confidence intervals; matching heads follow :mod:`matchsig.matching`. Layer numbers
of the paper's 24-layer model are scaled by proportion: the "last layers" 20-23 of 24 are
l >= floor(20 L / 24).
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
    "KEYS",
    "Run",
    "VERDICTS",
    "directional",
    "judge",
    "matching_heads",
    "normalize_direction",
    "top_matching_heads",
    "write_findings",
]

#: Smallest change of nDCG@10 a finding treats as meaningful (a "clear no" rules it out).
MARGIN = 0.02
#: A layer ablation "hurts" when it loses significantly more than this much nDCG@10.
DROP = 0.02
#: A SEP ablation "changes something" when its significant change exceeds this.
SEP_NOOP = 0.01
#: Margin for attention statistics, in standard deviations of the per-query differences (Cohen's d_z).
STD_MARGIN = 0.5
#: Fewer queries than this: inconclusive.
MIN_QUERIES = 5
#: The paper's "last layers" (20-23 of 24) as a fraction of the depth.
LATE_FRACTION = 20 / 24
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
        from .statistics import correction_label

        return correction_label(self.correction)

    @property
    def p_name(self) -> str:
        """The p-value column of ranking tables decisions use: ``p_holm``, ``p_bonferroni`` or ``p_value``."""
        from .statistics import decision_column

        return decision_column(self.correction)

    @property
    def p_label(self) -> str:
        return f"{self.corrected} p"

    def p_column(self, comparison: str) -> str:
        """The decision column of a contrast comparison (``relevant``, ``hard``, ``relevant_hard``)."""
        from .statistics import decision_column

        return decision_column(self.correction, f"p_{comparison}")

    def decision_p(self, row: pd.Series) -> float | None:
        """The p-value a row is decided on: the corrected column when the table has it, else the raw one."""
        value = _float(row.get(self.p_name))
        return value if value is not None else _float(row.get("p_value"))

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
        p = self.decision_p(row)
        if p is not None:
            return p <= self.alpha
        return bool(row.get("significant", False))

    def mark(self, row: pd.Series) -> str:
        """``*`` for a significant drop, ``↑`` for a significant increase, else ``""``."""
        from .statistics import change_mark

        p, delta = self.decision_p(row), _float(row.get("delta"))
        if p is None or delta is None:
            return ""
        return change_mark(p, delta, self.alpha)


# ---- decisions ----------------------------------------------------------------------------------

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)


def _combine(states: list[str]) -> str:
    """All parts hold -> holds; any part fails -> does not hold; otherwise inconclusive."""
    if any(s == FAILS for s in states):
        return FAILS
    if states and all(s == HOLDS for s in states):
        return HOLDS
    return INCONCLUSIVE


@dataclass
class Test:
    """A directional claim on per-query differences ``d`` (claim: mean > 0), decided by :func:`directional`."""

    state: str
    n: int
    mean: float
    p: float
    ci: tuple[float, float]
    margin: float
    alpha: float = 0.05

    def text(self) -> str:
        if self.n < MIN_QUERIES:
            return f"only {self.n} queries (fewer than {MIN_QUERIES}): cannot decide"
        return (f"mean {self.mean:+.4g} over {self.n} queries, {100 * (1 - self.alpha):g}% CI "
                f"[{self.ci[0]:+.4g}, {self.ci[1]:+.4g}], p={self.p:.3g}, margin {self.margin:.3g}")


def directional(d: np.ndarray, alpha: float, margin: float | None = None) -> Test:
    """Decide a claim "the mean of ``d`` is > 0" from per-query values.

    * holds: two-sided one-sample t-test p <= alpha with a positive mean;
    * does not hold: p <= alpha with a negative mean, or the upper bound of the (1 - alpha)
      confidence interval of the mean lies below ``margin`` (the data rule out an effect of that
      size): ``margin`` is given in the data's units (nDCG@10: :data:`MARGIN`) or, when None, is a
      standardised medium effect, :data:`STD_MARGIN` x the standard deviation of ``d`` (Cohen's d_z = 0.5);
    * inconclusive otherwise, and with fewer than :data:`MIN_QUERIES` queries.
    """
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n < MIN_QUERIES:
        return Test(INCONCLUSIVE, n, float(d.mean()) if n else float("nan"), float("nan"), (float("nan"),) * 2,
                    float("nan"), alpha)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
        ci = (mean, mean)
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / np.sqrt(n)
        ci = (mean - half, mean + half)
    m = float(margin) if margin is not None else STD_MARGIN * sd
    if p <= alpha:
        state = HOLDS if mean > 0 else FAILS
    elif ci[1] < m:
        state = FAILS
    else:
        state = INCONCLUSIVE
    return Test(state, n, mean, p, ci, m, alpha)


@dataclass
class Finding:
    """One claim of the paper judged on this run.

    ``verdict`` is ``"holds"``, ``"does not hold"``, ``"inconclusive"`` (the data cannot decide) or
    ``"not measured"`` (the experiment it needs was not run); ``queries`` is how many queries the
    verdict rests on.
    """

    name: str
    verdict: str
    evidence: str
    key: str = ""
    rule: str = ""
    paper: str = ""
    data: dict = field(default_factory=dict)
    queries: int | None = None

    @property
    def holds(self) -> bool | None:
        """True (holds), False (does not hold), None (inconclusive or not measured)."""
        return {HOLDS: True, FAILS: False}.get(self.verdict)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _finding(key: str, verdict: str, evidence: str, rule: str, queries: int | None = None, **data) -> Finding:
    return Finding(NAMES[key], verdict, evidence, key, rule, paper.STATEMENTS.get(key, ""), data, queries)


def _missing(key: str, what: str, rule: str) -> Finding:
    return _finding(key, NOT_MEASURED, what, rule)


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
    "table1_significant_drops": "Table 1: D<-D, Q<-*, D<-* and CLS<-* are significant drops",
    "table1_not_significant": "Table 1: CLS<-Q and CLS<-D are not significant drops",
    "hard_vs_easy_layers": "Hard vs easy negatives differ in early/middle layers, not in the last layers (Figure 3)",
    "qd_entropy_late": "Late-layer Q<-D entropy is higher on relevant than on easy-negative passages (Figure 4)",
    "exact_match_early": "Early/middle heads put more exact-match mass on relevant passages (Figure 4)",
    "dq_entropy_late_similar": "Late-layer D<-Q entropy differs less than Q<-D between relevant and easy negatives (Figure 4)",
}

DECISION_TEXT = (
    "Verdicts: holds / does not hold / inconclusive. A claim that an effect exists holds when its test is "
    "significant in the claimed direction; it does not hold when the test is significant the other way, or when "
    "the (1 - alpha) confidence interval rules out an effect as large as the margin; otherwise it is inconclusive "
    "(too few queries for the effect size, or p between alpha and a clear no)."
)


# ---- Table 1 ------------------------------------------------------------------------------------


def _ndcg_state(run: Run, row: pd.Series) -> str:
    """One nDCG comparison row: "drop" (significant), "rise" (significant), "harmless" (CI rules out a drop
    of MARGIN or more), or "undecided"."""
    p = run.decision_p(row)
    delta = _float(row.get("delta"))
    low = _float(row.get("ci_low"))
    n = _float(row.get("n_queries"))
    if n is not None and n < MIN_QUERIES:
        return "undecided"
    if p is not None and delta is not None and p <= run.alpha and delta != 0:
        return "drop" if delta < 0 else "rise"
    if low is not None and low > -MARGIN:
        return "harmless"
    return "undecided"


def _cell_text(run: Run, label: str, row: pd.Series) -> str:
    low, high = _float(row.get("ci_low")), _float(row.get("ci_high"))
    ci = f", CI [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    p = run.decision_p(row)
    return f"{label} {float(row['ndcg@10']):.3f} ({float(row['delta']):+.3f}{ci}, {run.p_name} {_fmt(p, 3) if p is not None and p >= 0.001 else f'{p:.1e}' if p is not None else 'n/a'})"


def _queries(run: Run, frame: pd.DataFrame | None) -> int | None:
    if frame is not None and "n_queries" in frame:
        values = pd.to_numeric(frame["n_queries"], errors="coerce").dropna()
        return int(values.max()) if len(values) else None
    return (run.summary.get("pools", {}).get("main") or {}).get("queries")


def _per_query_columns(run: Run) -> dict[frozenset, str]:
    frame = run.table1_per_query
    if frame is None:
        return {}
    return {normalize_direction(c): c for c in frame.columns if "<-" in str(c)}


def _dd_hurts_most(run: Run) -> Finding:
    key = "dd_hurts_most"
    rule = ("D<-D has the lowest nDCG@10 of the 25 single directions and a paired t-test over queries puts it "
            f"significantly below the next lowest direction (p <= alpha, uncorrected: one planned comparison); does not "
            f"hold when another direction is significantly below D<-D, or D<-D's own drop is ruled out (CI of its change "
            f"above -{MARGIN}); otherwise inconclusive.")
    cells = {k: v for k, v in run.cells().items() if k[1] != "*"}
    if ("D", "D") not in cells or len(cells) < 2:
        return _missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    values = {k: float(v["ndcg@10"]) for k, v in cells.items()}
    ranked = sorted(values.items(), key=lambda kv: kv[1])
    others = [(k, v) for k, v in ranked if k != ("D", "D")]
    runner = others[0][0]
    worst = ", ".join(f"{t}<-{s} {v:.3f}" for (t, s), v in ranked[:4])
    evidence = f"Lowest single directions: {worst} (unablated {_fmt(run.unablated)})."
    state_dd = _ndcg_state(run, cells[("D", "D")])
    pq, cols = run.table1_per_query, _per_query_columns(run)
    c_dd, c_run = cols.get(frozenset({("D", "D")})), cols.get(frozenset({runner}))
    n = _queries(run, run.table1)
    if state_dd == "harmless" or state_dd == "rise":
        verdict = FAILS
        evidence += " D<-D does not lower nDCG@10 meaningfully."
    elif pq is None or not c_dd or not c_run:
        verdict = INCONCLUSIVE
        evidence += " table1_per_query.csv is missing: D<-D cannot be tested against the runner-up."
    else:
        test = directional(pq[c_run].to_numpy(float) - pq[c_dd].to_numpy(float), run.alpha, 0.0)
        n = test.n
        # only significance decides here: "hurts most" has no margin of its own
        verdict = HOLDS if test.state == HOLDS else FAILS if (test.p <= run.alpha and test.mean < 0) else INCONCLUSIVE
        evidence += (f" D<-D vs the next lowest, {runner[0]}<-{runner[1]}: {runner[0]}<-{runner[1]} minus D<-D "
                     f"{test.mean:+.3f} per query, paired t-test p={test.p:.3g} over {test.n} queries.")
    return _finding(key, verdict, evidence, rule, n, ranking=[[f"{t}<-{s}", v] for (t, s), v in ranked])


def _sep_noop(run: Run) -> Finding:
    key = "sep_noop"
    rule = (f"Each of the 18 ablations into or out of SEP1/SEP2 (16 single directions + SEP1<-*, SEP2<-*) is a no-op "
            f"when the (1 - alpha) CI of its change lies inside +-{MARGIN}; it changes something when the change is "
            f"significant ({run.p_name} <= {run.alpha:g}) and larger than {SEP_NOOP}. Holds when all 18 are no-ops; "
            "does not hold when one changes something; otherwise inconclusive.")
    cells = run.cells()
    chosen = {k: v for k, v in cells.items()
              if (k[1] != "*" and (k[0] in SEP_PARTS or k[1] in SEP_PARTS)) or (k[1] == "*" and k[0] in SEP_PARTS)}
    if not chosen:
        return _missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    changes, undecided, noop = [], [], []
    for (t, s), row in chosen.items():
        delta = float(row["delta"])
        p = run.decision_p(row)
        low, high = _float(row.get("ci_low")), _float(row.get("ci_high"))
        text = _cell_text(run, f"{t}<-{s}", row)
        if p is not None and p <= run.alpha and abs(delta) > SEP_NOOP:
            changes.append(text)
        elif low is not None and high is not None and -MARGIN < low and high < MARGIN:
            noop.append(text)
        else:
            undecided.append(text)
    verdict = FAILS if changes else HOLDS if not undecided else INCONCLUSIVE
    deltas = [abs(float(r["delta"])) for r in chosen.values()]
    evidence = f"{len(chosen)} SEP cells, largest |change| {max(deltas):.3f}; {len(noop)} no-ops."
    if changes:
        evidence += " Significant changes above " + f"{SEP_NOOP}: " + "; ".join(changes) + "."
    if undecided:
        evidence += " Not decided (CI wider than the margin): " + "; ".join(undecided) + "."
    return _finding(key, verdict, evidence, rule, _queries(run, run.table1), changes=changes, undecided=undecided)


def _cls_all_random(run: Run) -> Finding:
    key = "cls_all_random"
    rule = (f"Per query, CLS<-* minus the exact random baseline: holds when the (1 - alpha) CI of the mean lies inside "
            f"+-{MARGIN} (or every query equals it: all scores tie); does not hold when the difference is significant "
            f"(paired t-test p <= alpha) and larger than {MARGIN}; otherwise inconclusive.")
    row = run.cells().get(("CLS", "*"))
    rnd = run.random_ndcg
    if row is None or rnd is None:
        return _missing(key, "CLS<-* or the random baseline is missing (Table 1 was not run).", rule)
    value = float(row["ndcg@10"])
    evidence = f"CLS<-* = {value:.4f} vs random ranking {rnd:.4f} (difference {value - rnd:+.4f}); unablated {_fmt(run.unablated)}."
    pq = run.table1_per_query
    col = _per_query_columns(run).get(frozenset({("CLS", "*")}))
    if pq is None or col is None or "random" not in pq:
        verdict = HOLDS if abs(value - rnd) <= MARGIN else INCONCLUSIVE
        return _finding(key, verdict, evidence + " No per-query values: judged on the means only.", rule,
                        _queries(run, run.table1), value=value, random=rnd)
    d = pq[col].to_numpy(float) - pq["random"].to_numpy(float)
    test = directional(d, run.alpha, MARGIN)
    if np.all(np.abs(d) < 1e-9):
        verdict = HOLDS
        evidence += f" Equal to the exact random baseline on every one of the {len(d)} queries (all scores tie)."
    else:
        inside = -MARGIN < test.ci[0] and test.ci[1] < MARGIN
        verdict = (HOLDS if inside else FAILS if (test.p <= run.alpha and abs(test.mean) > MARGIN) else INCONCLUSIVE)
        evidence += f" Per query CLS<-* minus random: {test.text()}."
    return _finding(key, verdict, evidence, rule, test.n, value=value, random=rnd)


def _clsq_vs_clsd(run: Run) -> Finding:
    key = "clsq_vs_clsd"
    rule = ("Per query, nDCG@10 of CLS<-D minus CLS<-Q (the claim: positive). Holds when a paired t-test gives p <= "
            f"alpha with CLS<-Q lower; does not hold when CLS<-Q is significantly higher or the CI rules out CLS<-Q "
            f"being {MARGIN} lower; otherwise inconclusive.")
    cells = run.cells()
    q, d = cells.get(("CLS", "Q")), cells.get(("CLS", "D"))
    if q is None or d is None:
        return _missing(key, "CLS<-Q or CLS<-D is missing (Table 1 was not run).", rule)
    vq, vd = float(q["ndcg@10"]), float(d["ndcg@10"])
    evidence = f"CLS<-Q = {vq:.3f}, CLS<-D = {vd:.3f} (difference {vq - vd:+.3f})."
    pq, cols = run.table1_per_query, _per_query_columns(run)
    cq, cd = cols.get(frozenset({("CLS", "Q")})), cols.get(frozenset({("CLS", "D")}))
    if pq is None or not cq or not cd:
        return _finding(key, INCONCLUSIVE, evidence + " No per-query values (table1_per_query.csv) to test.", rule,
                        _queries(run, run.table1), cls_q=vq, cls_d=vd)
    test = directional(pq[cd].to_numpy(float) - pq[cq].to_numpy(float), run.alpha, MARGIN)
    evidence += f" Per query CLS<-D minus CLS<-Q: {test.text()}."
    return _finding(key, test.state, evidence, rule, test.n, cls_q=vq, cls_d=vd)


def _table1_cells(run: Run, key: str, wanted: list[tuple[str, str]], rule: str, claim_drop: bool) -> Finding:
    cells = run.cells()
    if not all(k in cells for k in wanted):
        return _missing(key, "table1.csv is missing (Table 1 was not run).", rule)
    states, parts = [], []
    for k in wanted:
        row = cells[k]
        state = _ndcg_state(run, row)
        if claim_drop:
            verdict = HOLDS if state == "drop" else FAILS if state in ("rise", "harmless") else INCONCLUSIVE
        else:
            verdict = FAILS if state == "drop" else HOLDS if state in ("rise", "harmless") else INCONCLUSIVE
        states.append(verdict)
        parts.append(f"{_cell_text(run, f'{k[0]}<-{k[1]}', row)}: {verdict}")
    return _finding(key, _combine(states), "; ".join(parts) + ".", rule, _queries(run, run.table1))


def _table1_significant_drops(run: Run) -> Finding:
    rule = (f"Each of D<-D, Q<-*, D<-*, CLS<-* is a significant drop ({run.p_name} <= {run.alpha:g} over the 30 "
            f"ablations, change < 0); a cell fails when it rises significantly or its CI rules out a drop of {MARGIN}. "
            "Holds when all four are significant drops.")
    return _table1_cells(run, "table1_significant_drops", [("D", "D"), ("Q", "*"), ("D", "*"), ("CLS", "*")], rule, True)


def _table1_not_significant(run: Run) -> Finding:
    rule = (f"Neither CLS<-Q nor CLS<-D is a significant drop; a cell holds when its CI rules out a drop of {MARGIN} "
            f"(or it rises significantly), fails when it is a significant drop ({run.p_name} <= {run.alpha:g}), and is "
            "inconclusive when it is not significant but a drop of the margin is not ruled out (too few queries).")
    return _table1_cells(run, "table1_not_significant", [("CLS", "Q"), ("CLS", "D")], rule, False)


# ---- Figure 1 -----------------------------------------------------------------------------------


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
            group["delta"] = -group["drop"]
        else:
            continue
        group["label"] = str(direction)
        group["state"] = [_layer_state(run, row) for _, row in group.iterrows()]
        out[normalize_direction(direction)] = group
    return out


def _layer_state(run: Run, row: pd.Series) -> str:
    """"hurts" (significant drop larger than DROP), "harmless" (CI rules out a drop of DROP), else "undecided"."""
    p = run.decision_p(row)
    drop = -float(row["delta"])
    low = _float(row.get("ci_low"))
    n = _float(row.get("n_queries"))
    if n is not None and n < MIN_QUERIES:
        return "undecided"
    if p is not None and p <= run.alpha and drop > DROP:
        return "hurts"
    if low is not None and low > -DROP:
        return "harmless"
    if low is None and p is not None and p > run.alpha and drop <= DROP:  # an old layers.csv without CIs
        return "harmless"
    return "undecided"


def _states_text(group: pd.DataFrame) -> str:
    return ", ".join(f"{int(l)}: {d:+.3f} {s}" for l, d, s in zip(group["layer"], -group["drop"], group["state"]))


LAYER_STATES = (f"Per layer l (layers 0..l ablated): hurts = significant drop (the run's p over every "
                f"(direction, layer) of Figure 1) larger than {DROP}; harmless = the (1 - alpha) CI of the change "
                f"rules out a drop of {DROP}.")


def _cls_last_layers(run: Run) -> Finding:
    key = "cls_last_layers"
    L = run.num_layers
    rule = (LAYER_STATES + " Holds when, for CLS<-* and CLS<-{Q,D}, every l < L-2 is harmless and every l >= L-2 "
            "hurts; does not hold when some l < L-2 hurts or some l >= L-2 is harmless; otherwise inconclusive"
            + (f" (L = {L}: layers {L - 2} and {L - 1})." if L else "."))
    curves = _layer_curves(run)
    found = [curves[k] for k in CLS_DIRECTIONS if k in curves]
    if not found or not L:
        return _missing(key, "layers.csv has no CLS<-* or CLS<-{Q,D} curve (layers was not run).", rule)
    states, parts = [], []
    for group in found:
        early, late = group[group["layer"] < L - 2], group[group["layer"] >= L - 2]
        if (early["state"] == "hurts").any() or (late["state"] == "harmless").any():
            states.append(FAILS)
        elif (early["state"] == "harmless").all() and len(late) and (late["state"] == "hurts").all():
            states.append(HOLDS)
        else:
            states.append(INCONCLUSIVE)
        parts.append(f"{direction_label(group['label'].iloc[0])}: {_states_text(group)}")
    return _finding(key, _combine(states), f"L = {L}. " + ". ".join(parts) + ".", rule, _queries(run, run.layers))


def _dd_from_middle(run: Run) -> Finding:
    key = "dd_from_middle"
    L = run.num_layers
    start = int(math.floor(0.45 * L)) if L else None
    rule = (LAYER_STATES + " For D<-D: holds when every l < floor(0.45 L)" + (f" = {start}" if start is not None else "")
            + " is harmless and some later l hurts (the paper: from layer 11/12 of 24); does not hold when an earlier "
            "l hurts or every later l is harmless; otherwise inconclusive.")
    group = _layer_curves(run).get(frozenset({("D", "D")}))
    if group is None or not L:
        return _missing(key, "layers.csv has no D<-D curve (layers was not run).", rule)
    early, late = group[group["layer"] < start], group[group["layer"] >= start]
    if (early["state"] == "hurts").any() or (len(late) and (late["state"] == "harmless").all()):
        verdict = FAILS
    elif (early["state"] == "harmless").all() and (late["state"] == "hurts").any():
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    hurting = group[group["state"] == "hurts"]["layer"]
    onset = int(hurting.iloc[0]) if len(hurting) else None
    evidence = (f"L = {L}; first layer that hurts: {onset if onset is not None else 'none'}"
                + (f" ({(onset + 1) / L:.0%} of the depth ablated; the paper: layer 11/12 of 24, about 50%)" if onset is not None else "")
                + f". D<-D: {_states_text(group)}.")
    return _finding(key, verdict, evidence, rule, _queries(run, run.layers), onset=onset)


# ---- matching heads (Figures 2-3) ------------------------------------------------------------------


def _classified(run: Run, correction: str | None = None) -> pd.DataFrame | None:
    from .matching import classify

    frame = run.contrast_heads
    if frame is None:
        return None
    return classify(frame, run.alpha, run.correction if correction is None else correction)


def matching_heads(run: Run, direction: str | None = None, correction: str | None = None) -> pd.DataFrame:
    """Rows of ``contrast/heads.csv`` that are matching heads (:mod:`matchsig.matching`, either sign)."""
    frame = _classified(run, correction)
    if frame is None:
        return pd.DataFrame()
    mask = frame["matching"].to_numpy(bool)
    if direction is not None:
        mask &= frame["direction"].astype(str).str.replace(" ", "").to_numpy() == direction
    return frame[mask]


def top_matching_heads(run_dir: str | Path | Run, n: int = 15) -> pd.DataFrame:
    """The matching heads with the largest |delta_relevant|, with sign, kind and the three tests."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    frame = matching_heads(run)
    if frame.empty:
        return frame
    p = {c: run.p_column(c) for c in ("relevant", "hard", "relevant_hard")}
    cols = [c for c in ("layer", "head", "direction", "sign", "delta_relevant", p["relevant"], "delta_hard", p["hard"],
                        "delta_relevant_hard", p["relevant_hard"], "kind") if c in frame]
    order = frame["delta_relevant"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order, cols].head(n).reset_index(drop=True)


def clearly_null(frame: pd.DataFrame, comparison: str, alpha: float) -> np.ndarray:
    """Rows whose ``comparison`` test rules out a medium effect: the (1 - alpha) CI of the mean difference lies
    inside +-STD_MARGIN standard deviations, i.e. |t| + t_crit(n - 1) < STD_MARGIN sqrt(n) (from the t and n columns)."""
    from scipy import stats

    t_col, n_col = f"t_{comparison}", f"n_{comparison}"
    if t_col not in frame or n_col not in frame:
        return np.zeros(len(frame), bool)
    t = np.abs(pd.to_numeric(frame[t_col], errors="coerce").to_numpy(float))
    n = pd.to_numeric(frame[n_col], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        crit = stats.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1))
        out = (t + crit < STD_MARGIN * np.sqrt(n)) & (n >= MIN_QUERIES)
    return np.nan_to_num(out, nan=0).astype(bool)


def _per_layer(frame: pd.DataFrame, flag: np.ndarray, L: int, H: int, how: str = "any") -> dict[int, float]:
    """Per layer, the fraction of heads for which ``flag`` holds in any (or all) of their direction rows."""
    heads = frame.assign(_f=flag).groupby(["layer", "head"])["_f"].agg(how)
    counts = heads[heads].groupby(level="layer").size()
    return {l: float(counts.get(l, 0)) / H for l in range(L)}


def _n_queries(frame: pd.DataFrame) -> int | None:
    for column in ("n_relevant", "n_queries"):
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce").dropna()
            if len(values):
                return int(values.max())
    return None


def _matching_heads_layers(run: Run) -> Finding:
    key = "matching_heads_layers"
    L, H = run.num_layers, run.num_heads
    late_start = L - math.ceil(L / 4) if L else None
    rule = (f"Matching head (matchsig.matching): M(.|3) vs M(.|-1) significant, either sign, in Q<-D or D<-Q "
            f"({run.p_label} <= {run.alpha:g}); a head is clearly not matching when, in both directions, the CI of that "
            f"difference rules out a medium effect (d_z >= {STD_MARGIN}). 'Few' in the first half (l < L/2): holds when "
            "the mean per-layer fraction of heads that are not clearly non-matching is < 0.5, fails when the fraction of "
            "matching heads is >= 0.5. 'Every head' in the last quarter (l >= L - ceil(L/4)"
            + (f" = {late_start}" if late_start is not None else "") + "): holds when the mean fraction of matching heads "
            "is >= 0.8, fails when more than 0.2 of the heads are clearly not matching. Otherwise inconclusive.")
    strict = _classified(run)
    if strict is None or not L or not H:
        return _missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    matching = _per_layer(strict, strict["matching"].to_numpy(bool), L, H)
    null = _per_layer(strict, clearly_null(strict, "relevant", run.alpha), L, H, how="all")
    first = [l for l in range(L) if l < L / 2]
    last = list(range(late_start, L))
    m_first, m_last = float(np.mean([matching[l] for l in first])), float(np.mean([matching[l] for l in last]))
    open_first = float(np.mean([1 - null[l] for l in first]))
    null_last = float(np.mean([null[l] for l in last]))
    few = HOLDS if open_first < 0.5 else FAILS if m_first >= 0.5 else INCONCLUSIVE
    every = HOLDS if m_last >= 0.8 else FAILS if null_last > 0.2 else INCONCLUSIVE
    signs = strict[strict["matching"]].groupby("layer")["sign"].agg(lambda s: f"{(s > 0).sum()}+/{(s < 0).sum()}-")
    listing = ", ".join(f"{l}: {matching[l]:.2f} ({signs.get(l, '0+/0-')}; {null[l]:.2f} clearly not)" for l in range(L))
    evidence = (f"Per layer, the fraction of the {H} heads that are matching heads ({run.p_label}; (+/-) direction "
                f"rows by sign) and that are clearly not: {listing}. First half: {m_first:.2f} matching, "
                f"{open_first:.2f} not clearly non-matching -> {few}; last quarter: {m_last:.2f} matching, {null_last:.2f} "
                f"clearly not -> {every}.")
    return _finding(key, _combine([few, every]), evidence, rule, _n_queries(strict),
                    fractions={str(k): v for k, v in matching.items()}, mean_first_half=m_first, mean_last_quarter=m_last)


def _bidirectional(run: Run) -> Finding:
    key = "matching_heads_bidirectional"
    rule = ("Of the heads matching for Q<-D, the share also matching for D<-Q, and vice versa (matching as in "
            f"matchsig.matching, {run.p_label} <= {run.alpha:g}). Holds when both shares are >= 0.5; does not hold when "
            f"more than half of a direction's matching heads are clearly not matching in the other (its CI rules out "
            f"d_z >= {STD_MARGIN}); otherwise inconclusive, also when no head matches.")
    strict = _classified(run)
    if strict is None:
        return _missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    strict = strict.assign(_null=clearly_null(strict, "relevant", run.alpha),
                           _dir=strict["direction"].astype(str).str.replace(" ", ""))

    def rows(direction, column):
        sub = strict[strict[column] & (strict["_dir"] == direction)]
        return {(int(l), int(h)): int(s) for l, h, s in zip(sub["layer"], sub["head"], sub["sign"])}

    qd, dq = rows("Q<-D", "matching"), rows("D<-Q", "matching")
    qd_null, dq_null = rows("Q<-D", "_null"), rows("D<-Q", "_null")
    n = _n_queries(strict)
    if not qd and not dq:
        return _finding(key, INCONCLUSIVE, "No matching head in either direction: nothing to compare.", rule, n)
    share = lambda a, b: len(set(a) & set(b)) / len(a) if a else 1.0  # noqa: E731
    s_qd, s_dq = share(qd, dq), share(dq, qd)
    n_qd, n_dq = share(qd, dq_null), share(dq, qd_null)
    verdict = HOLDS if (s_qd >= 0.5 and s_dq >= 0.5) else FAILS if (n_qd > 0.5 or n_dq > 0.5) else INCONCLUSIVE
    both = set(qd) & set(dq)
    same_sign = sum(1 for h in both if qd[h] == dq[h])
    evidence = (f"{len(qd)} matching heads for Q<-D, {len(dq)} for D<-Q, {len(both)} in both ({same_sign} with the same "
                f"sign): {s_qd:.0%} of the Q<-D ones also match D<-Q ({n_qd:.0%} clearly do not), {s_dq:.0%} of the "
                f"D<-Q ones also match Q<-D ({n_dq:.0%} clearly do not).")
    return _finding(key, verdict, evidence, rule, n, share_qd=s_qd, share_dq=s_dq, both=len(both))


# ---- per-query contrasts (Figures 3-4) -------------------------------------------------------------


def late_start(L: int) -> int:
    """First of the "last layers": 20 of 24 scaled to depth, floor(20 L / 24)."""
    return int(math.floor(LATE_FRACTION * L))


def _per_query_levels(run: Run, statistic: str, layers: list[int]) -> pd.DataFrame | None:
    """Per query and direction, the mean of ``statistic`` over the heads of ``layers``, one column per level."""
    frame = run.contrast_per_query
    if frame is None or statistic not in frame:
        return None
    sub = frame[frame["layer"].isin(layers)]
    sub = sub.assign(direction=sub["direction"].astype(str).str.replace(" ", ""))
    return sub.pivot_table(index=["qid", "direction"], columns="level", values=statistic, aggfunc="mean")


def _diff(table: pd.DataFrame, direction: str, level: int, reference: int) -> pd.Series:
    sub = table.xs(direction, level="direction")
    if level not in sub or reference not in sub:
        return pd.Series(dtype=float)
    return (sub[level] - sub[reference]).dropna()


def _hard_vs_easy_layers(run: Run) -> Finding:
    key = "hard_vs_easy_layers"
    L = run.num_layers
    s = late_start(L) if L else None
    rule = ("(a) Early/middle layers (l < floor(20 L / 24)" + (f" = {s}" if s is not None else "") + "): at least one head "
            f"whose M(.|0) vs M(.|-1) differs ({run.p_label} <= {run.alpha:g}, either direction); fails when every "
            f"early/middle row clearly does not (its CI rules out d_z >= {STD_MARGIN}). (b) Last layers (l >= that, the paper's 20-23 of 24): hard negatives look like "
            "easy negatives relative to relevant ones: per query, averaged over the last layers' heads and both "
            "directions, M(0) - M(-1) lies within +-(M(3) - M(-1))/2 (oriented by the sign of the mean relevant-vs-easy "
            "difference), i.e. two one-sided claims, (M(3)-M(-1))/2 -/+ (M(0)-M(-1)) > 0, each decided by a one-sample "
            "t-test (a clear no when its CI rules out d_z >= 0.5). Holds when (a) and (b) hold.")
    strict = _classified(run)
    if strict is None or not L:
        return _missing(key, "contrast/heads.csv is missing (contrast was not run).", rule)
    if run.p_column("hard") not in strict:
        return _missing(key, f"contrast/heads.csv has no {run.p_column('hard')} column.", rule)
    early = (strict["layer"] < s).to_numpy()
    n_s = int(((strict[run.p_column("hard")] <= run.alpha).to_numpy() & early).sum())
    n_null = int((clearly_null(strict, "hard", run.alpha) & early).sum())
    part_a = HOLDS if n_s > 0 else FAILS if n_null == int(early.sum()) else INCONCLUSIVE
    per_layer = strict[strict[run.p_column("hard")] <= run.alpha].groupby("layer").size()
    evidence = (f"(a) {n_s} of {int(early.sum())} (head, direction) rows in layers 0..{s - 1} with a significant "
                f"hard-vs-easy difference, {n_null} clearly without one; per layer: "
                + (", ".join(f"{int(l)}: {int(c)}" for l, c in per_layer.items()) or "none") + f" -> {part_a}.")
    table = _per_query_levels(run, "max", list(range(s, L)))
    n = None
    if table is None:
        part_b = INCONCLUSIVE
        evidence += " (b) contrast/per_query.csv is missing."
    else:
        rel = pd.concat([_diff(table, d, 3, -1) for d in ("Q<-D", "D<-Q")], axis=1).mean(axis=1)
        hard = pd.concat([_diff(table, d, 0, -1) for d in ("Q<-D", "D<-Q")], axis=1).mean(axis=1)
        both = pd.concat([rel, hard], axis=1).dropna()
        sign = float(np.sign(both[0].mean())) or 1.0
        # M(0) - M(-1) inside +-(M(3) - M(-1))/2: two one-sided claims, both must hold
        above = directional((sign * both[0] / 2 - sign * both[1]).to_numpy(), run.alpha)
        below = directional((sign * both[0] / 2 + sign * both[1]).to_numpy(), run.alpha)
        part_b, n = _combine([above.state, below.state]), above.n
        evidence += (f" (b) Layers {s}..{L - 1}, per query: median M(0)-M(-1) {float(both[1].median()):+.4f} vs "
                     f"M(3)-M(-1) {float(both[0].median()):+.4f}; (M(3)-M(-1))/2 minus M(0)-M(-1), signed: "
                     f"{above.text()}; plus M(0)-M(-1): {below.text()} -> {part_b}.")
    return _finding(key, _combine([part_a, part_b]), evidence, rule, n)


def _figure4(run: Run, key: str, statistic: str, layers_kind: str, directions: tuple[str, ...], rule: str) -> Finding:
    L = run.num_layers
    if not L or run.contrast_per_query is None:
        return _missing(key, "contrast/per_query.csv is missing (contrast was not run).", rule)
    s = late_start(L)
    layers = list(range(s, L)) if layers_kind == "late" else list(range(0, s))
    table = _per_query_levels(run, statistic, layers)
    if table is None:
        return _missing(key, f"contrast/per_query.csv has no {statistic} column.", rule)
    states, parts, ns = [], [], []
    for direction in directions:
        test = directional(_diff(table, direction, 3, -1).to_numpy(), run.alpha)
        states.append(test.state)
        ns.append(test.n)
        parts.append(f"{direction} {statistic}, relevant minus easy, layers {layers[0]}..{layers[-1]}: {test.text()} -> {test.state}")
    return _finding(key, _combine(states), "; ".join(parts) + ".", rule, min(ns) if ns else None)


def _qd_entropy_late(run: Run) -> Finding:
    rule = ("Per query, the Q<-D attention entropy on relevant minus easy-negative passages, averaged over the heads of "
            "the last layers (l >= floor(20 L / 24)); holds when a one-sample t-test gives p <= alpha with a positive "
            "mean; does not hold when significant the other way or the CI rules out d_z >= 0.5; otherwise inconclusive.")
    return _figure4(run, "qd_entropy_late", "entropy", "late", ("Q<-D",), rule)


def _exact_match_early(run: Run) -> Finding:
    rule = ("Per query and direction (Q<-D and D<-Q), the exact-match mass on relevant minus easy-negative passages, "
            "averaged over the heads of the early/middle layers (l < floor(20 L / 24)); each direction decided as for the "
            "entropy claim; holds when both directions hold.")
    return _figure4(run, "exact_match_early", "exact", "early", ("Q<-D", "D<-Q"), rule)


def _dq_entropy_late_similar(run: Run) -> Finding:
    key = "dq_entropy_late_similar"
    rule = ("Last layers (l >= floor(20 L / 24)), per query: a = sQD x dQD - sDQ x dDQ, where dX is the entropy on "
            "relevant minus easy-negative passages for direction X averaged over the heads and sX the sign of its mean "
            "(so mean a = |mean dQD| - |mean dDQ|; the claim: D<-Q differs less than Q<-D). One-sample t-test on a: holds "
            "when p <= alpha with a > 0; does not hold when significant the other way or the CI rules out d_z >= 0.5; "
            "otherwise inconclusive.")
    L = run.num_layers
    if not L or run.contrast_per_query is None:
        return _missing(key, "contrast/per_query.csv is missing (contrast was not run).", rule)
    s = late_start(L)
    table = _per_query_levels(run, "entropy", list(range(s, L)))
    if table is None:
        return _missing(key, "contrast/per_query.csv has no entropy column.", rule)
    qd, dq = _diff(table, "Q<-D", 3, -1), _diff(table, "D<-Q", 3, -1)
    both = pd.concat([qd, dq], axis=1).dropna()
    s_qd, s_dq = (float(np.sign(both[c].mean())) or 1.0 for c in (0, 1))
    test = directional((s_qd * both[0] - s_dq * both[1]).to_numpy(), run.alpha)
    t_dq = directional(both[1].to_numpy(), run.alpha)
    evidence = (f"Layers {s}..{L - 1}: mean entropy difference relevant minus easy, Q<-D {float(both[0].mean()):+.4f}, "
                f"D<-Q {float(both[1].mean()):+.4f} (D<-Q alone: p={t_dq.p:.3g}); a: {test.text()}.")
    return _finding(key, test.state, evidence, rule, test.n)


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
    _table1_significant_drops,
    _table1_not_significant,
    _hard_vs_easy_layers,
    _qd_entropy_late,
    _exact_match_early,
    _dq_entropy_late_similar,
)


def write_findings(run: Run, findings: list[Finding]) -> Path:
    top = top_matching_heads(run)
    payload = {
        "alpha": run.alpha,
        "correction": run.correction,
        "num_layers": run.num_layers,
        "decision_rule": DECISION_TEXT,
        "margins": {"ndcg@10": MARGIN, "layer_drop": DROP, "sep_change": SEP_NOOP, "standardised": STD_MARGIN,
                    "min_queries": MIN_QUERIES},
        "findings": [{**asdict(f), "verdict": f.verdict} for f in findings],
        "top_matching_heads": json.loads(top.to_json(orient="records")) if not top.empty else [],
    }
    path = run.path / "findings.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def judge(run_dir: str | Path, write: bool = True) -> list[Finding]:
    """Judge the paper's findings on a run folder; writes ``RUN_DIR/findings.json`` unless ``write=False``."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    findings = []
    for judge_one, key in zip(JUDGES, KEYS):
        try:
            findings.append(judge_one(run))
        except (KeyError, ValueError, TypeError, IndexError) as exc:  # malformed file: say so, don't crash
            findings.append(_finding(key, NOT_MEASURED, f"Could not be judged from the run's files: "
                                     f"{type(exc).__name__}: {exc}.", ""))
    if write:
        write_findings(run, findings)
    return findings
