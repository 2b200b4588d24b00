"""The intervention methods of :class:`~matchsig.engine.model.CrossEncoder`: named-site hooks,
activation patching, attribution patching, path patching and edge attribution.

Each is a thin method over the module that implements it (:mod:`~matchsig.engine.hooks`,
:mod:`~matchsig.engine.patching`, :mod:`~matchsig.engine.attribution`,
:mod:`~matchsig.engine.path_patching`, :mod:`~matchsig.engine.edges`), so ``ce.patch(...)`` reads as
TransformerLens does; a mixin keeps them out of the model module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Interventions:
    """Mixin of :class:`~matchsig.engine.model.CrossEncoder` (see the module docstring)."""

    def run_with_hooks(self, queries: Sequence[str], documents: Sequence[str], hooks, batch_size: int = 32) -> np.ndarray:
        """Scores with named-site hooks active (:func:`matchsig.hooks.run_with_hooks`)."""
        from .hooks import run_with_hooks

        return run_with_hooks(self, queries, documents, hooks, batch_size=batch_size)

    def run_with_cache(self, queries: Sequence[str], documents: Sequence[str], names: Sequence[str],
                       batch_size: int = 32):
        """Scores and activations at named sites (:func:`matchsig.hooks.run_with_cache`)."""
        from .hooks import run_with_cache

        return run_with_cache(self, queries, documents, names, batch_size=batch_size)

    def patch(self, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
              site: str = "attn.hook_z", layers=None, heads=None, positions=None, batch_size: int = 64,
              chunk_size: int = 16, progress: bool = False):
        """Activation patching from perturbed into baseline inputs (:func:`matchsig.patching.patch`)."""
        from .patching import patch

        return patch(self, queries, baseline_docs, perturbed_docs, site=site, layers=layers, heads=heads,
                     positions=positions, batch_size=batch_size, chunk_size=chunk_size, progress=progress)

    def attribute(self, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
                  site: str = "attn.hook_z", method: str = "atp", steps: int = 16, layers=None, heads=None,
                  positions=None, chunk_size: int = 8, progress: bool = False):
        """Attribution-patching estimates of the :meth:`patch` grid (:func:`matchsig.engine.attribution.attribute`)."""
        from .attribution import attribute

        return attribute(self, queries, baseline_docs, perturbed_docs, site=site, method=method, steps=steps,
                         layers=layers, heads=heads, positions=positions, chunk_size=chunk_size, progress=progress)

    def path_patch(self, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
                   sender, receiver, chunk_size: int = 16):
        """Path patching sender -> receiver (:func:`matchsig.engine.path_patching.path_patch`)."""
        from .path_patching import path_patch

        return path_patch(self, queries, baseline_docs, perturbed_docs, sender, receiver, chunk_size=chunk_size)

    def attribute_edges(self, queries: Sequence[str], baseline_docs: Sequence[str], perturbed_docs: Sequence[str],
                        method: str = "eap", steps: int = 16, chunk_size: int = 4, progress: bool = False):
        """EAP / EAP-IG scores of every edge (:func:`matchsig.engine.edges.attribute_edges`)."""
        from .edges import attribute_edges

        return attribute_edges(self, queries, baseline_docs, perturbed_docs, method=method, steps=steps,
                               chunk_size=chunk_size, progress=progress)
