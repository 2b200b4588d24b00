"""matchsig: how neural IR cross-encoders match queries to documents.

>>> from matchsig import CrossEncoder, Ablation
>>> ce = CrossEncoder.load("embedded")
>>> ce.score(["what is a flea"], ["The cat flea is an insect."], ablation=Ablation.parse("D<-D"))
"""

from .engine.ablation import Ablation
from .engine.parts import Part
from .errors import MatchsigError
from .version import __version__

__all__ = ["Ablation", "CrossEncoder", "MatchsigError", "Part", "compare"]


def __getattr__(name: str):
    # Lazy: importing torch and transformers costs seconds; `matchsig --help` should not pay it.
    if name == "CrossEncoder":
        from .engine.model import CrossEncoder

        return CrossEncoder
    if name == "compare":
        from .report.compare import compare

        return compare
    raise AttributeError(f"module 'matchsig' has no attribute {name!r}")
