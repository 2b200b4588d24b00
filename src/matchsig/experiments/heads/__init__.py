"""Beyond the paper: the top-k matching heads ablated vs k random heads (``experiment``)."""

from .experiment import FIGURES, MATCH_SPEC, Heads

__all__ = ["FIGURES", "MATCH_SPEC", "Heads"]
