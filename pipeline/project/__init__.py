"""Tools over the whole pipeline, above every phase (``selfment configure`` and ``selfment plan``):
params.yaml composed from the presets under ``configs/`` (:mod:`.configure`), and what a run will extract and
hold on disk, from params alone (:mod:`.plan`)."""
