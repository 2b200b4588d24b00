"""Beyond the paper: cut Q<-D and D<-Q in the top-k matching heads vs in k random heads.

The top-k heads are the first k of :func:`matchsig.analysis.matching.rank_heads` (matching heads first, by
effect size, from the contrast experiment); ``matching_in_selection`` counts how many of them are
matching heads. Writes ``heads.csv`` (one family: every head selection) and ``figures/heads.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...analysis.matching import MATCH_SPEC
from ...analysis.runfolder import COMPARE, CONTRAST, FILES, HEADS, RunFolder
from ...engine.ablation import AblationSet
from .. import driver
from ..html import esc, figure, missing, num, pval, table
from ..registry import Experiment, Option

__all__ = ["MATCH_SPEC", "Heads"]

FIGURES = {"heads.png": "Beyond the paper — nDCG@10 with the top-k matching heads ablated vs k random heads."}


class Heads(Experiment):
    name = "heads"
    title = "Causal test of the matching heads (beyond the paper)"
    nav = "Heads"
    pools = ("main",)
    needs = ("contrast",)
    figures = FIGURES
    tables = {"ablations": FILES.heads}
    options = (
        Option("heads_k", lambda: [1, 2, 4, 8, 16], "--k", "Heads: numbers of heads to ablate (repeatable).",
               kind=list[int], minimum=1),
        Option("heads_random_seeds", 5, "--random-seeds", "Heads: random head sets per k (default 5).", minimum=1),
    )

    def selections(self, runner) -> list[dict]:
        """Every head selection: the top k of the ranking and ``heads_random_seeds`` random sets per k."""
        from ...analysis.matching import rank_heads

        c = runner.config
        ranking = rank_heads(runner.results["contrast"], c.alpha, c.correction)
        nl, nh = runner.encoder.num_layers, runner.encoder.num_heads
        out = []
        for k in sorted({k for k in c.heads_k if k <= nl * nh}):
            out.append({"label": f"top{k}", HEADS.selection: HEADS.top, HEADS.k: k, HEADS.seed: -1, "heads": ranking[:k]})
            for s in range(c.heads_random_seeds):
                rng = np.random.default_rng([c.seed, 7919, k, s])
                flat = rng.choice(nl * nh, size=k, replace=False)
                out.append({"label": f"random{k}-s{s}", HEADS.selection: HEADS.random, HEADS.k: k, HEADS.seed: s,
                            "heads": [(int(i) // nh, int(i) % nh) for i in sorted(flat)]})
        return out

    def units(self, runner) -> list:
        chosen = runner.results["heads"] = self.selections(runner)
        labelled = [(s["label"], AblationSet.heads(MATCH_SPEC, s["heads"], label=s["label"])) for s in chosen]
        driver.baseline_scores(runner)
        return driver.grid_units(runner, labelled)

    def collect(self, runner) -> None:
        if runner.dist.rank != 0:
            return
        from ...analysis.matching import classify

        c = runner.config
        classified = classify(runner.results["contrast"], c.alpha, c.correction)
        hits = classified[classified[CONTRAST.matching]]
        matching = {(int(l), int(h)) for l, h in zip(hits[CONTRAST.layer], hits[CONTRAST.head])}
        chosen = runner.results["heads"]
        scores = driver.gather(runner, [s["label"] for s in chosen])
        rows = [{HEADS.selection: s[HEADS.selection], HEADS.k: s[HEADS.k], HEADS.seed: s[HEADS.seed],
                 HEADS.heads: ";".join(f"{l}/{h}" for l, h in s["heads"]),
                 HEADS.matching_in_selection: sum(1 for h in s["heads"] if tuple(h) in matching)}
                for s in chosen]
        # one family: every head selection of the run
        frame = driver.ablation_rows(runner, rows, [driver.evaluate(runner, sc) for sc in scores])
        runner.writer.csv(FILES.heads, frame)

    def make_figure(self, name: str, folder: RunFolder, path: Path) -> Path | None:
        from ..plots import plot_heads

        return plot_heads(folder, path)

    def section(self, folder: RunFolder, figures: dict[str, Path]) -> str:
        return section(folder, figures)


def section(run: RunFolder, figures: dict[str, Path]) -> str:
    """The top-k vs random head ablations: figure and table per k."""
    from ...analysis.significance import marks_legend

    frame = run.heads
    title = "Causal test of the matching heads (beyond the paper)"
    if frame is None:
        return f'<section id="heads"><h2>{title}</h2>{missing(FILES.heads, "heads")}</section>'
    frame = frame.assign(selection=frame[HEADS.selection].astype(str).str.lower())
    frame = frame.assign(p_decision=[run.decision_p(r) for _, r in frame.iterrows()],
                         top=[f"{float(r[COMPARE.ndcg]):.3f}{run.mark(r)}" for _, r in frame.iterrows()])
    aggs = dict(top=("top", "first"), top_delta=(COMPARE.delta, "mean"), top_p=("p_decision", "first"), heads=("heads", "first"))
    if "matching_in_selection" in frame:
        aggs[CONTRAST.matching] = ("matching_in_selection", "first")
    top = frame[frame[HEADS.selection] == "top"].groupby("k").agg(**aggs)
    rnd = frame[frame[HEADS.selection] == "random"].groupby("k").agg(
        random_mean=(COMPARE.ndcg, "mean"), random_sd=(COMPARE.ndcg, "std"), seeds=("seed", "nunique"))
    joined = top.join(rnd, how="outer").reset_index()
    joined["heads"] = joined["heads"].fillna("").astype(str).str.replace(";", " ")
    joined = joined.rename(columns={"top_p": f"top {run.p_name}"})
    formats = {"top_delta": lambda v: f"{float(v):+.3f}", f"top {run.p_name}": pval, "random_mean": num,
               "random_sd": num, "heads": lambda v: f'<span class="small">{esc(v)}</span>'}
    return f"""
<section id="heads"><h2>{title}</h2>
<p class="muted">The paper's future work made causal: every direction between Q and D (Q &larr; D and D &larr; Q) is
masked in the top-k heads of the matching-head ranking (matching heads first, by |M(&middot;|3) &minus;
M(&middot;|&minus;1)|; column <i>matching</i> = how many of the k are matching heads), versus k heads drawn at random
(several seeds). If the contrast finds the heads the model needs, the top-k curve drops faster.
{esc(marks_legend(run.alpha, run.correction, "every head selection of the run"))} against the unablated model
({num(run.unablated)}).</p>
{figure(figures, "heads.png", FIGURES["heads.png"])}
<div class="scroll">{table(joined, formats)}</div>
</section>"""
