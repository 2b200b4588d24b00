"""The experiment registry: every experiment of a run is a registered :class:`Experiment`.

An experiment declares everything the rest of matchsig needs to know about it, so the runner, the
command line, the report and the findings checklist iterate the registry instead of naming
experiments (as ``ir_measures`` registers measures by name):

* ``name``, ``title`` (report heading) and ``nav`` (report navigation label);
* ``options``: its configuration fields (:class:`Option`); each becomes a key of ``config.json``
  and an option of every experiment command (``--contrast-per-grade``, ``--k``, ...);
* ``pools``: the sampled pools it reads (``"main"``: the ablation pool, ``"contrast"``: the
  analysis pool); ``needs``: experiments that must run before it (heads needs contrast);
* ``units(runner)``: its work units (stored, resumable, shared out under ``torchrun``) and
  ``collect(runner)``: reads the stored arrays and writes its files into the run folder;
* ``figures``: {file name: caption} drawn by ``make_figure`` from the run folder's files;
* ``judges``: its findings (:class:`matchsig.analysis.findings.Judge`), judged on a finished run folder;
* ``section(folder, figures)``: its part of ``report.html``.

Adding an experiment = one module defining a subclass + one ``register(MyExperiment())`` line
(``docs/architecture.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MatchsigError

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis.findings import Judge
    from ..analysis.runfolder import RunFolder
    from .runner import Runner

__all__ = ["Experiment", "Option", "get", "names", "register", "registered", "unregister"]


@dataclass(frozen=True)
class Option:
    """One configuration field an experiment declares (a ``config.json`` key and a command-line option).

    ``default`` is the value (or, for lists, a zero-argument factory); ``kind`` is ``int``, ``float``,
    ``str``, ``list[int]`` or ``list[str]`` (lists: a repeatable option); ``minimum``: values below it
    are a one-line error; ``results``: whether the value changes stored results (part of the
    configuration a resumed run must match).
    """

    name: str
    default: Any
    flag: str
    help: str
    kind: Any = int
    short: str | None = None
    minimum: int | None = None
    results: bool = True
    optional: bool = False  # None is a valid value

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def check(self, value: Any) -> None:
        if self.minimum is None or value is None:
            return
        values = value if isinstance(value, list) else [value]
        if any(v < self.minimum for v in values):
            shown = f"{self.name} values" if isinstance(value, list) else self.name
            raise MatchsigError(f"{shown} must be >= {self.minimum}, got {value}")


class Experiment:
    """Base class of a registered experiment (see the module docstring for each attribute)."""

    name: str = ""
    title: str = ""
    nav: str = ""
    options: tuple[Option, ...] = ()
    pools: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    figures: dict[str, str] = {}
    #: The tables it writes, {table name: file in the run folder (.csv, .tsv or .parquet)}: written with
    #: ``runner.writer.table(self, name, frame)``, read with ``RunFolder.table(experiment, name)``.
    tables: dict[str, str] = {}
    judges: tuple["Judge", ...] = ()
    #: Part of a run when no experiment list is given (``matchsig experiments``: the paper's four).
    default: bool = True

    def validate(self, config) -> None:
        """Checks of this experiment's options beyond their minimum (a one-line MatchsigError)."""

    def units(self, runner: "Runner") -> list:
        """The work units of this experiment (:class:`matchsig.experiments.store.Unit`)."""
        return []

    def collect(self, runner: "Runner") -> None:
        """Read the finished units from the store and write this experiment's files."""

    def summary(self, runner: "Runner") -> dict:
        """Extra entries of ``summary.json`` (rank 0, after every experiment ran)."""
        return {}

    def make_figure(self, name: str, folder: "RunFolder", path: Path) -> Path | None:
        """Draw figure ``name`` from the run folder's files into ``path`` (None: the files do not allow it)."""
        return None

    def section(self, folder: "RunFolder", figures: dict[str, Path]) -> str:
        """This experiment's section of ``report.html`` ("" for none)."""
        return ""

    def in_report(self, folder: "RunFolder") -> bool:
        """Whether the report shows this experiment (default: always, with a "not run" note when missing)."""
        return True


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (runs, options, report and checklist follow registration order)."""
    if not experiment.name:
        raise MatchsigError("an experiment needs a name")
    taken = {o.name for e in _REGISTRY.values() if e.name != experiment.name for o in e.options}
    clash = [o.name for o in experiment.options if o.name in taken]
    if clash:
        raise MatchsigError(f"experiment {experiment.name!r}: option {clash[0]!r} is declared by another experiment")
    _REGISTRY[experiment.name] = experiment
    return experiment


def unregister(name: str) -> None:
    """Remove an experiment (tests that register a toy experiment clean up with this)."""
    _REGISTRY.pop(name, None)


def registered() -> list[Experiment]:
    """Every registered experiment, in registration order."""
    return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Experiment:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MatchsigError(f"unknown experiment {name!r}: choose from {', '.join(_REGISTRY)}") from None


def options() -> list[tuple[Experiment, Option]]:
    """Every declared option with its experiment, in registration order."""
    return [(e, o) for e in _REGISTRY.values() for o in e.options]


def with_needs(selected: list[str]) -> list[str]:
    """``selected`` plus every experiment they need, in registration order."""
    wanted = set(selected)
    changed = True
    while changed:
        changed = False
        for name in list(wanted):
            for need in get(name).needs:
                if need not in wanted:
                    wanted.add(need)
                    changed = True
    return [n for n in _REGISTRY if n in wanted]

