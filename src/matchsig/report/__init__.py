"""The report (layer 4): the run folder's figures (``figures``), its findings checklist (``checklist``),
the HTML report (``build``) and the interactive explorer (``explorer``, ``templates/``). Reads the
registered experiments; imports nothing from the faces."""

from .build import build_report, render_report
from .checklist import judge, judges, write_findings
from .figures import make_figures

__all__ = ["build_report", "judge", "judges", "make_figures", "render_report", "write_findings"]
