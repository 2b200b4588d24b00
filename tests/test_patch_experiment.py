"""The `matchsig patch` experiment: table re-derived from per-pair patches, resume, roles, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_model, matchsig_cli, torchrun_config

from matchsig import CrossEncoder, MatchsigError
from matchsig.analysis.diagnostics import read_pairs
from matchsig.experiments.patching import PatchConfig, run_patch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-patch")
    make_tiny_model(folder, tokenizer, seed=5)
    return str(folder)


def test_head_table_matches_per_pair_patches_and_resumes(tiny, tmp_path):
    config = PatchConfig(model=tiny, dataset="demo", diagnostic="tfc1", site="head", pairs=3, per_grade=1,
                         chunk_size=2, min_delta=0.0, device="cpu")
    out = tmp_path / "run"
    table = pd.read_csv(run_patch(out, config, progress=False))
    assert len(table) == 3 * 4 and set(table["position"]) == {"all"}
    pairs = read_pairs(out / "pairs.tsv")
    ce = CrossEncoder.load(tiny, device="cpu")
    # the same chunks of 2 pairs as the run, so rounding is identical and the aggregation is what is checked
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    frame = pd.concat([ce.patch(q[k:k + 2], b[k:k + 2], p[k:k + 2], site="z").to_frame() for k in range(0, 6, 2)])
    want = frame.groupby(["layer", "head"])["effect"].agg(["mean", "std", "count"]).reset_index()
    got = table.sort_values(["layer", "head"]).reset_index(drop=True)
    np.testing.assert_allclose(got["effect_mean"], want["mean"], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got["effect_sd"], want["std"], atol=1e-5, rtol=1e-4)
    assert (got["n_pairs"] == want["count"]).all() and want["count"].iloc[0] == len(pairs) == 6
    assert (out / "patching.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"]["pairs_fingerprint"] == pairs.fingerprint
    # resume: a lost chunk is recomputed, the others are read back; the table is unchanged
    stored = sorted((out / "store" / "patch").glob("*.npy"))
    assert len(stored) == 3
    kept = stored[0].stat().st_mtime_ns
    stored[1].unlink()
    again = pd.read_csv(run_patch(out, config, progress=False))
    pd.testing.assert_frame_equal(again, table)
    assert stored[0].stat().st_mtime_ns == kept and stored[1].is_file()
    with pytest.raises(MatchsigError, match="site: 'head' there, 'mlp' now"):
        run_patch(out, PatchConfig(**{**config.__dict__, "site": "mlp"}), progress=False)


def test_residual_roles_put_the_last_layer_on_cls(tiny, tmp_path):
    """Structure: at the last layer only [CLS] reaches the classifier, so its role carries effect 1, others 0."""
    config = PatchConfig(model=tiny, dataset="demo", diagnostic="tfc1", site="residual", pairs=2, per_grade=1,
                         min_delta=0.0, device="cpu", where=["append"])
    table = pd.read_csv(run_patch(tmp_path / "res", config, progress=False), keep_default_na=False)
    last = table[table["layer"] == 2].set_index("position")["effect_mean"].astype(float)
    assert set(last.index) == {"CLS", "Q", "SEP1", "D*", "D", "SEP2"}
    assert abs(last["CLS"] - 1) < 1e-3 and np.abs(last.drop("CLS")).max() < 1e-3
    first = table[table["layer"] == 0].set_index("position")["effect_mean"].astype(float)
    assert abs(first["D*"]) > 1e-3  # the inserted token's own position matters at the bottom


def test_bad_settings(tiny, tmp_path):
    with pytest.raises(MatchsigError, match="unknown --site 'heads'"):
        run_patch(tmp_path / "x", PatchConfig(model=tiny, site="heads"))
    with pytest.raises(MatchsigError, match="unknown --diagnostic 'tfc3'"):
        run_patch(tmp_path / "x", PatchConfig(model=tiny, diagnostic="tfc3"))


def test_cli_error_is_one_line(tmp_path):
    done = matchsig_cli("patch", "--out", str(tmp_path / "y"), "--site", "nope")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "unknown --site 'nope'" in done.stderr


# ---- patching heads vs contrast heads in one run folder --------------------------------------


@pytest.fixture(scope="module")
def overlap_run(tiny, tmp_path_factory):
    """``matchsig experiments --experiments contrast,patch`` on the tiny model, with its report (uncorrected at
    alpha 0.3, so that 3 queries give the tiny model some matching heads)."""
    from matchsig.experiments import RunConfig, Runner
    from matchsig.report import build_report

    out = tmp_path_factory.mktemp("overlap") / "run"
    config = RunConfig(model=tiny, datasets=["demo"], experiments=["contrast", "patch"], per_grade=1, max_queries=3,
                       contrast_per_grade=2, contrast_easy=2, pairs=3, min_delta=0.0, chunk_size=10, batch_size=4,
                       device="cpu", overlap_k=[2, 4, 99], overlap_permutations=2000, correction="none", alpha=0.3)
    Runner(out, config, progress=False).run()
    build_report(out)
    return out


def test_overlap_table_is_compare_heads_of_the_folders_own_tables(overlap_run):
    from scipy.stats import hypergeom

    from matchsig.analysis.head_overlap import compare_heads

    got = pd.read_csv(overlap_run / "patching_overlap.csv", keep_default_na=False, na_values=[""])
    want = compare_heads(overlap_run / "patching.csv", overlap_run / "contrast" / "heads.csv", [2, 4], alpha=0.3,
                         correction="none", n_permutations=2000, seed=0)
    pd.testing.assert_frame_equal(got.fillna({"shared": ""}), want, check_dtype=False)  # "" (nothing shared) reads as NaN
    assert sorted(set(got["k"])) == [2, 4]  # k = 99 exceeds the 12 heads: left out
    assert set(got["reference"]) == {"matching", "syntactic", "semantic", "top-contrast"}
    # the selection and the reference sets, re-derived from the CSVs by hand
    patch = pd.read_csv(overlap_run / "patching.csv")
    contrast = pd.read_csv(overlap_run / "contrast" / "heads.csv")
    matching = {(int(l), int(h)) for l, h, m in zip(contrast["layer"], contrast["head"], contrast["matching"]) if m}
    order = patch.assign(a=patch["effect_mean"].abs()).sort_values(["a", "layer", "head"], ascending=[False, True, True])
    for k in (2, 4):
        row = got[(got["k"] == k) & (got["reference"] == "matching")].iloc[0]
        top = {(int(l), int(h)) for l, h in zip(order["layer"][:k], order["head"][:k])}
        shared = len(top & matching)
        assert row["overlap"] == shared and row["m"] == len(matching) and row["n_heads"] == 12
        assert row["p_hypergeom"] == pytest.approx(float(hypergeom(12, len(matching), k).sf(shared - 1)), abs=1e-12)
    assert 0 < len(matching) < 12  # the test above is not the trivial p = 1 of an empty set
    for row in got.itertuples():  # every reference set: the tail of its own counts
        assert row.p_hypergeom == pytest.approx(float(hypergeom(12, row.m, row.k).sf(row.overlap - 1)), abs=1e-12)


def test_overlap_in_report_and_findings(overlap_run):
    from scipy.stats import hypergeom

    page = (overlap_run / "report.html").read_text(encoding="utf-8")
    assert "Do the top patching heads coincide with the contrast heads?" in page and "patching_overlap.csv" in page
    found = json.loads((overlap_run / "findings.json").read_text())["findings"]
    claim = [f for f in found if f["key"] == "patching_heads_match_contrast"]
    assert len(claim) == 1 and claim[0]["verdict"] in ("holds", "does not hold", "inconclusive")
    rows = pd.read_csv(overlap_run / "patching_overlap.csv").query("reference == 'matching'").sort_values("k")
    n, m = 12, int(rows["m"].iloc[0])
    assert 0 < m < n
    from scipy.stats import binom

    bound = m / n + 0.5 * (1 - m / n)  # half way from the chance share to all: the stated equivalence bound
    lower = [float(binom(int(k), bound).cdf(o)) for k, o in zip(rows["k"], rows["overlap"])]  # uncorrected run
    assert [d["p_lower"] for d in claim[0]["data"]["per_k"]] == pytest.approx(lower)
    states = ["holds" if up <= 0.3 and lay <= 0.3 else "does not hold" if low <= 0.3 else "inconclusive"
              for up, lay, low in zip(rows["p_hypergeom"], rows["p_layer_exact"], lower)]
    want = ("does not hold" if "does not hold" in states else "holds" if set(states) == {"holds"} else "inconclusive")
    assert claim[0]["verdict"] == want


def test_overlap_claim_follows_its_rule(tmp_path):
    """Synthetic folders where the top patching heads are the matching heads (holds) or avoid them (does not hold)."""
    from test_head_overlap import SYN, _contrast, _patching

    from matchsig.report import judge
    from matchsig.analysis.head_overlap import compare_heads

    shape = (12, 12)
    flat = [(l, h) for l in range(12) for h in range(12)]
    spread = flat[::9][:16]
    cases = {"holds": spread, "does not hold": [x for x in flat if x[1] >= 2],  # 16 spread / 120 matching
             "at chance": spread}  # 16 matching, the top 8 share 1 of them: chance (8 x 16 / 144 = 0.9)
    for name, matching in cases.items():
        verdict = "does not hold" if name == "at chance" else name
        run = tmp_path / name.replace(" ", "_")
        (run / "contrast").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"alpha": 0.05, "correction": "holm"}))
        effects = np.zeros(shape)
        top = (matching[:8] if name == "holds" else [x for x in flat if x[1] < 2][:8] if name == "does not hold"
               else [spread[0]] + [x for x in flat if x not in spread][:7])
        for rank, (l, h) in enumerate(top):
            effects[l, h] = 1.0 - 0.01 * rank
        _patching(effects).to_csv(run / "patching.csv", index=False)
        _contrast(shape, {(l, h, "Q<-D"): SYN for l, h in matching}).to_csv(run / "contrast" / "heads.csv", index=False)
        compare_heads(run / "patching.csv", run / "contrast" / "heads.csv", [4, 8], n_permutations=500).to_csv(
            run / "patching_overlap.csv", index=False)
        claim = [f for f in judge(run, write=False) if f.key == "patching_heads_match_contrast"]
        assert [f.verdict for f in claim] == [verdict], (name, claim)
    # a folder without patching results does not list the claim at all (the demo's checklist is unchanged)
    (run / "patching.csv").unlink()
    assert not [f for f in judge(run, write=False) if f.key == "patching_heads_match_contrast"]


# ---- the command-line routes to a patching + contrast folder, and sharding --------------------


def _cli(*args):
    return matchsig_cli(*args, env_extra={"OMP_NUM_THREADS": "1"}, timeout=600)


@pytest.mark.slow
def test_patch_into_a_contrast_folder_equals_one_run_of_both(tiny, tmp_path):
    """`matchsig contrast` then `matchsig patch --out` the same folder (which keeps the folder's pool settings and
    does not redo contrast) gives the tables of `matchsig experiments --experiments contrast,patch`."""
    common = ["--model", tiny, "--dataset", "demo", "-n", "1", "--max-queries", "3", "--contrast-per-grade", "2",
              "--contrast-easy", "2", "--correction", "none", "--alpha", "0.3", "-b", "4", "--device", "cpu"]
    patch_opts = ["--pairs", "3", "--min-delta", "0", "--overlap-k", "2", "--overlap-k", "4",
                  "--overlap-permutations", "500"]
    two, one = tmp_path / "two-steps", tmp_path / "one-run"
    done = _cli("contrast", *common, "--out", str(two))
    assert done.returncode == 0, done.stderr[-2000:]
    contrast_units = {p: p.stat().st_mtime_ns for p in (two / "store").rglob("*.npy")}
    assert contrast_units and not (two / "patching.csv").exists()
    done = _cli("patch", "--out", str(two), *patch_opts)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adding the patch experiment to the run in" in done.stderr
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["experiments"] == ["contrast", "patch"] and cfg["per_grade"] == 1 and cfg["max_queries"] == 3
    assert cfg["pairs"] == 3 and cfg["overlap_k"] == [2, 4] and cfg["model"] == tiny
    assert all(p.stat().st_mtime_ns == t for p, t in contrast_units.items())  # contrast was read back, not redone
    assert "Do the top patching heads coincide with the contrast heads?" in (two / "report.html").read_text()
    done = _cli("experiments", "--experiments", "contrast,patch", *common, *patch_opts, "--out", str(one))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((one / "config.json").read_text()) == cfg
    for name in ("patching.csv", "patching_overlap.csv", "contrast/heads.csv", "pairs.tsv"):
        pd.testing.assert_frame_equal(pd.read_csv(two / name, sep="\t" if name.endswith("tsv") else ","),
                                      pd.read_csv(one / name, sep="\t" if name.endswith("tsv") else ","))
    # an option given that contradicts the folder's stored results is refused in one line, naming the field
    done = _cli("patch", "--out", str(two), "--per-grade", "2")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "another configuration (per_grade: 1 there, 2 now)" in done.stderr
    done = _cli("experiments", "--experiments", "contrast,pach", "--out", str(tmp_path / "bad"))
    assert done.returncode == 2 and "unknown experiment 'pach'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_torchrun_two_processes_share_the_patch_chunks(tiny, tmp_path):
    """2 CPU processes (gloo) split the patch chunks; the merged table equals the single-process run."""
    config = PatchConfig(model=tiny, dataset="demo", diagnostic="tfc1", site="head", pairs=3, per_grade=1, chunk_size=2,
                         min_delta=0.0, device="cpu")
    single = pd.read_csv(run_patch(tmp_path / "one", config, progress=False))
    out = tmp_path / "two"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config.run_config().to_dict()))
    res = torchrun_config(out / "config.json", port=29534)
    assert res.returncode == 0, res.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "patching.csv"), single)
    pd.testing.assert_frame_equal(pd.read_csv(out / "pairs.tsv", sep="\t"), pd.read_csv(tmp_path / "one" / "pairs.tsv", sep="\t"))
    stored = sorted(p.name for p in (out / "store" / "patch").glob("*.npy"))
    assert stored == ["00000.npy", "00001.npy", "00002.npy"]  # 6 pairs in chunks of 2: every chunk once, none lost


def test_min_delta_is_relative_and_cis_are_clustered_by_query(tiny, tmp_path):
    """A run with min_delta > 0: the pairs kept are those moved by min_delta x the sd of the baseline scores,
    and each site's CI is the cluster bootstrap over queries, re-derived with a plain seeded loop."""
    config = PatchConfig(model=tiny, dataset="demo", diagnostic="tfc1", site="head", pairs=4, per_grade=1,
                         chunk_size=4, min_delta=0.1, device="cpu")
    out = tmp_path / "rel"
    table = pd.read_csv(run_patch(out, config, progress=False))
    pairs = read_pairs(out / "pairs.tsv")
    ce = CrossEncoder.load(tiny, device="cpu")
    q, b, p = pairs.queries(), pairs.baselines(), pairs.perturbeds()
    # the same chunks of 4 pairs as the run, so rounding is identical
    chunks = [ce.patch(q[k:k + 4], b[k:k + 4], p[k:k + 4], site="z") for k in range(0, len(q), 4)]
    base = np.concatenate([np.asarray(r.baseline, float) for r in chunks])
    pert = np.concatenate([np.asarray(r.perturbed, float) for r in chunks])
    kept = np.abs(pert - base) >= 0.1 * np.std(base, ddof=1)
    assert 0 < kept.sum() < len(kept), "the test needs a min_delta that drops some pairs and keeps some"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs_moved"] == int(kept.sum())
    assert summary["min_delta_absolute"] == pytest.approx(0.1 * np.std(base, ddof=1), rel=1e-5)
    qids = np.array([t.qid for t in pairs.triples])
    effect = np.concatenate([np.asarray(r.effect, float) for r in chunks])
    effects = effect[kept][..., 0].reshape(int(kept.sum()), -1)  # (pairs kept, layer x head)
    got = table.sort_values(["layer", "head"]).reset_index(drop=True)
    np.testing.assert_allclose(got["effect_mean"], effects.mean(0), atol=1e-5, rtol=1e-4)
    # the cluster bootstrap by its definition: resample b draws query counts, the mean over the drawn pairs
    labels = sorted(set(qids[kept]))
    rng = np.random.default_rng(config.seed)
    means = []
    for _ in range(2000):
        counts = dict(zip(labels, rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)))))
        w = np.array([counts[x] for x in qids[kept]], float)
        means.append((w[:, None] * effects).sum(0) / w.sum())
    means = np.array(means)
    np.testing.assert_allclose(got["ci_low"], np.quantile(means, 0.025, axis=0), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got["ci_high"], np.quantile(means, 0.975, axis=0), atol=1e-5, rtol=1e-4)
    assert (got["n_queries"] == len(labels)).all() and len(labels) < kept.sum()  # fewer clusters than pairs


def test_overlap_claim_states_the_uncertainty_of_the_top_k_cut(overlap_run):
    """Each k names the k-th and (k+1)-th heads by |effect| with their bootstrap CIs, re-derived from patching.csv."""
    found = json.loads((overlap_run / "findings.json").read_text())["findings"]
    claim = next(f for f in found if f["key"] == "patching_heads_match_contrast")
    patch = pd.read_csv(overlap_run / "patching.csv")
    order = patch.assign(a=patch["effect_mean"].abs()).sort_values(["a", "layer", "head"], ascending=[False, True, True])
    for entry in claim["data"]["per_k"]:
        k = entry["k"]
        a, b = order.iloc[k - 1], order.iloc[k]
        lows = [0.0 if r["ci_low"] <= 0 <= r["ci_high"] else min(abs(r["ci_low"]), abs(r["ci_high"])) for r in (a, b)]
        highs = [max(abs(r["ci_low"]), abs(r["ci_high"])) for r in (a, b)]
        assert entry["top_k_separated"] == (lows[0] > highs[1])
        assert f"cut between head {int(a['layer'])}/{int(a['head'])}" in claim["evidence"]
