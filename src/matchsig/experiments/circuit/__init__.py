"""The ``circuit`` experiment: edge attribution, circuits grown from it and measured exactly (docs/circuits.md)."""

from .experiment import Circuit

__all__ = ["Circuit"]
