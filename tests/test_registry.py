"""Adding an experiment = one module + one registration line: a toy experiment, defined here, runs end to end
through the runner (its option in config.json, its units stored and resumed, its file, its report section,
its claim in findings.json)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from matchsig import MatchsigError
from matchsig.experiments import Experiment, Option, RunConfig, Runner, register
from matchsig.experiments.registry import unregister
from matchsig.experiments.store import single
from matchsig.analysis.findings import HOLDS, Judge, finding

CALLS: list[str] = []


def _toy_claim(run) -> object:
    frame = run.table(Toy, "values")
    if frame is None:
        return finding("toy_claim", "not measured", "toy.csv is missing", "toy.csv exists")
    return finding("toy_claim", HOLDS, f"{len(frame)} queries", "toy.csv exists", queries=len(frame))


class Toy(Experiment):
    """Per query: the mean document length (characters) of its pairs in the main pool, times ``toy_factor``."""

    name = "toy"
    title = "A toy experiment"
    nav = "Toy"
    default = False
    pools = ("main",)
    options = (Option("toy_factor", 2, "--toy-factor", "A factor.", minimum=1),)
    judges = (Judge("toy_claim", "The toy file exists", 100, _toy_claim),)
    tables = {"values": "toy.csv"}  # its own file: nothing in runfolder.py names it

    def units(self, runner):
        _, (_, documents) = runner.pool("main")

        def work(rows):
            CALLS.append(f"toy/{rows[0]:05d}")
            return np.array([len(documents[i]) for i in rows], float) * runner.config.toy_factor

        return [single(f"toy/{k:05d}", lambda rows=rows: work(rows), len(rows))
                for k, rows in enumerate(runner.chunks(len(documents)))]

    def collect(self, runner):
        pool, _ = runner.pool("main")
        values = np.concatenate([runner.store.load(u.name) for u in self.units(runner)])
        frame = pd.DataFrame({"qid": [r.qid for r in pool.rows], "value": values}).groupby("qid", sort=False).mean()
        runner.writer.table(self, "values", frame.reset_index())

    def section(self, folder, figures):
        return f'<section id="toy"><h2>{self.title}</h2><p>toy rows: {len(folder.table(self, "values"))}</p></section>'


@pytest.fixture
def toy():
    register(Toy())
    yield
    unregister("toy")


def test_a_registered_toy_experiment_runs_end_to_end(toy, tiny_model, tmp_path):
    from matchsig.report import build_report

    out = tmp_path / "toy-run"
    config = RunConfig(model=tiny_model, experiments=["toy"], max_queries=3, per_grade=2, chunk_size=4, toy_factor=3)
    CALLS.clear()
    Runner(out, config, progress=False).run()
    stored = sorted(p.name for p in (out / "store" / "toy").glob("*.npy"))
    assert len(stored) == len(set(CALLS)) >= 2
    assert json.loads((out / "config.json").read_text())["toy_factor"] == 3
    # the toy's numbers, re-derived from pools.tsv with pandas
    pools = pd.read_csv(out / "pools.tsv", sep="\t", dtype={"qid": str, "docid": str})
    expected = pools.assign(n=pools["document"].str.len() * 3).groupby("qid")["n"].mean()
    got = pd.read_csv(out / "toy.csv", dtype={"qid": str}).set_index("qid")["value"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index().astype(float), check_names=False)
    # resume: one lost unit is recomputed, nothing else
    (out / "store" / "toy" / stored[0]).unlink()
    CALLS.clear()
    Runner(out, config, progress=False).run()
    assert CALLS == ["toy/00000"]
    # report: its navigation link and section; findings: its claim
    text = build_report(out).read_text()
    assert '<a href="#toy">Toy</a>' in text and "toy rows: 3" in text
    findings = json.loads((out / "findings.json").read_text())["findings"]
    toy_claim = [f for f in findings if f["key"] == "toy_claim"]
    assert toy_claim == [{**toy_claim[0], "name": "The toy file exists", "verdict": "holds", "queries": 3}]
    # its option is validated like a built-in one
    with pytest.raises(MatchsigError, match="toy_factor must be >= 1, got 0"):
        RunConfig(toy_factor=0).validate()


def test_a_declared_table_is_read_through_the_run_folder(tmp_path):
    from matchsig.analysis.runfolder import RunFolder, RunFolderWriter

    frame = pd.DataFrame({"qid": ["1", "2"], "value": [0.5, 1.5]})
    writer = RunFolderWriter(tmp_path)
    assert writer.table(Toy, "values", frame) == tmp_path / "toy.csv"

    class Parquet:
        name, tables = "pq", {"rows": "pq/rows.parquet", "tsv": "pq/rows.tsv", "absent": "pq/none.csv"}

    writer.table(Parquet, "rows", frame)
    writer.table(Parquet, "tsv", frame)
    folder = RunFolder(tmp_path)
    assert folder.table(Toy, "values")["value"].tolist() == [0.5, 1.5]
    assert folder.table(Parquet, "rows").equals(frame) and folder.table(Parquet, "tsv")["value"].tolist() == [0.5, 1.5]
    assert folder.table(Parquet, "absent") is None
    with pytest.raises(KeyError, match="experiment 'toy' declares no table 'scores' \\(its tables: values\\)"):
        folder.table(Toy, "scores")
    # every built-in experiment declares its tables, in files of distinct names
    from matchsig.experiments import registered

    files = [f for e in registered() for f in e.tables.values()]
    assert len(files) == len(set(files)) >= 10 and all(e.tables for e in registered())


def test_without_registration_the_option_is_unknown():
    with pytest.raises(MatchsigError, match="unknown configuration key 'toy_factor'"):
        RunConfig(toy_factor=2)
    with pytest.raises(MatchsigError, match="unknown experiment 'toy'"):
        RunConfig(experiments=["toy"]).validate()
