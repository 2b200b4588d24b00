"""The run folder's schema: its files, their columns, one reader (:class:`RunFolder`) and one writer
(:class:`RunFolderWriter`). Every module reads and writes a run folder through these names.

::

    RUN_DIR/config.json                 the configuration (``matchsig run RUN_DIR/config.json`` re-runs it)
    RUN_DIR/summary.json                model, pools and their fingerprints, random baseline, timings
    RUN_DIR/pools.tsv                   every sampled pair with its texts (POOLS)
    RUN_DIR/store/...                   raw results, one file per finished work unit (resume + shards)
    RUN_DIR/table1.csv                  Table 1 (TABLE1 + COMPARE); table1.md, table1.tex: its layouts
    RUN_DIR/table1_per_query.csv        per-query nDCG@10 of every configuration (qid, one column per label)
    RUN_DIR/table1_scores.csv           raw scores (qid, docid, grade, one column per label)
    RUN_DIR/layers.csv                  Figure 1 (LAYERS + COMPARE)
    RUN_DIR/contrast/heads.csv          per (layer, head, direction): tests and kind (CONTRAST)
    RUN_DIR/contrast/per_query.csv      per (query, level, layer, head, direction): the statistics
    RUN_DIR/contrast/stats.parquet      per (pair, layer, head, direction): the statistics
    RUN_DIR/heads.csv                   top-k matching heads ablated vs k random heads (HEADS + COMPARE)
    RUN_DIR/patching.csv, patching.png  activation patching (PATCHING); pairs.tsv: its diagnostic pairs
    RUN_DIR/patching_overlap.csv        top-k patching heads vs the contrast heads (head_overlap.compare_heads)
    RUN_DIR/findings.json               the findings checklist
    RUN_DIR/figures/*.png, report.html  the report
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["COMPARE", "CONTRAST", "FILES", "HEADS", "LAYERS", "PATCHING", "POOLS", "TABLE1", "RunFolder",
           "RunFolderWriter"]


@dataclass(frozen=True)
class _Files:
    config: str = "config.json"
    summary: str = "summary.json"
    pools: str = "pools.tsv"
    store: str = "store"
    table1: str = "table1.csv"
    table1_per_query: str = "table1_per_query.csv"
    table1_scores: str = "table1_scores.csv"
    table1_md: str = "table1.md"
    table1_tex: str = "table1.tex"
    layers: str = "layers.csv"
    contrast_heads: str = "contrast/heads.csv"
    contrast_per_query: str = "contrast/per_query.csv"
    contrast_stats: str = "contrast/stats.parquet"
    heads: str = "heads.csv"
    patching: str = "patching.csv"
    patching_png: str = "patching.png"
    patching_overlap: str = "patching_overlap.csv"
    pairs: str = "pairs.tsv"
    findings: str = "findings.json"
    figures: str = "figures"
    report: str = "report.html"


@dataclass(frozen=True)
class _Compare:
    """Columns of a comparison with the unablated model (Table 1, layers, heads)."""

    ndcg: str = "ndcg@10"
    delta: str = "delta"
    ci_low: str = "ci_low"
    ci_high: str = "ci_high"
    p_value: str = "p_value"
    n_queries: str = "n_queries"
    significant: str = "significant"
    mark: str = "mark"
    lower: str = "lower"
    mde: str = "mde"  # minimal detectable change at 80% power (analysis.comparison.row_mde)


@dataclass(frozen=True)
class _Table1:
    target: str = "target"
    source: str = "source"
    ablation: str = "ablation"
    none: str = "none"  # the unablated row's target and ablation
    random: str = "random"  # the random-ranking row's


@dataclass(frozen=True)
class _Layers:
    direction: str = "direction"
    layer: str = "layer"


@dataclass(frozen=True)
class _Heads:
    selection: str = "selection"
    k: str = "k"
    seed: str = "seed"
    heads: str = "heads"
    matching_in_selection: str = "matching_in_selection"
    top: str = "top"  # selection values
    random: str = "random"


@dataclass(frozen=True)
class _Contrast:
    """``contrast/heads.csv`` and ``contrast/per_query.csv`` (tests: :mod:`matchsig.analysis.matching`)."""

    qid: str = "qid"
    level: str = "level"
    layer: str = "layer"
    head: str = "head"
    direction: str = "direction"
    sign: str = "sign"
    matching: str = "matching"
    kind: str = "kind"
    n_relevant: str = "n_relevant"
    n_queries: str = "n_queries"
    delta_relevant: str = "delta_relevant"


@dataclass(frozen=True)
class _Pools:
    qid: str = "qid"
    docid: str = "docid"
    grade: str = "grade"
    query: str = "query"
    document: str = "document"
    pool: str = "pool"


@dataclass(frozen=True)
class _Patching:
    diagnostic: str = "diagnostic"
    site: str = "site"
    layer: str = "layer"
    head: str = "head"
    position: str = "position"
    effect_mean: str = "effect_mean"
    effect_sd: str = "effect_sd"
    n_pairs: str = "n_pairs"


FILES, COMPARE, TABLE1, LAYERS, HEADS = _Files(), _Compare(), _Table1(), _Layers(), _Heads()
CONTRAST, POOLS, PATCHING = _Contrast(), _Pools(), _Patching()


# ---- writing -------------------------------------------------------------------------------------


class RunFolderWriter:
    """Writes a run folder's files (atomically for JSON; folders created as needed)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def csv(self, name: str, frame: pd.DataFrame, index: bool = False, **kwargs) -> Path:
        path = self.path(name)
        frame.to_csv(path, index=index, **kwargs)
        return path

    def tsv(self, name: str, frame: pd.DataFrame) -> Path:
        return self.csv(name, frame, sep="\t")

    def parquet(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.path(name)
        frame.to_parquet(path, index=False)
        return path

    def text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        return path

    def table(self, experiment: Any, name: str, frame: pd.DataFrame) -> Path:
        """Write table ``name`` that ``experiment`` declares (``experiment.tables``), in its file's format."""
        file = _declared(experiment, name)
        if file.endswith(".parquet"):
            return self.parquet(file, frame)
        return self.tsv(file, frame) if file.endswith(".tsv") else self.csv(file, frame)

    def json(self, name: str, data: dict, default=None) -> Path:
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=default or _json_default), encoding="utf-8")
        os.replace(tmp, path)
        return path


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(type(obj).__name__)


# ---- reading -------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _declared(experiment: Any, name: str) -> str:
    tables = getattr(experiment, "tables", None) or {}
    if name not in tables:
        who = getattr(experiment, "name", experiment)
        raise KeyError(f"experiment {who!r} declares no table {name!r} (its tables: {', '.join(tables) or 'none'})")
    return tables[name]


def _read_table(path: Path) -> pd.DataFrame | None:
    if path.suffix == ".parquet":
        if not path.is_file():
            return None
        frame = pd.read_parquet(path)
        return frame if len(frame) else None
    if path.suffix == ".tsv":
        if not path.is_file():
            return None
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            return None
        return frame if len(frame) else None
    return _read_csv(path)


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame) else None


def as_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not a number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


class RunFolder:
    """The files of one finished run folder, read lazily; a missing or empty file reads as None / {}."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, loader):
        if key not in self._cache:
            self._cache[key] = loader()
        return self._cache[key]

    def csv(self, name: str) -> pd.DataFrame | None:
        """Any CSV file of the folder (``FILES.*``), None when missing or empty."""
        return self._get(name, lambda: _read_csv(self.path / name))

    def table(self, experiment: Any, name: str) -> pd.DataFrame | None:
        """Table ``name`` that ``experiment`` (a registered experiment: its ``name`` and ``tables``) declares,
        read from its file in this folder; None when missing or empty."""
        file = _declared(experiment, name)
        return self._get(file, lambda: _read_table(self.path / file))

    @property
    def config(self) -> dict:
        return self._get(FILES.config, lambda: _read_json(self.path / FILES.config))

    @property
    def summary(self) -> dict:
        return self._get(FILES.summary, lambda: _read_json(self.path / FILES.summary))

    @property
    def findings(self) -> dict:
        """``findings.json`` (written by the report), {} when missing or unreadable."""
        return self._get(FILES.findings, lambda: _read_json(self.path / FILES.findings))

    @property
    def table1(self) -> pd.DataFrame | None:
        def load():
            frame = _read_csv(self.path / FILES.table1)
            if frame is not None:
                t, s = TABLE1.target, TABLE1.source
                frame[t] = frame[t].astype(str).str.strip()
                frame[s] = frame[s].astype(str).str.strip()
                upper = ~frame[t].str.lower().isin([TABLE1.none, TABLE1.random])
                frame.loc[upper, t] = frame.loc[upper, t].str.upper()
                frame.loc[upper, s] = frame.loc[upper, s].str.upper()
            return frame

        return self._get("table1", load)

    @property
    def table1_per_query(self) -> pd.DataFrame | None:
        return self.csv(FILES.table1_per_query)

    @property
    def layers(self) -> pd.DataFrame | None:
        return self.csv(FILES.layers)

    @property
    def contrast_heads(self) -> pd.DataFrame | None:
        return self.csv(FILES.contrast_heads)

    @property
    def contrast_per_query(self) -> pd.DataFrame | None:
        def load():
            frame = _read_csv(self.path / FILES.contrast_per_query)
            if frame is not None:
                frame[CONTRAST.level] = frame[CONTRAST.level].astype(int)
                frame[CONTRAST.qid] = frame[CONTRAST.qid].astype(str)
            return frame

        return self._get("contrast_per_query", load)

    @property
    def heads(self) -> pd.DataFrame | None:
        return self.csv(FILES.heads)

    @property
    def patching(self) -> pd.DataFrame | None:
        return self.csv(FILES.patching)

    @property
    def patching_overlap(self) -> pd.DataFrame | None:
        return self.csv(FILES.patching_overlap)

    # ---- derived values --------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return as_float(self.config.get("alpha")) or 0.05

    @property
    def correction(self) -> str:
        """The multiple-comparison correction of the run's tests (``holm`` unless config says otherwise)."""
        return str(self.config.get("correction") or "holm").lower()

    @property
    def corrected(self) -> str:
        """"Holm-corrected", "Bonferroni-corrected" or "uncorrected", for texts."""
        from .significance import correction_label

        return correction_label(self.correction)

    @property
    def p_name(self) -> str:
        """The p-value column of ranking tables decisions use: ``p_holm``, ``p_bonferroni`` or ``p_value``."""
        from .significance import decision_column

        return decision_column(self.correction)

    @property
    def p_label(self) -> str:
        return f"{self.corrected} p"

    def p_column(self, comparison: str) -> str:
        """The decision column of a contrast comparison (``relevant``, ``hard``, ``relevant_hard``)."""
        from .significance import decision_column

        return decision_column(self.correction, f"p_{comparison}")

    def decision_p(self, row: pd.Series) -> float | None:
        """The p-value a row is decided on: the corrected column when the table has it, else the raw one."""
        value = as_float(row.get(self.p_name))
        return value if value is not None else as_float(row.get(COMPARE.p_value))

    @property
    def model_info(self) -> dict:
        return self.summary.get("model_info") or {}

    @property
    def scheme(self):
        """The model's part scheme (:class:`matchsig.engine.scheme.PartScheme`): its part names, the directions its
        masks allow, its aggregating part; a run made before schemes were recorded is an encoder's."""
        from ..engine.scheme import PartScheme

        return PartScheme.from_dict(self.model_info.get("parts"))

    @property
    def num_layers(self) -> int | None:
        value = self.model_info.get("num_layers")
        if value:
            return int(value)
        for frame in (self.contrast_heads, self.layers):
            if frame is not None and LAYERS.layer in frame:
                return int(frame[LAYERS.layer].max()) + 1
        return None

    @property
    def num_heads(self) -> int | None:
        value = self.model_info.get("num_heads")
        if value:
            return int(value)
        frame = self.contrast_heads
        if frame is not None and CONTRAST.head in frame:
            return int(frame[CONTRAST.head].max()) + 1
        return None

    def _table1_row(self, target: str) -> pd.Series | None:
        frame = self.table1
        if frame is None:
            return None
        rows = frame[frame[TABLE1.target].str.lower() == target]
        return rows.iloc[0] if len(rows) else None

    @property
    def unablated(self) -> float | None:
        value = as_float(self.summary.get("unablated_ndcg@10"))
        if value is None:
            row = self._table1_row(TABLE1.none)
            value = None if row is None else as_float(row[COMPARE.ndcg])
        return value

    @property
    def random_ndcg(self) -> float | None:
        info = self.summary.get("random_ndcg@10")
        value = as_float(info.get("mean")) if isinstance(info, dict) else as_float(info)
        if value is None:
            row = self._table1_row(TABLE1.random)
            value = None if row is None else as_float(row[COMPARE.ndcg])
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
            if row[TABLE1.target].lower() in (TABLE1.none, TABLE1.random):
                continue
            out[(row[TABLE1.target], row[TABLE1.source])] = row
        return out

    def significant(self, row: pd.Series) -> bool:
        p = self.decision_p(row)
        if p is not None:
            return p <= self.alpha
        return bool(row.get(COMPARE.significant, False))

    def mark(self, row: pd.Series) -> str:
        """``*`` for a significant drop, ``↑`` for a significant increase, else ``""``."""
        from .significance import change_mark

        p, delta = self.decision_p(row), as_float(row.get(COMPARE.delta))
        if p is None or delta is None:
            return ""
        return change_mark(p, delta, self.alpha)
