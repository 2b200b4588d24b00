"""matchsig: how neural IR cross-encoders match queries to documents."""

from .errors import MatchsigError

__all__ = ["MatchsigError"]
__version__ = "0.1.0"
