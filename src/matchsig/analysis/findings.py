"""The paper's findings, judged on a run folder, with stated rules scaled to the model's depth.

:func:`matchsig.report.checklist.judge` reads a run folder (:class:`matchsig.analysis.runfolder.RunFolder`)
and returns one :class:`Finding` per claim: SPEC §5's eight findings, the significance claims of Table 1,
the Figure 1-4 claims and the three further claims of §3.1-3.2. Each registered experiment declares its
claims (:class:`Judge`: ``matchsig.experiments.table1.findings``, ``layers``, ``contrast``, ``patching``);
every claim is decided by the one verdict engine of :mod:`matchsig.analysis.verdicts` (effect, ordering,
equivalence, bound, proportion; equivalence and bounds by one-sided tests, "does not hold" only on a
significant violation). Each has a verdict (``holds``, ``does not hold``, ``inconclusive``, ``not
measured``), the rule that decided it, the evidence, the paper's sentence, the number of queries it
rests on, its minimal detectable effect at 80% power (``mde``, in the units of the claim's margin) and
whether a decided verdict is ``underpowered`` (its margin below the MDE). The same goes to
``RUN_DIR/findings.json``.

Margins: :data:`MARGIN` = 0.02 nDCG@10 for rankings, :data:`DROP` for a layer ablation that hurts, a
standardised medium effect (Cohen's d_z = :data:`STD_MARGIN`) for attention statistics. Table 1 and
layer-curve cells use the run's corrected p-values (column named for the correction) for "significant
drop" and their stored CIs for the one-sided "harmless" test (a conjunction of one-sided tests, each
at alpha: an intersection-union test needs no correction). Layer boundaries come from one table of
the paper's layer numbers (:data:`PAPER_LAYERS`, as fractions of its 24 layers) applied to any depth
(:func:`first_layer`).
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from . import paper
from .runfolder import COMPARE, RunFolder, as_float
from .verdicts import (FAILS, HOLDS, INCONCLUSIVE, MIN_QUERIES, NOT_MEASURED, STD_MARGIN, VERDICTS, Sample, Test,
                       combine, effect)

__all__ = [
    "DECISION_TEXT",
    "Finding",
    "Judge",
    "PAPER_LAYERS",
    "RunFolder",
    "VERDICTS",
    "cell_sample",
    "directional",
    "first_layer",
    "finding",
    "missing",
    "not_applicable",
]


#: Smallest change of nDCG@10 a finding treats as meaningful (a "clear no" rules it out).
MARGIN = 0.02
#: A layer ablation "hurts" when it loses significantly more than this much nDCG@10.
DROP = 0.02

_combine = combine  # the experiments' findings modules use this name


# ---- layer boundaries: one table of the paper's layer numbers (of 24), scaled to any depth -------------

#: Where each range of layers the paper names begins, as its layer number in the 24-layer MonoBERT-large
#: (layers indexed from 0): the CLS ablations hurt only in "the 2 last layers" (22-23); D<-D "does not hurt
#: before layers 11/12"; "the last layers (20 to 23)"; the first half ("early to middle layers", 0-11).
PAPER_LAYERS = {"cls_last": 22, "dd_onset": 11, "late": 20, "second_half": 12}


def first_layer(name: str, num_layers: int) -> int:
    """The first layer of range ``name`` on a model of ``num_layers``: floor(paper layer x L / 24), the layer
    that holds the paper's boundary belonging to the later range, and at most L - 1 (never empty)."""
    fraction = PAPER_LAYERS[name] / paper.NUM_LAYERS
    return int(min(num_layers - 1, max(0, math.floor(fraction * num_layers + 1e-9))))


def layer_text(name: str, num_layers: int | None) -> str:
    """"l >= floor(22 L / 24) (= 5)": a boundary as the rules print it."""
    text = f"floor({PAPER_LAYERS[name]} L / {paper.NUM_LAYERS})"
    return text + (f" = {first_layer(name, num_layers)}" if num_layers else "")


def directional(d: np.ndarray, alpha: float, margin: float | None = None) -> Test:
    """The claim "the mean of ``d`` is > 0" (an effect claim of :func:`matchsig.analysis.verdicts.effect`)."""
    return effect(d, alpha, margin)


def cell_sample(row: pd.Series, alpha: float) -> Sample | None:
    """The per-query change of a ranking table's row (mean, sd from its stored (1 - alpha) CI, n), or None."""
    delta, low, high = as_float(row.get(COMPARE.delta)), as_float(row.get(COMPARE.ci_low)), as_float(row.get(COMPARE.ci_high))
    n = as_float(row.get(COMPARE.n_queries))
    if delta is None or n is None:
        return None
    return Sample.from_ci(delta, low, high, int(n), alpha) if low is not None and high is not None else \
        Sample(delta, float("nan"), int(n))


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
    mde: float | None = None
    underpowered: bool = False

    @property
    def holds(self) -> bool | None:
        """True (holds), False (does not hold), None (inconclusive or not measured)."""
        return {HOLDS: True, FAILS: False}.get(self.verdict)


@dataclass(frozen=True)
class Judge:
    """One claim an experiment declares: its key, its name in the checklist, its position in the
    checklist (the paper's order: SPEC §5's eight findings first) and the function that judges it.

    ``applies``: for claims beyond the paper, whether the run folder is one the claim belongs to
    (e.g. it holds the experiment's files); where it returns False the claim is left out of the
    checklist instead of listed as "not measured". None: always listed (the paper's claims).

    ``needs``: the parts (slot names, ``CLS``, ``SEP1``...) and directions (``Q<-D``) the claim speaks of; on a
    model whose scheme has no such part (a decoder's PRE/MID/LAST) or whose masks make the direction
    impossible (a causal decoder's ``Q<-D``), the claim is listed as not measured, saying why
    (:func:`not_applicable`), instead of judged on parts that play another role."""

    key: str
    name: str
    position: int
    judge: Callable[[RunFolder], Finding]
    applies: Callable[[RunFolder], bool] | None = None
    needs: tuple[str, ...] = ()


def not_applicable(claim: Judge, run: RunFolder) -> Finding | None:
    """Why ``claim`` cannot be judged on this model's parts, as a not-measured finding; None when it can."""
    scheme = run.scheme
    for need in claim.needs:
        if "<-" in need:
            target, source = need.split("<-")
            if not scheme.possible(target, source):
                return finding(claim.key, NOT_MEASURED, f"Not applicable: {need} is impossible in this model (the "
                               f"causal mask lets no {target} token read {source}, which comes later).", "")
        elif scheme.name(need) != need:
            return finding(claim.key, NOT_MEASURED, f"Not applicable: the claim is about the {need} token of a "
                           f"[CLS] q [SEP] d [SEP] encoder; this model's parts are {', '.join(scheme.names)} and it "
                           f"reads its score at {scheme.aggregator_name}.", "")
    return None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def finding(key: str, verdict: str, evidence: str, rule: str, queries: int | None = None,
            tests: list | tuple = (), **data) -> Finding:
    """A :class:`Finding` of claim ``key`` (its checklist name is filled in by the checklist).

    ``tests``: the :class:`~matchsig.analysis.verdicts.Test` s the verdict rests on; the finding's MDE is the
    largest of theirs, and it is underpowered when the verdict is decided and one of the tests that agree
    with it is."""
    mdes = [t.mde for t in tests if t.mde is not None and math.isfinite(t.mde)]
    agree = [t for t in tests if t.state == verdict]
    # holds: every part holds, so one weak part weakens it; does not hold: weak only when every failing part is
    under = bool(agree) and (any(t.underpowered for t in agree) if verdict == HOLDS else
                             verdict == FAILS and all(t.underpowered for t in agree))
    return Finding("", verdict, evidence, key, rule, paper.STATEMENTS.get(key, ""), data, queries,
                   max(mdes) if mdes else None, under)


def missing(key: str, what: str, rule: str) -> Finding:
    """The claim cannot be judged: the experiment it needs was not run."""
    return finding(key, NOT_MEASURED, what, rule)


def queries_of(run: RunFolder, frame: pd.DataFrame | None) -> int | None:
    """How many queries a ranking table's rows rest on (else the main pool's query count)."""
    if frame is not None and COMPARE.n_queries in frame:
        values = pd.to_numeric(frame[COMPARE.n_queries], errors="coerce").dropna()
        return int(values.max()) if len(values) else None
    return (run.summary.get("pools", {}).get("main") or {}).get("queries")


DECISION_TEXT = (
    "Verdicts: holds / does not hold / inconclusive. A claim that an effect exists holds when its two-sided test "
    "is significant in the claimed direction; it does not hold when the test is significant the other way, or when "
    "a one-sided test at alpha rules out an effect as large as the margin (the (1 - 2 alpha) CI ends below it). "
    "Claims that an effect is absent (equivalence) or bounded are decided by one-sided tests at alpha (TOST): they "
    "hold when the tests reject every value outside the claim, and do not hold only on a significant violation. "
    "Shares of heads are decided on the range their own tests leave open. Otherwise inconclusive (too few queries "
    "for the effect size, or a mean near a margin). Each finding states the minimal detectable effect (MDE) of its "
    "test at 80% power; a holds / does not hold resting on an effect below the MDE is labelled underpowered (the "
    "margin it rules in or out; for a significant effect and claims without a margin, the observed |mean|)."
)
