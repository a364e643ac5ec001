"""Phase 1, features (stages ``extract_*``): frozen ViT backbones through transformers (:mod:`.backbone`),
the inference views of an evaluation set (:mod:`.views`), the sharded Zarr v3 feature store (:mod:`.store`),
the extraction that fills it from images (:mod:`.extract`), and stores shared by every experiment of a DVC
repository (:mod:`.shared`). Imports the core only."""
