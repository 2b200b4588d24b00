"""``summary.json``: the model, the pools and their fingerprints, the statistics, timings and versions."""

from __future__ import annotations

import time

__all__ = ["run_summary"]


def run_summary(runner, selected: list) -> dict:
    """The summary entries every run writes (experiments add theirs with ``Experiment.summary``)."""
    import torch
    import transformers

    from ..version import __version__
    from ..data.evaluation import TIE_RTOL, TIE_RULE
    from ..analysis.significance import corrected_column

    enc = runner.encoder
    info = {"name": enc.name, "num_layers": enc.num_layers, "num_heads": enc.num_heads,
            "num_labels": enc.num_labels, "parameters": int(sum(p.numel() for p in enc.model.parameters())),
            "family": enc.family.name, "architecture": type(enc.model).__name__,
            "score": enc.score_convention, "readout": enc.readout,
            "self_check": enc.check.to_dict(), "parts": enc.scheme.to_dict()}
    c = runner.config
    summary = {
        "model_info": info,
        "pools": runner.describe_pools(selected),
        "evaluation": {"measure": "nDCG@10", "ties": TIE_RULE, "tie_rtol": TIE_RTOL},
        "significance": {
            "test": "two-sided paired Student t-test over queries (scipy.stats.ttest_rel)",
            "alpha": c.alpha, "correction": c.correction, "corrected_column": corrected_column(c.correction),
            "families": "Table 1: its ablations (30 in an encoder; the possible ones in a causal decoder, and the DEC rows "
                        "of an encoder-decoder); Figure 1: every (direction, layer); head ablations: every "
                        "selection; contrast: heads x directions, per comparison",
            "marks": "* = significant drop, \u2191 = significant increase (decided on the corrected p when a "
                     "correction is set)",
        },
        "timings": runner.timings,
        "versions": {"matchsig": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": str(enc.device),
    }
    if any("main" in e.pools for e in selected):
        from .driver import random, reference

        rnd = random(runner)
        summary["random_ndcg@10"] = {"mean": rnd.mean, "exact": True, "sd": rnd.sd,
                                     "sampled_mean": rnd.sampled_mean, "rankings": rnd.rankings,
                                     "rule": "exact expected nDCG@10 of a random order (tie-aware nDCG@10 of an "
                                             "all-tied ranking); sd over the sampled rankings"}
        summary["unablated_ndcg@10"] = reference(runner)[1]
    return summary
