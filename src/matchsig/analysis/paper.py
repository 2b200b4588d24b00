"""The paper's reference numbers for MonoBERT-large, as data.

"On the Nature of Matching Signals in Neural IR Models" (French version, ``paper/matching-signals-
paper-fr.txt``), model ``castorini/monobert-large-msmarco`` (24 layers, 16 heads), TREC DL 2019,
"up to 20 passages per relevance level and query". Table 1 is transcribed cell by cell from the
paper's text; the ``*`` marks (p <= 0.05, Student's t-test against the original model) are kept.
The bold marks (lower than the original) were lost in the text extraction; they follow from the
values (a cell is lower when its value is below :data:`UNABLATED`).

Everything else here (layer ranges, example heads) is what the paper states in words about its
Figures 1-4; the report prints it beside our numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.parts import PART_NAMES

__all__ = [
    "MODEL",
    "NUM_HEADS",
    "NUM_LAYERS",
    "PARTS",
    "PART_LABELS",
    "RANDOM",
    "RANDOM_AT_CAP",
    "STATED_PER_GRADE",
    "TABLE1",
    "TABLE1_COLUMNS",
    "UNABLATED",
    "PaperCell",
    "STATEMENTS",
    "cell",
]

#: The model the paper analyses.
MODEL = "castorini/monobert-large-msmarco"
NUM_LAYERS = 24
NUM_HEADS = 16

#: nDCG@10 of the unablated model on the paper's DL19 pools ("Perf. originale").
UNABLATED = 0.81
#: nDCG@10 of a random ranking, mean over 1000 random rankings ("Classement aléatoire").
RANDOM = 0.48
#: The cap the paper states: "jusqu'à 20 passages par niveau de pertinence et par requête".
STATED_PER_GRADE = 20
#: Random-ranking nDCG@10 measured on the real DL19 qrels per cap (SPEC §3): the paper's 0.48
#: matches a cap of 10, not the stated 20.
RANDOM_AT_CAP = {20: 0.43, 10: 0.48}

#: The five input parts, in the paper's order, and the labels of its Table 1.
PARTS = PART_NAMES
PART_LABELS = {"CLS": "CLS", "Q": "Query", "SEP1": "SEP1", "D": "Doc.", "SEP2": "SEP2", "*": "All"}
#: Table 1's columns: the five sources and "All" (``X<-*``, the paper's "Tous").
TABLE1_COLUMNS = PARTS + ("*",)


@dataclass(frozen=True)
class PaperCell:
    """One cell of the paper's Table 1: nDCG@10 of ``target<-source`` ablated in every layer/head."""

    target: str
    source: str
    ndcg: float
    significant: bool

    @property
    def lower(self) -> bool:
        """Bold in the paper: lower than the original model."""
        return self.ndcg < UNABLATED

    def text(self) -> str:
        return f"{self.ndcg:.2f}" + ("*" if self.significant else "")


def _row(target: str, values: tuple[str, ...]) -> dict[tuple[str, str], PaperCell]:
    out = {}
    for source, value in zip(TABLE1_COLUMNS, values):
        star = value.endswith("*")
        out[(target, source)] = PaperCell(target, source, float(value.rstrip("*")), star)
    return out


#: Table 1 of the paper, keyed by (target, source); source ``"*"`` is the column "All".
TABLE1: dict[tuple[str, str], PaperCell] = {
    **_row("CLS", ("0.82", "0.79", "0.81", "0.81", "0.81", "0.48*")),
    **_row("Q", ("0.82", "0.78", "0.81", "0.80", "0.81", "0.66*")),
    **_row("SEP1", ("0.81", "0.81", "0.81", "0.81", "0.81", "0.81")),
    **_row("D", ("0.81", "0.79", "0.81", "0.67*", "0.82", "0.62*")),
    **_row("SEP2", ("0.81", "0.81", "0.81", "0.81", "0.81", "0.81")),
}


def cell(target: str, source: str) -> PaperCell | None:
    """The paper's cell for ``target<-source`` (source ``"*"`` = All), or None if it gives none."""
    return TABLE1.get((target, source))


#: What the paper states in words, by finding (used in the report beside our verdicts).
STATEMENTS = {
    "dd_hurts_most": "D<-D is the most damaging single direction: 0.67* vs 0.81 (§3.1, Table 1).",
    "sep_noop": "Masking any direction into or out of SEP1/SEP2 changes nothing: 0.81 everywhere "
    "(SEP rows), 0.81/0.82 in the SEP columns; SEP acts as a no-op sink (§3.1).",
    "cls_all_random": "Masking every direction into CLS makes the model random: CLS<-* 0.48* = the "
    "random ranking 0.48 (§3.1).",
    "clsq_vs_clsd": "CLS<-Q disturbs more than CLS<-D (0.79 vs 0.81), neither significant (§3.1).",
    "cls_last_layers": "Up-to-layer ablations CLS<-{Q,D} and CLS<-* do not hurt before the last 2 "
    "layers (layers 22-23 of 24, Figure 1).",
    "dd_from_middle": "Blocking document contextualisation (D<-D) does not hurt before layers 11/12 "
    "of 24 (Figure 1).",
    "matching_heads_layers": "From early to middle layers only a few heads per layer differ between "
    "relevant and easy-negative passages; in the last layers every head does, with smaller "
    "magnitude (Figure 2b; e.g. head 11/13 stands out in Figure 2a).",
    "matching_heads_bidirectional": "Matching heads are bidirectional: the same heads match Q<-D and "
    "D<-Q (Figure 2a).",
    "table1_significant_drops": "Table 1 stars D<-D (0.67*), Q<-* (0.66*), D<-* (0.62*) and CLS<-* (0.48*): "
    "significant drops (p <= 0.05, Student's t-test) (§3.1).",
    "table1_not_significant": "\u00ab CLS <- Q ou CLS <- D (pris s\u00e9par\u00e9ment) ne nuisent pas de mani\u00e8re "
    "significative aux performances (resp. 0,79 et 0,81 vs 0,81 ; avec une valeur p > 0,05) \u00bb (§3.1).",
    "hard_vs_easy_layers": "\u00ab pour r = 0 et r = \u22121, des t\u00eates pr\u00e9sentent une diff\u00e9rence dans les "
    "couches initiales et interm\u00e9diaires (couches 6 et 15) alors que les derni\u00e8res couches (couches 20 \u00e0 23) "
    "se comportent de mani\u00e8re similaire (m\u00e9diane proche de 0) \u00bb: syntactic heads early, semantic heads "
    "late (Figure 3).",
    "qd_entropy_late": "\u00ab les t\u00eates d'attention des derni\u00e8res couches pr\u00e9sentent une entropie plus "
    "\u00e9lev\u00e9e lorsque les passages sont pertinents (en raison de la contextualisation s\u00e9mantique) \u00bb "
    "(Figure 4, Q<-D).",
    "exact_match_early": "\u00ab les t\u00eates d'attention des premi\u00e8res couches et des couches interm\u00e9diaires "
    "[...] ont tendance \u00e0 s'int\u00e9resser davantage aux tokens identiques lorsque les passages sont pertinents "
    "\u00bb (Figure 4).",
    "dq_entropy_late_similar": "\u00ab Contrairement \u00e0 la direction Q <- D, les distributions pour les passages "
    "pertinents et non pertinents sont davantage similaires pour cette direction [D <- Q] \u00bb: semantic matching "
    "flows from the document to the query, which the paper gives as the reason CLS<-Q hurts more than CLS<-D (Figure 4).",
    "qd_dq_alone_keep_signal": "\u00ab les ablations D \u2190 Q ou Q \u2190 D ne d\u00e9truisent pas \u00e0 elles seules le signal de "
    "pertinence \u00bb (\u00a73.2, citing \u00a73.1: Table 1 Q<-D 0.80, D<-Q 0.79 vs 0.81, random 0.48).",
    "hard_same_pattern_weaker": "\u00ab La comparaison des passages pertinents aux n\u00e9gatifs difficiles (r = 0) confirme "
    "ces observations, m\u00eame si les diff\u00e9rences sont plus faibles \u00bb (\u00a73.2, Figure 2, not shown in the paper).",
    "late_differences_smaller": "\u00ab contrairement aux derni\u00e8res couches o\u00f9 chaque t\u00eate pr\u00e9sente une diff\u00e9rence (bien "
    "que plus petite en magnitude) \u00bb (\u00a73.2, Figure 2b).",
}
