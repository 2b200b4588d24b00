"""Deprecated location: the ``patch`` experiment is :mod:`matchsig.experiments.patching` (a registered experiment)."""

from .experiments.patching import PatchConfig, run_patch  # noqa: F401

__all__ = ["PatchConfig", "run_patch"]
