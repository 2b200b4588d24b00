"""Checklist rules of the contrast and patching claims on near-threshold synthetic run folders: each rule just
inside its threshold, just outside, and on too few queries (test_checklist_rules.py does the Table 1 and layer
rules the same way).

A folder is written from per-query values alone: ``contrast/per_query.csv`` holds, per query, level (3, 0, -1),
layer, head and direction, the four statistics; ``contrast/heads.csv`` is computed here from it with scipy's
paired t-test (so matching heads, signs and kinds follow from the per-query data as in a real run). Each claim's
per-query quantity is built as ``mu + SD z`` with z exactly standardised (mean 0, sd 1), so its t statistic is
``mu sqrt(N) / SD`` and the thresholds come from scipy's t quantiles: p <= alpha two-sided at
mu = t_{0.975} SE, the one-sided "clearly not a medium effect" test (margin 0.5 sd) at mu = 0.5 SD - t_{0.95} SE,
a head clearly not matching at |t| = 0.5 sqrt(N) - t_{0.95}. The package's thresholds are not used.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matchsig.report import judge

ALPHA, N, SD = 0.05, 40, 0.05
SE = SD / math.sqrt(N)
T975, T95 = stats.t.ppf(1 - ALPHA / 2, N - 1), stats.t.ppf(1 - ALPHA, N - 1)
SIG = T975 * SE  # a mean difference whose two-sided p is alpha
CLEAR_NO = 0.5 * SD - T95 * SE  # the largest mean whose one-sided test rules out d_z >= 0.5
NULL_T = 0.5 * math.sqrt(N) - T95  # a head with |t| below this is clearly not matching (TOST, |d_z| < 0.5)
EPS = 1e-7  # on means of ~0.01-0.1: far above float error, far below any other distance here
LEVELS = (3, 0, -1)
LI = {level: i for i, level in enumerate(LEVELS)}
QD, DQ = 0, 1
DIRECTIONS = ("Q<-D", "D<-Q")
BASE = {"max": 0.2, "entropy": 1.0, "exact": 0.1, "mass": 0.5}


def standard(n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=n)
    return (z - z.mean()) / z.std(ddof=1)


class Folder:
    """Per-query statistics V[stat][query, level, layer, head, direction], every level equal to BASE at first."""

    def __init__(self, layers: int = 6, heads: int = 2, n: int = N):
        self.L, self.H, self.n = layers, heads, n
        self.V = {s: np.full((n, 3, layers, heads, 2), v) for s, v in BASE.items()}
        self.z, self.z2 = standard(n, 1), standard(n, 2)

    def noisy(self, mu: float) -> np.ndarray:
        """Per-query values mu + SD z: mean mu, sd SD."""
        return mu + SD * self.z

    def set(self, stat: str, level: int, value, layer=slice(None), head=slice(None), direction=slice(None)) -> None:
        """Set a statistic at one level; ``value`` a scalar or per-query array, added to BASE."""
        value = np.asarray(value, float)
        block = self.V[stat][:, LI[level]]  # a view: (query, layer, head, direction)
        block[:, layer, head, direction] = BASE[stat] + _fit(value, block[:, layer, head, direction])

    def write(self, tmp_path: Path, name: str) -> Path:
        run = tmp_path / name
        (run / "contrast").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"alpha": ALPHA, "correction": "none"}))
        (run / "summary.json").write_text(json.dumps({"model_info": {"num_layers": self.L, "num_heads": self.H}}))
        idx = np.indices((self.n, 3, self.L, self.H, 2)).reshape(5, -1)
        frame = pd.DataFrame({"qid": [f"q{i}" for i in idx[0]], "level": np.asarray(LEVELS)[idx[1]], "layer": idx[2],
                              "head": idx[3], "direction": np.asarray(DIRECTIONS)[idx[4]]})
        for stat, values in self.V.items():
            frame[stat] = values.reshape(-1)
        frame.to_csv(run / "contrast" / "per_query.csv", index=False)
        heads_table(self.V["max"]).to_csv(run / "contrast" / "heads.csv", index=False)
        return run


def _fit(value: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Broadcast a per-query vector (or scalar) over the selected block (query axis first)."""
    if value.ndim == 0:
        return value
    return value.reshape((-1,) + (1,) * (target.ndim - 1))


def heads_table(m: np.ndarray) -> pd.DataFrame:
    """contrast/heads.csv from per-query M (query, level, layer, head, direction): per row and comparison the mean
    difference, t and p of scipy's paired t-test (zero variance: p = 1 for no change, 0 otherwise), n."""
    n, _, L, H, D = m.shape
    grid = np.indices((L, H, D)).reshape(3, -1)
    frame = pd.DataFrame({"layer": grid[0], "head": grid[1], "direction": np.asarray(DIRECTIONS)[grid[2]]})
    for name, (a, b) in {"relevant": (3, -1), "hard": (0, -1), "relevant_hard": (3, 0)}.items():
        x, y = m[:, LI[a]].reshape(n, -1), m[:, LI[b]].reshape(n, -1)
        d = x - y
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: handled below
            res = stats.ttest_rel(x, y, axis=0)
        const = np.all(d == d[:1], axis=0)
        delta = d.mean(0)
        frame[f"delta_{name}"] = delta
        frame[f"t_{name}"] = np.where(const, np.where(delta == 0, 0.0, np.copysign(np.inf, delta)), res.statistic)
        frame[f"p_{name}"] = np.where(const, np.where(delta == 0, 1.0, 0.0), res.pvalue)
        frame[f"n_{name}"] = n
    frame["n_queries"] = n
    return frame


def verdict(run: Path, key: str) -> str:
    found = [f for f in judge(run, write=False) if f.key == key]
    assert len(found) == 1, key
    return found[0].verdict


# ---- matching heads: few in the first half, every head in the last layers ----------------------------------------
# L = 6: first half = layers 0..2 (floor(12 x 6 / 24) = 3), last layers = layer 5 (floor(20 x 6 / 24)); H = 5.


def _layers_folder(late_head3: float, late_head4: float, first_half_matching: int = 0, n: int = N) -> Folder:
    """Layer 5: heads 0-2 clearly matching in Q<-D, heads 3 and 4 with the given Q<-D t statistic; every D<-Q row
    and every other row without an effect (clearly not matching), except ``first_half_matching`` heads of layers
    0..2 that clearly match."""
    f = Folder(layers=6, heads=5, n=n)
    se = SD / math.sqrt(n)
    f.set("max", 3, f.noisy(0.0))  # M(3) - M(-1) = SD z everywhere: t = 0
    f.set("max", 3, f.noisy(0.1), layer=5, head=slice(0, 3), direction=QD)
    f.set("max", 3, f.noisy(late_head3 * se), layer=5, head=3, direction=QD)
    f.set("max", 3, f.noisy(late_head4 * se), layer=5, head=4, direction=QD)
    for k in range(first_half_matching):
        f.set("max", 3, f.noisy(0.1), layer=k // 5, head=k % 5, direction=QD)
    return f


@pytest.mark.parametrize("case,head3,head4,expected", [
    ("inside", T975 * (1 + 1e-6), 1.9, "holds"),  # 4 of 5 late heads match: share 0.8
    ("outside", T975 * (1 - 1e-6), 1.9, "inconclusive"),  # 3 match, none clearly not: share in [0.6, 1]
    ("null-inside", 0.0, NULL_T * (1 - 1e-6), "does not hold"),  # 3 match, 2 clearly not: share <= 0.6 < 0.8
    ("null-outside", 0.0, NULL_T * (1 + 1e-6), "inconclusive"),  # head 4 not clearly null: share in [0.6, 0.8]
])
def test_matching_heads_layers_near_thresholds(tmp_path, case, head3, head4, expected):
    run = _layers_folder(head3, head4).write(tmp_path, case)
    heads = pd.read_csv(run / "contrast" / "heads.csv")
    late = heads[(heads.layer == 5) & (heads.direction == "Q<-D")].set_index("head")
    assert (late.loc[3, "p_relevant"] <= ALPHA) == (case == "inside")  # the crafted p sits on alpha
    assert verdict(run, "matching_heads_layers") == expected


@pytest.mark.parametrize("matching,expected", [(7, "holds"), (8, "does not hold")])
def test_matching_heads_few_in_the_first_half(tmp_path, matching, expected):
    """7 of the 15 first-half heads (share 0.47, the rest clearly not) is 'few'; 8 (0.53) is not."""
    run = _layers_folder(T975 * 2, 1.9, first_half_matching=matching).write(tmp_path, f"few{matching}")
    assert verdict(run, "matching_heads_layers") == expected


def test_matching_heads_layers_with_too_few_queries(tmp_path):
    """4 queries: a large effect is still significant, but no head can be shown clearly not matching."""
    run = _layers_folder(T975 * 3, 0.0, n=4).write(tmp_path, "few-queries")
    heads = pd.read_csv(run / "contrast" / "heads.csv")
    assert (heads["p_relevant"] <= ALPHA).sum() >= 3
    assert verdict(run, "matching_heads_layers") == "inconclusive"


# ---- matching heads are bidirectional: >= half of each direction's matching heads match the other ----------------


def _bidirectional_folder(dq_head1: float, n: int = N) -> Folder:
    """Layer 5, H = 4: every head matches Q<-D; D<-Q: head 0 matches, head 1 has the given t, heads 2-3 none."""
    f = Folder(layers=6, heads=4, n=n)
    se = SD / math.sqrt(n)
    f.set("max", 3, f.noisy(0.0))
    f.set("max", 3, f.noisy(0.1), layer=5, direction=QD)
    f.set("max", 3, f.noisy(0.1), layer=5, head=0, direction=DQ)
    f.set("max", 3, f.noisy(dq_head1 * se), layer=5, head=1, direction=DQ)
    return f


@pytest.mark.parametrize("case,t,expected", [
    ("inside", T975 * (1 + 1e-6), "holds"),  # 2 of the 4 Q<-D heads match D<-Q: share 0.5
    ("outside", T975 * (1 - 1e-6), "inconclusive"),  # 1 matches, 2 clearly do not: share in [0.25, 0.5]
    ("null-inside", NULL_T * (1 - 1e-6), "does not hold"),  # 3 clearly do not: share <= 0.25
    ("null-outside", NULL_T * (1 + 1e-6), "inconclusive"),
])
def test_bidirectional_near_thresholds(tmp_path, case, t, expected):
    run = _bidirectional_folder(t).write(tmp_path, case)
    assert verdict(run, "matching_heads_bidirectional") == expected


def test_bidirectional_with_too_few_queries(tmp_path):
    run = _bidirectional_folder(0.0, n=4).write(tmp_path, "few")
    assert verdict(run, "matching_heads_bidirectional") == "inconclusive"


# ---- hard vs easy (Figure 3): (a) some early head differs, (b) the last layers' M(0)-M(-1) within +-(M(3)-M(-1))/2 --


R = 0.1  # half the relevant-vs-easy difference of the last layers
BOUND_EDGE = R - T95 * SE  # largest mean M(0)-M(-1) whose one-sided test puts it inside the band


def _hard_folder(hard_late: float, early_t: float = 12.0, n: int = N) -> Folder:
    f = Folder(layers=6, heads=2, n=n)
    se = SD / math.sqrt(n)
    f.set("max", 0, f.noisy(early_t * se), layer=0, head=0, direction=QD)  # (a): one early row, 0 vs -1
    f.set("max", 3, 2 * R, layer=5)
    f.set("max", 0, f.noisy(hard_late), layer=5)
    return f


@pytest.mark.parametrize("case,hard,early_t,expected", [
    ("inside", BOUND_EDGE - EPS, 12.0, "holds"),
    ("outside", BOUND_EDGE + EPS, 12.0, "inconclusive"),
    ("violated-inside", R + T95 * SE + EPS, 12.0, "does not hold"),  # significantly beyond the band
    ("violated-outside", R + T95 * SE - EPS, 12.0, "inconclusive"),
    ("early-inside", 0.0, T975 * (1 + 1e-6), "holds"),  # (a) rests on one row at alpha
    ("early-outside", 0.0, T975 * (1 - 1e-6), "inconclusive"),  # ... not significant, not clearly null
])
def test_hard_vs_easy_near_thresholds(tmp_path, case, hard, early_t, expected):
    run = _hard_folder(hard, early_t).write(tmp_path, case)
    assert verdict(run, "hard_vs_easy_layers") == expected


def test_hard_vs_easy_with_too_few_queries(tmp_path):
    run = _hard_folder(0.0, 20.0, n=4).write(tmp_path, "few")
    assert verdict(run, "hard_vs_easy_layers") == "inconclusive"


# ---- Figure 4: entropy and exact-match effects (per-query one-sample tests) --------------------------------------

EFFECT_CASES = [
    ("inside", SIG + EPS, "holds"),
    ("outside", SIG - EPS, "inconclusive"),
    ("clear-no-inside", CLEAR_NO - EPS, "does not hold"),  # rules out d_z >= 0.5
    ("clear-no-outside", CLEAR_NO + EPS, "inconclusive"),
    ("reversed", -SIG - EPS, "does not hold"),  # significant the other way
]


@pytest.mark.parametrize("case,mu,expected", EFFECT_CASES)
def test_qd_entropy_late_near_thresholds(tmp_path, case, mu, expected):
    f = Folder()
    f.set("entropy", 3, f.noisy(mu), layer=5, direction=QD)  # relevant minus easy, last layer
    f.set("entropy", 3, f.noisy(-1.0), layer=slice(0, 5), direction=QD)  # early layers: ignored by the rule
    assert verdict(f.write(tmp_path, case), "qd_entropy_late") == expected


@pytest.mark.parametrize("case,mu,expected", EFFECT_CASES)
def test_exact_match_early_near_thresholds(tmp_path, case, mu, expected):
    """Q<-D at the threshold, D<-Q clearly holding: the claim follows Q<-D."""
    f = Folder()
    f.set("exact", 3, f.noisy(mu), layer=slice(0, 5), direction=QD)
    f.set("exact", 3, f.noisy(0.1), layer=slice(0, 5), direction=DQ)
    f.set("exact", 3, f.noisy(-1.0), layer=5)  # the last layer: ignored by the rule
    assert verdict(f.write(tmp_path, case), "exact_match_early") == expected


@pytest.mark.parametrize("case,mu,expected", EFFECT_CASES)
def test_dq_entropy_late_similar_near_thresholds(tmp_path, case, mu, expected):
    """a = |Q<-D difference| - |D<-Q difference| per query, with D<-Q a constant 0.2 and Q<-D 0.2 + a."""
    f = Folder()
    f.set("entropy", 3, 0.2 + f.noisy(mu), layer=5, direction=QD)
    f.set("entropy", 3, 0.2, layer=5, direction=DQ)
    assert verdict(f.write(tmp_path, case), "dq_entropy_late_similar") == expected


def test_figure4_claims_with_too_few_queries(tmp_path):
    f = Folder(n=4)
    f.set("entropy", 3, f.noisy(0.5), layer=5, direction=QD)
    f.set("exact", 3, f.noisy(0.5), layer=slice(0, 5))
    run = f.write(tmp_path, "few")
    for key in ("qd_entropy_late", "exact_match_early", "dq_entropy_late_similar"):
        assert verdict(run, key) == "inconclusive", key


# ---- hard_same_pattern_weaker and late_differences_smaller (matching rows, signed) -------------------------------


def _pattern_folder(weaker: float, n: int = N) -> Folder:
    """Two matching rows, one of each sign (layer 5 head 0 Q<-D: +; layer 2 head 1 D<-Q: -): per query
    s (M(3) - M(-1)) = 0.4 + 0.05 z2 and s (M(0) - M(-1)) = weaker + SD z."""
    f = Folder(n=n)
    w, rel = f.noisy(weaker), 0.4 + 0.05 * f.z2
    f.set("max", 3, rel, layer=5, head=0, direction=QD)
    f.set("max", 0, w, layer=5, head=0, direction=QD)
    f.set("max", 3, -rel, layer=2, head=1, direction=DQ)
    f.set("max", 0, -w, layer=2, head=1, direction=DQ)
    return f


@pytest.mark.parametrize("case,mu,expected", EFFECT_CASES)
def test_hard_same_pattern_weaker_near_thresholds(tmp_path, case, mu, expected):
    run = _pattern_folder(mu).write(tmp_path, case)
    heads = pd.read_csv(run / "contrast" / "heads.csv")
    matching = heads[heads["p_relevant"] <= ALPHA]
    assert sorted(zip(matching.layer, matching["head"], matching.direction)) == [(2, 1, "D<-Q"), (5, 0, "Q<-D")]
    assert verdict(run, "hard_same_pattern_weaker") == expected


def test_hard_same_pattern_weaker_with_too_few_queries(tmp_path):
    run = _pattern_folder(0.1, n=4).write(tmp_path, "few")
    assert verdict(run, "hard_same_pattern_weaker") == "inconclusive"


def _late_folder(early_minus_late: float, late: bool = True, n: int = N) -> Folder:
    """Matching rows: layer 1 head 0 Q<-D (+), s (M(3)-M(-1)) = 0.3 + 0.05 z2 + d; layer 5 head 1 D<-Q (-),
    s (M(3)-M(-1)) = 0.3 + 0.05 z2: per query, early minus late = d = early_minus_late + SD z."""
    f = Folder(n=n)
    common = 0.3 + 0.05 * f.z2
    f.set("max", 3, common + f.noisy(early_minus_late), layer=1, head=0, direction=QD)
    if late:
        f.set("max", 3, -common, layer=5, head=1, direction=DQ)
    return f


@pytest.mark.parametrize("case,mu,expected", EFFECT_CASES)
def test_late_differences_smaller_near_thresholds(tmp_path, case, mu, expected):
    assert verdict(_late_folder(mu).write(tmp_path, case), "late_differences_smaller") == expected


def test_late_differences_smaller_without_late_matching_heads_or_queries(tmp_path):
    assert verdict(_late_folder(0.1, late=False).write(tmp_path, "nolate"), "late_differences_smaller") == "inconclusive"
    assert verdict(_late_folder(0.1, n=4).write(tmp_path, "few"), "late_differences_smaller") == "inconclusive"


# ---- the patching claim: top-k patching heads coincide with the matching heads -----------------------------------


def _lower_tail(overlap: int, k: int, pi: float) -> float:
    """P(X <= overlap) for X ~ Binomial(k, pi), summed from its definition."""
    return sum(math.comb(k, x) * pi ** x * (1 - pi) ** (k - x) for x in range(overlap + 1))


def _patching_folder(tmp_path: Path, name: str, rows: list[dict], n_heads: int, m: int,
                     correction: str = "none") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"alpha": ALPHA, "correction": correction}))
    rng = np.random.default_rng(0)
    effects = np.sort(rng.normal(0, 1, n_heads))[::-1]
    layer, head = np.divmod(np.arange(n_heads), 4)
    pd.DataFrame({"diagnostic": "synthetic", "site": "head", "layer": layer, "head": head, "effect_mean": effects,
                  "ci_low": effects - 0.5, "ci_high": effects + 0.5}).to_csv(run / "patching.csv", index=False)
    full = [{"diagnostic": "synthetic", "reference": "matching", "n_heads": n_heads, "m": m,
             "expected": r["k"] * m / n_heads, "spearman_rho": 0.1, "spearman_p": 0.5, **r} for r in rows]
    pd.DataFrame(full).to_csv(run / "patching_overlap.csv", index=False)
    return run


def _patching_verdict(run: Path) -> str:
    return verdict(run, "patching_heads_match_contrast")


@pytest.mark.parametrize("case,p_uniform,p_layer,expected", [
    ("inside", ALPHA, ALPHA, "holds"),
    ("outside-uniform", ALPHA * (1 + 1e-9), ALPHA, "inconclusive"),
    ("outside-layer", ALPHA, ALPHA * (1 + 1e-9), "inconclusive"),
])
def test_patching_overlap_above_chance_near_alpha(tmp_path, case, p_uniform, p_layer, expected):
    """n = 48 heads, m = 12 matching, k = 8 with 5 shared (above the failure bound): decided by the two p's."""
    run = _patching_folder(tmp_path, case, [{"k": 8, "overlap": 5, "p_hypergeom": p_uniform,
                                             "p_layer_exact": p_layer}], 48, 12)
    assert _patching_verdict(run) == expected


def _largest_failing_overlap(k: int, n_heads: int, m: int) -> int:
    """The largest overlap whose binomial lower tail under pi = c + (1 - c)/2, c = m / n, is <= alpha (-1: none)."""
    c = m / n_heads
    pi = c + 0.5 * (1 - c)
    return max([o for o in range(k + 1) if _lower_tail(o, k, pi) <= ALPHA], default=-1)


def test_patching_overlap_fails_at_chance_with_enough_heads(tmp_path):
    """k = 20 of 384 heads (24 x 16), 96 matching: the largest overlap whose binomial lower tail is <= alpha fails;
    one more shared head does not (its layer-stratified p, 0.2 here, keeps it from holding)."""
    n_heads, m, k = 384, 96, 20
    edge = _largest_failing_overlap(k, n_heads, m)
    assert edge >= k * m // n_heads  # an overlap at chance (5) is among the failing ones
    for overlap, expected in ((k * m // n_heads, "does not hold"), (edge, "does not hold"), (edge + 1, "inconclusive")):
        p = float(stats.hypergeom(n_heads, m, k).sf(overlap - 1))
        run = _patching_folder(tmp_path, f"o{overlap}", [{"k": k, "overlap": overlap, "p_hypergeom": p,
                                                          "p_layer_exact": 0.2}], n_heads, m)
        assert _patching_verdict(run) == expected, overlap


def test_patching_overlap_with_too_few_heads(tmp_path):
    """k = 2 of 12 heads, 6 matching: even no shared head cannot show 'less than a coincidence' (P = 1/16)."""
    assert _largest_failing_overlap(2, 12, 6) == -1
    run = _patching_folder(tmp_path, "few", [{"k": 2, "overlap": 0, "p_hypergeom": 1.0, "p_layer_exact": 1.0}], 12, 6)
    assert _patching_verdict(run) == "inconclusive"


@pytest.mark.parametrize("scale,expected", [(1.0, "holds"), (1 + 1e-9, "inconclusive")])
def test_patching_overlap_holm_over_the_ks(tmp_path, scale, expected):
    """Two k's, each p = alpha / 2 (x scale), 6 of 8 and 8 of 12 shared (far above the failure bound): Holm gives
    2 p to the smaller and max(2 p, p) to the other, alpha for both: both hold at alpha, neither just above."""
    p = ALPHA / 2 * scale
    rows = [{"k": 8, "overlap": 6, "p_hypergeom": p, "p_layer_exact": p},
            {"k": 12, "overlap": 8, "p_hypergeom": p, "p_layer_exact": p}]
    run = _patching_folder(tmp_path, f"holm{scale}", rows, 48, 12, correction="holm")
    assert _patching_verdict(run) == expected
