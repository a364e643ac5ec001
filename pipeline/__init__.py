"""Selfment as a library of pure functions, one sub-package per phase of the DVC pipeline, each importing
only those before it: :mod:`pipeline.core` (params, datasets, files, the stage runner, metrics) ->
:mod:`pipeline.features` (backbone, feature store) -> :mod:`pipeline.bipartition` (NCut, IPO, pseudo-masks)
-> :mod:`pipeline.head` (head, losses, training, the trained model) -> :mod:`pipeline.evaluation` (intervals,
tables, plots); :mod:`pipeline.project` (configure, plan) sits above them all."""
