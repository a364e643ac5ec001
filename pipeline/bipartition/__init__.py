"""Phase 2, bipartitions (stage ``pseudo_masks``, the baselines' maps of ``predict``): normalised cut of
the patch-affinity graph (:mod:`.ncut`, paper Sec. 3.1 Eq. 1-4), Iterative Patch Optimization (:mod:`.ipo`,
Sec. 3.2 Eq. 5-8), the Table 4 baselines and NCut + IPO of one image (:mod:`.methods`), and the pseudo-masks
of a whole store with their quality (:mod:`.pseudo`). Imports the core and the feature store."""
