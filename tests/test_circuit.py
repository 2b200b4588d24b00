"""Circuits (matchsig.engine.circuits) and the `circuit` experiment: a circuit's scores and its faithfulness
recomputed by a direct float64 forward that ablates the non-circuit edges (tests/_edge_reference.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _edge_reference import edge_forward
from _reference import bert_parts
from conftest import make_tiny_model, matchsig_cli

from matchsig import CrossEncoder

QUERIES = ["what is a flea", "how do birds migrate", "cat food"]
DOCS = ["the cat flea is an insect that lives on pets", "birds fly south in the winter to find food",
        "dry food for cats and kittens"]
PARTS = ["CLS", "Q", "SEP1", "D", "SEP2"]


def reference_means(model, tokenizer, queries, docs):
    """{node: {part: mean output}} over the pairs' tokens, from the float64 reference."""
    sums, counts = {}, {}
    for q, d in zip(queries, docs):
        enc = tokenizer(q, d)
        parts = bert_parts(enc["input_ids"], tokenizer.sep_token_id)
        _, outs = edge_forward(model, enc["input_ids"], enc["token_type_ids"])
        for node, value in outs.items():
            for i, part in enumerate(parts):
                sums.setdefault(node, {}).setdefault(part, 0.0)
                sums[node][part] = sums[node][part] + value[i]
                counts[(node, part)] = counts.get((node, part), 0) + 1
    return {node: {part: v / counts[(node, part)] for part, v in by.items()} for node, by in sums.items()}


def reference_circuit_score(model, tokenizer, query, doc, circuit: set, means):
    """The pair's score with only ``circuit``'s (receiver, sender) edges kept, every other edge's sender
    replaced by its mean output for each token's part."""
    enc = tokenizer(query, doc)
    parts = bert_parts(enc["input_ids"], tokenizer.sep_token_id)

    def mix(reader, node, value):
        if (reader, node) in circuit:
            return value
        return np.stack([means[node][p] for p in parts])

    return edge_forward(model, enc["input_ids"], enc["token_type_ids"], mix=mix)[0]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory, tokenizer):
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-circuit"), tokenizer, seed=4).double()
    return CrossEncoder(model, tokenizer, device="cpu"), model


def test_circuit_scores_equal_a_direct_forward_that_ablates_the_other_edges(tiny64, tokenizer):
    from matchsig.engine.circuits import circuit_scores, keep_matrix, node_means
    from matchsig.engine.graph import graph_for

    ce, model = tiny64
    graph = graph_for(ce)
    means = node_means(ce, QUERIES, DOCS, chunk_size=2)
    ref_means = reference_means(model, tokenizer, QUERIES, DOCS)
    for u, name in enumerate(graph.node_names()):
        for p, part in enumerate(PARTS):
            np.testing.assert_allclose(means[u, p], ref_means[name][part], atol=1e-12)
    edges = np.argwhere(graph.edge_mask())
    rng = np.random.default_rng(1)
    picks = [edges[rng.choice(len(edges), 40, replace=False)], edges[:0], edges]
    got = circuit_scores(ce, QUERIES, DOCS, [keep_matrix(graph, e) for e in picks], means, chunk_size=2)
    for k, chosen in enumerate(picks):
        circuit = {(graph.reader_name(r), graph.node_name(u)) for r, u in chosen}
        want = [reference_circuit_score(model, tokenizer, q, d, circuit, ref_means) for q, d in zip(QUERIES, DOCS)]
        np.testing.assert_allclose(got[k], want, atol=1e-10)
    np.testing.assert_allclose(got[2], ce.score(QUERIES, DOCS), atol=1e-10)  # every edge kept: the model


def test_counterfactual_ablation_equals_a_direct_forward_with_the_baselines_outputs(tiny64, tokenizer):
    """--ablation counterfactual: the perturbed pair runs with every non-circuit edge carrying its node's output
    on the baseline, recomputed by the float64 reference; no edge = the baseline's score, every edge = the
    perturbed one's; inputs that do not line up are refused in one line."""
    from matchsig import MatchsigError
    from matchsig.engine.circuits import connected, counterfactual_scores, keep_matrix
    from matchsig.engine.graph import graph_for

    ce, model = tiny64
    graph = graph_for(ce)
    perturbed = ["the cat flea is an flea that lives on pets", "birds fly birds in the winter to find food",
                 "dry food for cat and kittens"]
    edges = np.argwhere(graph.edge_mask())
    rng = np.random.default_rng(2)
    picks = [edges[rng.choice(len(edges), 60, replace=False)], edges[:0], edges]
    got = counterfactual_scores(ce, QUERIES, perturbed, DOCS, [keep_matrix(graph, e) for e in picks], chunk_size=2)
    for k, chosen in enumerate(picks):
        circuit = {(graph.reader_name(r), graph.node_name(u)) for r, u in chosen}
        want = []
        for q, d, p in zip(QUERIES, DOCS, perturbed):
            enc_b, enc_p = tokenizer(q, d), tokenizer(q, p)
            assert len(enc_b["input_ids"]) == len(enc_p["input_ids"])
            outs = edge_forward(model, enc_b["input_ids"], enc_b["token_type_ids"])[1]
            mix = lambda reader, node, value: value if (reader, node) in circuit else outs[node]  # noqa: E731
            want.append(edge_forward(model, enc_p["input_ids"], enc_p["token_type_ids"], mix=mix)[0])
        np.testing.assert_allclose(got[k], want, atol=1e-10)
    np.testing.assert_allclose(got[1], ce.score(QUERIES, DOCS), atol=1e-10)  # nothing kept: the baseline
    np.testing.assert_allclose(got[2], ce.score(QUERIES, perturbed), atol=1e-10)  # everything: the perturbed pair
    # the circuit's connected part (edges on an input -> score path of its own edges) scores the same
    top = picks[0]
    on = connected(graph, top)
    assert 0 < on.sum() < len(top)
    both = counterfactual_scores(ce, QUERIES, perturbed, DOCS, [keep_matrix(graph, top), keep_matrix(graph, top[on])])
    np.testing.assert_allclose(both[0], both[1], atol=1e-10)
    with pytest.raises(MatchsigError, match="line up token by token: pair 0"):
        counterfactual_scores(ce, QUERIES[:1], ["a much longer document than the baseline one"], DOCS[:1],
                              [keep_matrix(graph, picks[0])])


def test_connected_part_by_hand(tiny64):
    """input -> a0.h0.v -> a0.h0 -> m0 -> score is a path; an edge out of an unreached node, and one into a node
    that reaches no score, are not on it."""
    from matchsig.engine.circuits import connected
    from matchsig.engine.graph import graph_for

    graph = graph_for(tiny64[0])
    r, n = graph.reader_names().index, graph.node_names().index
    edges = np.array([[r("a0.h0.v"), n("input")], [r("m0"), n("a0.h0")], [r("score"), n("m0")],
                      [r("score"), n("a0.h1")], [r("a1.h0.q"), n("input")]])
    assert connected(graph, edges).tolist() == [True, True, True, False, False]
    assert connected(graph, edges[:2]).tolist() == [False, False]  # no edge reaches the score


def test_circuit_experiment_with_counterfactual_ablation(tmp_path, tokenizer):
    """The experiment's curve under --ablation counterfactual: no edge is the baseline (D = 0 exactly, so
    faithfulness 0), every edge the model (faithfulness 1); a middle size recomputed by the float64 reference."""
    from matchsig.experiments import RunConfig, Runner

    folder = tmp_path / "model"
    model = make_tiny_model(folder, tokenizer, seed=6).double()
    out = tmp_path / "run"
    Runner(out, RunConfig(model=str(folder), datasets=["demo"], experiments=["circuit"], per_grade=1, pairs=6,
                          circuit_method="eap", circuit_sizes=[20], circuit_edges=20, circuit_ablation="counterfactual",
                          circuit_agreement_pairs=2, circuit_bootstrap=50, device="cpu"), progress=False).run()
    curve = pd.read_csv(out / "circuit_curve.csv").set_index("edges")
    assert curve.loc[0, "mean_diff"] == 0.0 and curve.loc[0, "faithfulness"] == 0.0
    assert curve["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-12)
    circuit_json = json.loads((out / "circuit.json").read_text())
    assert circuit_json["ablation"] == "counterfactual" and circuit_json["size"] == 20
    assert circuit_json["connected_size"] == sum(e["on_path"] for e in circuit_json["edges"]) == curve.loc[20, "connected_edges"]
    from matchsig.report.view_circuit import read_circuit  # what `matchsig view` draws of this file

    drawn = read_circuit(out / "circuit.json", circuit_json["layers"], circuit_json["heads"])
    assert drawn["size"] == 20 and sorted(map(tuple, (e[:2] for e in drawn["edges"]))) == \
        sorted((e["sender"], e["receiver"]) for e in circuit_json["edges"])
    pairs = pd.read_csv(out / "circuit_pairs.tsv", sep="\t", keep_default_na=False)
    held = pairs[pairs["split"] == "heldout"]
    ranked = pd.read_csv(out / "circuit_edges.csv").sort_values("rank")
    circuit = set(zip(ranked["receiver"][:20], ranked["sender"][:20]))
    diffs = []
    for q, b, p in zip(held["query"], held["baseline"], held["perturbed"]):
        enc_b, enc_p = tokenizer(q, b), tokenizer(q, p)
        outs = edge_forward(model, enc_b["input_ids"], enc_b["token_type_ids"])[1]
        mix = lambda reader, node, value: value if (reader, node) in circuit else outs[node]  # noqa: E731
        cut = edge_forward(model, enc_p["input_ids"], enc_p["token_type_ids"], mix=mix)[0]
        diffs.append(cut - edge_forward(model, enc_b["input_ids"], enc_b["token_type_ids"])[0])
    assert curve.loc[20, "mean_diff"] == pytest.approx(np.mean(diffs), abs=2e-5)


def test_circuit_experiment_faithfulness_recomputed_by_direct_ablated_forwards(tmp_path, tokenizer):
    """The run's chosen circuit and one other size of its curve, recomputed from circuit_pairs.tsv and
    circuit_edges.csv by the float64 reference: means over the attribution pairs' baselines, the
    held-out pairs run with only the circuit's edges, faithfulness as docs/circuits.md defines it."""
    folder = tmp_path / "model"
    model = make_tiny_model(folder, tokenizer, seed=6).double()
    out = tmp_path / "run"
    res = matchsig_cli("circuit", "--model", str(folder), "--dataset", "demo", "--per-grade", "1", "--pairs", "6",
                       "--method", "eap", "--sizes", "3", "--sizes", "30", "--faithfulness", "0.6",
                       "--agreement-pairs", "3", "--bootstrap", "200", "--ranking-sets", "2", "--chain-senders", "a0.h1",
                       "--chain-senders", "a0.h3", "--device", "cpu", "--json",
                       "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    pairs = pd.read_csv(out / "circuit_pairs.tsv", sep="\t", keep_default_na=False)
    ranked = pd.read_csv(out / "circuit_edges.csv").sort_values("rank")
    curve = pd.read_csv(out / "circuit_curve.csv")
    printed = json.loads(res.stdout)  # --json: the files' contents, nothing else on stdout
    assert printed["circuit"] == json.loads((out / "circuit.json").read_text())
    assert [r["edges"] for r in printed["curve"]] == curve["edges"].tolist()
    assert len(printed["agreement"]) == len(pd.read_csv(out / "circuit_agreement.csv"))
    circuit = json.loads((out / "circuit.json").read_text())
    train, held = pairs[pairs["split"] == "attribution"], pairs[pairs["split"] == "heldout"]
    means = reference_means(model, tokenizer, list(train["query"]), list(train["baseline"]))

    def diffs(size):
        kept = {(r, s) for s, r in zip(ranked["sender"][:size], ranked["receiver"][:size])}
        score = lambda doc, q: reference_circuit_score(model, tokenizer, q, doc, kept, means)  # noqa: E731
        return np.array([score(p, q) - score(b, q) for q, b, p in zip(held["query"], held["baseline"],
                                                                      held["perturbed"])])

    full, empty = diffs(len(ranked)), diffs(0)
    for size in {int(circuit["size"]), 3}:
        want = (diffs(size).mean() - empty.mean()) / (full.mean() - empty.mean())
        got = curve.loc[curve["edges"] == size, "faithfulness"].iloc[0]
        assert got == pytest.approx(want, abs=2e-4), size
        assert curve.loc[curve["edges"] == size, "ci_low"].iloc[0] <= got <= curve.loc[curve["edges"] == size,
                                                                                          "ci_high"].iloc[0]
    assert circuit["faithfulness"] == pytest.approx(curve.loc[curve["edges"] == circuit["size"],
                                                              "faithfulness"].iloc[0])
    assert [(e["sender"], e["receiver"]) for e in circuit["edges"]] == list(
        zip(ranked["sender"][: circuit["size"]], ranked["receiver"][: circuit["size"]]))
    smaller = curve[curve["edges"] < circuit["size"]]
    if circuit["reached"]:  # the smallest measured circuit reaching the target
        assert circuit["faithfulness"] >= 0.6 and (smaller["faithfulness"] < 0.6).all()
    agreement = pd.read_csv(out / "circuit_agreement.csv")
    assert list(agreement["level"]) == ["heads", "edges"] and agreement["spearman"].notna().all()
    html = (out / "report.html").read_text()
    assert "Relevance circuits" in html and (out / "circuit.png").is_file() and html.count("data:image/png") >= 2
    _check_ranking(out, model, tokenizer, means, ranked, circuit["size"])
    _check_chain(out, model, tokenizer, held)


def _check_chain(out, model, tokenizer, held):
    """The chain's three path patches recomputed on the float64 edge reference: the senders' outputs from
    the perturbed run substituted in the inputs of the last two layers' heads, of the score, of every reader."""
    chain = pd.read_csv(out / "circuit_chain.csv", dtype={"qid": str})
    assert list(chain["qid"]) == list(held["qid"].astype(str)) and set(chain["senders"]) == {"a0.h1;a0.h3"}
    senders = {"a0.h1", "a0.h3"}
    for (_, row), (_, pair) in zip(chain.iterrows(), held.iterrows()):
        eb, ep = tokenizer(pair["query"], pair["baseline"]), tokenizer(pair["query"], pair["perturbed"])
        base, _ = edge_forward(model, eb["input_ids"], eb["token_type_ids"])
        _, pert = edge_forward(model, ep["input_ids"], ep["token_type_ids"])
        for column, readers in (("via", lambda r: r.startswith(("a1.", "a2."))), ("direct", lambda r: r == "score"),
                                ("total", lambda r: True)):
            mix = lambda r, u, value, readers=readers: pert[u] if u in senders and readers(r) else value  # noqa: E731
            want = edge_forward(model, eb["input_ids"], eb["token_type_ids"], mix=mix)[0]
            assert row[column] == pytest.approx(want, abs=2e-5), column
    findings = json.loads((out / "findings.json").read_text())
    text = json.dumps(findings)
    assert "matching_heads_feed_last_layers" in text


def _check_ranking(out, model, tokenizer, means, ranked, size):
    """Per-query nDCG@10 with the circuit kept, for three queries of the pool, from float64 circuit scores
    and the tie-aware nDCG of tests/_recompute.py; the paired tests from the per-query table by scipy."""
    from scipy import stats

    from _recompute import main_pool, tie_aware_ndcg

    per_query = pd.read_csv(out / "circuit_ranking_per_query.csv", dtype={"qid": str}).set_index("qid")
    pool = main_pool(out)
    kept = {(r, s) for s, r in zip(ranked["sender"][:size], ranked["receiver"][:size])}
    allowed = {(r, s) for s, r in zip(ranked["sender"], ranked["receiver"])}
    for qid in sorted(set(pool["qid"]))[:3]:
        rows = pool[pool["qid"] == qid]
        for label, edges in (("circuit kept", kept), ("circuit cut", allowed - kept)):
            scores = [reference_circuit_score(model, tokenizer, q, d, edges, means)
                      for q, d in zip(rows["query"], rows["document"])]
            want, _ = tie_aware_ndcg(rows, scores)
            assert per_query.loc[qid, label] == pytest.approx(want[qid], abs=1e-9), (qid, label)
    tests = pd.read_csv(out / "circuit_ranking_tests.csv")
    for mode in ("kept", "cut"):
        randoms = per_query[[f"random {k} {mode}" for k in range(2)]].mean(axis=1)
        row = tests[(tests["a"] == f"circuit {mode}") & (tests["b"] == f"random mean {mode}")].iloc[0]
        t = stats.ttest_rel(per_query[f"circuit {mode}"], randoms)
        assert row["diff"] == pytest.approx((per_query[f"circuit {mode}"] - randoms).mean(), abs=1e-12)
        assert np.isnan(t.pvalue) and np.isnan(row["p_value"]) or row["p_value"] == pytest.approx(t.pvalue, rel=1e-9)
