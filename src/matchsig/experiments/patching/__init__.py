"""Activation patching into a run folder (``experiment``: :class:`PatchConfig`, :func:`run_patch`;
``findings``: its claims)."""

from .experiment import ROLES, SITES, PatchConfig, Patching, run_patch

__all__ = ["ROLES", "SITES", "PatchConfig", "Patching", "run_patch"]
