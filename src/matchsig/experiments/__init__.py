"""The paper's experiments (and those beyond it) as registered plug-ins, run by one resumable, shardable runner.

A :class:`RunConfig` names the model, the collections, the sample and the experiments; a
:class:`Runner` turns it into a run folder (:mod:`matchsig.analysis.runfolder` lists the files). Each
experiment is one sub-package declaring its options, pools, work units, files, figures, findings and
report section (:mod:`.registry`); the runner, the command line, the report and the findings
checklist iterate the registry. Adding an experiment = one sub-package + one ``register(...)`` line below.

Two dataset scopes, as in the paper: ``datasets`` feed the main pool (Table 1, Figure 1, head
ablations; the paper: DL19), ``analysis_datasets`` the contrastive analysis (Figures 2-4; the paper:
DL19-22). Every ranking is evaluated tie-aware (:mod:`matchsig.data.evaluation`); every family of tests
is corrected with ``correction`` and decided at ``alpha`` (:mod:`.driver`); matching heads follow
:mod:`matchsig.analysis.matching`. Work is split into units whose results are written atomically, so a
killed run resumes where it stopped and ends with identical tables; under ``torchrun`` each process
takes every WORLD_SIZE-th unit and rank 0 writes the tables once all are present.
"""

from __future__ import annotations

from .circuit import Circuit
from .config import DEMO_CONFIG, PAPER_CONFIG, PRESETS, RunConfig
from .contrast.experiment import Contrast
from .contrast.stats import analyse_contrast
from .heads.experiment import MATCH_SPEC, Heads
from .layers.experiment import FIGURE1_DIRECTIONS, Layers
from .patching.experiment import Patching
from .pools import CONTRAST_LEVELS, protocol_note
from .registry import Experiment, Option, register, registered
from .runner import Runner
from .store import Dist, Store, Unit, slug
from .table1.experiment import Table1
from .table1.tables import ALL, TABLE1_CELLS, table1_latex, table1_markdown

register(Table1())
register(Layers())
register(Contrast())
register(Heads())
register(Patching())
register(Circuit())

__all__ = [
    "ALL", "CONTRAST_LEVELS", "DEMO_CONFIG", "FIGURE1_DIRECTIONS", "MATCH_SPEC", "PAPER_CONFIG", "PRESETS",
    "TABLE1_CELLS", "Dist", "Experiment", "Option", "RunConfig", "Runner", "Store", "Unit",
    "analyse_contrast", "protocol_note", "register", "registered", "slug", "table1_latex", "table1_markdown",
]
