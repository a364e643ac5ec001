"""Phase 2, bipartitions (stage ``pseudo_masks``, the baselines' maps of ``predict``): normalised cut of
the patch-affinity graph (:mod:`.ncut`, paper Sec. 3.1 Eq. 1-4), Iterative Patch Optimization (:mod:`.ipo`,
Sec. 3.2 Eq. 5-8), the Table 4 baselines and NCut + IPO of one image (:mod:`.methods`), the pseudo-masks
of a whole store with their quality (:mod:`.pseudo`), and each method's masks kept by exactly the params it
reads (:mod:`.kept`). Imports the core and the feature store."""
