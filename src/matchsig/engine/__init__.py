"""The engine (layer 0): a Hugging Face cross-encoder run with interventions.

parts (the five parts) -> ablation (``X<-Y`` cuts) -> context (the per-forward context) ->
attention_stats / kernels / hooks -> attention (the registered attention function) -> loading /
embedded -> model (:class:`CrossEncoder`) -> patching (``ce.patch``). Imports nothing above it.
"""
