"""The `matchsig patch` experiment: table re-derived from per-pair patches, resume, roles, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_model

from matchsig import CrossEncoder, MatchsigError
from matchsig.diagnostics import read_pairs
from matchsig.experiments.patching import PatchConfig, run_patch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-patch")
    make_tiny_model(folder, tokenizer, seed=5)
    return str(folder)


def test_head_table_matches_per_pair_patches_and_resumes(tiny, tmp_path):
    config = PatchConfig(model=tiny, dataset="demo", diagnostic="tfc1", site="head", pairs=3, per_grade=1,
                         chunk=2, min_delta=0.0, device="cpu")
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
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "matchsig", "patch", "--out", str(tmp_path / "y"), "--site", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "unknown --site 'nope'" in done.stderr
