"""The ``circuit`` experiment (``matchsig circuit``): the edges that carry a diagnostic's effect, measured exactly.

1. The diagnostic pairs (those of the ``patch`` experiment: ``--diagnostic``, ``--pairs``, ``--where``) are
   split by query into attribution pairs and held-out pairs (``--heldout``, the share of queries).
2. Every edge of the model's graph (:mod:`matchsig.engine.graph`) is scored by EAP or EAP-IG
   (``--method``, ``--steps``) on the attribution pairs and ranked by |mean score|.
3. Circuits of growing size (the top edges) run **exactly** on the held-out pairs, every other edge
   mean-ablated per token part (:mod:`matchsig.engine.circuits`, means over the attribution pairs'
   baselines), or with ``--ablation counterfactual`` carrying its node's output on the pair's baseline
   while the perturbed input runs; faithfulness ``(D(C) - D(empty)) / (D(full) - D(empty))`` with a CI from a bootstrap
   over queries (:mod:`matchsig.analysis.faithfulness`). With ``--faithfulness`` a bisection finds the
   smallest circuit reaching it; ``--edges N`` names the circuit's size instead.
4. On a few attribution pairs (``--agreement-pairs``), attribution is checked against exact patching:
   heads (node attribution vs ``ce.patch``) and edges (the top edges and random others vs exact edge
   patching): Pearson, Spearman, top-k overlap.

Files: ``circuit_pairs.tsv`` (the pairs and their split), ``circuit_curve.csv``, ``circuit_edges.csv`` (every edge's score), ``circuit.json`` (the chosen
circuit: nodes, edges, scores, faithfulness), ``circuit_agreement.csv``; figures ``circuit_curve.png``
and ``circuit.png`` (drawn by ``collect``, embedded by the report).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...analysis.findings import Judge
from ...errors import MatchsigError
from .work import ABLATIONS
from ..registry import Experiment, Option, get
from ..store import single
from . import work
from .chain import KEY, chain_senders, chain_work, judge_chain

__all__ = ["Circuit"]

FILES = {"curve": "circuit_curve.csv", "edges": "circuit_edges.csv", "agreement": "circuit_agreement.csv",
         "pairs": "circuit_pairs.tsv", "ranking": "circuit_ranking.csv", "ranking_tests": "circuit_ranking_tests.csv",
         "ranking_per_query": "circuit_ranking_per_query.csv", "chain": "circuit_chain.csv"}
CIRCUIT_JSON = "circuit.json"


class Circuit(Experiment):
    name = "circuit"
    title = "Relevance circuits: edge attribution checked by exact interventions (beyond the paper)"
    nav = "Circuit"
    tables = dict(FILES)
    #: Figures drawn by ``collect`` into the run folder (not report-time figures: the report embeds them).
    pictures = {"circuit_curve.png": "Faithfulness of the top-k edges on held-out pairs.",
                "circuit.png": "The circuit: layers as rows, heads and MLPs as nodes, edges by |score|."}
    default = False
    pools = ("main",)
    options = (
        Option("circuit_method", "eap-ig", "--method", "Edge attribution: eap, eap-ig or eap-qk (EAP with AtP*'s QK fix).", kind=str),
        Option("circuit_steps", 8, "--steps", "EAP-IG interpolation steps.", minimum=1),
        Option("circuit_edges", None, "--edges", "Circuit size (edges); default: the smallest reaching "
               "--faithfulness.", optional=True, minimum=1),
        Option("circuit_faithfulness", 0.8, "--faithfulness", "Target faithfulness of the circuit.", kind=float),
        Option("circuit_ablation", "mean", "--ablation", "What a non-circuit edge carries on the held-out pairs: "
               "mean (its node's mean output per token part over the attribution pairs' baselines) or counterfactual "
               "(its node's output on the pair's baseline, the perturbed input being run).", kind=str),
        Option("circuit_sizes", lambda: [], "--sizes", "Circuit sizes to measure (repeatable; default 1, 2, 5, "
               "10, 20, 50, ...).", kind=list[int], minimum=1),
        Option("circuit_heldout", 0.5, "--heldout", "Share of the queries whose pairs are held out for "
               "faithfulness.", kind=float),
        Option("circuit_bootstrap", 1000, "--bootstrap", "Bootstrap resamples of the faithfulness CI.", minimum=1,
               results=False),
        Option("circuit_agreement_pairs", 6, "--agreement-pairs", "Attribution pairs checked against exact "
               "patching.", minimum=2),
        Option("circuit_chain_senders", lambda: [], "--chain-senders", "Senders of the chain claim (a<l>.h<h>, "
               "repeatable); default: the matching heads of the folder's contrast run.", kind=list[str]),
        Option("circuit_ranking_sets", 0, "--ranking-sets", "Random edge sets of the circuit's size against which "
               "nDCG@10 on the ablation pool is compared, kept and cut (0: no ranking run).", minimum=0),
    )

    judges = (Judge(KEY, "Matching heads feed the heads of the last two layers (path patching; beyond the paper)", 16,
                    judge_chain, applies=lambda run: (run.path / FILES["chain"]).is_file()),)

    def validate(self, config) -> None:
        from ...analysis.diagnostics import DIAGNOSTICS
        from ...engine.edges import EDGE_METHODS

        if config.circuit_ablation not in ABLATIONS:
            raise MatchsigError(f"unknown --ablation {config.circuit_ablation!r}: use one of {', '.join(ABLATIONS)}")
        if config.circuit_method not in EDGE_METHODS:
            raise MatchsigError(f"unknown --method {config.circuit_method!r}: use one of {', '.join(EDGE_METHODS)}")
        if config.diagnostic not in DIAGNOSTICS:
            raise MatchsigError(f"unknown --diagnostic {config.diagnostic!r}: use one of {', '.join(DIAGNOSTICS)}")
        if not 0 < config.circuit_heldout < 1:
            raise MatchsigError(f"--heldout must be between 0 and 1, got {config.circuit_heldout}")
        bad = [s for s in config.circuit_chain_senders if not re.fullmatch(r"a\d+\.h\d+", s)]
        if bad:
            raise MatchsigError(f"bad --chain-senders {bad[0]!r}: name heads as a<layer>.h<head>, e.g. a2.h5")
        if not 0 < config.circuit_faithfulness <= 1.5:
            raise MatchsigError(f"--faithfulness must be in (0, 1.5], got {config.circuit_faithfulness}")

    # ---- the work -------------------------------------------------------------------------------
    def _split(self, runner):
        if "_circuit_split" not in runner.results:
            _, pairs = get("patch").diagnostic_pairs(runner)
            train, held = work.split_queries(pairs, runner.config.circuit_heldout, runner.config.seed)
            if len(train) < 2 or len(held) < 2:
                raise MatchsigError(f"{len(pairs)} pairs from too few queries to hold some out: raise --pairs")
            runner.results["_circuit_split"] = (pairs, train, held)
        return runner.results["_circuit_split"]

    def _chunks(self, runner, train):
        return [train[rows] for rows in runner.chunks(len(train))]

    def units(self, runner) -> list:
        pairs, train, held = self._split(runner)
        c, ce = runner.config, runner.encoder
        runner.log(f"{len(pairs)} {c.diagnostic} pairs ({pairs.fingerprint}): {len(train)} for attribution, "
                   f"{len(held)} held out; method {c.circuit_method}")
        units = [single(f"circuit/attr/{k:05d}", lambda rows=rows: work.attribution_work(
            ce, pairs, rows, c.circuit_method, c.circuit_steps), len(rows))
            for k, rows in enumerate(self._chunks(runner, train))]
        units.append(single("circuit/means", lambda: work.means_work(ce, pairs, train), len(train)))
        return units

    def _attribution(self, runner):
        pairs, train, _ = self._split(runner)
        values = np.concatenate([runner.store.load(f"circuit/attr/{k:05d}")
                                 for k in range(len(self._chunks(runner, train)))])
        from ...engine.edges import edge_index
        from ...engine.graph import graph_for

        edges = edge_index(graph_for(runner.encoder))
        scores = values[:, 2:]
        order = np.argsort(-np.abs(scores.mean(0)), kind="stable")
        return edges, scores, order

    def collect(self, runner) -> None:
        pairs, train, held = self._split(runner)
        c, ce = runner.config, runner.encoder
        edges, scores, order = self._attribution(runner)
        means = runner.store.load("circuit/means")
        sizes = work.size_grid(len(edges), c.circuit_sizes, c.circuit_edges)
        target = None if c.circuit_edges is not None else c.circuit_faithfulness
        sample = train[: c.circuit_agreement_pairs]
        runner.execute("circuit curve", [
            single("circuit/curve", lambda: work.curve_work(ce, pairs, held, edges, order, means, sizes, target,
                                                            ablation=c.circuit_ablation), len(held)),
            single("circuit/agreement", lambda: _agreement_array(ce, pairs, sample, c, edges, order,
                                                                 scores[: len(sample)]), len(sample))])
        clusters = np.array([pairs.triples[i].qid for i in held])
        curve = work.curve_frame(runner.store.load("circuit/curve"), clusters, c.circuit_bootstrap, c.seed)
        curve["connected_edges"] = work.connected_sizes(ce, edges, order, curve["edges"])
        size = _chosen_size(curve, c.circuit_edges, target)
        configs = self._ranking(runner, edges, order[:size], means)
        senders = self._chain(runner, pairs, held)
        if runner.dist.rank != 0:
            return
        self._write_chain(runner, pairs, held, senders)
        self._write(runner, pairs, held, edges, scores, order, target, curve, size)
        if configs:
            self._write_ranking(runner, configs)

    def _ranking(self, runner, edges, circuit, means) -> list:
        """Score the main pool under the circuit, its complement and random sets (none without --ranking-sets)."""
        from .ranking import edge_sets, ranking_work

        c = runner.config
        if not c.circuit_ranking_sets:
            return []
        configs = edge_sets(len(edges), circuit, c.circuit_ranking_sets, c.seed)
        _, (qs, ds) = runner.pool("main")
        runner.execute("circuit ranking", [
            single(f"circuit/rank/{k:05d}", lambda rows=rows: ranking_work(
                runner.encoder, [qs[i] for i in rows], [ds[i] for i in rows], edges, configs, means), len(rows))
            for k, rows in enumerate(runner.chunks(len(qs)))])
        return configs

    def _chain(self, runner, pairs, held) -> list[str] | None:
        """Path patching of the chain's senders (None: no senders named and no contrast run in the folder)."""
        from ...analysis.head_overlap import contrast_heads
        from ...analysis.runfolder import FILES as RUN_FILES

        c = runner.config
        if c.circuit_chain_senders:
            senders = list(c.circuit_chain_senders)
            for name in senders:
                if not name.startswith("a") or not runner.encoder.num_layers > int(name[1:].split(".")[0]):
                    raise MatchsigError(f"--chain-senders {name}: no such head in this model")
        elif (Path(runner.out) / RUN_FILES.contrast_heads).is_file():
            heads = contrast_heads(Path(runner.out) / RUN_FILES.contrast_heads, "matching", alpha=c.alpha,
                                   correction=c.correction)
            senders = chain_senders(heads, runner.encoder.num_layers)
        else:
            return None
        if senders:
            runner.execute("circuit chain", [single(f"circuit/chain/{'+'.join(senders)[:80]}", lambda: chain_work(
                runner.encoder, pairs, held, senders), len(held))])
        return senders

    def _write_chain(self, runner, pairs, held, senders) -> None:
        import pandas as pd

        path = Path(runner.out) / FILES["chain"]
        if senders is None:
            path.unlink(missing_ok=True)
            return
        values = runner.store.load(f"circuit/chain/{'+'.join(senders)[:80]}") if senders else np.zeros((0, 5))
        frame = pd.DataFrame(values, columns=["baseline", "perturbed", "via", "direct", "total"])
        frame.insert(0, "qid", [pairs.triples[i].qid for i in held][: len(frame)])
        frame.insert(0, "pair", held[: len(frame)])
        frame["senders"] = ";".join(senders)
        runner.writer.table(self, "chain", frame)

    def _write_ranking(self, runner, configs) -> None:
        import pandas as pd

        from ...data.evaluation import expected_ndcg
        from .ranking import ranking_frames

        pool, (qs, _) = runner.pool("main")
        scores = np.concatenate([runner.store.load(f"circuit/rank/{k:05d}")
                                 for k in range(len(runner.chunks(len(qs))))], 1)
        per_query = {label: expected_ndcg(pool, s, 10) for (label, _, _), s in zip(configs, scores)}
        rows, tests = ranking_frames(per_query, runner.config.circuit_ranking_sets, runner.config.alpha)
        frame = pd.DataFrame(per_query)
        frame.index.name = "qid"
        runner.writer.table(self, "ranking_per_query", frame.reset_index())
        runner.writer.table(self, "ranking", rows)
        runner.writer.table(self, "ranking_tests", tests)

    def _write(self, runner, pairs, held, edges, scores, order, target, curve, size) -> None:
        import pandas as pd

        from ...engine.circuits import connected
        from ...engine.graph import graph_for

        c, graph = runner.config, graph_for(runner.encoder)
        split = np.full(len(pairs), "attribution", dtype=object)
        split[held] = "heldout"
        runner.writer.table(self, "pairs", pd.DataFrame(
            [{"pair": i, "split": split[i], "qid": t.qid, "query": t.query, "baseline": t.baseline,
              "perturbed": t.perturbed} for i, t in enumerate(pairs.triples)]))
        runner.writer.table(self, "curve", curve)
        mean = scores.mean(0)
        frame = pd.DataFrame({"rank": np.argsort(order) + 1, "sender": [graph.node_name(u) for u in edges[:, 1]],
                              "receiver": [graph.reader_name(r) for r in edges[:, 0]], "score": mean,
                              "score_sd": scores.std(0, ddof=1) if len(scores) > 1 else np.nan})
        runner.writer.table(self, "edges", frame.sort_values("rank"))
        agree = runner.store.load("circuit/agreement")
        runner.writer.table(self, "agreement", pd.DataFrame(
            [dict(zip(AGREEMENT_COLUMNS, row), level=level, method=m) for row, level, m in
             zip(agree, ("heads", "edges"), (work.NODE_METHOD[c.circuit_method], c.circuit_method))]))
        kept = order[:size]
        on_path = connected(graph, edges[kept])  # on an input -> score path of the circuit's own edges
        row = curve[curve["edges"] == size].iloc[0]
        nodes = sorted({graph.node_name(u) for u in edges[kept, 1]} | {graph.reader_name(r).rsplit(".", 1)[0]
                       if graph.reader_name(r).startswith("a") else graph.reader_name(r) for r in edges[kept, 0]})
        circuit = {"diagnostic": c.diagnostic, "method": c.circuit_method, "steps": c.circuit_steps,
                   "ablation": c.circuit_ablation,
                   "layers": graph.L, "heads": graph.H, "target": target, "size": int(size),
                   "reached": bool(target is None or row["faithfulness"] >= target),
                   "faithfulness": float(row["faithfulness"]), "ci": [float(row["ci_low"]), float(row["ci_high"])],
                   "nodes": nodes, "connected_size": int(on_path.sum()),
                   "edges": [{"sender": graph.node_name(int(edges[e, 1])), "receiver": graph.reader_name(int(edges[e, 0])),
                              "score": float(mean[e]), "on_path": bool(p)} for e, p in zip(kept, on_path)]}
        runner.writer.json(CIRCUIT_JSON, circuit)
        from .drawing import draw_circuit, draw_curve

        draw_circuit(circuit, runner.writer.path("circuit.png"))
        draw_curve(curve, target, int(size), runner.writer.path("circuit_curve.png"))

    def summary(self, runner) -> dict:
        path = Path(runner.out) / CIRCUIT_JSON
        if not path.is_file():
            return {}
        data = json.loads(path.read_text())
        return {"circuit": {k: data[k] for k in ("diagnostic", "method", "size", "faithfulness", "ci", "reached")}}

    # ---- report -------------------------------------------------------------------
    def in_report(self, folder) -> bool:
        return (folder.path / CIRCUIT_JSON).is_file()

    def section(self, folder, figures: dict[str, Path]) -> str:
        from .report import section

        return section(self, folder, figures)


AGREEMENT_COLUMNS = ("nodes", "pearson", "spearman", "top_k", "top_k_overlap", "pairs")


def _agreement_array(ce, pairs, rows, c, edges, order, scores) -> np.ndarray:
    rows_out = work.agreement_rows(ce, pairs, rows, c.circuit_method, c.circuit_steps, edges, order, scores,
                                   seed=c.seed)
    return np.array([[r[k] for k in AGREEMENT_COLUMNS] for r in rows_out], dtype=float)


def _chosen_size(curve, edges: int | None, target: float | None) -> int:
    """--edges, else the smallest measured size reaching the target, else all edges."""
    if edges is not None:
        return int(min(edges, curve["edges"].max()))
    reached = curve[curve["faithfulness"] >= target]
    return int(reached["edges"].min()) if len(reached) else int(curve["edges"].max())
