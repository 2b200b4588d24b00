"""A run's configuration (``config.json``): the core fields plus every registered experiment's options."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import MatchsigError
from . import registry

__all__ = ["DEMO_CONFIG", "PAPER_CONFIG", "PRESETS", "RunConfig"]

#: Core fields before the experiments' options, as (name, default or factory).
_CORE_HEAD: tuple[tuple[str, Any], ...] = (
    ("model", "embedded"),
    ("datasets", lambda: ["demo"]),
    ("per_grade", 20),
    ("seed", 0),
    ("experiments", lambda: [e.name for e in registry.registered() if e.default]),
    ("max_queries", None),
    ("max_length", 512),
    ("batch_size", 32),
    ("device", None),
    ("dtype", None),
    ("rankings", 1000),
    ("alpha", 0.05),
    ("correction", "holm"),
)
#: Core fields after them. ``run``/``top_k``/``passages``: the re-ranking protocol (matchsig.data.runs): the
#: main pool is the top ``top_k`` of this TREC run instead of a sample; ``passages`` are extra texts.
_CORE_TAIL: tuple[tuple[str, Any], ...] = (("chunk_size", 256), ("run", None), ("top_k", None), ("passages", None))
#: Fields that do not change stored results (where and how fast a run executes; the statistics only
#: change tables, which every run rewrites). ``chunk_size`` is not one: it decides which rows each
#: stored unit holds, so a resume with another chunk size would read mismatched chunks.
_NOT_RESULTS = ("device", "batch_size", "experiments", "alpha", "correction", "rankings")


def _fields() -> list[tuple[str, Any]]:
    declared = [(o.name, o.default) for _, o in registry.options()]
    return [*_CORE_HEAD, *declared, *_CORE_TAIL]


class RunConfig:
    """Everything that determines a run's results (saved as ``config.json``).

    Its fields are the core ones (model, datasets, sample, statistics, batching, the re-ranking
    protocol) and the options every registered experiment declares (:class:`~.registry.Option`);
    ``RunConfig(model="embedded", heads_k=[1, 2])`` sets some and leaves the others at their defaults.
    """

    def __init__(self, **values: Any):
        fields = _fields()
        known = {name for name, _ in fields}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MatchsigError(f"unknown configuration key {unknown[0]!r}: valid keys are {', '.join(sorted(known))}")
        for name, default in fields:
            value = values[name] if name in values else (default() if callable(default) else default)
            setattr(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied."""
        return RunConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return {name: copy.deepcopy(getattr(self, name)) for name, _ in _fields()}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        return cls(**data)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MatchsigError(f"configuration file {path} not found") from None
        except json.JSONDecodeError as exc:
            raise MatchsigError(f"configuration file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def results_key(self) -> dict:
        """The fields that change stored results."""
        skip = set(_NOT_RESULTS) | {o.name for _, o in registry.options() if not o.results}
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    @property
    def analysis(self) -> list[str]:
        """The datasets of the contrastive analysis (``analysis_datasets``, else ``datasets``)."""
        chosen = getattr(self, "analysis_datasets", None)
        return list(chosen) if chosen else list(self.datasets)

    def selected(self) -> list[registry.Experiment]:
        """The configured experiments, in registration order."""
        return [registry.get(name) for name in self.experiments]

    def uses_pool(self, pool: str) -> bool:
        return any(pool in e.pools for e in self.selected())

    def validate(self) -> None:
        """Check every field (one-line MatchsigErrors) and add the experiments the chosen ones need."""
        for name in self.experiments:
            if name not in registry.names():
                raise MatchsigError(f"unknown experiment {name!r}: choose from {', '.join(registry.names())}")
        if not self.datasets:
            raise MatchsigError("no dataset given")
        from ..analysis.significance import CORRECTIONS

        if str(self.correction).lower() not in CORRECTIONS:
            raise MatchsigError(f"unknown correction {self.correction!r}: choose from {', '.join(sorted(CORRECTIONS))}")
        self.correction = str(self.correction).lower()
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise MatchsigError(f"alpha must lie strictly between 0 and 1, got {self.alpha!r}")
        for name in ("per_grade", "max_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MatchsigError(f"{name} must be >= 1, got {value}")
        for name in ("batch_size", "rankings", "chunk_size"):
            if getattr(self, name) < 1:
                raise MatchsigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for _, option in registry.options():
            option.check(getattr(self, option.name))
        for experiment in self.selected():
            experiment.validate(self)
        self._check_protocol()
        self.experiments = registry.with_needs(list(self.experiments))
        if self.device is not None:
            from ..engine.model import _resolve_device

            _resolve_device(self.device)  # before a run folder is written

    def _check_protocol(self) -> None:
        if self.run is None and (self.top_k is not None or self.passages):
            raise MatchsigError("top_k and passages apply to a run: give run (--run FILE) too")
        if self.run is None:
            return
        if len(self.datasets) != 1:
            raise MatchsigError(f"a run is re-ranked over one dataset, got {len(self.datasets)}: {', '.join(self.datasets)}")
        if self.top_k is not None and self.top_k < 1:
            raise MatchsigError(f"top_k must be >= 1, got {self.top_k}")
        if not self.uses_pool("main"):
            users = [e.name for e in registry.registered() if "main" in e.pools]
            listed = ", ".join(users[:-1]) + f" and {users[-1]}" if len(users) > 1 else "".join(users)
            others = [e.name for e in self.selected()]
            verb = "uses" if len(others) == 1 else "use"
            raise MatchsigError(f"a run replaces the main pool of {listed}; {', '.join(others)} {verb} sampled pools")


def DEMO_CONFIG() -> RunConfig:
    """`matchsig demo`: all 43 DL19 queries, sized to finish in <= 10 minutes on 2 CPU cores (fp32)."""
    return RunConfig(model="embedded", datasets=["demo"], per_grade=1, max_queries=None, seed=0, contrast_per_grade=4,
                     contrast_easy=4, heads_k=[2, 8, 24], heads_random_seeds=2, batch_size=32)


def PAPER_CONFIG() -> RunConfig:
    """The paper's protocol: ablations on DL19 judged, attention analysis on DL19-22 judged (226 queries).

    Up to 20 passages per grade for the ablations (the paper's stated cap) and, as the paper does not
    state the analysis sample, up to 20 relevant and 20 hard negatives and 20 easy negatives (from
    the whole corpus) per query for the analysis. The model is not part of the protocol. The paper's
    test: uncorrected two-sided paired t-tests, p <= 0.05 (``correction="none"``); the ranking tables
    carry the Holm-corrected view beside it (``p_holm``, ``mark_holm``).
    """
    from ..data.datasets import PAPER_COLLECTIONS

    return RunConfig(datasets=[PAPER_COLLECTIONS[0]], analysis_datasets=list(PAPER_COLLECTIONS), per_grade=20,
                     contrast_per_grade=20, contrast_easy=20, correction="none")


#: Named configurations (``--preset``); explicit command-line options override them.
PRESETS: dict[str, Callable[[], RunConfig]] = {"paper": PAPER_CONFIG, "demo": DEMO_CONFIG}
