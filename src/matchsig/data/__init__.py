"""Data (layer 1): collections (datasets), pools (sampling), TREC runs (runs), tie-aware measures
(evaluation), and the bundled demo collection (``demo/``). Imports only the engine and errors."""
