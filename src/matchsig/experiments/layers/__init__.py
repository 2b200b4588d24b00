"""Figure 1: nDCG@10 when a direction is ablated in every head of layers 0..l (``experiment``, ``findings``)."""

from .experiment import FIGURE1_DIRECTIONS, FIGURES, Layers

__all__ = ["FIGURE1_DIRECTIONS", "FIGURES", "Layers"]
