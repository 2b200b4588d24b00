"""Analysis (layer 2): significance (t-tests, confidence intervals, corrections), the run folder's
format and reader (runfolder), the verdict engine of the findings (findings), head kinds
(matching), head overlap, diagnostic pairs and the paper's reference numbers. Imports only data,
the engine and errors: what it needs from an experiment is passed in as an argument."""
