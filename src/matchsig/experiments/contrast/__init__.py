"""Figures 2-4: attention statistics contrasted across relevance and difficulty levels
(``experiment``, ``stats``: its statistics and tests, ``findings``: its claims)."""

from .experiment import FIGURES, Contrast
from .stats import analyse_contrast

__all__ = ["FIGURES", "Contrast", "analyse_contrast"]
